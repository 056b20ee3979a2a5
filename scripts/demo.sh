#!/usr/bin/env bash
# README's first command: set up ./.venv (once; later runs reuse it), then build the demo
# Scipion project on synthetic tomograms. Extra arguments go to scripts/demo.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python scripts/demo.py "$@"
