#!/usr/bin/env bash
# Download, here, the wheels benchmarks/gpu.sh needs on the GPU machine (which reaches no package
# registry) into .whl/ (ignored through .git/info/exclude), for Python 3.12 on x86-64 Linux.
# Then run on the device: benchmarks/gpu.sh, carrying .whl. milvus-lite's wheel (55 MB) is
# repacked as its installed files in a .tar.xz (34 MB), so that everything fits the 64 MiB that
# travel with a run; gpu.sh unpacks it into the same folder pip installs the others into.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
py=${PYTHON:-.venv/bin/python}
"$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64 \
  -d .whl -r benchmarks/gpu-requirements.txt
lite=$(ls .whl/milvus_lite-*.whl)
tmp=$(mktemp -d)
(cd "$tmp" && unzip -q "$OLDPWD/$lite" && tar cf - . | xz -T0 -6 > "$OLDPWD/${lite%.whl}.tar.xz")
rm -rf "$tmp" "$lite"
du -sh .whl
