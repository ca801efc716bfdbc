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
# [tool.setuptools] packages, and the data folders its package-dir maps into xiangyun_data),
# so the build does not copy .stack/ or other local state. The schemas, the starter catalog
# and stack/pom.xml ship inside the installed package: no path settings needed.
COPY pyproject.toml ./
COPY README.md ./
COPY xiangyun ./xiangyun
COPY xiangyun_data ./xiangyun_data
COPY streams ./streams
COPY connectors ./connectors
COPY monitoring ./monitoring
COPY schemas ./schemas
COPY catalog ./catalog
COPY policy ./policy
COPY units ./units
COPY stack ./stack
RUN pip install .

ENV XIANGYUN_STATE_DIR=/var/lib/xiangyun

RUN useradd --system --home-dir /var/lib/xiangyun --shell /usr/sbin/nologin xiangyun \
    && mkdir -p /var/lib/xiangyun \
    && chown xiangyun /var/lib/xiangyun
USER xiangyun

# Prometheus metrics of the worker (Settings.metrics_port); tools use 9109.
EXPOSE 9108

CMD ["xiangyun", "worker"]
