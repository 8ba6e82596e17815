// @latchkey/client with `dpop: true` (SPEC 12) against the real server and notes-api, as in
// client.test.js. The requests are watched through the client's `fetch` option rather than
// a proxy: a proof names the URL it is sent to, so a proxy at another origin would make
// every proof wrong. For the same reason the client is given the server's issuer, which the
// server checks `htu` against, and its `fetch` sends to LATCHKEY_URL: the Rust harness's
// server is `http://latchkey.test` but listens elsewhere. The server runs without nonces,
// so the nonce test puts a fake server asking for them in front of the real one; the OAuth
// test needs no server at all.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { Latchkey, LatchkeyError, MemoryStorage } from '../src/index.js';

const { LATCHKEY_URL, NOTES_URL } = process.env;
if (!LATCHKEY_URL || !NOTES_URL) {
  throw new Error('LATCHKEY_URL and NOTES_URL are unset: run `npm test`, which starts the servers.');
}
const PASSWORD = 'correct horse battery';
const ISSUER = (await (await fetch(`${LATCHKEY_URL}/.well-known/openid-configuration`)).json()).issuer.replace(/\/+$/, '');

/** fetch(), with the issuer's URLs sent to where the server listens. */
const toServer = (url, init) => fetch(String(url).startsWith(ISSUER) ? LATCHKEY_URL + String(url).slice(ISSUER.length) : url, init);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const decode = (part) => JSON.parse(Buffer.from(part, 'base64url').toString());
const sha256 = async (text) => Buffer.from(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text))).toString('base64url');
/** RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace. */
const thumbprint = (jwk) => sha256(JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y }));

/** The header and claims of the DPoP proof a recorded request carried, or null. */
function proofOf(request) {
  const proof = request.headers.get('dpop');
  if (!proof) return null;
  const [header, claims] = proof.split('.');
  return { header: decode(header), claims: decode(claims) };
}

/** A fetch for the client that records every request (the token endpoints' answers too)
 * and can hold refresh answers back, after the server has rotated. */
function recorder(forward = toServer) {
  const log = { requests: [], delayMs: 0 };
  log.fetch = async (url, init = {}) => {
    const res = await forward(url, init);
    const path = new URL(url).pathname;
    const request = { url: String(url), path, method: init.method ?? 'GET', headers: new Headers(init.headers ?? {}), status: res.status, answer: null };
    if (path === '/auth/login' || path === '/auth/refresh') request.answer = await res.clone().json().catch(() => null);
    log.requests.push(request);
    if (path === '/auth/refresh' && log.delayMs) await sleep(log.delayMs);
    return res;
  };
  log.to = (path) => log.requests.filter((r) => r.path === path);
  return log;
}

async function register(username) {
  const res = await fetch(`${LATCHKEY_URL}/auth/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, password: PASSWORD }),
  });
  assert.equal(res.status, 201);
}

/** The ids of the user's live sessions, asked through a session of its own that ends after. */
async function liveSessions(username) {
  const login = await fetch(`${LATCHKEY_URL}/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, password: PASSWORD }),
  });
  assert.equal(login.status, 200);
  const { access_token: token } = await login.json();
  const res = await fetch(`${LATCHKEY_URL}/auth/sessions`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(res.status, 200);
  const { sessions } = await res.json();
  const out = await fetch(`${LATCHKEY_URL}/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
  assert.equal(out.status, 204);
  return sessions.filter((s) => !s.current).map((s) => s.id);
}

test('dpop: sign-in binds the session to a new key: token_type DPoP, cnf.jkt its thumbprint', async () => {
  await register('js-dpop-bound');
  const rec = recorder();
  const lk = new Latchkey({ issuer: ISSUER, dpop: true, fetch: rec.fetch });
  const jkts = [];
  for (let i = 0; i < 2; i += 1) {
    const before = Math.floor(Date.now() / 1000);
    await lk.login({ username: 'js-dpop-bound', password: PASSWORD });
    const login = rec.to('/auth/login').at(-1);
    assert.equal(login.answer.token_type, 'DPoP');
    const { header, claims } = proofOf(login);
    assert.equal(header.typ, 'dpop+jwt');
    assert.equal(header.alg, 'ES256');
    assert.deepEqual(Object.keys(header.jwk).sort(), ['crv', 'kty', 'x', 'y'], 'the public key only');
    assert.equal(claims.htm, 'POST');
    assert.equal(claims.htu, `${ISSUER}/auth/login`);
    assert.ok(claims.iat >= before - 1 && claims.iat <= Date.now() / 1000 + 1);
    assert.equal(typeof claims.jti, 'string');
    assert.ok(!('ath' in claims) && !('nonce' in claims));
    const jkt = await thumbprint(header.jwk);
    assert.equal(decode((await lk.accessToken()).split('.')[1]).cnf.jkt, jkt);
    jkts.push(jkt);
  }
  assert.notEqual(jkts[0], jkts[1], 'each sign-in makes a new key');
});

test('dpop: fetch() sends the bound token as DPoP with a proof naming the call; as Bearer it is refused', async () => {
  await register('js-dpop-fetch');
  const rec = recorder();
  const lk = new Latchkey({ issuer: ISSUER, apiOrigins: [NOTES_URL], dpop: true, fetch: rec.fetch });
  const session = await lk.login({ username: 'js-dpop-fetch', password: PASSWORD });
  const token = await lk.accessToken();

  const me = await lk.fetch(`${NOTES_URL}/whoami?page=1#top`);
  assert.equal(me.status, 200);
  assert.equal((await me.json()).sid, session.sessionId);
  const call = rec.requests.at(-1);
  assert.equal(call.headers.get('authorization'), `DPoP ${token}`);
  const { claims } = proofOf(call);
  assert.equal(claims.htm, 'GET');
  assert.equal(claims.htu, `${NOTES_URL}/whoami`, 'no query, no fragment');
  assert.equal(claims.ath, await sha256(token));
  const note = await lk.fetch(`${NOTES_URL}/notes`, {
    method: 'post', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text: 'bound' }),
  });
  assert.equal(note.status, 201);
  assert.equal(proofOf(rec.requests.at(-1)).claims.htm, 'POST', 'the method fetch() sends');
  assert.equal((await lk.fetch(`${ISSUER}/auth/me`)).status, 200, "the issuer's own API");
  const jtis = rec.requests.map((r) => proofOf(r).claims.jti);
  assert.equal(new Set(jtis).size, jtis.length, 'a new proof for every request');

  // The token without the key is of no use: as Bearer, or with a proof already spent.
  for (const url of [`${NOTES_URL}/whoami`, `${LATCHKEY_URL}/auth/me`]) {
    const bearer = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(bearer.status, 401, url);
    assert.match(bearer.headers.get('www-authenticate'), /^DPoP .*error="invalid_token"/);
    assert.equal((await bearer.json()).error_reason, 'dpop_required', url);
  }
  const replayed = await fetch(`${NOTES_URL}/whoami`, { headers: call.headers });
  assert.equal(replayed.status, 401);
  assert.match(replayed.headers.get('www-authenticate'), /error="invalid_dpop_proof"/);
});

test('dpop: twenty concurrent calls with an expired access token make one refresh; the session lives on', async () => {
  await register('js-dpop-many');
  const rec = recorder();
  const reasons = [];
  let now = Date.now();
  const lk = new Latchkey({
    issuer: ISSUER, apiOrigins: [NOTES_URL], dpop: true, fetch: rec.fetch, now: () => now, refreshMargin: 0,
    onReauth: (r) => reasons.push(r),
  });
  const { sessionId } = await lk.login({ username: 'js-dpop-many', password: PASSWORD });
  for (let round = 0; round < 3; round += 1) {
    now += 10 * 60 * 1000; // past the access token's lifetime, on the client's clock
    const before = rec.to('/auth/refresh').length;
    const answers = await Promise.all(Array.from({ length: 20 }, () => lk.fetch(`${NOTES_URL}/whoami`)));
    assert.ok(answers.every((r) => r.status === 200), `round ${round}`);
    const refreshes = rec.to('/auth/refresh').slice(before);
    assert.equal(refreshes.length, 1, `round ${round}: one refresh for 20 calls`);
    assert.equal(refreshes[0].answer.token_type, 'DPoP');
  }
  // Forced: twenty explicit refreshes at once join one.
  const before = rec.to('/auth/refresh').length;
  await Promise.all(Array.from({ length: 20 }, () => lk.refresh()));
  assert.equal(rec.to('/auth/refresh').length - before, 1);
  const refreshProofs = rec.to('/auth/refresh').map(proofOf);
  assert.equal(new Set(refreshProofs.map((p) => p.header.jwk.x)).size, 1, "every refresh with the session's key");
  assert.ok(refreshProofs.every((p) => p.claims.htu === `${ISSUER}/auth/refresh` && !('ath' in p.claims)));

  assert.equal((await lk.fetch(`${NOTES_URL}/whoami`)).status, 200);
  assert.deepEqual(reasons, [], 'no reuse_detected: the session is alive');
  assert.deepEqual(await liveSessions('js-dpop-many'), [sessionId]);
});

test('dpop: the logout barrier: a refresh in flight when logout starts leaves nothing alive', async () => {
  await register('js-dpop-race');
  let late = 0;
  for (let round = 0; round < 20; round += 1) {
    const rec = recorder();
    const lk = new Latchkey({ issuer: ISSUER, apiOrigins: [NOTES_URL], dpop: true, fetch: rec.fetch });
    await lk.login({ username: 'js-dpop-race', password: PASSWORD });
    rec.delayMs = (round * 4) % 80;
    const refreshing = lk.refresh().catch((e) => e);
    await sleep(round % 13);
    await lk.logout();
    await refreshing;
    assert.equal(lk.session, null, `round ${round}`);
    const before = rec.requests.length;
    await assert.rejects(lk.fetch(`${NOTES_URL}/whoami`), (e) => e instanceof LatchkeyError && e.code === 'not_signed_in');
    assert.equal(rec.requests.length, before, `round ${round}: no request without a session`);
    late += rec.to('/auth/refresh').filter((r) => typeof r.answer?.refresh_token === 'string').length;
  }
  // The late answers are revoked in the background: wait for the server to have them all.
  for (let i = 0; i < 100 && (await liveSessions('js-dpop-race')).length > 0; i += 1) await sleep(50);
  assert.deepEqual(await liveSessions('js-dpop-race'), [], 'every session the client opened is revoked');
  assert.ok(late >= 10, `tokens that had to die: ${late}`);
  console.log(`dpop logout barrier: 20 rounds, ${late} late token answers, no session left alive`);
});

test('dpop: use_dpop_nonce: one retry with a new proof carrying the nonce, kept per origin', async () => {
  await register('js-dpop-nonce');
  // Asks for `demand[origin]` where it is set, as a server with dpop_nonce does: 400 at the
  // token endpoints, a 401 challenge at the API. A function asks for a new one every time.
  // Otherwise the real server answers, offering `offer` as the next nonce when it is set.
  const demand = new Map();
  let offer = null;
  const issuer = new URL(ISSUER).origin;
  const api = new URL(NOTES_URL).origin;
  const server = async (url, init) => {
    const { origin } = new URL(url);
    const wanted = demand.get(origin);
    const { nonce } = decode(new Headers(init.headers).get('dpop').split('.')[1]);
    if (typeof wanted === 'function' || (wanted !== undefined && nonce !== wanted)) {
      const next = typeof wanted === 'function' ? wanted() : wanted;
      if (origin === api) {
        return new Response('', { status: 401, headers: { 'www-authenticate': 'DPoP error="use_dpop_nonce"', 'dpop-nonce': next } });
      }
      return new Response('{"error":"use_dpop_nonce"}', { status: 400, headers: { 'content-type': 'application/json', 'dpop-nonce': next } });
    }
    const res = await toServer(url, init);
    if (!offer) return res;
    const headers = new Headers(res.headers);
    headers.set('dpop-nonce', offer);
    return new Response(await res.arrayBuffer(), { status: res.status, headers });
  };
  const rec = recorder(server);
  const lk = new Latchkey({ issuer: ISSUER, apiOrigins: [NOTES_URL], dpop: true, fetch: rec.fetch });
  const nonces = (path) => rec.to(path).map((r) => proofOf(r).claims.nonce ?? null);

  demand.set(issuer, 'nonce-a');
  await lk.login({ username: 'js-dpop-nonce', password: PASSWORD });
  assert.deepEqual(nonces('/auth/login'), [null, 'nonce-a']);
  const [first, second] = rec.to('/auth/login').map((r) => proofOf(r).claims.jti);
  assert.notEqual(first, second, 'the retry has a new proof');

  await lk.refresh();
  assert.deepEqual(nonces('/auth/refresh'), ['nonce-a'], 'remembered: no request wasted');
  demand.set(issuer, 'nonce-b');
  await lk.refresh();
  assert.deepEqual(nonces('/auth/refresh'), ['nonce-a', 'nonce-a', 'nonce-b']);
  // A nonce offered with a success is used from the next proof on.
  offer = 'nonce-c';
  await lk.refresh();
  offer = null;
  demand.set(issuer, 'nonce-c');
  await lk.refresh();
  assert.deepEqual(nonces('/auth/refresh').slice(3), ['nonce-b', 'nonce-c']);

  // The API's nonce is the API's: the issuer's is not sent there.
  demand.set(api, 'nonce-api');
  assert.equal((await lk.fetch(`${NOTES_URL}/whoami`)).status, 200);
  assert.deepEqual(nonces('/whoami'), [null, 'nonce-api']);

  // A server that asks again and again gets one retry, not a loop; the session stays.
  let n = 0;
  demand.set(issuer, () => `nonce-${(n += 1)}`);
  const before = rec.to('/auth/refresh').length;
  await assert.rejects(lk.refresh(), (e) => e instanceof LatchkeyError && e.code === 'server' && e.status === 400);
  assert.equal(rec.to('/auth/refresh').length - before, 2);
  assert.notEqual(lk.session, null);
  demand.delete(issuer);
  await lk.refresh();
  assert.equal((await lk.fetch(`${NOTES_URL}/whoami`)).status, 200);
});

test('dpop: a stored session whose key is not here is signed out, and nothing is sent', async () => {
  await register('js-dpop-keyless');
  const storage = new MemoryStorage();
  const holder = new Latchkey({ issuer: ISSUER, apiOrigins: [NOTES_URL], dpop: true, storage, fetch: toServer });
  await holder.login({ username: 'js-dpop-keyless', password: PASSWORD });
  const stored = JSON.parse(await storage.get('latchkey.session'));
  assert.equal(stored.jkt, decode(stored.accessToken.split('.')[1]).cnf.jkt, 'the storage names the key by thumbprint');

  // In Node the key is in the holder's memory only: another client with the same storage,
  // with dpop or without, does not have it.
  for (const dpop of [true, false]) {
    const rec = recorder();
    const other = new Latchkey({ issuer: ISSUER, apiOrigins: [NOTES_URL], dpop, storage, fetch: rec.fetch });
    assert.equal(await other.resume(), false, `dpop: ${dpop}`);
    assert.equal(other.session, null);
    await assert.rejects(other.fetch(`${NOTES_URL}/whoami`), (e) => e.code === 'not_signed_in');
    await assert.rejects(other.refresh(), (e) => e.code === 'not_signed_in');
    assert.equal(rec.requests.length, 0, 'no refresh without the key');
  }
  // The session is left to its key's holder, alive.
  assert.notEqual(await storage.get('latchkey.session'), null);
  await holder.refresh();
  assert.equal((await holder.fetch(`${NOTES_URL}/whoami`)).status, 200);

  await assert.rejects(
    holder.setTokens({ access_token: 'x', token_type: 'DPoP', expires_in: 300, refresh_token: 'y' }),
    TypeError,
    'tokens bound to a key the client does not hold',
  );
});

test('dpop: OAuth tokens: the refresh at /oauth/token carries a proof, and its token_type picks the scheme', async () => {
  // A fake issuer and API: the code flow's tokens come from the app, not from here.
  const requests = [];
  const fake = async (url, init) => {
    requests.push({ url: String(url), method: init.method ?? 'GET', headers: new Headers(init.headers), body: init.body });
    const { pathname } = new URL(url);
    if (pathname === '/oauth/token') {
      return Response.json({ access_token: 'at-2', token_type: 'DPoP', expires_in: 300, refresh_token: 'rt-2' });
    }
    return new Response(pathname === '/oauth/revoke' ? '' : '{}', { status: 200 });
  };
  const lk = new Latchkey({
    issuer: 'https://id.example', apiOrigins: ['https://api.example'], oauth: { clientId: 'app' }, dpop: true, fetch: fake,
  });
  await lk.setTokens({ access_token: 'at-1', token_type: 'Bearer', expires_in: 300, refresh_token: 'rt-1' });
  await lk.fetch('https://api.example/notes');
  assert.equal(requests.at(-1).headers.get('authorization'), 'Bearer at-1');
  assert.equal(requests.at(-1).headers.get('dpop'), null, 'a Bearer token goes without a proof');

  await lk.refresh();
  const refresh = requests.at(-1);
  assert.equal(refresh.url, 'https://id.example/oauth/token');
  assert.equal(new URLSearchParams(refresh.body).get('grant_type'), 'refresh_token');
  const proof = refresh.headers.get('dpop');
  const [header, claims] = proof.split('.').slice(0, 2).map(decode);
  assert.deepEqual([claims.htm, claims.htu, 'ath' in claims], ['POST', 'https://id.example/oauth/token', false]);
  // The signature is r||s, as JWS wants: it verifies with the key in the header.
  const publicKey = await crypto.subtle.importKey('jwk', header.jwk, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['verify']);
  const [h, c, s] = proof.split('.');
  const signed = await crypto.subtle.verify(
    { name: 'ECDSA', hash: 'SHA-256' }, publicKey, Buffer.from(s, 'base64url'), new TextEncoder().encode(`${h}.${c}`),
  );
  assert.ok(signed);

  await lk.fetch('https://api.example/notes/7?full=1', { method: 'DELETE' });
  const call = requests.at(-1);
  assert.equal(call.headers.get('authorization'), 'DPoP at-2');
  const callClaims = decode(call.headers.get('dpop').split('.')[1]);
  assert.deepEqual(
    [callClaims.htm, callClaims.htu, callClaims.ath],
    ['DELETE', 'https://api.example/notes/7', await sha256('at-2')],
  );
  assert.equal(decode(call.headers.get('dpop').split('.')[0]).jwk.x, header.jwk.x, "the session's key");

  await lk.logout();
  assert.equal(requests.at(-1).url, 'https://id.example/oauth/revoke');
  assert.equal(requests.at(-1).headers.get('dpop'), null);
});

test('step_up_required keeps the session; stepUp() continues it with the password', async () => {
  // A fake issuer: the refresh is stopped for risk, the step-up answers new tokens.
  const requests = [];
  const fake = async (url, init) => {
    requests.push({ url: String(url), headers: new Headers(init.headers), body: init.body });
    const { pathname } = new URL(url);
    if (pathname === '/auth/login') {
      return Response.json({ access_token: 'at-1', token_type: 'Bearer', expires_in: 300, refresh_token: 'rt-1', session_id: 's' });
    }
    if (pathname === '/auth/refresh') {
      return Response.json({ error: 'invalid_grant', error_reason: 'step_up_required' }, { status: 400 });
    }
    if (pathname === '/auth/step-up') {
      return Response.json({ access_token: 'at-2', token_type: 'Bearer', expires_in: 300, refresh_token: 'rt-2', session_id: 's' });
    }
    return new Response('{}', { status: 404 });
  };
  let reauth = 0;
  const lk = new Latchkey({ issuer: 'https://id.example', fetch: fake, onReauth: () => { reauth += 1; } });
  await lk.login({ username: 'u', password: 'p' });
  await assert.rejects(lk.refresh(), (e) => e.code === 'step_up_required');
  assert.equal(reauth, 0, 'not the end of the session');
  assert.equal(lk.session?.sessionId, 's');
  await lk.stepUp({ password: 'p' });
  const sent = requests.at(-1);
  assert.equal(sent.url, 'https://id.example/auth/step-up');
  assert.equal(sent.headers.get('authorization'), 'Bearer at-1');
  assert.deepEqual(JSON.parse(sent.body), { refresh_token: 'rt-1', password: 'p' });
  assert.equal(await lk.accessToken(), 'at-2');
});
