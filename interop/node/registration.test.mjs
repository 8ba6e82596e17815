// Interoperability: Dynamic Client Registration (RFC 7591) and its management protocol
// (RFC 7592). openid-client 6 discovers the server and registers apps itself
// (`dynamicClientRegistration`): a confidential one (`client_secret_basic`), which signs a
// user in with the code flow, refreshes, is read (GET), replaced (PUT) and deleted (DELETE)
// at its `registration_client_uri`, after which its refresh token is refused with
// `invalid_client`; a public one (`none`, a native app's loopback redirect) with DPoP;
// metadata the server will not take (a plain-http redirect to another host, a scope outside
// openid/profile/offline_access) read by openid-client as RFC 7591 errors; with an initial
// access token (`initialAccessToken`) from `latchkey client registration-token` on a server
// in token mode, single use; and a closed server not advertising the endpoint. The RFC 7592
// requests are plain `fetch` (openid-client has no API for them); the only other
// hand-written HTTP is the user's browser on the server's sign-in and consent pages
// (support.mjs).
//
// Environment (set by the harness, or by ./run-local.sh):
//
//   LATCHKEY_URL                 issuer of a server started with dynamic_registration = "open"
//                                (LATCHKEY_DYNAMIC_REGISTRATION=open)
//   LATCHKEY_USERNAME            a user on it (and on the token-mode server) ...
//   LATCHKEY_PASSWORD            ... and the password
//   REDIRECT_URI                 optional, default http://127.0.0.1:9/cb (the apps register it;
//                                it must be https or loopback http; nothing listens there)
//
//   Optional, for the token-mode test (skipped when TOKEN_LATCHKEY_URL is unset):
//   TOKEN_LATCHKEY_URL           issuer of a server started with dynamic_registration = "token"
//   TOKEN_LATCHKEY_DATABASE_URL  its database, for `LATCHKEY_CLI client registration-token`
//   LATCHKEY_CLI                 the server's binary
//
//   Optional, for the closed-server test (skipped when CLOSED_LATCHKEY_URL is unset):
//   CLOSED_LATCHKEY_URL          issuer of a server with the default dynamic_registration
//                                = "closed"
//
// Run: `npm test` (or `node --test`) in this directory.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import * as client from 'openid-client';

import {
  REDIRECT_URI,
  USERNAME,
  WireLog,
  codeFlow,
  env,
  rejectsWithOAuthError,
  wire,
} from './support.mjs';

/** openid-client's options for a registration against `issuer` (loopback http allowed). */
function options(issuer, log, extra = {}) {
  const insecure = new URL(issuer).protocol === 'http:';
  return {
    execute: insecure ? [client.allowInsecureRequests] : [],
    [client.customFetch]: log.fetch,
    ...extra,
  };
}

/**
 * `dynamicClientRegistration` of `metadata` at `issuer` (discovery, then the POST to its
 * registration_endpoint), with the wire log attached to any error.
 */
async function register(issuer, metadata, log, extra = {}, auth = undefined) {
  const config = await wire(log, () =>
    client.dynamicClientRegistration(new URL(issuer), metadata, auth, options(issuer, log, extra)),
  );
  config[client.customFetch] = log.fetch;
  return config;
}

/**
 * The registered app's configuration authenticating with `client_secret_basic`: when no
 * client authentication is passed, openid-client uses `client_secret_post` with the issued
 * secret whatever `token_endpoint_auth_method` was registered (and the secret is unknown
 * before the answer), so the app builds a `Configuration` from what the server answered.
 */
function withBasic(registered, issuer, log) {
  const meta = registered.clientMetadata();
  const config = new client.Configuration(
    registered.serverMetadata(),
    meta.client_id,
    meta,
    client.ClientSecretBasic(meta.client_secret),
  );
  if (new URL(issuer).protocol === 'http:') client.allowInsecureRequests(config);
  config[client.customFetch] = log.fetch;
  return config;
}

/** An RFC 7592 request to the client configuration endpoint, with the wire log. */
async function manage(log, method, uri, token, body) {
  const headers = { accept: 'application/json' };
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await log.fetch(uri, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    redirect: 'manual',
  });
  const text = await response.text();
  return {
    status: response.status,
    headers: response.headers,
    json: text ? JSON.parse(text) : undefined,
  };
}

/** RFC 6750 §3.1: a `401` with a Bearer `invalid_token` challenge. */
function assertInvalidToken(answer, what, log) {
  const got = `${answer.status} ${JSON.stringify(answer.json)}\n${log.dump(1)}`;
  assert.equal(answer.status, 401, `${what}: ${got}`);
  assert.match(answer.headers.get('www-authenticate') ?? '', /^Bearer\b.*error="invalid_token"/i, `${what}: ${got}`);
  assert.equal(answer.json?.error, 'invalid_token', `${what}: ${got}`);
}

/**
 * Asserts that `promise` (a token request authenticated with HTTP Basic) fails with `401`,
 * a `Basic` challenge and the OAuth error `code` in the body (RFC 6749 §5.2: a client that
 * used the Authorization header gets a 401 with WWW-Authenticate). openid-client raises
 * the challenge (`WWWAuthenticateChallengeError`) before reading the body, so the body is
 * checked from the wire log.
 */
async function rejectsWithBasicChallenge(promise, code, log, what) {
  const err = await promise.then(
    (ok) => assert.fail(`${what}: expected ${code}, got tokens ${JSON.stringify(ok)}\n${log.dump(2)}`),
    (e) => e,
  );
  assert.ok(
    err instanceof client.WWWAuthenticateChallengeError,
    `${what}: expected a WWWAuthenticateChallengeError, got ${err?.name}: ${err?.message}\n${log.dump(2)}`,
  );
  assert.equal(err.status, 401, `${what}\n${log.dump(1)}`);
  assert.ok(err.cause.some((c) => c.scheme === 'basic'), `${what}: ${JSON.stringify(err.cause)}`);
  const body = JSON.parse(log.entries.at(-1).responseBody);
  assert.equal(body.error, code, `${what}\n${log.dump(1)}`);
  return err;
}

/** The last POST to the registration endpoint in the wire log, checked as RFC 7591 §3.1/§3.2.1 want. */
function assertRegistrationExchange(log, registrationEndpoint) {
  const post = log.to(registrationEndpoint).filter((e) => e.method === 'POST').at(-1);
  assert.ok(post, `a POST to ${registrationEndpoint}\n${log.dump()}`);
  assert.match(post.requestHeaders['content-type'], /^application\/json/);
  assert.equal(post.status, 201, log.dump(1));
  assert.match(post.responseHeaders['content-type'] ?? '', /^application\/json/);
  assert.match(post.responseHeaders['cache-control'] ?? '', /no-store/, 'RFC 7591 §3.2.1: no-store');
  return post;
}

/** What the server answered to a registration: RFC 7591 §3.2.1 and RFC 7592 §3 members. */
function assertRegistered(meta, issuer, registrationEndpoint, { confidential, authMethod, name }) {
  assert.equal(typeof meta.client_id, 'string');
  assert.ok(meta.client_id.length > 0);
  const now = Math.floor(Date.now() / 1000);
  assert.equal(typeof meta.client_id_issued_at, 'number', 'client_id_issued_at');
  assert.ok(Math.abs(meta.client_id_issued_at - now) < 120, `client_id_issued_at ${meta.client_id_issued_at}`);
  if (confidential) {
    assert.equal(typeof meta.client_secret, 'string', 'a client_secret');
    assert.ok(meta.client_secret.length >= 32, 'a long secret');
    assert.equal(meta.client_secret_expires_at, 0, 'client_secret_expires_at 0 (never)');
  } else {
    assert.equal(meta.client_secret, undefined, 'no secret for a public client');
  }
  assert.equal(typeof meta.registration_access_token, 'string', 'registration_access_token');
  assert.ok(meta.registration_access_token.length >= 32);
  assert.equal(meta.registration_client_uri, `${registrationEndpoint}/${meta.client_id}`);
  assert.ok(meta.registration_client_uri.startsWith(`${issuer}/`));
  assert.deepEqual(meta.redirect_uris, [REDIRECT_URI]);
  assert.equal(meta.token_endpoint_auth_method, authMethod);
  assert.deepEqual([...meta.grant_types].sort(), ['authorization_code', 'refresh_token']);
  assert.deepEqual(meta.response_types, ['code']);
  assert.equal(meta.client_name, name);
}

/**
 * The client id and secret of a request's HTTP Basic `Authorization`, decoded as RFC 6749
 * §2.3.1 has them encoded (openid-client form-urlencodes both first, escaping even `-` and
 * `_`, which Latchkey's ids and secrets contain).
 */
function basicCredentials(entry) {
  const [scheme, value] = (entry.requestHeaders.authorization ?? '').split(' ');
  assert.equal(scheme, 'Basic', `HTTP Basic client authentication: ${entry.requestHeaders.authorization}`);
  const decoded = Buffer.from(value, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  const form = (s) => decodeURIComponent(s.replace(/\+/g, ' '));
  return [form(decoded.slice(0, colon)), form(decoded.slice(colon + 1))];
}

/** `LATCHKEY_CLI --database-url DB client registration-token`: one initial access token. */
async function registrationToken(databaseUrl) {
  const { stdout } = await promisify(execFile)(
    env('LATCHKEY_CLI'),
    ['--database-url', databaseUrl, 'client', 'registration-token'],
    { timeout: 30_000 },
  );
  const printed = JSON.parse(stdout);
  assert.equal(typeof printed.registration_token, 'string', stdout);
  return printed.registration_token;
}

/** A code flow for a self-registered app, checking the ID token is for it. */
async function signIn(config, log, DPoP) {
  const { tokens, nonce } = await codeFlow(config, DPoP, log);
  const claims = tokens.claims();
  assert.ok(claims, 'an ID token was returned and validated');
  assert.equal(claims.iss, config.serverMetadata().issuer);
  assert.ok([claims.aud].flat().includes(config.clientMetadata().client_id), `aud ${JSON.stringify(claims.aud)}`);
  assert.equal(claims.nonce, nonce);
  assert.ok(tokens.refresh_token, 'a refresh token');
  return { tokens, claims };
}

describe('openid-client 6: dynamic client registration (RFC 7591, RFC 7592) against Latchkey', () => {
  // Required: a missing LATCHKEY_URL fails every test rather than skipping it.
  const issuer = process.env.LATCHKEY_URL ?? 'http://LATCHKEY_URL.unset.invalid';
  const registrationEndpoint = `${issuer}/oauth/register`;
  const tokenIssuer = process.env.TOKEN_LATCHKEY_URL;
  const closedIssuer = process.env.CLOSED_LATCHKEY_URL;

  test('a confidential app registers itself, signs a user in, refreshes, is read, replaced and deleted', async () => {
    const log = new WireLog();
    const name = 'interop DCR confidential';
    const registered = await register(
      issuer,
      {
        client_name: name,
        redirect_uris: [REDIRECT_URI],
        response_types: ['code'],
        grant_types: ['authorization_code', 'refresh_token'],
        token_endpoint_auth_method: 'client_secret_basic',
        scope: 'openid profile offline_access',
      },
      log,
    );
    assert.equal(registered.serverMetadata().registration_endpoint, registrationEndpoint, 'discovery');
    assertRegistrationExchange(log, registrationEndpoint);
    const meta = registered.clientMetadata();
    assertRegistered(meta, issuer, registrationEndpoint, {
      confidential: true,
      authMethod: 'client_secret_basic',
      name,
    });
    assert.deepEqual(meta.scope.split(' ').sort(), ['offline_access', 'openid', 'profile']);
    const config = withBasic(registered, issuer, log);

    // The code flow and a refresh with the issued secret, sent as HTTP Basic.
    const { tokens, claims } = await signIn(config, log);
    const tokenEndpoint = config.serverMetadata().token_endpoint;
    const exchange = log.to(tokenEndpoint).at(-1);
    assert.deepEqual(basicCredentials(exchange), [meta.client_id, meta.client_secret], 'client_secret_basic');
    const refreshed = await wire(log, () => client.refreshTokenGrant(config, tokens.refresh_token));
    assert.ok(refreshed.refresh_token, 'a new refresh token');
    assert.notEqual(refreshed.refresh_token, tokens.refresh_token, 'the refresh token rotated');
    assert.notEqual(refreshed.access_token, tokens.access_token);
    assert.deepEqual(basicCredentials(log.to(tokenEndpoint).at(-1)), [meta.client_id, meta.client_secret]);
    const info = await wire(log, () => client.fetchUserInfo(config, refreshed.access_token, claims.sub));
    assert.equal(info.sub, claims.sub);
    assert.equal(info.preferred_username, USERNAME());

    // RFC 7592 §2.1: read with the registration access token.
    const uri = meta.registration_client_uri;
    const token = meta.registration_access_token;
    const read = await manage(log, 'GET', uri, token);
    assert.equal(read.status, 200, log.dump(1));
    assert.match(read.headers.get('cache-control') ?? '', /no-store/);
    assert.equal(read.json.client_id, meta.client_id);
    assert.equal(read.json.client_name, name);
    assert.deepEqual(read.json.redirect_uris, [REDIRECT_URI]);
    assert.equal(read.json.token_endpoint_auth_method, 'client_secret_basic');
    assert.equal(read.json.registration_client_uri, uri);
    assert.equal(read.json.client_id_issued_at, meta.client_id_issued_at);
    assert.equal(read.json.scope, meta.scope);
    assert.equal(read.json.client_secret_expires_at, 0);

    // Wrong, missing, another kind of token, or another client's URI: 401 invalid_token.
    assertInvalidToken(await manage(log, 'GET', uri, `${token}x`), 'a wrong registration access token', log);
    assertInvalidToken(await manage(log, 'GET', uri, undefined), 'no registration access token', log);
    assertInvalidToken(await manage(log, 'GET', uri, refreshed.access_token), 'an OAuth access token', log);
    assertInvalidToken(
      await manage(log, 'GET', `${registrationEndpoint}/${meta.client_id}x`, token),
      "another client's URI",
      log,
    );

    // RFC 7592 §2.2: replace the metadata (the same auth method, client_id included).
    const renamed = `${name} (renamed)`;
    const second = REDIRECT_URI.replace(/\/?$/, '') + '/second';
    const put = await manage(log, 'PUT', uri, token, {
      client_id: meta.client_id,
      client_name: renamed,
      redirect_uris: [REDIRECT_URI, second],
      response_types: ['code'],
      grant_types: ['authorization_code', 'refresh_token'],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: 'openid profile offline_access',
    });
    assert.equal(put.status, 200, log.dump(1));
    assert.equal(put.json.client_id, meta.client_id);
    assert.equal(put.json.client_name, renamed);
    assert.deepEqual(put.json.redirect_uris, [REDIRECT_URI, second]);
    const reread = await manage(log, 'GET', uri, token);
    assert.equal(reread.json.client_name, renamed);
    // The secret is unchanged: the client still authenticates.
    const again = await wire(log, () => client.refreshTokenGrant(config, refreshed.refresh_token));
    assert.ok(again.refresh_token);

    // RFC 7592 §2.3: delete. 204; the registration is gone (401 on reading it again, §2.3
    // "MUST ... 401"), and the client no longer authenticates at the token endpoint.
    const deleted = await manage(log, 'DELETE', uri, token);
    assert.equal(deleted.status, 204, log.dump(1));
    assertInvalidToken(await manage(log, 'GET', uri, token), 'reading a deleted registration', log);
    assertInvalidToken(await manage(log, 'DELETE', uri, token), 'deleting it twice', log);
    await rejectsWithBasicChallenge(
      client.refreshTokenGrant(config, again.refresh_token),
      'invalid_client',
      log,
      "a deleted client's refresh",
    );
    const userinfo = await client.fetchUserInfo(config, again.access_token, claims.sub).then(
      (ok) => ({ ok }),
      (err) => ({ err }),
    );
    assert.ok(userinfo.err, `a deleted client's access token at userinfo: ${JSON.stringify(userinfo.ok)}`);
    assert.ok(
      userinfo.err instanceof client.WWWAuthenticateChallengeError,
      `${userinfo.err.name}: ${userinfo.err.message}\n${log.dump(1)}`,
    );
    assert.equal(userinfo.err.status, 401);
  });

  test('a public native app registers itself (none, loopback redirect) and signs a user in with DPoP', async () => {
    const log = new WireLog();
    const name = 'interop DCR public';
    const config = await register(
      issuer,
      {
        client_name: name,
        redirect_uris: [REDIRECT_URI],
        response_types: ['code'],
        grant_types: ['authorization_code', 'refresh_token'],
        token_endpoint_auth_method: 'none',
      },
      log,
    );
    assertRegistrationExchange(log, registrationEndpoint);
    const meta = config.clientMetadata();
    assertRegistered(meta, issuer, registrationEndpoint, { confidential: false, authMethod: 'none', name });
    assert.equal(meta.scope, 'openid profile', 'the default scope');

    const keyPair = await client.randomDPoPKeyPair('ES256');
    const DPoP = client.getDPoPHandle(config, keyPair);
    const { tokens } = await signIn(config, log, DPoP);
    assert.equal(tokens.token_type.toLowerCase(), 'dpop');
    const exchange = log.to(config.serverMetadata().token_endpoint).at(-1);
    assert.equal(exchange.requestHeaders.authorization, undefined, 'a public client sends no credentials');
    assert.match(exchange.requestBody, new RegExp(`client_id=${meta.client_id}`));
    const refreshed = await wire(log, () =>
      client.refreshTokenGrant(config, tokens.refresh_token, undefined, { DPoP }),
    );
    assert.notEqual(refreshed.refresh_token, tokens.refresh_token);

    const read = await manage(log, 'GET', meta.registration_client_uri, meta.registration_access_token);
    assert.equal(read.status, 200, log.dump(1));
    assert.equal(read.json.token_endpoint_auth_method, 'none');
    assert.equal(read.json.client_secret, undefined);
    assert.equal(read.json.client_secret_expires_at, undefined);

    const deleted = await manage(log, 'DELETE', meta.registration_client_uri, meta.registration_access_token);
    assert.equal(deleted.status, 204, log.dump(1));
    await rejectsWithOAuthError(
      client.refreshTokenGrant(config, refreshed.refresh_token, undefined, { DPoP }),
      'invalid_client',
      log,
      "a deleted public client's refresh",
    );
  });

  test('metadata the server will not register is refused with RFC 7591 errors', async () => {
    const base = { redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'client_secret_basic' };
    const refused = [
      [{ ...base, redirect_uris: ['http://app.example/cb'] }, 'invalid_redirect_uri', 'plain http off loopback'],
      [{ ...base, redirect_uris: ['https://app.example/cb#x'] }, 'invalid_redirect_uri', 'a fragment'],
      [{ ...base, scope: 'openid notes:read' }, 'invalid_client_metadata', 'a scope outside openid/profile/offline_access'],
      [{ ...base, response_types: ['token'] }, 'invalid_client_metadata', 'the implicit response type'],
      [{ ...base, token_endpoint_auth_method: 'tls_client_auth' }, 'invalid_client_metadata', 'an unsupported auth method'],
    ];
    for (const [metadata, code, what] of refused) {
      const log = new WireLog();
      const err = await rejectsWithOAuthError(
        client.dynamicClientRegistration(new URL(issuer), metadata, undefined, options(issuer, log)),
        code,
        log,
        what,
      );
      assert.equal(err.status, 400, `${what}: ${log.dump(1)}`);
      assert.equal(typeof err.cause.error_description, 'string', `${what}: an error_description`);
    }
  });

  test('token mode: an initial access token from the CLI admits one registration', { skip: !tokenIssuer }, async () => {
    const log = new WireLog();
    const endpoint = `${tokenIssuer}/oauth/register`;
    const metadata = {
      client_name: 'interop DCR token mode',
      redirect_uris: [REDIRECT_URI],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_post',
    };

    // Without an initial access token, and with a made-up one: 401 with a Bearer challenge.
    for (const [extra, what] of [
      [{}, 'no initial access token'],
      [{ initialAccessToken: 'lki_made-up' }, 'a made-up initial access token'],
    ]) {
      const err = await client
        .dynamicClientRegistration(new URL(tokenIssuer), metadata, undefined, options(tokenIssuer, log, extra))
        .then(
          (ok) => assert.fail(`${what}: registered ${JSON.stringify(ok.clientMetadata())}`),
          (e) => e,
        );
      assert.ok(
        err instanceof client.WWWAuthenticateChallengeError,
        `${what}: ${err.name}: ${err.message}\n${log.dump(1)}`,
      );
      assert.equal(err.status, 401);
      const challenge = err.cause.find((c) => c.scheme === 'bearer');
      assert.equal(challenge?.parameters.error, 'invalid_token', `${what}: ${JSON.stringify(err.cause)}`);
    }

    // With one from the CLI, sent as a Bearer token by openid-client: registered. The app
    // keeps openid-client's default client authentication, client_secret_post.
    const initial = await registrationToken(env('TOKEN_LATCHKEY_DATABASE_URL'));
    const config = await register(tokenIssuer, metadata, log, { initialAccessToken: initial });
    const post = assertRegistrationExchange(log, endpoint);
    assert.equal(post.requestHeaders.authorization, `Bearer ${initial}`);
    const meta = config.clientMetadata();
    assertRegistered(meta, tokenIssuer, endpoint, {
      confidential: true,
      authMethod: 'client_secret_post',
      name: metadata.client_name,
    });
    const { tokens } = await signIn(config, log);
    const exchange = log.to(config.serverMetadata().token_endpoint).at(-1);
    assert.equal(exchange.requestHeaders.authorization, undefined, 'client_secret_post: no Authorization');
    assert.match(exchange.requestBody, /client_secret=/);
    await wire(log, () => client.refreshTokenGrant(config, tokens.refresh_token));

    // The token is spent: a second registration with it is refused.
    const reused = await client
      .dynamicClientRegistration(
        new URL(tokenIssuer),
        { ...metadata, client_name: 'interop DCR token mode again' },
        undefined,
        options(tokenIssuer, log, { initialAccessToken: initial }),
      )
      .then(
        (ok) => assert.fail(`a spent initial access token: registered ${JSON.stringify(ok.clientMetadata())}`),
        (e) => e,
      );
    assert.ok(reused instanceof client.WWWAuthenticateChallengeError, `${reused.name}: ${reused.message}`);
    assert.equal(reused.status, 401);

    // The registration access token, not the initial one, manages the client.
    assertInvalidToken(
      await manage(log, 'GET', meta.registration_client_uri, initial),
      'the initial access token at the client configuration endpoint',
      log,
    );
    const deleted = await manage(log, 'DELETE', meta.registration_client_uri, meta.registration_access_token);
    assert.equal(deleted.status, 204, log.dump(1));
  });

  test('a closed server does not advertise registration and refuses it', { skip: !closedIssuer }, async () => {
    const log = new WireLog();
    const metadata = { redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'client_secret_basic' };
    const err = await client
      .dynamicClientRegistration(new URL(closedIssuer), metadata, undefined, options(closedIssuer, log))
      .then(
        (ok) => assert.fail(`registered ${JSON.stringify(ok.clientMetadata())}`),
        (e) => e,
      );
    assert.equal(err.code, 'OAUTH_MISSING_SERVER_METADATA', `${err.name}: ${err.message}`);
    const discovery = log.entries.find((e) => e.url.includes('/.well-known/'));
    assert.equal(JSON.parse(discovery.responseBody).registration_endpoint, undefined);
    assert.equal(log.entries.length, 1, 'nothing but discovery was requested');

    // Posting to the path anyway: refused, nothing registered.
    const answer = await log.fetch(`${closedIssuer}/oauth/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify(metadata),
    });
    const body = await answer.json();
    assert.equal(answer.status, 403, log.dump(1));
    assert.equal(body.error, 'access_denied');
    assert.equal(body.client_id, undefined);
  });
});
