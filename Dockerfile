# syntax=docker/dockerfile:1
# One image for the whole suite; the command picks the service:
#   docker run IMAGE serve profile|segmentation|recommendation|gateway [flags]
#   docker run IMAGE train --from-event-log --address recommendation-trainer:50054
# Build:  docker build -t vitrine:dev .
# (docs/deployment.md has the full build / push / deploy guide.)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: compilers, a virtualenv, generated protobuf code -------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Only needed when a dependency has no wheel for this platform; never reaches the final stage.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, from pyproject.toml alone, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --upgrade pip \
    && pip install -r /tmp/requirements.txt

# Generated code is not committed: generate it here, then install the package (not editable).
COPY protos/ protos/
COPY tools/ tools/
COPY vitrine/ vitrine/
COPY services/ services/
COPY scoring/ scoring/
RUN python tools/gen_protos.py \
    && pip install --no-deps . \
    && python -c "import vitrine.v1.gateway_pb2_grpc, services.common.server"

# --- final: the interpreter, the virtualenv, nothing else ------------------------------------
FROM ${PYTHON_IMAGE} AS final

LABEL org.opencontainers.image.title="vitrine" \
      org.opencontainers.image.description="Vitrine real-time personalization engine (gRPC services)" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it (k8s/ uses 10001 too).
RUN groupadd --system --gid 10001 vitrine \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/vitrine \
        --shell /usr/sbin/nologin vitrine \
    && mkdir -p /var/lib/vitrine \
    && chown 10001:10001 /var/lib/vitrine

COPY --from=builder /opt/venv /opt/venv

# NUMBA_CACHE_DIR and MPLCONFIGDIR point into /tmp: the root filesystem is read-only in
# Kubernetes, where /tmp and /var/lib/vitrine are writable emptyDir/PVC mounts.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    VITRINE_HOST=[::] \
    VITRINE_DATA_DIR=/var/lib/vitrine

WORKDIR /var/lib/vitrine
USER 10001:10001

EXPOSE 50051 50052 50053 50054 50055 9090

ENTRYPOINT ["vitrine"]
CMD ["serve", "gateway"]
