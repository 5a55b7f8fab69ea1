'use strict';
// npm pack: put the contract (dedup.proto and the vendored google.rpc files) into the package.
const fs = require('node:fs');
const path = require('node:path');

const from = path.join(__dirname, '..', '..', '..', 'protos');
const to = path.join(__dirname, '..', 'protos');
for (const rel of ['dedup/v1/dedup.proto', 'google/rpc/status.proto', 'google/rpc/error_details.proto']) {
  fs.mkdirSync(path.dirname(path.join(to, rel)), { recursive: true });
  fs.copyFileSync(path.join(from, rel), path.join(to, rel));
}
