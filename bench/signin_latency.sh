#!/usr/bin/env bash
# What bench/mfa.sh and bench/passkey.sh share: release binaries, a fresh SQLite server
# pinned to core 0 on PORT with issuer http://HOST:PORT, and SCRIPT (a *_latency.py on
# core 1) run with N users, first on the idle server, then next to first-party refresh
# rotation at 64 connections (latchkey-loadgen, also on core 1).
# Usage: bench/signin_latency.sh SCRIPT PORT HOST N
set -euo pipefail
cd "$(dirname "$0")/.."
SCRIPT=$1 PORT=$2 HOST=$3 N=$4
cargo build --release -p latchkey -p latchkey-testkit --bin latchkey --bin latchkey-loadgen
BIN=$PWD/target/release/latchkey
DIR=$(mktemp -d)
trap 'pkill -f "$DIR" 2>/dev/null || true; rm -rf "$DIR"' EXIT
LATCHKEY_TRUSTED_PROXIES=127.0.0.1 LATCHKEY_REGISTRATION_PER_MINUTE=100000 taskset -c 0 "$BIN" serve \
  --listen "127.0.0.1:$PORT" --issuer "http://$HOST:$PORT" --database-url "sqlite://$DIR/s.db" >"$DIR/serve.log" 2>&1 &
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
taskset -c 1 python3 "$SCRIPT" "http://127.0.0.1:$PORT" "$N" idle
taskset -c 1 target/release/latchkey-loadgen --url "http://127.0.0.1:$PORT" --workload refresh \
  --connections 64 --seconds 600 >"$DIR/load.txt" 2>&1 &
LOAD=$!
sleep 2
taskset -c 1 python3 "$SCRIPT" "http://127.0.0.1:$PORT" "$N" loaded
kill $LOAD 2>/dev/null || true
wait $LOAD 2>/dev/null || true
