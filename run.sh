#!/usr/bin/env bash
# One-step set-up and run, on a fresh machine:
#   ./run.sh serve [dedup serve flags...]   install (once) and start the server (Milvus Lite, default model)
#   ./run.sh test  [pytest args...]         install (once) with test extras and run the test suite,
#                                           on Milvus Lite, on a real Milvus server, with --workers 2,
#                                           the Node.js client's tests with buf lint/breaking,
#                                           PyTorch's tests (Python 3.11, the torch on this disk), and
#                                           the container image built and run (a dockerd of its own)
# Python 3.12 is required (the default model's package needs it); the torch test pass uses 3.11. Found as $PYTHON, python3.12
# on PATH, or a pyenv 3.12. DEDUP_EXTRA=gpu installs onnxruntime-gpu instead of onnxruntime.
set -euo pipefail
cd "$(dirname "$0")"

find_python() {  # find_python [3.12|3.11]: that Python ($PYTHON only for 3.12)
  local want=${1:-3.12} c
  local minor=${want#3.}
  for c in "$([ "$want" = 3.12 ] && echo "${PYTHON:-}")" python$want "$HOME"/.pyenv/versions/$want*/bin/python$want /root/.pyenv/versions/$want*/bin/python$want /usr/local/bin/python$want /usr/bin/python$want; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 && "$c" -c "import sys; sys.exit(sys.version_info[:2] != (3, $minor))" 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    local v; v=$(pyenv versions --bare 2>/dev/null | grep -E "^3\.$minor" | tail -n1 || true)
    if [ -n "$v" ]; then echo "$(pyenv root)/versions/$v/bin/python$want"; return 0; fi
  fi
  echo "error: Python $want not found; install it (e.g. 'pyenv install $want')$([ "$want" = 3.12 ] && echo " or set PYTHON=/path/to/python3.12")" >&2
  return 1
}

# side_venv DIR PYTHON_VERSION STAMP_FILE PIP_ARGS...: a venv of its own for a test pass, made
# once and brought up to date (pip install PIP_ARGS) whenever STAMP_FILE changes.
side_venv() {
  local dir=$1 ver=$2 src=$3; shift 3
  local stamp; stamp="$dir/.installed-$(sha256sum "$src" | cut -c1-16)"
  [ -f "$stamp" ] && return 0
  echo "installing $dir (Python $ver)" >&2
  if ! "$dir/bin/python" -c "import sys; sys.exit(sys.version_info[:2] != (3, ${ver#3.}))" 2>/dev/null; then
    rm -rf "$dir"
    "$(find_python "$ver")" -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --upgrade pip
  fi
  "$dir/bin/python" -m pip install --quiet "$@"
  rm -f "$dir"/.installed-*
  touch "$stamp"
}

# apt_install PACKAGE...: Debian packages a test pass needs (apt-get update only if the lists
# are missing or stale, as on a fresh machine); returns non-zero when they could not be installed.
apt_install() {
  local sudo; sudo=$([ "$(id -u)" = 0 ] || echo sudo)
  local get="$sudo env DEBIAN_FRONTEND=noninteractive apt-get"
  $get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 \
    || { $get update -q >/dev/null && $get install -y -q --no-install-recommends "$@" >/dev/null; }
}

mode=${1:-}
[ -n "$mode" ] && shift || true
extra=${DEDUP_EXTRA:-cpu}
case "$mode" in
  serve) extras="$extra" ;;
  test) extras="$extra,test" ;;
  *) echo "usage: ./run.sh serve|test [args...]" >&2; exit 2 ;;
esac

venv=${DEDUP_VENV:-.venv}
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
  py=$(find_python)
  echo "creating $venv with $py" >&2
  rm -rf "$venv"
  "$py" -m venv "$venv"
fi
# Re-install only when the project's requirements or the chosen extras changed.
stamp="$venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -e ".[$extras]"
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi

case "$mode" in
  serve) exec "$venv/bin/dedup" serve "$@" ;;
  test)
    # Debian's chromium: tests/test_report.py renders the HTML report in it (headless).
    if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
      echo "installing chromium (Debian package) for the report test" >&2
      apt_install chromium || echo "warning: could not install chromium: the report rendering test will fail" >&2
    fi
    # Seldon MLServer, the Triton-protocol (KServe v2) server the Triton embedder's tests use,
    # pins protobuf < 7, which the server's generated code cannot run on: a venv of its own.
    mlvenv=${DEDUP_MLSERVER_VENV:-.venv-mlserver}
    side_venv "$mlvenv" 3.12 model/mlserver/requirements.txt -r model/mlserver/requirements.txt
    export DEDUP_MLSERVER="$(cd "$mlvenv" && pwd)/bin/mlserver"
    # Three passes: servers on Milvus Lite files; then on one real Milvus standalone server (the
    # PyPI `milvus` package), which binds every interface and so runs, with the tests, inside a
    # private network namespace (scripts/netns-run); then every server with `--workers 2` (two
    # front processes over one index writer) on Lite files, for the same answers.
    # DEDUP_TEST_PASSES="lite server workers" picks passes (DEDUP_TEST_MILVUS=lite|server: one).
    # A fourth pass, node: the Node.js client's tests (clients/node: npm ci, npm test) against
    # real servers of this venv, buf lint and buf breaking on the contract (pytest arguments unused).
    # A fifth, torch: the PyTorch embedder and the export tools (tests/test_torch.py) in
    # .venv-torch: Python 3.11 with torch 2.14.1 and torchvision 0.29.1, which pip takes from this
    # machine's disk (a CUDA build, run on the CPU: ~5.5 GB, ~1.5 min to install; for Python 3.12
    # pip would download one); the default model (3.12 only) is not used there.
    # A sixth, container: builds the CPU image with a Docker engine of its own (Debian's docker.io,
    # a base image made with mmdebstrap: no registry) and runs it, then compose.local.yaml (that
    # image on a Milvus container from the PyPI `milvus` package) with the engine in a private
    # network namespace (tests/test_container.py).
    passes=${DEDUP_TEST_PASSES:-${DEDUP_TEST_MILVUS:-lite server workers node torch container}}
    for pass in $passes; do
      echo "== tests: $pass ==" >&2
      case $pass in
        server) DEDUP_TEST_MILVUS=server scripts/netns-run "$venv/bin/python" -m pytest "$@" ;;
        workers) DEDUP_TEST_MILVUS=lite DEDUP_TEST_WORKERS=2 "$venv/bin/python" -m pytest "$@" ;;
        lite) DEDUP_TEST_MILVUS=lite "$venv/bin/python" -m pytest "$@" ;;
        torch)
          tvenv=${DEDUP_TORCH_VENV:-.venv-torch}
          side_venv "$tvenv" 3.11 pyproject.toml torch==2.14.1 torchvision==0.29.1 -e ".[cpu,torch,test]"
          DEDUP_TEST_MILVUS=lite DEDUP_TEST_TORCH=1 "$tvenv/bin/python" -m pytest tests/test_torch.py "$@" ;;
        node)
          command -v npm >/dev/null || { echo "error: the node pass needs Node.js 18+ and npm" >&2; exit 1; }
          py="$(cd "$venv" && pwd)/bin/python"
          (cd clients/node && npm ci --silent --no-audit --no-fund && DEDUP_PYTHON="$py" npm test --silent) ;;
        container)
          if ! command -v dockerd >/dev/null 2>&1 || ! command -v mmdebstrap >/dev/null 2>&1 || ! command -v docker-compose >/dev/null 2>&1; then
            echo "installing docker.io, docker-compose and mmdebstrap (Debian packages) for the container pass" >&2
            apt_install docker.io docker-compose mmdebstrap iptables
          fi
          DEDUP_TEST_MILVUS=lite DEDUP_TEST_CONTAINER=1 "$venv/bin/python" -m pytest tests/test_container.py "$@" ;;
        *) echo "unknown test pass: $pass (lite, server, workers, node, torch, container)" >&2; exit 2 ;;
      esac
    done
    ;;
esac
