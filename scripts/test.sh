#!/usr/bin/env bash
# README's test command: set up ./.venv (once) and run the whole test suite.
# Extra arguments go to pytest (e.g. -k pick, -n 0).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# One thread per torch process: with two workers on a small machine torch's default
# thread pools oversubscribe the cores (a training epoch measured 5-8x slower).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# Two workers; loadscope keeps a test class (and its shared trained model) on one
# worker, and conftest.py gives each worker its own Scipion user-data folder.
exec .venv/bin/python -m pytest etpicker/tests -n 2 --dist loadscope -q "$@"
