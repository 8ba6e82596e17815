#!/usr/bin/env bash
# Latchkey side by side with oidc-provider (the OpenID-certified Node.js provider), on this
# machine, in one run (issue: performance and reliability). Builds release binaries, installs
# oidc-provider into a temporary folder (bench/peer/), starts Latchkey on a fresh SQLite file
# and the peer, each pinned to core 0, and drives the same workloads at both with the same
# load tool (latchkey-loadgen) pinned to core 1:
#   oauth-refresh       grant_type=refresh_token, each client rotating its own chain
#   client-credentials  grant_type=client_credentials
#   introspect          RFC 7662 introspection of a refresh token
#   introspect-access   RFC 7662 introspection of an access token (what APIs send)
#   jwks                GET jwks_uri
#   oauth-refresh, DPoP the same rotation with a DPoP proof on every request
# and client-credentials once more at a floor: axum answering one signed JWT, nothing else.
# Then Latchkey-only figures: first-party POST /auth/refresh (and under a login flood),
# refresh rotation on PostgreSQL against pgbench's raw rotate transaction on the same
# database (when PostgreSQL answers on 127.0.0.1:5432), notes-api GET /whoami against a
# hello-world axum route, and the latchkey-verify criterion benchmarks (unless --quick).
# Prints one table (req/s, p50, p99, errors, ratio Latchkey / peer) and writes it to
# bench/results-compare.md.
# With --rounds N, the side-by-side workloads run N times, Latchkey and the peer alternating,
# and the table shows each one's median run (and the range): on a shared machine one run of
# one binary varies by up to a third, and alternating rounds keep both servers in the same
# weather.
# Usage: bench/compare.sh [--quick] [--rounds N] [seconds-per-run] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0 ROUNDS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; shift ;;
    --rounds) ROUNDS=${2:-}; shift $(($# > 1 ? 2 : 1)) ;;
    *) break ;;
  esac
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "--rounds needs a count of at least 1" >&2; exit 2; }
SECS=${1:-10}
CONNS=${2:-64}
LK=18301 PEER=18302 NOTES=18303 HELLO=18304 LKPG=18305
command -v node >/dev/null || { echo "node and npm are needed for the peer" >&2; exit 1; }

cargo build --release -p latchkey -p latchkey-testkit -p notes-api \
  --bin latchkey --bin latchkey-loadgen --bin notes-api --example hello
DIR=$(mktemp -d)
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT

echo "== installing oidc-provider into $DIR/peer"
mkdir -p "$DIR/peer"
cp bench/peer/package.json bench/peer/server.mjs "$DIR/peer/"
(cd "$DIR/peer" && npm install --silent --no-audit --no-fund >/dev/null)
PEER_VERSION=$(node -p "require('$DIR/peer/node_modules/oidc-provider/package.json').version")

wait_for() { for _ in $(seq 200); do curl -fs "$1" >/dev/null && return; sleep 0.1; done; echo "$1 did not answer" >&2; exit 1; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
LKBIN=target/release/latchkey
DB="sqlite://$DIR/bench.db"
CLIENT=$($LKBIN --database-url "$DB" client add --name bench --redirect-uri http://127.0.0.1/cb \
  --grant-types authorization_code,refresh_token,client_credentials --scopes "openid offline_access api")
CID=$(echo "$CLIENT" | json client_id)
CSECRET=$(echo "$CLIENT" | json client_secret)
taskset -c 0 $LKBIN serve --listen "127.0.0.1:$LK" --issuer "http://127.0.0.1:$LK" --database-url "$DB" \
  >"$DIR/latchkey.log" 2>&1 &
PIDS+=($!)
LKPID=$!
(cd "$DIR/peer" && exec taskset -c 0 node server.mjs --port "$PEER" --issuer "http://127.0.0.1:$PEER") \
  >"$DIR/peer.log" 2>&1 &
PIDS+=($!)
PEERPID=$!
# The baselines: a hello-world route and the floor of a token endpoint (examples/hello.rs).
taskset -c 0 target/release/examples/hello "127.0.0.1:$HELLO" >"$DIR/hello.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$LK/healthz"
wait_for "http://127.0.0.1:$HELLO/hello"
wait_for "http://127.0.0.1:$PEER/.well-known/openid-configuration"

RESULTS="$DIR/results.tsv" # name \t server \t req/s \t p50 \t p99 \t errors
field() { tr ' ' '\n' | awk -F= -v k="$1" '$1==k {print $2}'; }
record() { # name server loadgen-line
  local line=$3
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$(echo "$line" | field requests_per_s)" \
    "$(echo "$line" | field p50_ms)" "$(echo "$line" | field p99_ms)" "$(echo "$line" | field errors)" >>"$RESULTS"
  echo "$1 / $2: $line"
}
load() { taskset -c 1 target/release/latchkey-loadgen --seconds "$SECS" --connections "$CONNS" "$@"; }
lk() { load --url "http://127.0.0.1:$LK" --client-id "$CID" --client-secret "$CSECRET" --seed latchkey "$@"; }
peer() { load --url "http://127.0.0.1:$PEER" --client-id bench-client --client-secret bench-secret --seed peer "$@"; }

for _ in $(seq "$ROUNDS"); do
  for w in oauth-refresh client-credentials introspect introspect-access jwks; do
    record "$w" latchkey "$(lk --workload "$w")"
    # The peer does not introspect JWT access tokens: it introspects its opaque ones.
    PEER_EXTRA=()
    [ "$w" = introspect-access ] && PEER_EXTRA=(--resource https://api-opaque.example)
    record "$w" oidc-provider "$(peer --workload "$w" "${PEER_EXTRA[@]}")"
    # The floor of a token endpoint on this machine: the same axum and the same load, one
    # Ed25519 JWT signed per request and nothing else (examples/hello.rs, `POST /token`).
    if [ "$w" = client-credentials ]; then
      record "$w" "axum floor" \
        "$(load --url "http://127.0.0.1:$HELLO" --client-id floor --client-secret floor --workload "$w")"
    fi
  done
  # DPoP (SPEC 12): the same OAuth rotation with a fresh ES256 proof on every request, at
  # both (the peer's DPoP feature is on; neither asks for nonces).
  record "oauth-refresh, DPoP" latchkey "$(lk --workload oauth-refresh --dpop)"
  record "oauth-refresh, DPoP" oidc-provider "$(peer --workload oauth-refresh --dpop)"
done
record "first-party refresh" latchkey "$(load --url "http://127.0.0.1:$LK" --workload refresh)"
IDLE_P99=$(tail -n1 "$RESULTS" | cut -f5)
record "first-party refresh, DPoP-bound sessions" latchkey "$(load --url "http://127.0.0.1:$LK" --workload refresh --dpop)"
FLOOD=$(load --url "http://127.0.0.1:$LK" --workload refresh --login-flood 8)
record "first-party refresh + 8-way login flood" latchkey "$FLOOD"
LOGINS=$(echo "$FLOOD" | field logins_per_s)
LK_RSS=$(ps -o rss= -p "$LKPID" | tr -d ' ')
PEER_RSS=$(ps -o rss= -p "$PEERPID" | tr -d ' ')

# The argon2 limit of the machine: the password hashes per second the server's own hasher
# reaches on both cores (hashing runs at nice 10 on its own threads).
HASHES=$(target/release/latchkey-loadgen --url "http://127.0.0.1:$LK" --workload refresh --connections 1 \
  --seconds "$SECS" --login-flood 16 | field logins_per_s)

PG_LINE="" PGBENCH_TPS=""
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  PSQL=(psql -h 127.0.0.1 -U postgres -qtA -v ON_ERROR_STOP=1)
  "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS latchkey_bench WITH (FORCE)" -c "CREATE DATABASE latchkey_bench"
  PGURL="postgres://postgres@127.0.0.1:5432/latchkey_bench"
  taskset -c 0 $LKBIN serve --listen "127.0.0.1:$LKPG" --issuer "http://127.0.0.1:$LKPG" --database-url "$PGURL" \
    >"$DIR/latchkey-pg.log" 2>&1 &
  PIDS+=($!)
  wait_for "http://127.0.0.1:$LKPG/healthz"
  PG_LINE=$(load --url "http://127.0.0.1:$LKPG" --workload refresh)
  record "first-party refresh, PostgreSQL" latchkey "$PG_LINE"
  # The database's own limit: one rotation's statements (lock the session, retire the
  # token, insert its successor, slide the session) as one transaction, from pgbench.
  "${PSQL[@]}" -d latchkey_bench -f bench/pgbench-rotate-setup.sql >/dev/null
  PGBENCH_TPS=$(taskset -c 1 pgbench -h 127.0.0.1 -U postgres -n -c "$CONNS" -j 1 -T "$SECS" \
    -f bench/pgbench-rotate.sql latchkey_bench 2>/dev/null | awk '/^tps/ {print int($3)}')
  printf '%s\t%s\t%s\t\t\t\n' "raw rotate transaction, pgbench" postgresql "$PGBENCH_TPS" >>"$RESULTS"
fi

# notes-api GET /whoami (token verified locally) against a hello-world axum route.
curl -fs -H 'content-type: application/json' -d '{"username":"whoami","password":"correct horse battery"}' \
  "http://127.0.0.1:$LK/auth/register" >/dev/null
AT=$(curl -fs -H 'content-type: application/json' -d '{"username":"whoami","password":"correct horse battery"}' \
  "http://127.0.0.1:$LK/auth/login" | json access_token)
FEED=$($LKBIN --database-url "$DB" client add --name notes-api --grant-types client_credentials --scopes revocations:read)
NOTES_API_FEED_CLIENT_ID=$(echo "$FEED" | json client_id) NOTES_API_FEED_CLIENT_SECRET=$(echo "$FEED" | json client_secret) \
  taskset -c 0 target/release/notes-api --issuer "http://127.0.0.1:$LK" --listen "127.0.0.1:$NOTES" >"$DIR/notes.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -fs -H "authorization: Bearer $AT" "http://127.0.0.1:$NOTES/whoami" >/dev/null && break; sleep 0.1; done
record "notes-api GET /whoami" latchkey "$(load --url "http://127.0.0.1:$NOTES" --workload get --path /whoami --bearer "$AT")"
record "notes-api GET /whoami, DPoP" latchkey \
  "$(load --url "http://127.0.0.1:$NOTES" --workload get --path /whoami --dpop --sign-in "http://127.0.0.1:$LK")"
record "hello-world axum GET /hello" axum "$(load --url "http://127.0.0.1:$HELLO" --workload get --path /hello)"

VERIFY=""
if [ "$QUICK" = 0 ]; then
  cargo bench -p latchkey-verify --bench verify -- --noplot >"$DIR/verify.txt" 2>&1 || true
  VERIFY=$(python3 -c "
import re, sys
name = ''
for line in open(sys.argv[1], errors='replace'):
    line = line.split(chr(13))[-1].rstrip()
    m = re.match(r'^(\\S.*?)\\s+time:\\s+(\\[.*\\])', line)
    if m: print('    ' + m.group(1) + ': ' + m.group(2)); continue
    m = re.match(r'^\\s+time:\\s+(\\[.*\\])', line)
    if m: print('    ' + name + ': ' + m.group(1)); continue
    if line and not line.startswith(' ') and not line.startswith('Benchmarking'): name = line.strip()
" "$DIR/verify.txt" || true)
fi

OUT=bench/results-compare.md
python3 - "$RESULTS" "$PEER_VERSION" "$SECS" "$CONNS" "$IDLE_P99" "$LOGINS" "$HASHES" "$LK_RSS" "$PEER_RSS" \
  "${PGBENCH_TPS:-}" >"$OUT" <<'PY'
import sys
path, peer_version, secs, conns, idle_p99, logins, hashes, lk_rss, peer_rss, pgbench = sys.argv[1:]
def num(x):
    try: return float(x)
    except ValueError: return None
# One row per workload and server: the median run by req/s when there were several rounds.
runs = {}
for line in open(path):
    r = (line.rstrip("\n").split("\t") + [""] * 6)[:6]
    runs.setdefault((r[0], r[1]), []).append(r)
rows, spread = [], {}
for key, rs in runs.items():
    rs = sorted(rs, key=lambda r: num(r[2]) or 0)
    rows.append(rs[(len(rs) - 1) // 2])
    if len(rs) > 1:
        spread[key] = f" ({len(rs)} runs: {rs[0][2]}-{rs[-1][2]})"
by = {(r[0], r[1]): r for r in rows}
print(f"Latchkey vs oidc-provider {peer_version} ({conns} connections, {secs} s per run; servers on core 0, load on core 1)\n")
print("| workload | server | req/s | p50 ms | p99 ms | errors | Latchkey / peer |")
print("|---|---|---:|---:|---:|---:|---:|")
for r in rows:
    name, server, rps, p50, p99, errors = (r + [""] * 6)[:6]
    ratio = ""
    if server in ("latchkey", "axum floor") and (name, "oidc-provider") in by:
        peer = num(by[(name, "oidc-provider")][2])
        if peer and num(rps):
            ratio = f"{num(rps) / peer:.1f}x"
    if name == "first-party refresh, PostgreSQL" and num(pgbench):
        ratio = f"{num(rps) / num(pgbench):.2f}x of pgbench"
    if name == "notes-api GET /whoami, DPoP" and ("notes-api GET /whoami", "latchkey") in by:
        bearer = num(by[("notes-api GET /whoami", "latchkey")][2])
        if bearer and num(rps):
            ratio = f"{num(rps) / bearer:.2f}x of Bearer"
    if name == "notes-api GET /whoami" and ("hello-world axum GET /hello", "axum") in by:
        hello = num(by[("hello-world axum GET /hello", "axum")][2])
        if hello and num(rps):
            ratio = f"{num(rps) / hello:.2f}x of hello"
    print(f"| {name} | {server} | {rps}{spread.get((name, server), '')} | {p50} | {p99} | {errors} | {ratio} |")
print()
flood = by.get(("first-party refresh + 8-way login flood", "latchkey"))
if flood and num(idle_p99):
    print(f"- Login flood: {float(logins):.1f} logins/s while refreshing; p99 {flood[4]} ms vs {idle_p99} ms idle "
          f"({num(flood[4]) / num(idle_p99):.1f}x). Argon2 limit (16-way login flood, 1 refresh client): "
          f"{float(hashes):.1f} logins/s, so the flood ran at {100 * float(logins) / max(float(hashes), 0.001):.0f}% of it.")
floor = by.get(("client-credentials", "axum floor"))
lk_cc = by.get(("client-credentials", "latchkey"))
if floor and lk_cc and num(floor[2]) and num(lk_cc[2]):
    print(f"- client_credentials: Latchkey serves {100 * num(lk_cc[2]) / num(floor[2]):.0f}% of the floor "
          "(axum answering one signed JWT per request, nothing else).")
print(f"- Resident memory after the runs: Latchkey {int(lk_rss) // 1024} MiB, oidc-provider {int(peer_rss) // 1024} MiB.")
PY
if [ -n "$VERIFY" ]; then printf '\nlatchkey-verify (criterion):\n%s\n' "$VERIFY" >>"$OUT"; fi
echo
cat "$OUT"
