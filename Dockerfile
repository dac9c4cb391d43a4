# ivig-cds: the CDS Hooks service, as a hospital runs it (see README "Deployment").
# Build stage: the same make target CI checks (`make runtime-check` installs the same way).
FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md Makefile ./
COPY cds_service ./cds_service
RUN make install-runtime VENV=/opt/ivig-cds

# Run stage: the virtual environment only, as an unprivileged user.
FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin ivig \
    && mkdir -p /var/lib/ivig-cds /tmp/ivig-cds-metrics \
    && chown ivig /var/lib/ivig-cds /tmp/ivig-cds-metrics
COPY --from=build /opt/ivig-cds /opt/ivig-cds
# card wording and templates live beside the package in the source tree, not in the wheel
COPY cards /opt/ivig-cds/cards
ENV PATH=/opt/ivig-cds/bin:$PATH \
    IVIG_CDS_CARDS_DIR=/opt/ivig-cds/cards \
    PYTHONUNBUFFERED=1 \
    IVIG_CDS_HOST=0.0.0.0 \
    IVIG_CDS_PORT=8080 \
    IVIG_CDS_DATABASE_PATH=/var/lib/ivig-cds/ivig-cds.db \
    PROMETHEUS_MULTIPROC_DIR=/tmp/ivig-cds-metrics
USER 10001
WORKDIR /var/lib/ivig-cds
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
CMD ["ivig-cds", "serve"]
