"""Cost of a sign-in with a passkey (bench/passkey.sh): registers N users, each from its own
X-Forwarded-For address (the server must trust 127.0.0.1 as a proxy), adds a passkey for
each with a software authenticator (P-256 from the `cryptography` package, the WebAuthn
formats laid out here as in the server's tests), then times, per user, a username-less
sign-in (POST /auth/passkeys/login/start and /finish, and both together) and, for as many
other users, a password-only sign-in. Prints p50 and p99 of each.
Usage: passkey_latency.py BASE_URL N LABEL"""
import base64, hashlib, json, os, sys
import latency_client
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

base = sys.argv[1]; n = int(sys.argv[2]); tag = sys.argv[3]
PASSWORD = "correct horse battery"
ORIGIN = base.replace("127.0.0.1", "localhost")

def b64(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
def unb64(s): return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))

def post(path, body, ip, token=None): return latency_client.post(base, path, body, ip, token)

def cbor_bytes(b):
    head = bytes([0x40 | len(b)]) if len(b) < 24 else bytes([0x58, len(b)]) if len(b) < 256 else bytes([0x59]) + len(b).to_bytes(2, "big")
    return head + b
def cbor_text(s): return bytes([0x60 | len(s)]) + s.encode()
def client_data(kind, challenge):
    return json.dumps({"type": kind, "challenge": challenge, "origin": ORIGIN, "crossOrigin": False}).encode()

def create(options):
    key = ec.generate_private_key(ec.SECP256R1())
    nums = key.public_key().public_numbers()
    cred_id = os.urandom(16)
    cose = bytes([0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21]) + cbor_bytes(nums.x.to_bytes(32, "big")) \
        + bytes([0x22]) + cbor_bytes(nums.y.to_bytes(32, "big"))
    rp = options["rp"]["id"]
    auth = hashlib.sha256(rp.encode()).digest() + bytes([0x45]) + (0).to_bytes(4, "big") + bytes(16) \
        + len(cred_id).to_bytes(2, "big") + cred_id + cose
    att = bytes([0xa3]) + cbor_text("fmt") + cbor_text("none") + cbor_text("attStmt") + bytes([0xa0]) \
        + cbor_text("authData") + cbor_bytes(auth)
    cd = client_data("webauthn.create", options["challenge"])
    cred = {"id": b64(cred_id), "rawId": b64(cred_id), "type": "public-key",
            "response": {"clientDataJSON": b64(cd), "attestationObject": b64(att)}, "clientExtensionResults": {}}
    return cred, {"id": cred_id, "key": key, "user": unb64(options["user"]["id"]), "rp": rp, "counter": 0}

def get(options, held):
    held["counter"] += 1
    cd = client_data("webauthn.get", options["challenge"])
    auth = hashlib.sha256(held["rp"].encode()).digest() + bytes([0x05]) + held["counter"].to_bytes(4, "big")
    sig = held["key"].sign(auth + hashlib.sha256(cd).digest(), ec.ECDSA(hashes.SHA256()))
    return {"id": b64(held["id"]), "rawId": b64(held["id"]), "type": "public-key", "clientExtensionResults": {},
            "response": {"clientDataJSON": b64(cd), "authenticatorData": b64(auth), "signature": b64(sig),
                         "userHandle": b64(held["user"])}}

def ip(i, k): return f"10.{k}.{i // 250}.{i % 250 + 1}"

devices = []
for i in range(n):
    u = f"{tag}k{i}"
    post("/auth/register", {"username": u, "password": PASSWORD}, ip(i, 1))
    (s, b), _ = post("/auth/login", {"username": u, "password": PASSWORD}, ip(i, 1))
    at = json.loads(b)["access_token"]
    (s, b), _ = post("/auth/passkeys/register/start", {}, ip(i, 1), at)
    start = json.loads(b)
    cred, held = create(start["publicKey"])
    (s, b), _ = post("/auth/passkeys/register/finish", {"challenge_id": start["challenge_id"], "credential": cred}, ip(i, 1), at)
    assert s == 200, (s, b)
    devices.append(held)
    post("/auth/register", {"username": f"{tag}p{i}", "password": PASSWORD}, ip(i, 2))

start_t, finish_t, total, plain = [], [], [], []
for i, held in enumerate(devices):
    (s, b), t1 = post("/auth/passkeys/login/start", {}, ip(i, 3))
    assert s == 200, (s, b)
    start = json.loads(b)
    cred = get(start["publicKey"], held)
    (s, b), t2 = post("/auth/passkeys/login/finish", {"challenge_id": start["challenge_id"], "credential": cred}, ip(i, 3))
    assert s == 200, (s, b)
    start_t.append(t1); finish_t.append(t2); total.append(t1 + t2)
    (s, b), t3 = post("/auth/login", {"username": f"{tag}p{i}", "password": PASSWORD}, ip(i, 4))
    assert s == 200, (s, b)
    plain.append(t3)

fig = latency_client.fig
print(f"{tag}: n={n} password-only sign-in {fig(plain)}")
print(f"{tag}: with a passkey: start {fig(start_t)}; finish {fig(finish_t)}; both {fig(total)}")
