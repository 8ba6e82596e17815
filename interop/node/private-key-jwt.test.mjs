// Interoperability: `private_key_jwt` client authentication (RFC 7523 §2.2, OpenID Connect
// Core §9). openid-client 6 authenticates with `client.PrivateKeyJwt` and ES256 keys made
// by `jose` (`generateKeyPair`, the public half exported as a JWK with a `kid`): a client
// registered with its key set inline (`client add --jwks`) signs a user in with the code
// flow, refreshes, introspects and revokes; a client registered with a `jwks_uri` served by
// a loopback HTTP server the test runs gets tokens with `clientCredentialsGrant`, first with
// one key of the served set and then with the other (a rotation); a key outside the set is
// refused; and an assertion taken from the wire and sent again with `fetch` is refused
// (a `jti` is accepted once). The only hand-written HTTP is that replay, the user's browser
// on the server's sign-in and consent pages (support.mjs), and the key-set server.
//
// Environment (set by the harness, or by ./run-local.sh):
//
//   LATCHKEY_URL                 issuer of the server under test, e.g. http://127.0.0.1:18977
//   LATCHKEY_CLI                 the server's binary, and ...
//   LATCHKEY_DATABASE_URL        ... its database: the tests register their own clients with
//                                `client add` (`--jwks`, and `--jwks-uri` once the key-set
//                                server's port is known)
//   LATCHKEY_USERNAME            a user on it ...
//   LATCHKEY_PASSWORD            ... and the password
//   REDIRECT_URI                 optional, default http://127.0.0.1:9/cb (the clients'
//                                redirect URI; nothing listens there)
//
// Run: `npm test` (or `node --test`) in this directory.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import * as client from 'openid-client';
import { decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair } from 'jose';

import {
  REDIRECT_URI,
  WireLog,
  addClient,
  codeFlow,
  discover,
  rejectsWithOAuthError,
  wire,
} from './support.mjs';

/** RFC 7523 §2.2. */
const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
/** The scope the client-credentials apps are registered for. */
const SCOPE = 'notes:read';

/**
 * A client key: an ES256 pair from jose, the public half as a JWK with `kid` (and `extra`
 * members), and openid-client's `PrivateKeyJwt` with it (`options`, e.g. modifyAssertion).
 */
async function clientKey(kid, extra = {}) {
  const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, ...extra };
  return { kid, jwk, auth: (options) => client.PrivateKeyJwt({ key: privateKey, kid }, options) };
}

/**
 * Checks a request openid-client authenticated with `private_key_jwt` (from the wire log):
 * no Authorization header and no secret; `client_id`, `client_assertion_type` and a
 * `client_assertion` signed ES256 under `kid`, `iss` = `sub` = the client, `aud`, a `jti`
 * and a short `exp`. Returns the assertion and its claims.
 */
function assertAssertion(entry, clientId, kid, aud, what) {
  assert.ok(entry, `${what}: a request in the wire log`);
  assert.equal(entry.requestHeaders.authorization, undefined, `${what}: no Authorization header`);
  const body = new URLSearchParams(entry.requestBody);
  assert.equal(body.get('client_secret'), null, `${what}: no secret`);
  assert.equal(body.get('client_id'), clientId, `${what}: client_id`);
  assert.equal(body.get('client_assertion_type'), JWT_BEARER, `${what}: client_assertion_type`);
  const assertion = body.get('client_assertion');
  assert.ok(assertion, `${what}: client_assertion`);
  const header = decodeProtectedHeader(assertion);
  assert.equal(header.alg, 'ES256', `${what}: alg`);
  assert.equal(header.kid, kid, `${what}: kid`);
  const claims = decodeJwt(assertion);
  assert.equal(claims.iss, clientId, `${what}: iss`);
  assert.equal(claims.sub, clientId, `${what}: sub`);
  assert.equal(claims.aud, aud, `${what}: aud`);
  assert.ok(claims.jti, `${what}: jti`);
  assert.ok(claims.exp > claims.iat && claims.exp - claims.iat <= 3600, `${what}: exp ${claims.exp}, iat ${claims.iat}`);
  return { assertion, claims };
}

/**
 * Asserts that `promise` (a token request authenticated by an assertion) fails with `401`
 * and `invalid_client`. openid-client raises a ResponseBodyError, or a
 * WWWAuthenticateChallengeError when the server adds a challenge; the body is checked from
 * the wire log either way.
 */
async function rejectsInvalidClient(promise, log, what) {
  const err = await promise.then(
    (ok) => assert.fail(`${what}: expected invalid_client, got tokens ${JSON.stringify(ok)}\n${log.dump(2)}`),
    (e) => e,
  );
  if (err instanceof assert.AssertionError) throw err;
  assert.ok(
    err instanceof client.ResponseBodyError || err instanceof client.WWWAuthenticateChallengeError,
    `${what}: expected an OAuth error, got ${err?.name}: ${err?.message}\n${log.dump(2)}`,
  );
  assert.equal(err.status, 401, `${what}\n${log.dump(1)}`);
  const answer = log.entries.at(-1);
  assert.equal(JSON.parse(answer.responseBody).error, 'invalid_client', `${what}\n${log.dump(1)}`);
  return err;
}

/** A loopback HTTP server publishing a JWK set at /jwks.json, recording every request. */
class KeySetHost {
  constructor() {
    this.keys = [];
    this.requests = [];
    this.server = createServer((req, res) => {
      this.requests.push({ method: req.method, path: req.url, accept: req.headers.accept });
      if (req.method !== 'GET' || req.url !== '/jwks.json') {
        res.writeHead(404).end();
        return;
      }
      res
        .writeHead(200, { 'content-type': 'application/jwk-set+json', 'cache-control': 'no-store' })
        .end(JSON.stringify({ keys: this.keys }));
    });
  }

  async start() {
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', resolve);
    });
    this.uri = `http://127.0.0.1:${this.server.address().port}/jwks.json`;
    return this;
  }

  async stop() {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

describe('openid-client 6: private_key_jwt client authentication (RFC 7523) against Latchkey', () => {
  // Required: a missing LATCHKEY_URL fails every test rather than skipping it.
  const issuer = process.env.LATCHKEY_URL ?? 'http://LATCHKEY_URL.unset.invalid';
  const keySetHost = new KeySetHost();
  // `app` (code flow, its set inline) and `replayApp` (client_credentials, inline) are
  // registered here; the jwks_uri client is registered by its test, just before its use.
  let appKey, app, replayKey, replayApp;

  before(async () => {
    await keySetHost.start();
    appKey = await clientKey('app-1');
    app = await addClient([
      '--name',
      'interop private_key_jwt',
      '--redirect-uri',
      REDIRECT_URI,
      '--jwks',
      JSON.stringify({ keys: [appKey.jwk] }),
    ]);
    replayKey = await clientKey('replay-1');
    replayApp = await addClient([
      '--name',
      'interop private_key_jwt replay',
      '--grant-types',
      'client_credentials',
      '--scopes',
      SCOPE,
      '--jwks',
      JSON.stringify({ keys: [replayKey.jwk] }),
    ]);
  });

  after(() => keySetHost.stop());

  test('discovery advertises private_key_jwt and its signing algorithms; the clients get no secret', async () => {
    const log = new WireLog();
    const meta = (await discover(issuer, app.client_id, appKey.auth(), log)).serverMetadata();
    assert.ok(
      meta.token_endpoint_auth_methods_supported.includes('private_key_jwt'),
      JSON.stringify(meta.token_endpoint_auth_methods_supported),
    );
    const algs = meta.token_endpoint_auth_signing_alg_values_supported;
    assert.ok(Array.isArray(algs) && algs.includes('ES256'), JSON.stringify(algs));
    assert.ok(!algs.includes('none') && !algs.some((a) => a.startsWith('HS')), JSON.stringify(algs));
    assert.equal(app.client_secret, undefined, 'a --jwks client has no secret');
    assert.equal(replayApp.client_secret, undefined, 'a --jwks client has no secret');
  });

  test('a client registered with --jwks: the code flow, a refresh (aud the token endpoint), introspection and revocation, each with a fresh assertion', async () => {
    const log = new WireLog();
    const config = await discover(issuer, app.client_id, appKey.auth(), log);
    const meta = config.serverMetadata();

    // The code exchange: openid-client signs with aud = the issuer (its default).
    const { tokens, nonce } = await codeFlow(config, undefined, log);
    const claims = tokens.claims();
    assert.ok([claims.aud].flat().includes(app.client_id), `ID token aud ${JSON.stringify(claims.aud)}`);
    assert.equal(claims.nonce, nonce);
    assert.ok(tokens.refresh_token, 'a refresh token');
    const exchange = log.to(meta.token_endpoint).at(-1);
    assert.equal(new URLSearchParams(exchange.requestBody).get('grant_type'), 'authorization_code');
    assert.equal(exchange.status, 200, log.dump(1));
    const first = assertAssertion(exchange, app.client_id, appKey.kid, issuer, 'the code exchange');

    // The refresh, with aud = the token endpoint URL (RFC 7523 §3 allows it; set with
    // openid-client's modifyAssertion).
    const toTokenEndpoint = await discover(
      issuer,
      app.client_id,
      appKey.auth({ [client.modifyAssertion]: (_header, payload) => void (payload.aud = meta.token_endpoint) }),
      log,
    );
    const refreshed = await wire(log, () => client.refreshTokenGrant(toTokenEndpoint, tokens.refresh_token));
    assert.ok(refreshed.refresh_token && refreshed.refresh_token !== tokens.refresh_token, 'rotated');
    const refresh = log.to(meta.token_endpoint).at(-1);
    assert.equal(new URLSearchParams(refresh.requestBody).get('grant_type'), 'refresh_token');
    const second = assertAssertion(refresh, app.client_id, appKey.kid, meta.token_endpoint, 'the refresh');
    assert.notEqual(second.claims.jti, first.claims.jti, 'a new jti for every assertion');

    // Introspection and revocation authenticate the same way.
    const info = await wire(log, () => client.tokenIntrospection(config, refreshed.access_token));
    assert.equal(info.active, true, JSON.stringify(info));
    assert.equal(info.client_id, app.client_id, JSON.stringify(info));
    assertAssertion(log.to(meta.introspection_endpoint).at(-1), app.client_id, appKey.kid, issuer, 'introspection');
    await wire(log, () => client.tokenRevocation(config, refreshed.refresh_token));
    const revocation = log.to(meta.revocation_endpoint).at(-1);
    assert.equal(revocation.status, 200, log.dump(1));
    assertAssertion(revocation, app.client_id, appKey.kid, issuer, 'revocation');
    await rejectsWithOAuthError(
      client.refreshTokenGrant(config, refreshed.refresh_token),
      'invalid_grant',
      log,
      'the revoked refresh token',
    );
  });

  test('a client with --jwks-uri on a loopback server: clientCredentialsGrant with one key of the served set, then with the next (a rotation); a key outside the set is invalid_client', async () => {
    // The served set holds both keys from the start: the server refetches a set for an
    // unknown kid only 10 s after its last fetch, so the app "rotates" by starting to sign
    // with the second key, which is already published.
    const current = await clientKey('job-1', { alg: 'ES256', use: 'sig' });
    const next = await clientKey('job-2', { alg: 'ES256', use: 'sig' });
    keySetHost.keys = [current.jwk, next.jwk];
    const machine = await addClient([
      '--name',
      'interop private_key_jwt jwks_uri',
      '--grant-types',
      'client_credentials',
      '--scopes',
      SCOPE,
      '--jwks-uri',
      keySetHost.uri,
    ]);
    assert.equal(machine.client_secret, undefined, 'a --jwks-uri client has no secret');
    const log = new WireLog();

    for (const [key, what] of [
      [current, 'the current key'],
      [next, 'the next key'],
      [current, 'the current key again (still published)'],
    ]) {
      const config = await discover(issuer, machine.client_id, key.auth(), log);
      const tokens = await wire(log, () => client.clientCredentialsGrant(config, { scope: SCOPE }));
      assert.ok(tokens.access_token, what);
      assert.equal(tokens.refresh_token, undefined, `${what}: no refresh token for client_credentials`);
      assert.equal(decodeJwt(tokens.access_token).sub, machine.client_id, what);
      const grant = log.to(config.serverMetadata().token_endpoint).at(-1);
      assertAssertion(grant, machine.client_id, key.kid, issuer, what);
    }
    const fetches = keySetHost.requests.filter((r) => r.method === 'GET' && r.path === '/jwks.json');
    assert.ok(fetches.length >= 1, `the server fetched the jwks_uri: ${JSON.stringify(keySetHost.requests)}`);

    // A key the set does not hold, under a new kid and under a published one.
    for (const [kid, what] of [
      ['job-3', 'an unpublished kid'],
      [next.kid, 'a published kid with another key'],
    ]) {
      const stranger = await clientKey(kid);
      const config = await discover(issuer, machine.client_id, stranger.auth(), log);
      await rejectsInvalidClient(client.clientCredentialsGrant(config, { scope: SCOPE }), log, what);
    }
  });

  test('an assertion taken from the wire and sent again is 401 invalid_client (a jti is accepted once)', async () => {
    const log = new WireLog();
    const config = await discover(issuer, replayApp.client_id, replayKey.auth(), log);
    const meta = config.serverMetadata();
    const tokens = await wire(log, () => client.clientCredentialsGrant(config, { scope: SCOPE }));
    const sent = log.to(meta.token_endpoint).at(-1);
    assert.equal(sent.status, 200, log.dump(1));
    const { assertion } = assertAssertion(sent, replayApp.client_id, replayKey.kid, issuer, 'the grant');

    // The same request, byte for byte: the assertion's jti was spent.
    const replay = await fetch(meta.token_endpoint, {
      method: 'POST',
      headers: sent.requestHeaders,
      body: sent.requestBody,
    });
    const replayBody = await replay.text();
    assert.equal(replay.status, 401, `the replay: ${replay.status} ${replayBody}`);
    assert.equal(JSON.parse(replayBody).error, 'invalid_client', replayBody);
    assert.match(replay.headers.get('cache-control') ?? '', /no-store/);

    // Nor at another endpoint that authenticates clients.
    const atIntrospection = await fetch(meta.introspection_endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: new URLSearchParams({
        token: tokens.access_token,
        client_id: replayApp.client_id,
        client_assertion_type: JWT_BEARER,
        client_assertion: assertion,
      }),
    });
    const introspectionBody = await atIntrospection.text();
    assert.equal(atIntrospection.status, 401, `at introspection: ${atIntrospection.status} ${introspectionBody}`);
    assert.equal(JSON.parse(introspectionBody).error, 'invalid_client', introspectionBody);

    // A fresh assertion still works: the replay locked nothing.
    const again = await wire(log, () => client.clientCredentialsGrant(config, { scope: SCOPE }));
    assert.ok(again.access_token);
  });
});
