"""What the bench/*_latency.py scripts share: one timed JSON POST from a given client
address (sent as X-Forwarded-For; the server must trust 127.0.0.1 as a proxy), and the
p50/p99 summary they print."""
import json, statistics, time, urllib.error, urllib.request


def post(base, path, body, ip, token=None):
    """POSTs `body` as JSON; returns ((status, body bytes), milliseconds)."""
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST")
    req.add_header("content-type", "application/json"); req.add_header("x-forwarded-for", ip)
    if token: req.add_header("authorization", "Bearer " + token)
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req) as r: out = (r.status, r.read())
    except urllib.error.HTTPError as e: out = (e.code, e.read())
    return out, (time.perf_counter() - t) * 1000


def fig(xs):
    """p50 and p99 of millisecond samples."""
    xs = sorted(xs)
    return f"p50={statistics.median(xs):.2f} ms p99={xs[max(0, int(0.99 * len(xs)) - 1)]:.2f} ms"
