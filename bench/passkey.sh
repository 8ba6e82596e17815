#!/usr/bin/env bash
# The cost of a sign-in with a passkey (issue 15): bench/passkey_latency.py times N
# username-less passkey sign-ins (start and finish) and N password-only sign-ins, idle and
# next to refresh rotation (see bench/signin_latency.sh). The issuer is
# http://localhost:PORT: passkeys need a domain name.
# Usage: bench/passkey.sh [users]
exec "$(dirname "$0")/signin_latency.sh" bench/passkey_latency.py 18722 localhost "${1:-100}"
