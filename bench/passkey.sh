#!/usr/bin/env bash
# The cost of a sign-in with a passkey (issue 15), on release binaries, server pinned to
# core 0 and the clients to core 1: bench/passkey_latency.py times N username-less passkey
# sign-ins (start and finish) and N password-only sign-ins, first on an idle server, then
# next to first-party refresh rotation at 64 connections (latchkey-loadgen). The issuer is
# http://localhost:PORT: passkeys need a domain name.
# Usage: bench/passkey.sh [users]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100}
cargo build --release -p latchkey -p latchkey-testkit --bin latchkey --bin latchkey-loadgen
BIN=$PWD/target/release/latchkey
DIR=$(mktemp -d)
trap 'pkill -f "$DIR" 2>/dev/null || true; rm -rf "$DIR"' EXIT
LATCHKEY_TRUSTED_PROXIES=127.0.0.1 LATCHKEY_REGISTRATION_PER_MINUTE=100000 taskset -c 0 "$BIN" serve \
  --listen 127.0.0.1:18722 --issuer http://localhost:18722 --database-url "sqlite://$DIR/k.db" >"$DIR/serve.log" 2>&1 &
for _ in $(seq 100); do curl -fs http://127.0.0.1:18722/healthz >/dev/null && break; sleep 0.1; done
taskset -c 1 python3 bench/passkey_latency.py http://127.0.0.1:18722 "$N" idle
taskset -c 1 target/release/latchkey-loadgen --url http://127.0.0.1:18722 --workload refresh \
  --connections 64 --seconds 600 >"$DIR/load.txt" 2>&1 &
LOAD=$!
sleep 2
taskset -c 1 python3 bench/passkey_latency.py http://127.0.0.1:18722 "$N" loaded
kill $LOAD 2>/dev/null || true
wait $LOAD 2>/dev/null || true
