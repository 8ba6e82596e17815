#!/usr/bin/env bash
# Refresh rotations on PostgreSQL, one node and two nodes, against SQLite (issue: PostgreSQL
# and several nodes). Builds release binaries; each run gets a fresh database; Latchkey
# nodes run on core 0, the load generators on core 1, PostgreSQL wherever the OS puts it
# (this is a 2-core machine: two nodes share core 0, so the two-node figure shows the cost
# of coordination, not a scale-out). Each client rotates its own chain; every rotation is
# committed before its answer. Prints one line per run, also to bench/results-refresh-pg.txt.
# Usage: bench/refresh-pg.sh [seconds-per-run] [connections]   (needs PostgreSQL on 127.0.0.1:5432)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
CONNS=${2:-16}
HALF=$((CONNS / 2))
cargo build --release -p latchkey -p latchkey-testkit --bin latchkey --bin latchkey-loadgen
DIR=$(mktemp -d)
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
PSQL=(psql -h 127.0.0.1 -U postgres -qtA -d postgres)
OUT=bench/results-refresh-pg.txt
: >"$OUT"
node() { # port database-url
  taskset -c 0 target/release/latchkey serve --listen "127.0.0.1:$1" --database-url "$2" >"$DIR/node-$1.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$1/healthz" >/dev/null && return; sleep 0.1; done
  echo "node on $1 did not start" >&2; exit 1
}
stop_nodes() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; PIDS=(); }
load() { # label port connections
  taskset -c 1 target/release/latchkey-loadgen --url "http://127.0.0.1:$2" --seconds "$SECS" --connections "$3" | sed "s/^/$1 /"
}
fresh_pg() {
  "${PSQL[@]}" -c "DROP DATABASE IF EXISTS latchkey_bench WITH (FORCE)" -c "CREATE DATABASE latchkey_bench"
  echo "postgres://postgres@127.0.0.1:5432/latchkey_bench"
}

node 18201 "sqlite://$DIR/bench.db"
load "sqlite 1 node" 18201 "$CONNS" | tee -a "$OUT"
stop_nodes

PG=$(fresh_pg)
node 18202 "$PG"
load "postgres 1 node" 18202 "$CONNS" | tee -a "$OUT"
stop_nodes

PG=$(fresh_pg)
node 18203 "$PG"
node 18204 "$PG"
{ load "postgres 2 nodes (A)" 18203 "$HALF" & load "postgres 2 nodes (B)" 18204 "$HALF" & wait; } | tee -a "$OUT"
stop_nodes
awk '/2 nodes/ { for (i = 1; i <= NF; i++) if ($i ~ /^rotations_per_s=/) { split($i, kv, "="); sum += kv[2] } }
     END { printf "postgres 2 nodes total rotations_per_s=%.0f\n", sum }' "$OUT" | tee -a "$OUT"
