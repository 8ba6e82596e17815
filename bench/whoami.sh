#!/usr/bin/env bash
# notes-api `GET /whoami` (token verified locally, revocations checked in memory) against a
# hello-world axum route, with wrk on loopback (issue: resource servers; target >= 50%).
# Builds release binaries, starts Latchkey (fresh SQLite file), registers a user and a feed
# client, starts notes-api and the hello example on core 0, drives each from core 1 with
# wrk, and prints req/s, latencies and the ratio. Needs wrk (`apt-get install wrk`).
# Usage: bench/whoami.sh [seconds-per-run] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
CONNS=${2:-64}
LK=18100 NOTES=18101 HELLO=18102
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release -p latchkey --bin latchkey -p notes-api --bin notes-api --example hello
DIR=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$DIR"' EXIT
DB="sqlite://$DIR/bench.db"
taskset -c 0 target/release/latchkey serve --listen "127.0.0.1:$LK" --issuer "http://127.0.0.1:$LK" \
  --database-url "$DB" >"$DIR/latchkey.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$LK/healthz" >/dev/null && break; sleep 0.1; done
json() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
curl -fs -H 'content-type: application/json' -d '{"username":"bench","password":"correct horse battery"}' \
  "http://127.0.0.1:$LK/auth/register" >/dev/null
AT=$(curl -fs -H 'content-type: application/json' -d '{"username":"bench","password":"correct horse battery"}' \
  "http://127.0.0.1:$LK/auth/login" | json access_token)
CLIENT=$(target/release/latchkey --database-url "$DB" client add --name notes-api \
  --grant-types client_credentials --scopes revocations:read)
NOTES_API_FEED_CLIENT_ID=$(echo "$CLIENT" | json client_id) \
NOTES_API_FEED_CLIENT_SECRET=$(echo "$CLIENT" | json client_secret) \
  taskset -c 0 target/release/notes-api --issuer "http://127.0.0.1:$LK" --listen "127.0.0.1:$NOTES" \
  >"$DIR/notes.log" 2>&1 &
PIDS+=($!)
taskset -c 0 target/release/examples/hello "127.0.0.1:$HELLO" >"$DIR/hello.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  curl -fs -H "authorization: Bearer $AT" "http://127.0.0.1:$NOTES/whoami" >/dev/null && break; sleep 0.1
done
curl -fs -H "authorization: Bearer $AT" "http://127.0.0.1:$NOTES/whoami" >/dev/null
curl -fs "http://127.0.0.1:$HELLO/hello" >/dev/null
OUT=bench/results-whoami.txt
: >"$OUT"
rate() { awk '/Requests\/sec/ {print $2}'; }
run() {
  local name=$1; shift
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "$@" >"$DIR/$name.txt"
  local rps; rps=$(rate <"$DIR/$name.txt")
  local p50 p99
  p50=$(awk '$1=="50%" {print $2}' "$DIR/$name.txt"); p99=$(awk '$1=="99%" {print $2}' "$DIR/$name.txt")
  echo "$name: $rps req/s, p50 $p50, p99 $p99 ($CONNS connections, ${SECS}s)" | tee -a "$OUT"
  grep -E "Non-2xx|Socket errors" "$DIR/$name.txt" | tee -a "$OUT" || true
  echo "$rps" >"$DIR/$name.rps"
}
run hello "http://127.0.0.1:$HELLO/hello"
run whoami -H "authorization: Bearer $AT" "http://127.0.0.1:$NOTES/whoami"
python3 -c "print(f'whoami / hello = {float(open(\"$DIR/whoami.rps\").read()) / float(open(\"$DIR/hello.rps\").read()):.2f}')" \
  | tee -a "$OUT"
