#!/usr/bin/env bash
# Fuzzes every operation of the running API from its own OpenAPI document with schemathesis
# (valid and invalid inputs, bounded examples) and fails on any 5xx or response that breaks the
# documented contract. Once per store: for each it starts its own server on a free port (with
# the built-in plugins) on a fresh SQLite data directory, then on a fresh PostgreSQL database
# on the server at EVERRUNS_TEST_DATABASE_URL (created and dropped here; ./test starts a local
# one), seeded with the rows that the operations on one id are pointed at.
#   EVERRUNS_FUZZ_STORES="sqlite postgres"   the stores to fuzz (default both)
#   EVERRUNS_FUZZ_EXAMPLES=40                examples per operation
set -euo pipefail
cd "$(dirname "$0")/../.."

examples="${EVERRUNS_FUZZ_EXAMPLES:-40}"
stores="${EVERRUNS_FUZZ_STORES:-sqlite postgres}"
test_db_url="${EVERRUNS_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
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

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Fuzzes one store, $1 (`sqlite` or `postgres`); run in a subshell of its own, whose exit
# stops its server and drops its database.
fuzz() {
  local store="$1"
  local data_dir="$work/$store"
  mkdir -p "$data_dir"
  server=""
  database=""
  cleanup() {
    if [ -n "$server" ]; then
      kill "$server" 2>/dev/null || true
      wait "$server" 2>/dev/null || true
    fi
    if [ -n "$database" ]; then
      psql "$test_db_url" -qc "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)" >/dev/null 2>&1 || true
    fi
  }
  trap cleanup EXIT
  local database_url=""
  # The fuzzer's burst is no client's: rate limits off (their 429s are documented, but would
  # cut the fuzzing short).
  local -a settings=(EVERRUNS_BOOTSTRAP_API_KEY="$key" EVERRUNS_RATE_LIMIT_PER_KEY=0 EVERRUNS_RUN_START_LIMIT_PER_KEY=0)
  if [ "$store" = postgres ]; then
    psql "$test_db_url" -Atqc 'select 1' >/dev/null 2>&1 || {
      echo "FAIL: no PostgreSQL answers at $test_db_url (./test starts a local one; or set EVERRUNS_FUZZ_STORES=sqlite)"
      return 1
    }
    database="everruns_fuzz_$(python3 -c 'import secrets; print(secrets.token_hex(6))')"
    psql "$test_db_url" -qc "CREATE DATABASE \"$database\"" >/dev/null
    database_url="$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$test_db_url" "$database")"
    # On PostgreSQL nothing is sealed without a configured master key (providers, secrets).
    local secret_key
    secret_key="$("$bin" secrets generate-key --id fuzz 2>/dev/null)"
    settings+=(EVERRUNS_SECRET_KEY="$secret_key")
  fi
  local port
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  local log="$data_dir/server.log"
  # The built-in plugins are on so `/v1/capabilities/{id}` has one to find (`current_time`).
  env "${settings[@]}" DATABASE_URL="$database_url" "$bin" serve --listen "127.0.0.1:$port" --data-dir "$data_dir" >"$log" 2>&1 &
  server=$!

  local healthy=false
  for _ in $(seq 1 1200); do
    curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && { healthy=true; break; }
    kill -0 "$server" 2>/dev/null || { cat "$log"; echo "FAIL ($store): server exited"; return 1; }
    sleep 0.1
  done
  $healthy || { cat "$log"; echo "FAIL ($store): server not healthy after 120 s"; return 1; }

  # Existing rows for the operations on one id, so they are fuzzed past their 404 too (bodies,
  # queries and headers against a real row). DELETE keeps random ids where it would remove the
  # row the others use; `/v1/api-keys/{id}` has only DELETE, so it gets a key of its own.
  local base="http://127.0.0.1:$port"
  api() { curl -fsS -H "Authorization: Bearer $key" -H 'content-type: application/json' "$@"; }
  id_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
  local agent session run provider doomed_key
  agent="$(api "$base/v1/agents" -d '{"name":"fuzz-seed","system_prompt":"x"}' | id_of)"
  session="$(api "$base/v1/sessions" -d "{\"agent_id\":\"$agent\"}" | id_of)"
  # No LLM is configured, so this run fails at once; it still exists for the run operations,
  # and its events for the session's event log.
  run="$(api "$base/v1/sessions/$session/messages" -d '{"content":"seed"}' | id_of)"
  # Port 9 (discard) refuses connections: the provider's connection test fails at once.
  provider="$(api "$base/v1/providers" -d '{"name":"fuzz-seed","kind":"openai","base_url":"http://127.0.0.1:9/v1","api_key":"sk-fuzz","default_model":"m","models":["m"]}' | id_of)"
  doomed_key="$(api "$base/v1/api-keys" -d '{"name":"fuzz-seed"}' | id_of)"
  api "$base/v1/capabilities/current_time" >/dev/null
  local config="$data_dir/schemathesis.toml"
  cat >"$config" <<TOML
[[operations]]
include-path-regex = '^/v1/agents/\{id\}$'
exclude-method = "DELETE"
parameters = { id = "$agent" }

[[operations]]
include-path-regex = '^/v1/sessions/\{id\}(/messages|/runs|/events)?$'
exclude-method = "DELETE"
parameters = { id = "$session" }

[[operations]]
include-path-regex = '^/v1/runs/\{id\}(/cancel)?$'
parameters = { id = "$run" }

[[operations]]
include-path-regex = '^/v1/providers/\{id\}(/test)?$'
exclude-method = "DELETE"
parameters = { id = "$provider" }

[[operations]]
include-path-regex = '^/v1/api-keys/\{id\}$'
parameters = { id = "$doomed_key" }

[[operations]]
include-path-regex = '^/v1/capabilities/\{id\}$'
parameters = { id = "current_time" }
TOML

  local status=0
  # One worker: in CPython 3.11.7 (the machines' python3) the ast module's recursion-depth
  # bookkeeping breaks when two threads parse at once, so hypothesis describing lambdas in two
  # worker threads can fail with "SystemError: AST constructor recursion depth mismatch"
  # (CPython gh-106905), a Runtime Error that is not the API's fault. It failed CI once that way.
  "$venv/bin/schemathesis" --config-file "$config" run "$base/api-doc/openapi.json" \
    --header "Authorization: Bearer $key" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection,unsupported_method \
    --max-examples "$examples" \
    --seed 1 \
    --workers 1 \
    --no-color || status=$?

  cleanup
  server=""
  database=""
  if grep -q "panicked" "$log"; then
    echo "FAIL ($store): the server panicked during fuzzing:"; grep -A5 panicked "$log"; return 1
  fi
  if [ "$status" -ne 0 ]; then
    echo "FAIL ($store): schemathesis found contract violations (exit $status); server log tail:"
    tail -n 40 "$log"
    return "$status"
  fi
  echo "fuzzing ($store): no server errors, every response matched the document"
}

key="evr_fuzz_$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
failed=()
for store in $stores; do
  case "$store" in
    sqlite | postgres) ;;
    *) echo "EVERRUNS_FUZZ_STORES: unknown store \`$store\` (sqlite, postgres)" >&2; exit 2 ;;
  esac
  printf '\n--- fuzzing on %s (%s)\n' "$store" "$(date +%H:%M:%S)"
  # A subshell with errexit of its own (a function called after `||` would run without it).
  set +e
  (set -e; fuzz "$store")
  status=$?
  set -e
  [ "$status" -eq 0 ] || failed+=("$store")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAIL: fuzzing found problems on: ${failed[*]}"
  exit 1
fi
echo "fuzzing: no server errors on $stores, every response matched the document"
