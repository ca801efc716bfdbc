# Image of the Xiangyun worker and tools (docker-compose.yml services `worker` and `tools`).
#   docker build -t xiangyun .
#   docker run --rm xiangyun xiangyun --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what `pip install .` needs, package by package (the packages of pyproject.toml's
# [tool.setuptools] packages), so the build does not copy .stack/ or other local state.
COPY pyproject.toml ./
COPY xiangyun ./xiangyun
COPY streams ./streams
COPY connectors ./connectors
COPY monitoring ./monitoring
RUN pip install .

# Data the worker reads at run time. The installed package cannot find these next to itself
# (settings.py looks beside the source tree), so the settings point at them.
COPY schemas ./schemas
COPY catalog ./catalog
ENV XIANGYUN_SCHEMA_DIR=/app/schemas/avro \
    XIANGYUN_CATALOG_DIR=/app/catalog \
    XIANGYUN_STATE_DIR=/var/lib/xiangyun

RUN useradd --system --home-dir /var/lib/xiangyun --shell /usr/sbin/nologin xiangyun \
    && mkdir -p /var/lib/xiangyun \
    && chown xiangyun /var/lib/xiangyun
USER xiangyun

# Prometheus metrics of the worker (Settings.metrics_port); tools use 9109.
EXPOSE 9108

CMD ["xiangyun", "worker"]
