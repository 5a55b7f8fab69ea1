'use strict';
// Generate TypeScript types for the contract with @grpc/proto-loader's own generator, with the
// loader options index.js uses, into types/ (or the folder given). `npm run types` after a
// contract change; test/contract.test.js fails while types/ is stale. Never edit types/ by hand.
const { execFileSync } = require('node:child_process');
const path = require('node:path');

const outDir = process.argv[2] || path.join(__dirname, '..', 'types');
const protos = path.join(__dirname, '..', '..', '..', 'protos');
const bin = path.join(__dirname, '..', 'node_modules', '.bin', 'proto-loader-gen-types');
execFileSync(bin, [
  '--grpcLib=@grpc/grpc-js', '--keepCase', '--longs=String', '--enums=String', '--defaults', '--oneofs',
  `--includeDirs=${protos}`, `--outDir=${outDir}`, 'dedup/v1/dedup.proto',
], { stdio: 'inherit' });
// The generator names each source by its absolute path: keep the output the same wherever the
// repository is checked out.
const fs = require('node:fs');
for (const file of fs.readdirSync(outDir, { recursive: true })) {
  const full = path.join(outDir, String(file));
  if (!full.endsWith('.ts')) continue;
  const text = fs.readFileSync(full, 'utf8');
  fs.writeFileSync(full, text.split(`${protos}${path.sep}`).join('protos/'));
}
