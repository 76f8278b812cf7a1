#!/bin/sh
# Builds the `tally` example (JavaScript) into tally.wasm, or into the path given as $1,
# against everruns:capability@0.2.0 (wit/0.2.0).
# Needs componentize-qjs 0.4.5: `npm ci` in sdk/js installs it where this script looks,
# or name one with COMPONENTIZE_QJS.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
out=${1:-$here/tally.wasm}
# The module root must contain the SDK, which plugin.js imports by relative path.
# --sync: the host runs plain (not component-model async) exports.
"${COMPONENTIZE_QJS:-$repo/sdk/js/node_modules/.bin/componentize-qjs}" \
    --wit "$repo/wit/0.2.0" --world plugin --js "$here/plugin.js" --module-root "$repo" \
    --sync -o "$out"
