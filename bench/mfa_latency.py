"""Cost of a sign-in with an authenticator app (bench/mfa.sh): registers N users, each from
its own X-Forwarded-For address (the server must trust 127.0.0.1 as a proxy), sets up an
app for each (RFC 6238 codes computed here), then times, per user, the password step
(401 mfa_required) and the code step (the token response), and for as many other users a
password-only sign-in. Prints p50 and p99 of each. Each user signs in once with the app:
each code is good once, and a factor has one code per 30-second step.
Usage: mfa_latency.py BASE_URL N LABEL"""
import base64, hashlib, hmac, json, struct, sys, time
import latency_client

base = sys.argv[1]; n = int(sys.argv[2]); tag = sys.argv[3]
PASSWORD = "correct horse battery"

def post(path, body, ip, token=None): return latency_client.post(base, path, body, ip, token)

def code(secret_b32, step):
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    mac = hmac.new(key, struct.pack(">q", step), hashlib.sha1).digest()
    off = mac[-1] & 0x0F
    return "%06d" % ((struct.unpack(">I", mac[off:off + 4])[0] & 0x7FFFFFFF) % 1_000_000)

def ip(i, k): return f"10.{k}.{i // 250}.{i % 250 + 1}"

secrets = []
for i in range(n):
    u = f"{tag}m{i}"
    post("/auth/register", {"username": u, "password": PASSWORD}, ip(i, 1))
    (s, b), _ = post("/auth/login", {"username": u, "password": PASSWORD}, ip(i, 1))
    at = json.loads(b)["access_token"]
    (s, b), _ = post("/auth/mfa/totp", {}, ip(i, 1), at)
    secret = json.loads(b)["secret"]
    step = int(time.time()) // 30
    (s, b), _ = post("/auth/mfa/totp/confirm", {"code": code(secret, step)}, ip(i, 1), at)
    assert s == 200, (s, b)
    secrets.append((u, secret, step))
    post("/auth/register", {"username": f"{tag}p{i}", "password": PASSWORD}, ip(i, 2))

pwd_step, code_step, total, plain = [], [], [], []
for i, (u, secret, step) in enumerate(secrets):
    (s, b), t1 = post("/auth/login", {"username": u, "password": PASSWORD}, ip(i, 3))
    assert s == 401, (s, b)
    token = json.loads(b)["mfa_token"]
    used = step + 1 if int(time.time()) // 30 <= step else int(time.time()) // 30
    (s, b), t2 = post("/auth/login/mfa", {"mfa_token": token, "method": "totp", "code": code(secret, used)}, ip(i, 3))
    assert s == 200, (s, b)
    pwd_step.append(t1); code_step.append(t2); total.append(t1 + t2)
    (s, b), t3 = post("/auth/login", {"username": f"{tag}p{i}", "password": PASSWORD}, ip(i, 4))
    assert s == 200, (s, b)
    plain.append(t3)

fig = latency_client.fig
print(f"{tag}: n={n} password-only sign-in {fig(plain)}")
print(f"{tag}: with an app: password step {fig(pwd_step)}; code step {fig(code_step)}; both {fig(total)}")
