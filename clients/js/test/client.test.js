// @latchkey/client against the real server and notes-api, through a counting, delaying
// proxy written here. LATCHKEY_URL, NOTES_URL and ADMIN_URL name them: `npm test`
// (test-support/run.js) starts them from the workspace's binaries, and the Rust test
// `client_js::node_tests_pass` runs `node --test test/` against servers it runs itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';

import { Latchkey, LatchkeyError, MemoryStorage } from '../src/index.js';

const { LATCHKEY_URL, NOTES_URL, ADMIN_URL } = process.env;
if (!LATCHKEY_URL || !NOTES_URL || !ADMIN_URL) {
  throw new Error('LATCHKEY_URL, NOTES_URL and ADMIN_URL are unset: run `npm test`, which starts the servers.');
}
const PASSWORD = 'correct horse battery';

/** A proxy in front of `upstream` that counts requests and delays refresh answers. */
async function proxy(upstream) {
  const stats = { requests: 0, withToken: 0, refreshes: 0, delayMs: 0, answers: [] };
  const server = http.createServer(async (req, res) => {
    stats.requests += 1;
    if (req.headers.authorization) stats.withToken += 1;
    const isRefresh = req.url.startsWith('/auth/refresh');
    if (isRefresh) stats.refreshes += 1;
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const headers = { ...req.headers };
    delete headers.host;
    delete headers['content-length'];
    const up = await fetch(upstream + req.url, {
      method: req.method,
      headers,
      body: chunks.length ? Buffer.concat(chunks) : undefined,
    });
    const body = Buffer.from(await up.arrayBuffer());
    if (isRefresh || req.url.startsWith('/auth/login')) {
      try { stats.answers.push(JSON.parse(body.toString())); } catch { /* not JSON */ }
    }
    if (isRefresh && stats.delayMs) await new Promise((r) => setTimeout(r, stats.delayMs));
    const out = {};
    up.headers.forEach((v, k) => { if (k !== 'content-length' && k !== 'transfer-encoding' && k !== 'content-encoding') out[k] = v; });
    res.writeHead(up.status, out);
    res.end(body);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${server.address().port}`;
  return { url, stats, close: () => new Promise((r) => server.close(r)) };
}

async function register(username) {
  const res = await fetch(`${LATCHKEY_URL}/auth/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, password: PASSWORD }),
  });
  assert.equal(res.status, 201);
}

async function waitFor(cond) {
  for (let i = 0; i < 200; i += 1) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('condition not met within 10 s');
}

const whoami = (token) => fetch(`${NOTES_URL}/whoami`, { headers: { authorization: `Bearer ${token}` } });

test('the seed race: a refresh in flight when logout starts leaves nothing alive', async () => {
  await register('js-race');
  const auth = await proxy(LATCHKEY_URL);
  const api = await proxy(NOTES_URL);
  let lateTokens = 0;
  try {
    for (let round = 0; round < 40; round += 1) {
      const lk = new Latchkey({ issuer: auth.url, apiOrigins: [api.url] });
      await lk.login({ username: 'js-race', password: PASSWORD });
      auth.stats.delayMs = (round * 2) % 80;
      auth.stats.answers = [];
      const refreshing = lk.refresh().catch((e) => e);
      await new Promise((r) => setTimeout(r, round % 13));
      await lk.logout();
      await refreshing;
      auth.stats.delayMs = 0;
      assert.equal(lk.session, null, `round ${round}`);
      const before = api.stats.requests;
      await assert.rejects(lk.fetch(`${api.url}/whoami`), (e) => e instanceof LatchkeyError && e.code === 'not_signed_in');
      assert.equal(api.stats.requests, before, `round ${round}: no request without a session`);
      for (const a of auth.stats.answers.filter((x) => typeof x.refresh_token === 'string')) {
        lateTokens += 1;
        const r = await fetch(`${LATCHKEY_URL}/auth/refresh`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ refresh_token: a.refresh_token }),
        });
        assert.equal(r.status, 400, `round ${round}: a late refresh token still works`);
        const me = await fetch(`${LATCHKEY_URL}/auth/me`, { headers: { authorization: `Bearer ${a.access_token}` } });
        assert.equal(me.status, 401, `round ${round}: a late access token still works`);
      }
    }
    // Most rounds produce a late answer (a logout that wins outright leaves none to kill).
    assert.ok(lateTokens >= 30, `tokens that had to die: ${lateTokens}`);
    console.log(`seed race: 40 rounds, ${lateTokens} late token answers, all dead on the server`);
  } finally {
    await auth.close();
    await api.close();
  }
});

test('fifty concurrent calls with an expired access token make one refresh', async () => {
  await register('js-many');
  const auth = await proxy(LATCHKEY_URL);
  try {
    let now = Date.now();
    const lk = new Latchkey({ issuer: auth.url, apiOrigins: [NOTES_URL], now: () => now, refreshMargin: 0 });
    await lk.login({ username: 'js-many', password: PASSWORD });
    for (let round = 0; round < 3; round += 1) {
      now += 10 * 60 * 1000; // past the access token's lifetime, on the client's clock
      const before = auth.stats.refreshes;
      const answers = await Promise.all(Array.from({ length: 50 }, () => lk.fetch(`${NOTES_URL}/whoami`)));
      assert.ok(answers.every((r) => r.status === 200), `round ${round}`);
      assert.equal(auth.stats.refreshes - before, 1, `round ${round}: one refresh for 50 calls`);
    }
  } finally {
    await auth.close();
  }
});

test('claims_stale: one refresh, one retry, the new roles', async () => {
  await register('js-promoted');
  const auth = await proxy(LATCHKEY_URL);
  try {
    const lk = new Latchkey({ issuer: auth.url, apiOrigins: [NOTES_URL] });
    await lk.login({ username: 'js-promoted', password: PASSWORD });
    const note = await lk.fetch(`${NOTES_URL}/notes`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ text: 'hello' }),
    });
    assert.equal(note.status, 201);
    const { id } = await note.json();
    assert.equal((await lk.fetch(`${NOTES_URL}/notes/${id}`, { method: 'DELETE' })).status, 403);
    const old = await lk.accessToken();
    const promoted = await fetch(`${ADMIN_URL}/set-roles?user=js-promoted&roles=manager`, { method: 'POST' });
    assert.equal(promoted.status, 200);
    await waitFor(async () => (await (await whoami(old)).json()).error_reason === 'claims_stale');
    const before = auth.stats.refreshes;
    const deleted = await lk.fetch(`${NOTES_URL}/notes/${id}`, { method: 'DELETE' });
    assert.equal(deleted.status, 204);
    assert.equal(auth.stats.refreshes - before, 1);
  } finally {
    await auth.close();
  }
});

async function loginDirect(username) {
  const res = await fetch(`${LATCHKEY_URL}/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, password: PASSWORD }),
  });
  assert.equal(res.status, 200);
  return res.json();
}

const refreshDirect = (token) => fetch(`${LATCHKEY_URL}/auth/refresh`, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ refresh_token: token }),
});

for (const how of ['revoked_by_user', 'logged_out', 'reuse_detected']) {
  test(`a session ended elsewhere (${how}): onReauth once with the reason, then no requests`, async () => {
    const user = `js-ended-${how}`;
    await register(user);
    const auth = await proxy(LATCHKEY_URL);
    try {
      const reasons = [];
      const storage = new MemoryStorage();
      let now = Date.now();
      const lk = new Latchkey({
        issuer: auth.url, apiOrigins: [NOTES_URL], storage, now: () => now, onReauth: (r) => reasons.push(r),
      });
      const session = await lk.login({ username: user, password: PASSWORD });
      assert.equal((await lk.fetch(`${NOTES_URL}/whoami`)).status, 200);
      const other = await loginDirect(user);
      const held = await lk.accessToken();
      if (how === 'revoked_by_user') {
        // Another device removes this one from the device list.
        const del = await fetch(`${LATCHKEY_URL}/auth/sessions/${session.sessionId}`, {
          method: 'DELETE',
          headers: { authorization: `Bearer ${other.access_token}` },
        });
        assert.equal(del.status, 204);
      } else if (how === 'logged_out') {
        const all = await fetch(`${LATCHKEY_URL}/auth/logout-all`, {
          method: 'POST',
          headers: { authorization: `Bearer ${other.access_token}`, 'content-type': 'application/json' },
          body: '{}',
        });
        assert.equal(all.status, 204);
      } else {
        // A thief copied the stored refresh token and rotated it twice; the victim's next
        // refresh (its access token has expired on its clock) is reuse.
        const stolen = JSON.parse(await storage.get('latchkey.session')).refreshToken;
        const t1 = await (await refreshDirect(stolen)).json();
        assert.equal((await refreshDirect(t1.refresh_token)).status, 200);
        now += 10 * 60 * 1000;
      }
      if (how !== 'reuse_detected') await waitFor(async () => (await whoami(held)).status === 401);
      await assert.rejects(lk.fetch(`${NOTES_URL}/whoami`), (e) => e.code === 'reauth' && e.reason === how);
      assert.deepEqual(reasons, [how]);
      const before = auth.stats.requests;
      for (let i = 0; i < 5; i += 1) {
        await assert.rejects(lk.fetch(`${NOTES_URL}/whoami`), (e) => e.code === 'not_signed_in');
      }
      assert.equal(auth.stats.requests, before, 'no loop: no more requests');
      assert.deepEqual(reasons, [how]);
      assert.equal(await storage.get('latchkey.session'), null);
      assert.equal(lk.session, null);
    } finally {
      await auth.close();
    }
  });
}

test('errors never carry a token', async () => {
  await register('js-quiet');
  const lk = new Latchkey({ issuer: LATCHKEY_URL, apiOrigins: [NOTES_URL] });
  await lk.login({ username: 'js-quiet', password: PASSWORD });
  const token = await lk.accessToken();
  assert.ok(!JSON.stringify(lk).includes(token));
  await lk.logout();
  const err = await lk.fetch(`${NOTES_URL}/whoami`).catch((e) => e);
  assert.ok(!String(err.stack).includes(token) && !err.message.includes(token));
  await assert.rejects(lk.login({ username: 'js-quiet', password: 'wrong password!' }), (e) => e.code === 'invalid_credentials');
});

test('the token goes only to the issuer and apiOrigins; another origin is refused before anything is sent', async () => {
  await register('js-careful');
  const auth = await proxy(LATCHKEY_URL);
  // The same notes-api at an origin the client was not given (same host, another port).
  const elsewhere = await proxy(NOTES_URL);
  // An allowed API that redirects to it.
  const redirector = http.createServer((req, res) => {
    res.writeHead(307, { location: `${elsewhere.url}/whoami` });
    res.end();
  });
  await new Promise((r) => redirector.listen(0, '127.0.0.1', r));
  const redirectorUrl = `http://127.0.0.1:${redirector.address().port}`;
  try {
    assert.throws(() => new Latchkey({ issuer: auth.url, apiOrigins: [`${NOTES_URL}/notes`] }), TypeError);
    assert.throws(() => new Latchkey({ issuer: '/' }), TypeError);
    let now = Date.now();
    const lk = new Latchkey({ issuer: auth.url, apiOrigins: [NOTES_URL, redirectorUrl], now: () => now });
    await lk.login({ username: 'js-careful', password: PASSWORD });
    assert.equal((await lk.fetch(`${NOTES_URL}/whoami`)).status, 200);
    assert.equal((await lk.fetch(new URL('/auth/me', auth.url))).status, 200);

    const refused = (origin) => (e) => e instanceof LatchkeyError && e.code === 'origin_not_allowed' && e.origin === origin;
    await assert.rejects(lk.fetch(`${elsewhere.url}/whoami`), refused(elsewhere.url));
    await assert.rejects(
      lk.fetch(`${elsewhere.url}/notes`, { method: 'POST', body: '{"text":"leak"}' }),
      refused(elsewhere.url),
    );
    const notes = new URL(NOTES_URL);
    await assert.rejects(lk.fetch(`https://${notes.host}/whoami`), refused(`https://${notes.host}`));
    await assert.rejects(lk.fetch(`http://localhost:${notes.port}/whoami`), refused(`http://localhost:${notes.port}`));
    await assert.rejects(lk.fetch('/whoami'), (e) => e.code === 'invalid_url');
    // Refused before a refresh too, though the access token has expired.
    now += 10 * 60 * 1000;
    const before = auth.stats.requests;
    await assert.rejects(lk.fetch(`${elsewhere.url}/whoami`), refused(elsewhere.url));
    assert.equal(auth.stats.requests, before, 'no refresh for a refused call');
    assert.equal(elsewhere.stats.requests, 0, 'nothing was sent there');

    // fetch() drops the token when an allowed API redirects to another origin.
    const redirected = await lk.fetch(`${redirectorUrl}/whoami`);
    assert.equal(redirected.status, 401);
    assert.ok(elsewhere.stats.requests >= 1, 'the redirect was followed');
    assert.equal(elsewhere.stats.withToken, 0, 'the token did not follow the redirect');
  } finally {
    await auth.close();
    await elsewhere.close();
    await new Promise((r) => redirector.close(r));
  }
});
