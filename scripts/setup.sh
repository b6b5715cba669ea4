#!/usr/bin/env bash
# Install Switchboard into .venv and the phoenix.js client into node_modules.
# Usage: bash scripts/setup.sh [extras]   (extras default: none; the tests use "dev,bench")
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if [ -n "$extras" ]; then
  .venv/bin/python -m pip install --quiet -e ".[$extras]"
else
  .venv/bin/python -m pip install --quiet -e .
fi
npm ci --no-audit --no-fund --loglevel=error
