#!/usr/bin/env bash
# Builds the component and puts it beside capability.toml, so this directory is a plugin:
#   ./build.sh && everruns plugin install .
set -euo pipefail
cd "$(dirname "$0")"
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo build --release --target wasm32-wasip2
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/{{id_snake}}.wasm" .
echo "built {{id_snake}}.wasm ($(wc -c < {{id_snake}}.wasm) bytes)"
