#!/usr/bin/env bash
# Builds the built-in capabilities (this cargo workspace) for wasm32-wasip2 into dist/,
# which is committed and embedded in the `everruns` binary (host/server/src/builtins.rs).
#
#   plugins/build.sh          rebuild dist/
#   plugins/build.sh --check  rebuild into a scratch directory and fail unless every
#                             component is byte-for-byte the committed one (CI runs this)
#
# Reproducible: the compiler is pinned (rust-toolchain.toml), dependencies are locked
# (Cargo.lock, --locked), paths of this checkout and of the cargo home are remapped, and
# the release profile strips symbols and uses one codegen unit.
set -euo pipefail
cd "$(dirname "$0")"
plugins=$(pwd)
repo=$(cd .. && pwd)
ids=(current_time web_fetch session_files todo memory guardrails)

check=false
case "${1:-}" in
  --check) check=true ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

# rust-toolchain.toml selects the pinned compiler here; make sure it has the target.
rustup target add wasm32-wasip2 >/dev/null

# A target directory of its own (beside the host's when CARGO_TARGET_DIR is set, so CI
# keeps it warm); host build flags must not leak in.
target="${CARGO_TARGET_DIR:-$plugins/target}/builtin-plugins"
unset CARGO_TARGET_DIR CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_TARGET
cargo_home="${CARGO_HOME:-$HOME/.cargo}"

# Cargo hashes the absolute path of a path dependency outside the workspace (../sdk/rust)
# into symbol names, which changes code layout: the same sources built in two checkouts
# differ. So build from a copy at one fixed path (serialised by a lock).
src=/tmp/everruns-builtin-plugins-src
mkdir -p "$src"
exec 9>"$src.lock"
flock 9
rm -rf "$src/plugins" "$src/sdk" "$src/wit"
mkdir -p "$src/sdk"
tar -C "$repo" --exclude=target -cf - plugins wit | tar -C "$src" -xf -
tar -C "$repo/sdk" --exclude=target -cf - rust | tar -C "$src/sdk" -xf -
export RUSTFLAGS="--remap-path-prefix=$src=/everruns --remap-path-prefix=$cargo_home=/cargo"

(cd "$src/plugins" && cargo build --locked --release --target wasm32-wasip2 --target-dir "$target")

if ! $check; then
  mkdir -p dist
  for id in "${ids[@]}"; do
    cp "$target/wasm32-wasip2/release/$id.wasm" "dist/$id.wasm"
    echo "dist/$id.wasm $(wc -c < "dist/$id.wasm") bytes sha256:$(sha256sum "dist/$id.wasm" | cut -c1-64)"
  done
  rustc --version > dist/RUSTC_VERSION
  exit 0
fi

status=0
if [ "$(rustc --version)" != "$(cat dist/RUSTC_VERSION)" ]; then
  echo "note: dist/ was built with $(cat dist/RUSTC_VERSION), this is $(rustc --version)" >&2
fi
for id in "${ids[@]}"; do
  built="$target/wasm32-wasip2/release/$id.wasm"
  if cmp -s "$built" "dist/$id.wasm"; then
    echo "ok: dist/$id.wasm matches its source"
  else
    echo "MISMATCH: dist/$id.wasm ($(sha256sum "dist/$id.wasm" | cut -c1-16)) differs from a fresh build ($(sha256sum "$built" | cut -c1-16)); run plugins/build.sh and commit dist/" >&2
    status=1
  fi
done
exit $status
