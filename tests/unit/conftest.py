"""Unit tests: no services. Hypothesis without its per-example deadline: on a shared two-core
machine a slow example is the machine's, not the code's (speed is the benchmark's to say)."""

from hypothesis import settings

settings.register_profile("xiangyun", deadline=None)
settings.load_profile("xiangyun")
