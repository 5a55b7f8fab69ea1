# CPU image of the dedup server with embedded Milvus Lite.
#   docker build -t imgdedup . && docker run -p 50051:50051 -v dedup-data:/data imgdedup
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# libgomp for onnxruntime; OpenCV headless needs nothing else.
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY server ./server
COPY model ./model
COPY protos ./protos
RUN pip install ".[cpu]"

RUN useradd --create-home dedup && mkdir /data && chown dedup /data
USER dedup
VOLUME /data
EXPOSE 50051
# Shell form so that DEDUP_HEALTHCHECK_ARGS can carry the client TLS flags when TLS is on, e.g.
# "--tls-ca /certs/ca.pem --tls-cert /certs/probe.pem --tls-key /certs/probe.key" (health needs no token).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s \
  CMD dedup health --server 127.0.0.1:50051 --timeout 3 $DEDUP_HEALTHCHECK_ARGS
CMD ["dedup", "serve", "--host", "0.0.0.0", "--port", "50051", "--data-dir", "/data"]
