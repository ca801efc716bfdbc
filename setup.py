"""The one compiled part: the pool state's table (streams/ingest/_pool_table.c).

Optional: without a C compiler the install goes on, and the pool state is the pure Python
one (same decisions, more memory a key). Everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "streams.ingest._pool_table",
            ["streams/ingest/_pool_table.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    ]
)
