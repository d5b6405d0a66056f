# syntax=docker/dockerfile:1.7
# The model service image (serving and training): the package and its pinned
# dependencies in a virtual environment, run as a non-root user under EDOT
# Python's `opentelemetry-instrument`. Build context: the repository root:
#   docker build -f deploy/model-service.Dockerfile -t inference-gateway/model-service:dev .

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY model-service /src/model-service
# A regular (not editable) install: the runtime stage gets the venv only.
# pyproject.toml pins the EDOT instrumentations, so no `edot-bootstrap` step.
RUN pip install /src/model-service

FROM python:3.11-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 model \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/model-service --shell /usr/sbin/nologin model \
    && install -d -o 10001 -g 10001 /var/lib/model-service /var/lib/model-service/models /var/lib/model-service/data
COPY --from=build /opt/venv /opt/venv

USER 10001:10001
WORKDIR /var/lib/model-service
# Artifacts and the feature store live in /var/lib/model-service, a volume in
# compose shared by the trainer (writes a version) and the service (serves the newest).
# The sampler keeps the caller's `tracestate`, which EDOT's default drops. /admin stays
# refused until MODEL_SERVICE__ADMIN_TOKEN(_FILE) is set (compose and k8s set the file).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MODEL_SERVICE__HOST=0.0.0.0 \
    MODEL_SERVICE__PORT=8001 \
    MODEL_SERVICE__MODEL_DIR=/var/lib/model-service/models \
    MODEL_SERVICE__DATA_DIR=/var/lib/model-service/data \
    OTEL_SERVICE_NAME=model-service \
    OTEL_TRACES_SAMPLER=parentbased_always_on
EXPOSE 8001
# /health answers 200 only once a model is loaded; a long start period covers
# the first start, when the trainer may still be writing the first version.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('MODEL_SERVICE__PORT', '8001'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=2).status == 200 else 1)"]
STOPSIGNAL SIGTERM
# Training in the same image: `python -m model_service.train` (see docker-compose.yml).
CMD ["opentelemetry-instrument", "python", "-m", "model_service"]
