#!/usr/bin/env bash
# GPU speed in one command, on a GPU machine as it is (the lent H200: 16 cores, Python 3.12 with
# PyTorch, torchvision, onnx, OpenCV, no package registry), from the repository root:
#   benchmarks/gpu_wheels.sh          # here, once: the missing packages as wheels into .whl/
#   benchmarks/gpu.sh [gpu.py flags]  # there, carrying .whl; prints one table (benchmarks/gpu.py)
# Packages go into /tmp/dedup-site (nothing is installed into the machine's own Python); the
# server runs from this checkout (PYTHONPATH). Under 8 minutes on an H200-class machine.
set -euo pipefail
cd "$(dirname "$0")/.."
site=/tmp/dedup-site
py=${PYTHON:-python3}
if [ -d .whl ]; then
  mkdir -p "$site"
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
  for t in .whl/*.tar.xz; do [ -e "$t" ] && tar xJf "$t" -C "$site"; done
fi
export PYTHONPATH="$PWD/server:$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$py" -c 'import grpc, google.protobuf, pymilvus, milvus_lite, opentelemetry.trace, torch, onnxruntime as ort; print("grpcio", grpc.__version__, "protobuf", google.protobuf.__version__, "torch", torch.__version__, "onnxruntime", ort.__version__, ort.get_available_providers())'
exec "$py" benchmarks/gpu.py "$@"
