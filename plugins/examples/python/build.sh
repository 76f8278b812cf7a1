#!/bin/sh
# Builds the `notes` example (Python) into notes.wasm, or into the path given as $1,
# against everruns:capability@0.2.0 (wit/0.2.0).
# Needs componentize-py 0.25.1 (`pip install -r sdk/python/requirements.txt`): on PATH,
# or named by COMPONENTIZE_PY.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
out=${1:-$here/notes.wasm}
"${COMPONENTIZE_PY:-componentize-py}" -d "$repo/wit/0.2.0" -w plugin componentize \
    -p "$here" -p "$repo/sdk/python" app -o "$out"
