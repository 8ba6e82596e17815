#!/usr/bin/env bash
# The cost of a sign-in with an authenticator app (issue 15): bench/mfa_latency.py times N
# sign-ins in two steps (password, then the code) and N password-only sign-ins, idle and
# next to refresh rotation (see bench/signin_latency.sh).
# Usage: bench/mfa.sh [users]
exec "$(dirname "$0")/signin_latency.sh" bench/mfa_latency.py 18721 127.0.0.1 "${1:-100}"
