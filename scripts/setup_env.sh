#!/usr/bin/env bash
# Creates ./.venv with the pinned dependencies of both worlds (Scipion's side and the
# core's torch) and etpicker installed in editable mode. A second run with unchanged
# requirement files does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
STAMP="$VENV/.etpicker-requirements.sha256"
REQUIREMENTS=(requirements.txt requirements-core.txt requirements-test.txt)
# torch 2.13.0 and the Scipion pins are known to work together on Python 3.11.
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"

wanted=$(cat "${REQUIREMENTS[@]}" setup.py | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$wanted" ]; then
    echo "etpicker: environment $VENV is up to date."
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "etpicker: creating $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import tkinter" 2>/dev/null; then
    echo "etpicker: error: Python's tkinter is missing (pwem imports it even headless);" \
         "install it, e.g. 'sudo apt-get install python3-tk', then run this again." >&2
    exit 2
fi
requirementArgs=()
for file in "${REQUIREMENTS[@]}"; do requirementArgs+=(-r "$file"); done
"$VENV/bin/python" -m pip install --quiet "${requirementArgs[@]}"
"$VENV/bin/python" -m pip install --quiet --no-deps -e .
echo "$wanted" > "$STAMP"
echo "etpicker: environment $VENV ready."
