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
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "etpicker: error: $PYTHON is Python $("$PYTHON" -c 'import platform; print(platform.python_version())')," \
         "but the pinned dependencies (scipy 1.10, torch 2.13) need Python 3.11:" \
         "install python3.11 or run with PYTHON=/path/to/python3.11." >&2
    exit 2
fi

wanted=$(cat "${REQUIREMENTS[@]}" setup.py | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$wanted" ]; then
    echo "etpicker: environment $VENV is up to date."
    exit 0
fi

# A venv of another Python (e.g. made with a 3.12 python3) cannot take the pins: start over.
if [ -x "$VENV/bin/python" ] && \
   [ "$("$VENV/bin/python" -c 'import sys; print(sys.version_info[:2])')" != \
     "$("$PYTHON" -c 'import sys; print(sys.version_info[:2])')" ]; then
    echo "etpicker: $VENV uses another Python than $PYTHON; recreating it"
    rm -rf "$VENV"
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
