#!/usr/bin/env bash
# Create .venv and install Glimpse into it (idempotent). Offline-safe: torch and
# torchvision are the builds pinned in requirements.txt.
#   scripts/setup.sh          the product
#   scripts/setup.sh --dev    plus what the tests need (Debian chromium, clip-retrieval's client,
#                             the training extra: transformers and the all-MiniLM-L6-v2 text teacher,
#                             the ray extra (tests/test_ray.py),
#                             and requirements-dev.txt: pytest, playwright, ruff, mypy, deptry, schemathesis)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -m pip install -q -e .
if [ "${1:-}" = "--dev" ]; then
  .venv/bin/python -m pip install -q -e ".[train]"
  .venv/bin/python -m pip install -q -e ".[ray]"  # tests/test_ray.py runs real Ray on 127.0.0.1
  .venv/bin/python -m pip install -q -r requirements-dev.txt
  # ClipClient (for the clip-retrieval compatibility test) without its heavy dependencies. Last: a later
  # install would have pip's resolver list every dependency of clip-retrieval left out here as a conflict.
  .venv/bin/python -m pip install -q requests
  .venv/bin/python -m pip install -q --no-deps clip-retrieval==2.45.0
  if [ ! -x /usr/bin/chromium ]; then
    echo "installing Debian chromium for the page tests"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
fi
echo "Glimpse is installed in .venv (run: .venv/bin/glimpse --help)"
