'use strict';
// The contract outside Python: buf lint passes, buf breaking passes against the released
// contract (protos/releases/dedup-v1.binpb) and catches a breaking change, and the generated
// TypeScript types (types/) are fresh.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { ROOT } = require('./helpers');

const BUF = path.join(__dirname, '..', 'node_modules', '.bin', 'buf');
const RELEASED = path.join(ROOT, 'protos', 'releases', 'dedup-v1.binpb');

function buf(args, cwd = ROOT) {
  return spawnSync(BUF, args, { cwd, encoding: 'utf8', timeout: 120000 });
}

test('buf lint passes on the contract', () => {
  const r = buf(['lint']);
  assert.equal(r.status, 0, r.stdout + r.stderr);
});

test('buf breaking passes against the released contract and catches a removed field', () => {
  const r = buf(['breaking', '--against', RELEASED]);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'dedup-contract-'));
  try {
    fs.cpSync(path.join(ROOT, 'protos'), path.join(copy, 'protos'), { recursive: true });
    fs.copyFileSync(path.join(ROOT, 'buf.yaml'), path.join(copy, 'buf.yaml'));
    const file = path.join(copy, 'protos', 'dedup', 'v1', 'dedup.proto');
    const text = fs.readFileSync(file, 'utf8');
    const changed = text.replace(/^\s*bool exact_duplicate = 11;\s*$/m, '');
    assert.notEqual(changed, text, 'the field to remove is in the contract');
    fs.writeFileSync(file, changed);
    const broken = buf(['breaking', '--against', RELEASED], copy);
    assert.notEqual(broken.status, 0);
    assert.match(broken.stdout + broken.stderr, /exact_duplicate/);
  } finally {
    fs.rmSync(copy, { recursive: true, force: true });
  }
});

test('the generated TypeScript types are fresh', () => {
  const fresh = fs.mkdtempSync(path.join(os.tmpdir(), 'dedup-types-'));
  try {
    const r = spawnSync(process.execPath, [path.join(__dirname, '..', 'scripts', 'gen-types.js'), fresh], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const committed = path.join(__dirname, '..', 'types');
    const list = (dir) => fs.readdirSync(dir, { recursive: true }).map(String).filter((f) => f.endsWith('.ts')).sort();
    assert.deepEqual(list(fresh), list(committed));
    for (const f of list(fresh)) {
      assert.equal(fs.readFileSync(path.join(fresh, f), 'utf8'), fs.readFileSync(path.join(committed, f), 'utf8'), `types/${f} is stale: npm run types`);
    }
  } finally {
    fs.rmSync(fresh, { recursive: true, force: true });
  }
});
