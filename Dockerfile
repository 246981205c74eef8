# The sessiontrace service. Spans go to the collector named by OTEL_EXPORTER_OTLP_ENDPOINT.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml requirements.lock ./
COPY telemetry ./telemetry
COPY service ./service
COPY devstack ./devstack
# The library first (telemetry/ is its own distribution, `sessiontrace`), then the service, with
# every package at the version requirements.lock pins.
RUN pip install -c requirements.lock ./telemetry . \
    && useradd --system --uid 10002 --home-dir /app sessiontrace \
    && mkdir -p /app/var \
    && chown sessiontrace /app/var

USER sessiontrace
ENV DATABASE_URL=sqlite:////app/var/sessiontrace.db
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["python", "-m", "service", "serve", "--host", "0.0.0.0", "--port", "8000"]
