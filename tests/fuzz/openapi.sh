#!/usr/bin/env bash
# Fuzzes every operation of the running API from its own OpenAPI document with schemathesis
# (valid and invalid inputs, bounded examples) and fails on any 5xx or response that breaks the
# documented contract. Starts its own server on a free port with a fresh SQLite data directory,
# seeded with an agent, a session and a run that the operations on one id are pointed at.
set -euo pipefail
cd "$(dirname "$0")/../.."

examples="${EVERRUNS_FUZZ_EXAMPLES:-40}"
requirements="tests/fuzz/requirements.txt"
if [ -n "${EVERRUNS_FUZZ_VENV:-}" ]; then
  # A venv of the caller's: used as it is, never removed.
  venv="$EVERRUNS_FUZZ_VENV"
else
  # One venv per version of the pinned requirements: editing the pins installs a fresh one.
  pins="$(python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest()[:12])' "$requirements")"
  venv="$HOME/.cache/everruns/fuzz-venv-$pins"
  if [ ! -x "$venv/bin/schemathesis" ]; then
    rm -rf "$venv"
  fi
fi
if [ ! -x "$venv/bin/schemathesis" ]; then
  echo "installing schemathesis ($requirements) into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
fi

target_dir="${CARGO_TARGET_DIR:-target}"
cargo build --locked -p everruns --bin everruns
bin="$target_dir/debug/everruns"

data_dir="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
key="evr_fuzz_$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
log="$data_dir/server.log"
# Built-ins off: their first compile (debug build) only delays start-up; the fuzzer needs none.
EVERRUNS_BUILTIN_PLUGINS=false EVERRUNS_BOOTSTRAP_API_KEY="$key" DATABASE_URL= "$bin" serve --listen "127.0.0.1:$port" --data-dir "$data_dir" >"$log" 2>&1 &
server=$!
cleanup() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data_dir"; }
trap cleanup EXIT

healthy=false
for _ in $(seq 1 600); do
  curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && { healthy=true; break; }
  kill -0 "$server" 2>/dev/null || { cat "$log"; echo "FAIL: server exited"; exit 1; }
  sleep 0.1
done
$healthy || { cat "$log"; echo "FAIL: server not healthy after 60 s"; exit 1; }

# Existing resources for the operations on one agent, session or run, so they are fuzzed past
# their 404 too (bodies, queries and headers against a real row). DELETE keeps random ids: it
# would remove the row the others use.
api() { curl -fsS -H "Authorization: Bearer $key" -H 'content-type: application/json' "$@"; }
id_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
base="http://127.0.0.1:$port"
agent="$(api "$base/v1/agents" -d '{"name":"fuzz-seed","system_prompt":"x"}' | id_of)"
session="$(api "$base/v1/sessions" -d "{\"agent_id\":\"$agent\"}" | id_of)"
# No LLM is configured, so this run fails at once; it still exists for the run operations.
run="$(api "$base/v1/sessions/$session/messages" -d '{"content":"seed"}' | id_of)"
config="$data_dir/schemathesis.toml"
cat >"$config" <<TOML
[[operations]]
include-path-regex = '^/v1/agents/\{id\}$'
exclude-method = "DELETE"
parameters = { id = "$agent" }

[[operations]]
include-path-regex = '^/v1/sessions/\{id\}(/messages|/runs)?$'
exclude-method = "DELETE"
parameters = { id = "$session" }

[[operations]]
include-path-regex = '^/v1/runs/\{id\}(/cancel)?$'
parameters = { id = "$run" }
TOML

status=0
# One worker: in CPython 3.11.7 (the machines' python3) the ast module's recursion-depth
# bookkeeping breaks when two threads parse at once, so hypothesis describing lambdas in two
# worker threads can fail with "SystemError: AST constructor recursion depth mismatch" (CPython
# gh-106905), a Runtime Error that is not the API's fault. It failed CI once that way.
"$venv/bin/schemathesis" --config-file "$config" run "http://127.0.0.1:$port/api-doc/openapi.json" \
  --header "Authorization: Bearer $key" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection,unsupported_method \
  --max-examples "$examples" \
  --seed 1 \
  --workers 1 \
  --no-color || status=$?

if grep -q "panicked" "$log"; then
  echo "FAIL: the server panicked during fuzzing:"; grep -A5 panicked "$log"; exit 1
fi
if [ "$status" -ne 0 ]; then
  echo "FAIL: schemathesis found contract violations (exit $status); server log tail:"
  tail -n 40 "$log"
  exit "$status"
fi
echo "fuzzing: no server errors, every response matched the document"
