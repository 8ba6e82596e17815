#!/usr/bin/env bash
# Refresh-rotation load benchmark (issue: core). Builds release binaries, starts the server
# on core 0 with a fresh SQLite file, drives POST /auth/refresh from core 1 with each client
# rotating its own chain, at 16 and 64 connections, then at 16 connections under a login
# flood. Prints one line per run and writes them to bench/results-refresh.txt.
# Usage: bench/refresh.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
PORT=${PORT:-18099}
cargo build --release -p latchkey -p latchkey-testkit --bin latchkey --bin latchkey-loadgen
DIR=$(mktemp -d)
trap 'kill "$SERVER" 2>/dev/null || true; rm -rf "$DIR"' EXIT
taskset -c 0 target/release/latchkey serve --listen "127.0.0.1:$PORT" --database-url "sqlite://$DIR/bench.db" \
  >"$DIR/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
OUT=bench/results-refresh.txt
: >"$OUT"
run() { taskset -c 1 target/release/latchkey-loadgen --url "http://127.0.0.1:$PORT" --seconds "$SECS" "$@" | tee -a "$OUT"; }
run --connections 16
run --connections 64
run --connections 16 --login-flood 8
echo "server RSS: $(ps -o rss= -p "$SERVER") KiB" | tee -a "$OUT"
