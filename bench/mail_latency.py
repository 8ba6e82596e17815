"""Latency of POST /auth/email/verify/send (bench/mail.sh): registers N users with an
address, each from its own X-Forwarded-For address (the server must trust 127.0.0.1 as a
proxy), signs each in and asks for a verification link; prints p50, p99 and max. Then
POST /auth/password/forgot for each user and for as many unknown logins, alternately and
5 ms apart (the link is made after the answer), and prints both medians: they should not
differ, whether the account exists or not.
Usage: mail_latency.py BASE_URL N LABEL"""
import json, statistics, sys, time
import latency_client
base = sys.argv[1]; n = int(sys.argv[2]); tag = sys.argv[3]
def post(path, body, ip, token=None): return latency_client.post(base, path, body, ip, token)
lat = []
for i in range(n):
    ip = f"10.{i // 250}.{i % 250}.1"
    u = f"{tag}{i}"
    post("/auth/register", {"username": u, "password": "correct horse battery", "email": f"{u}@example.com"}, ip)
    (s, b), _ = post("/auth/login", {"username": u, "password": "correct horse battery"}, ip)
    at = json.loads(b)["access_token"]
    (s, b), dt = post("/auth/email/verify/send", {}, ip, at)
    assert s == 202, (s, b)
    lat.append(dt)
lat.sort()
print(f"{tag}: n={n} p50={statistics.median(lat):.2f} ms p99={lat[int(0.99*len(lat))-1]:.2f} ms max={lat[-1]:.2f} ms")
known, unknown = [], []
for i in range(n):
    for login, out in ((f"{tag}{i}", known), (f"ghost-{tag}{i}", unknown)):
        (s, b), dt = post("/auth/password/forgot", {"login": login}, f"10.{100 + i // 250}.{i % 250}.{1 if out is known else 2}")
        assert s == 202, (s, b)
        out.append(dt)
        time.sleep(0.005)
print(f"{tag}: forgot-password p50 known={statistics.median(known):.3f} ms unknown={statistics.median(unknown):.3f} ms")
