#!/bin/sh
# Builds plugin.wasm from plugin.js with componentize-qjs (pinned in package-lock.json).
# On first use it runs `npm ci` here; set COMPONENTIZE_QJS to use a componentize-qjs
# installed elsewhere.
set -eu
cd "$(dirname "$0")"
if [ -z "${COMPONENTIZE_QJS:-}" ]; then
    if [ ! -x node_modules/.bin/componentize-qjs ]; then
        npm ci --no-audit --no-fund
    fi
    COMPONENTIZE_QJS=node_modules/.bin/componentize-qjs
fi
# --sync: the host runs plain (not component-model async) exports.
"$COMPONENTIZE_QJS" --wit wit --world plugin --js plugin.js --sync -o plugin.wasm
