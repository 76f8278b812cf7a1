#!/bin/sh
# Builds plugin.wasm from app.py with componentize-py (pinned in requirements.txt).
# On first use it creates .venv here and installs the toolchain into it; set
# COMPONENTIZE_PY to use a componentize-py installed elsewhere.
set -eu
cd "$(dirname "$0")"
if [ -z "${COMPONENTIZE_PY:-}" ]; then
    if [ ! -x .venv/bin/componentize-py ]; then
        python3 -m venv .venv
        .venv/bin/pip install --quiet -r requirements.txt
    fi
    COMPONENTIZE_PY=.venv/bin/componentize-py
fi
"$COMPONENTIZE_PY" -d wit -w plugin componentize -p . app -o plugin.wasm
echo "built $(pwd)/plugin.wasm"
