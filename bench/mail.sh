#!/usr/bin/env bash
# Mail delivery figures (issue 14), on release binaries, server pinned to core 0 and the
# SMTP server (aiosmtpd's Sink handler, from Debian's python3-aiosmtpd) and the client to
# core 1:
#   1. sender throughput: N pending mails written straight into a fresh outbox, then the
#      time the server takes to drain them;
#   2. request latency of POST /auth/email/verify/send with the SMTP server down and up
#      (bench/mail_latency.py; varied X-Forwarded-For addresses keep the per-address mail
#      limit out of the way).
# Usage: bench/mail.sh [mails] [requests]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
R=${2:-200}
PY=/usr/bin/python3
cargo build --release -p latchkey --bin latchkey
BIN=$PWD/target/release/latchkey
DIR=$(mktemp -d)
trap 'pkill -f "$DIR" 2>/dev/null || true; pkill -f "aiosmtpd -n -l 127.0.0.1:1871" 2>/dev/null || true; rm -rf "$DIR"' EXIT
export LATCHKEY_MAIL_FROM='Latchkey <no-reply@example.test>'

"$BIN" --database-url "sqlite://$DIR/t.db" user list >/dev/null
$PY - "$DIR/t.db" "$N" <<'PYEOF'
import sqlite3, sys, time
db, n = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(db)
now = int(time.time())
body = "Hello,\n" + "x" * 900 + "\n"
c.executemany(
    "INSERT INTO outbox (kind, user_id, recipient, subject, text_body, html_body, created_at, expires_at, "
    "state, attempts, next_attempt_at) VALUES ('verify_email', NULL, ?, 'Verify your email address', ?, ?, ?, ?, "
    "'pending', 0, ?)",
    [(f"u{i}@example.com", body, "<p>" + body + "</p>", now, now + 86400, now) for i in range(n)],
)
c.commit()
PYEOF
taskset -c 1 $PY -m aiosmtpd -n -l 127.0.0.1:18710 -c aiosmtpd.handlers.Sink >"$DIR/sink.log" 2>&1 &
sleep 1
START=$(date +%s.%N)
LATCHKEY_SMTP_URL=smtp://127.0.0.1:18710 taskset -c 0 "$BIN" serve --listen 127.0.0.1:18711 \
  --issuer http://127.0.0.1:18711 --database-url "sqlite://$DIR/t.db" >"$DIR/serve.log" 2>&1 &
SERVER=$!
pending() { $PY -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(\"SELECT COUNT(*) FROM outbox WHERE state = 'pending'\").fetchone()[0])" "$DIR/t.db"; }
while [ "$(pending)" != 0 ]; do sleep 0.1; done
END=$(date +%s.%N)
kill $SERVER
$PY -c "import sys; n, s = int(sys.argv[1]), float(sys.argv[3]) - float(sys.argv[2]); print(f'sender: {n} mails in {s:.1f} s, {n / s:.0f} mails/s')" "$N" "$START" "$END"
pkill -f "aiosmtpd -n -l 127.0.0.1:18710" || true

for mode in down up; do
  rm -f "$DIR"/l.db*
  if [ $mode = up ]; then
    taskset -c 1 $PY -m aiosmtpd -n -l 127.0.0.1:18712 -c aiosmtpd.handlers.Sink >"$DIR/sink2.log" 2>&1 &
    sleep 1
  fi
  LATCHKEY_TRUSTED_PROXIES=127.0.0.1 LATCHKEY_REGISTRATION_PER_MINUTE=100000 \
    LATCHKEY_SMTP_URL=smtp://127.0.0.1:18712 taskset -c 0 "$BIN" serve --listen 127.0.0.1:18713 \
    --issuer http://127.0.0.1:18713 --database-url "sqlite://$DIR/l.db" >"$DIR/serve-$mode.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 100); do curl -fs http://127.0.0.1:18713/healthz >/dev/null && break; sleep 0.1; done
  taskset -c 1 $PY bench/mail_latency.py http://127.0.0.1:18713 "$R" "smtp-$mode"
  kill $SERVER
  pkill -f "aiosmtpd -n -l 127.0.0.1:18712" || true
done
