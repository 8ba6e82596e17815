#!/usr/bin/env bash
# Manual run of the openid-client interop tests: starts three throwaway Latchkey servers (the
# main one with LATCHKEY_DYNAMIC_REGISTRATION=open, one with LATCHKEY_DPOP_NONCE=true and
# registration closed as by default, one with LATCHKEY_DYNAMIC_REGISTRATION=token) on free
# loopback ports with SQLite databases in a temporary directory, creates the user and the
# clients through the CLI, runs `node --test` here with the environment interop.test.mjs,
# logout.test.mjs, device.test.mjs, par.test.mjs, registration.test.mjs and
# private-key-jwt.test.mjs document (logout, device, par and private-key-jwt register their
# own clients with the CLI, registration over HTTP), and stops the servers.
#
#   ./run-local.sh                 # uses ../../target/debug/latchkey
#   LATCHKEY_BIN=/path/latchkey ./run-local.sh [extra node --test arguments]
#
# The binary is copied first, so a concurrent `cargo build` cannot swap it mid-run.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bin=${LATCHKEY_BIN:-$here/../../target/debug/latchkey}
[ -x "$bin" ] || { echo "no latchkey binary at $bin (build it, or set LATCHKEY_BIN)" >&2; exit 1; }
[ -d "$here/node_modules/openid-client" ] || (cd "$here" && npm install --no-audit --no-fund)

work=$(mktemp -d "${TMPDIR:-/tmp}/latchkey-interop-node.XXXXXX")
cp "$bin" "$work/latchkey"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${KEEP:-}" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

free_port() { node -e 's=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

export LATCHKEY_USERNAME=alice
export LATCHKEY_PASSWORD='correct horse battery'
redirect=${REDIRECT_URI:-http://127.0.0.1:9/cb}

# start NAME [ENV=VALUE...]: starts a server, creates the user and two clients, and sets
# ${NAME}_URL, ${NAME}_DB (its database URL), ${NAME}_PUBLIC, ${NAME}_CONF (JSON from
# `client add`).
start() {
  local name=$1; shift
  local port db
  port=$(free_port)
  db="sqlite://$work/$name.db"
  env "$@" LATCHKEY_ISSUER="http://127.0.0.1:$port" LATCHKEY_LISTEN="127.0.0.1:$port" \
    "$work/latchkey" --database-url "$db" serve >"$work/$name.log" 2>&1 &
  pids+=($!)
  local url="http://127.0.0.1:$port"
  for _ in $(seq 100); do
    node -e 'fetch(process.argv[1]+"/.well-known/openid-configuration").then(r=>process.exit(r.ok?0:1),()=>process.exit(1))' "$url" && break
    sleep 0.1
  done
  node -e 'fetch(process.argv[1]+"/.well-known/openid-configuration").then(r=>process.exit(r.ok?0:1),()=>process.exit(1))' "$url" \
    || { echo "server $name did not start:" >&2; cat "$work/$name.log" >&2; exit 1; }
  printf '%s\n' "$LATCHKEY_PASSWORD" | "$work/latchkey" --database-url "$db" user add "$LATCHKEY_USERNAME" --password-stdin >/dev/null
  printf -v "${name}_URL" '%s' "$url"
  printf -v "${name}_DB" '%s' "$db"
  printf -v "${name}_PUBLIC" '%s' "$("$work/latchkey" --database-url "$db" client add --name "interop public" --redirect-uri "$redirect" --public)"
  printf -v "${name}_CONF" '%s' "$("$work/latchkey" --database-url "$db" client add --name "interop confidential" --redirect-uri "$redirect")"
}

field() { node -pe 'JSON.parse(process.argv[1])[process.argv[2]]' "$1" "$2"; }

start MAIN LATCHKEY_DYNAMIC_REGISTRATION=open
start NONCE LATCHKEY_DPOP_NONCE=true
start TOKEN LATCHKEY_DYNAMIC_REGISTRATION=token

export LATCHKEY_URL=$MAIN_URL
export PUBLIC_CLIENT_ID=$(field "$MAIN_PUBLIC" client_id)
export CONFIDENTIAL_CLIENT_ID=$(field "$MAIN_CONF" client_id)
export CONFIDENTIAL_CLIENT_SECRET=$(field "$MAIN_CONF" client_secret)
export LATCHKEY_CLI=$work/latchkey
export LATCHKEY_DATABASE_URL=$MAIN_DB
export NONCE_LATCHKEY_URL=$NONCE_URL
export NONCE_PUBLIC_CLIENT_ID=$(field "$NONCE_PUBLIC" client_id)
export NONCE_CONFIDENTIAL_CLIENT_ID=$(field "$NONCE_CONF" client_id)
export NONCE_CONFIDENTIAL_CLIENT_SECRET=$(field "$NONCE_CONF" client_secret)
export TOKEN_LATCHKEY_URL=$TOKEN_URL
export TOKEN_LATCHKEY_DATABASE_URL=$TOKEN_DB
export CLOSED_LATCHKEY_URL=$NONCE_URL

cd "$here"
node --test "$@"
