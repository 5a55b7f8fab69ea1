#!/usr/bin/env bash
# Record the contract as released: a buf image of protos/ (every message, service and import)
# in protos/releases/dedup-v1.binpb, which CI's `buf breaking` compares the working tree against.
# Run it when a contract version is released (and commit the image); buf comes from
# clients/node's dev dependencies (cd clients/node && npm ci).
set -euo pipefail
cd "$(dirname "$0")/.."
buf=clients/node/node_modules/.bin/buf
"$buf" build -o protos/releases/dedup-v1.binpb
echo "wrote protos/releases/dedup-v1.binpb ($(wc -c < protos/releases/dedup-v1.binpb) bytes)"
