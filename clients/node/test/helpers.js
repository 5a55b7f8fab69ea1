'use strict';
// A real dedup server for the tests: `python -m imgdedup serve` on 127.0.0.1 with a port of its
// own and a Milvus Lite file in a temporary folder, stopped by its PID; and real photos, written
// by scikit-image (the package ships them) through the same Python.
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.join(__dirname, '..', '..', '..');
const PYTHON = process.env.DEDUP_PYTHON || path.join(ROOT, '.venv', 'bin', 'python');

function startServer(extraArgs = [], env = {}) {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dedup-node-'));
  const proc = spawn(PYTHON, ['-m', 'imgdedup', 'serve', '--port', '0', '--data-dir', dataDir, ...extraArgs], {
    env: { ...process.env, PYTHONUNBUFFERED: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output = [];
  return new Promise((resolve, reject) => {
    let port;
    const timer = setTimeout(() => finish(new Error(`server not ready in 180 s:\n${output.join('')}`)), 180000);
    function finish(err) {
      clearTimeout(timer);
      if (err) {
        proc.kill('SIGKILL');
        reject(err);
      } else {
        resolve({ target: `127.0.0.1:${port}`, proc, dataDir, output, stop: () => stop(proc, dataDir) });
      }
    }
    const onData = (chunk) => {
      output.push(chunk.toString());
      const text = output.join('');
      const m = text.match(/listening on 127\.0\.0\.1:(\d+)\r?\n/); // the port ends its line
      if (m) port = Number(m[1]);
      if (port && text.includes('dedup server ready')) finish();
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    proc.on('exit', (code) => finish(new Error(`server exited with ${code}:\n${output.join('')}`)));
  });
}

function stop(proc, dataDir) {
  return new Promise((resolve) => {
    proc.removeAllListeners('exit');
    if (proc.exitCode !== null) return resolve(proc.exitCode);
    const kill = setTimeout(() => proc.kill('SIGKILL'), 60000);
    proc.on('exit', (code) => {
      clearTimeout(kill);
      fs.rmSync(dataDir, { recursive: true, force: true });
      resolve(code);
    });
    proc.kill('SIGTERM');
  });
}

/** name -> JPEG bytes: scikit-image photos and copies of them (smaller, re-encoded, flipped). */
function photos() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dedup-photos-'));
  execFileSync(PYTHON, ['-c', `
import sys, cv2, numpy as np
from skimage import data
out = sys.argv[1]
for name in ("astronaut", "coffee", "chelsea", "rocket"):
    rgb = getattr(data, name)()[..., :3]
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    h, w = bgr.shape[:2]
    cv2.imwrite(f"{out}/{name}.jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
    cv2.imwrite(f"{out}/{name}-small.jpg", cv2.resize(bgr, (w // 2, h // 2), interpolation=cv2.INTER_AREA), [cv2.IMWRITE_JPEG_QUALITY, 75])
    cv2.imwrite(f"{out}/{name}-flip.jpg", np.ascontiguousarray(bgr[:, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 85])
`, dir]);
  const out = {};
  for (const f of fs.readdirSync(dir)) out[path.basename(f, '.jpg')] = fs.readFileSync(path.join(dir, f));
  fs.rmSync(dir, { recursive: true, force: true });
  return out;
}

module.exports = { startServer, photos, ROOT, PYTHON };
