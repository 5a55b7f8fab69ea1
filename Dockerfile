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
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
  CMD python -c "import grpc,sys; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; sys.exit(g.HealthStub(grpc.insecure_channel('127.0.0.1:50051')).Check(h.HealthCheckRequest(), timeout=2).status != 1)"
CMD ["dedup", "serve", "--host", "0.0.0.0", "--port", "50051", "--data-dir", "/data"]
