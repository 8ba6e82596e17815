// Interoperability: the OAuth 2.0 Device Authorization Grant (RFC 8628). openid-client 6
// asks for the codes (`initiateDeviceAuthorization`) and polls the token endpoint
// (`pollDeviceAuthorizationGrant`: its interval, `authorization_pending`, `slow_down`),
// validates the ID token, refreshes and calls userinfo, as a TV or command-line app does;
// the user's browser (support.mjs) opens the verification URI, signs in, types the code at
// /device and allows or denies. The polls wait for the server's real 5-second interval, so
// the tests run concurrently and poll as little as they can (about 10 s in all).
//
// Environment (set by the harness, or by ./run-local.sh):
//
//   LATCHKEY_URL                 issuer of the server under test, e.g. http://127.0.0.1:18977
//   LATCHKEY_CLI                 the server's binary, and ...
//   LATCHKEY_DATABASE_URL        ... its database: the tests register their own device
//                                clients with `client add --grant-types
//                                urn:ietf:params:oauth:grant-type:device_code,refresh_token`
//   LATCHKEY_USERNAME            a user on it ...
//   LATCHKEY_PASSWORD            ... and the password
//
// Run: `npm test` (or `node --test`) in this directory.

import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as client from 'openid-client';

import {
  Browser,
  PASSWORD,
  REDIRECT_URI,
  USERNAME,
  WireLog,
  addClient,
  discover,
  hiddenFields,
  jwtClaims,
  rejectsWithOAuthError,
  wire,
} from './support.mjs';

const DEVICE_CODE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
/** User codes: XXXX-XXXX from 20 consonants (no vowels, no look-alikes). */
const USER_CODE = /^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$/;
const SCOPE = 'openid profile';

/** Resolves once `check()` is true (checked every 50 ms); throws after `timeoutMs`. */
async function until(check, what, timeoutMs = 15_000) {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The token endpoint's answers in the wire log: `200` or the OAuth `error` code. */
function pollAnswers(log, tokenEndpoint, from = 0) {
  return log
    .to(tokenEndpoint)
    .slice(from)
    .filter((e) => e.responseBody !== undefined)
    .map((e) => (e.status === 200 ? 200 : safeJson(e.responseBody).error ?? e.status));
}

/**
 * Asserts polls answered authorization_pending until the tokens came (one poll, when the
 * user was quick enough), never slow_down: openid-client keeps the interval.
 */
function assertPendingThenTokens(answers, log) {
  assert.equal(answers.at(-1), 200, `the last poll got tokens: ${answers}\n${log.dump(3)}`);
  assert.ok(
    answers.slice(0, -1).every((a) => a === 'authorization_pending'),
    `only authorization_pending before: ${answers}\n${log.dump(3)}`,
  );
}

function safeJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return {};
  }
}

/**
 * The user opens `url` (the verification URI, with or without the code) in `browser`,
 * signs in when sent to the sign-in page, and is brought back to the code form. Returns
 * that page and the trail of requests.
 */
async function openCodeForm(browser, url, issuer) {
  const trail = [];
  for (let step = 0; step < 6; step++) {
    const page = await browser.get(url);
    trail.push(`GET ${url} -> ${page.status} ${page.location ?? ''}`);
    if (page.status === 302 || page.status === 303) {
      url = new URL(page.location, url).href;
    } else if (page.status === 200 && page.text.includes('name="password"')) {
      const answer = await browser.post(new URL('/login', issuer), [
        ...hiddenFields(page.text),
        ['username', USERNAME()],
        ['password', PASSWORD()],
      ]);
      trail.push(`POST /login -> ${answer.status} ${answer.location ?? ''}`);
      assert.equal(answer.status, 303, `sign-in: ${answer.text.slice(0, 600)}\n${trail.join('\n')}`);
      url = new URL(answer.location, issuer).href;
    } else if (page.status === 200 && page.text.includes('name="user_code"')) {
      return { page, trail, url };
    } else {
      throw new Error(
        `unexpected page ${page.status} at ${url}:\n${page.text.slice(0, 800)}\n${trail.join('\n')}`,
      );
    }
  }
  throw new Error(`no code form after 6 steps:\n${trail.join('\n')}`);
}

/** The `return_to` of the first redirect in a trail of openCodeForm (to /login). */
function signInReturnTo(trail) {
  const m = trail[0].match(/ -> 303 (\/login\?\S*)$/);
  return m ? new URL(m[1], 'http://x').searchParams.get('return_to') : `no redirect to /login: ${trail[0]}`;
}

/** Asserts the code form: POST /device with a CSRF token, a Code field and Continue. */
function assertCodeForm(page, prefilled) {
  assert.match(page.text, /<form method="post" action="\/device"/);
  assert.ok(
    hiddenFields(page.text).some(([name]) => name === 'csrf'),
    'the code form carries a CSRF token',
  );
  assert.match(page.text, /<label for="user_code">Code<\/label>/);
  assert.match(page.text, />\s*Continue\s*<\/button>/);
  const value = page.text.match(/<input id="user_code"[^>]* value="([^"]*)"/)?.[1];
  assert.equal(value, prefilled, 'the code field is prefilled from verification_uri_complete');
}

/** The user types `typed` on the code form: the consent page for `appName`. */
async function enterCode(browser, issuer, form, typed, userCode, appName) {
  const page = await browser.post(new URL('/device', issuer), [
    ...hiddenFields(form.text),
    ['user_code', typed],
  ]);
  assert.equal(page.status, 200, `consent page: ${page.status} ${page.location}\n${page.text.slice(0, 800)}`);
  assert.ok(page.text.includes(appName), `the consent page names the app ${appName}`);
  assert.match(page.text, /<button type="submit" name="decision" value="allow">Allow<\/button>/);
  assert.match(page.text, /name="decision" value="deny"[^>]*>Deny<\/button>/);
  const fields = hiddenFields(page.text);
  assert.deepEqual(
    fields.filter(([name]) => name === 'user_code'),
    [['user_code', userCode]],
    'the consent form carries the code as shown on the device',
  );
  return page;
}

/** The user presses Allow or Deny on the consent page; the page says what happened. */
async function decide(browser, issuer, consent, decision) {
  const page = await browser.post(new URL('/device', issuer), [
    ...hiddenFields(consent.text),
    ['decision', decision],
  ]);
  const got = `${page.status} ${page.location}\n${page.text.slice(0, 800)}`;
  assert.equal(page.status, 200, `after ${decision}: ${got}`);
  const title = decision === 'allow' ? 'Device connected' : 'Request denied';
  assert.match(page.text, new RegExp(`<h1>${title}</h1>`), page.text.slice(0, 800));
  return page;
}

/** Asserts a device authorization response (RFC 8628 §3.2) as openid-client returns it. */
function assertCodes(codes, issuer) {
  assert.equal(typeof codes.device_code, 'string');
  assert.ok(codes.device_code.length >= 32, 'a long device code');
  assert.match(codes.user_code, USER_CODE);
  assert.equal(codes.verification_uri, `${issuer}/device`);
  const complete = new URL(codes.verification_uri_complete);
  assert.equal(`${complete.origin}${complete.pathname}`, `${issuer}/device`);
  assert.equal(complete.searchParams.get('user_code'), codes.user_code);
  assert.equal(codes.expires_in, 600);
  assert.equal(codes.interval, 5);
}

/**
 * Checks a device's token response: the ID token openid-client validated (signature via
 * jwks_uri, iss, aud, exp, iat), its claims, the scope, and a refresh token.
 */
function assertDeviceTokens(tokens, issuer, clientId, tokenType) {
  assert.equal(tokens.token_type.toLowerCase(), tokenType, `token_type ${tokens.token_type}`);
  assert.ok(tokens.access_token, 'an access token');
  assert.ok(tokens.expires_in > 0, `expires_in ${tokens.expires_in}`);
  assert.ok(tokens.refresh_token, 'a refresh token (the client has the refresh_token grant)');
  assert.deepEqual(tokens.scope?.split(' ').sort(), SCOPE.split(' ').sort(), `scope ${tokens.scope}`);
  const claims = tokens.claims();
  assert.ok(claims, 'an ID token was returned and validated');
  assert.equal(claims.iss, issuer);
  assert.ok([claims.aud].flat().includes(clientId), `aud ${JSON.stringify(claims.aud)}`);
  assert.equal(typeof claims.sub, 'string');
  assert.ok(!('nonce' in claims), `no nonce in a device flow: ${JSON.stringify(claims)}`);
  assert.equal(typeof claims.auth_time, 'number', 'auth_time');
  assert.ok(claims.auth_time <= claims.iat, `auth_time ${claims.auth_time} after iat ${claims.iat}`);
  return claims;
}

// The polls wait for the real interval: the tests run concurrently (independent codes).
const concurrent = { concurrency: true };

describe('openid-client 6: the device authorization grant (RFC 8628) against Latchkey', concurrent, () => {
  // Required: a missing LATCHKEY_URL fails every test rather than skipping it.
  const issuer = process.env.LATCHKEY_URL ?? 'http://LATCHKEY_URL.unset.invalid';
  const deviceGrants = ['--grant-types', `${DEVICE_CODE_GRANT},refresh_token`, '--scopes', SCOPE];
  // A public and a confidential device app (no redirect URI), and a code-flow-only app.
  let tv, cli, web;

  before(async () => {
    tv = await addClient(['--name', 'interop TV', ...deviceGrants, '--public']);
    cli = await addClient(['--name', 'interop CLI', ...deviceGrants]);
    web = await addClient(['--name', 'interop web (code only)', '--redirect-uri', REDIRECT_URI, '--public']);
  });

  test('discovery advertises the device authorization endpoint and grant; clients without the grant or scope are refused', async () => {
    const log = new WireLog();
    const config = await discover(issuer, web.client_id, undefined, log);
    const meta = config.serverMetadata();
    assert.equal(meta.device_authorization_endpoint, `${issuer}/oauth/device_authorization`);
    const grants = meta.grant_types_supported ?? [];
    assert.ok(grants.includes(DEVICE_CODE_GRANT), JSON.stringify(grants));

    await rejectsWithOAuthError(
      client.initiateDeviceAuthorization(config, { scope: SCOPE }),
      'unauthorized_client',
      log,
      'a client registered without the device grant',
    );
    const tvConfig = await discover(issuer, tv.client_id, undefined, log);
    await rejectsWithOAuthError(
      client.initiateDeviceAuthorization(tvConfig, { scope: 'openid roles' }),
      'invalid_scope',
      log,
      'a scope the client is not registered for',
    );
  });

  test('public client with DPoP: pending, the user signs in at /device, types the code and allows; ID token, userinfo, refresh', async () => {
    const log = new WireLog();
    const config = await discover(issuer, tv.client_id, undefined, log);
    const meta = config.serverMetadata();
    const codes = await wire(log, () => client.initiateDeviceAuthorization(config, { scope: SCOPE }));
    assertCodes(codes, issuer);
    const request = log.to(meta.device_authorization_endpoint).at(-1);
    assert.equal(request.requestHeaders.authorization, undefined, 'a public client sends no credentials');
    assert.match(request.requestBody, new RegExp(`client_id=${tv.client_id}`));
    assert.match(request.responseHeaders['cache-control'] ?? '', /no-store/);

    const keyPair = await client.randomDPoPKeyPair();
    const DPoP = client.getDPoPHandle(config, keyPair);
    // The device starts polling (openid-client waits `interval` before each poll).
    const polling = client.pollDeviceAuthorizationGrant(config, codes, undefined, { DPoP });
    polling.catch(() => {}); // awaited below; not an unhandled rejection meanwhile

    // Meanwhile the user opens the verification URI, is sent to sign in and back.
    const browser = new Browser();
    const { page: form, trail } = await openCodeForm(browser, codes.verification_uri, issuer);
    assert.equal(signInReturnTo(trail), '/device', `sent to sign in and back\n${trail.join('\n')}`);
    assert.ok(
      trail.some((t) => t.startsWith('POST /login -> 303 /device')),
      trail.join('\n'),
    );
    assertCodeForm(form, '');
    // Types the code as people do: lower case, without the dash.
    const typed = codes.user_code.replace('-', '').toLowerCase();
    const consent = await enterCode(browser, issuer, form, typed, codes.user_code, 'interop TV');

    // The device's first poll is answered authorization_pending; only then the user allows.
    await until(
      () => pollAnswers(log, meta.token_endpoint).includes('authorization_pending'),
      `authorization_pending\n${log.dump(2)}`,
    );
    await decide(browser, issuer, consent, 'allow');

    const tokens = await wire(log, () => polling);
    assertPendingThenTokens(pollAnswers(log, meta.token_endpoint), log);
    assert.equal(pollAnswers(log, meta.token_endpoint)[0], 'authorization_pending');
    const poll = log.to(meta.token_endpoint).at(-1);
    assert.match(poll.requestBody, new RegExp(`grant_type=${encodeURIComponent(DEVICE_CODE_GRANT)}`));
    assert.match(poll.requestHeaders.dpop ?? '', /^ey/, 'the poll carried a DPoP proof');
    const claims = assertDeviceTokens(tokens, issuer, tv.client_id, 'dpop');
    const jkt = await DPoP.calculateThumbprint();
    assert.equal(jwtClaims(tokens.access_token).cnf?.jkt, jkt, 'the access token is bound to the key');

    const info = await wire(log, () =>
      client.fetchUserInfo(config, tokens.access_token, claims.sub, { DPoP }),
    );
    assert.equal(info.sub, claims.sub);
    assert.equal(info.preferred_username, USERNAME());

    const refreshed = await wire(log, () =>
      client.refreshTokenGrant(config, tokens.refresh_token, undefined, { DPoP }),
    );
    assert.equal(refreshed.token_type.toLowerCase(), 'dpop');
    assert.ok(refreshed.refresh_token, 'a new refresh token');
    assert.notEqual(refreshed.refresh_token, tokens.refresh_token, 'the refresh token rotated');
    assert.equal(jwtClaims(refreshed.access_token).cnf?.jkt, jkt);
    if (refreshed.id_token) assert.equal(refreshed.claims().sub, claims.sub);
    // A public client's refresh token is bound to the DPoP key it was issued with.
    const thief = client.getDPoPHandle(config, await client.randomDPoPKeyPair());
    await rejectsWithOAuthError(
      client.refreshTokenGrant(config, refreshed.refresh_token, undefined, { DPoP: thief }),
      'invalid_grant',
      log,
      'refresh with another key',
    );
  });

  test('confidential client (client_secret_basic) from verification_uri_complete: ID token, userinfo, refresh; the device code is single-use', async () => {
    const log = new WireLog();
    const config = await discover(issuer, cli.client_id, cli.client_secret, log);
    const meta = config.serverMetadata();
    const codes = await wire(log, () => client.initiateDeviceAuthorization(config, { scope: SCOPE }));
    assertCodes(codes, issuer);
    const request = log.to(meta.device_authorization_endpoint).at(-1);
    assert.match(request.requestHeaders.authorization ?? '', /^Basic /, 'client_secret_basic');

    // The user follows the link (or QR code) with the code in it: sign in, prefilled form.
    const browser = new Browser();
    const { page: form, trail } = await openCodeForm(browser, codes.verification_uri_complete, issuer);
    assert.equal(
      signInReturnTo(trail),
      `/device?user_code=${codes.user_code}`,
      `sent to sign in, to come back with the code\n${trail.join('\n')}`,
    );
    assertCodeForm(form, codes.user_code);
    const consent = await enterCode(browser, issuer, form, codes.user_code, codes.user_code, 'interop CLI');
    await decide(browser, issuer, consent, 'allow');

    const tokens = await wire(log, () => client.pollDeviceAuthorizationGrant(config, codes));
    assert.deepEqual(pollAnswers(log, meta.token_endpoint), [200], `one poll, tokens\n${log.dump(3)}`);
    assert.match(log.to(meta.token_endpoint).at(-1).requestHeaders.authorization ?? '', /^Basic /);
    const claims = assertDeviceTokens(tokens, issuer, cli.client_id, 'bearer');

    const info = await wire(log, () => client.fetchUserInfo(config, tokens.access_token, claims.sub));
    assert.equal(info.preferred_username, USERNAME());
    const refreshed = await wire(log, () => client.refreshTokenGrant(config, tokens.refresh_token));
    assert.notEqual(refreshed.refresh_token, tokens.refresh_token, 'the refresh token rotated');
    if (refreshed.id_token) assert.equal(refreshed.claims().sub, claims.sub);

    // The device code was spent: polling it again (at once) is invalid_grant.
    await rejectsWithOAuthError(
      client.pollDeviceAuthorizationGrant(config, { ...codes, interval: 0 }),
      'invalid_grant',
      log,
      'the spent device code',
    );
  });

  test('the user denies: pollDeviceAuthorizationGrant rejects with access_denied; the code is then refused at /device', async () => {
    const log = new WireLog();
    const config = await discover(issuer, tv.client_id, undefined, log);
    const meta = config.serverMetadata();
    const codes = await wire(log, () => client.initiateDeviceAuthorization(config, { scope: SCOPE }));
    assertCodes(codes, issuer);

    const browser = new Browser();
    const { page: form } = await openCodeForm(browser, codes.verification_uri_complete, issuer);
    const consent = await enterCode(browser, issuer, form, codes.user_code, codes.user_code, 'interop TV');
    await decide(browser, issuer, consent, 'deny');

    await rejectsWithOAuthError(
      client.pollDeviceAuthorizationGrant(config, codes),
      'access_denied',
      log,
      'polling after the user denied',
    );
    assert.deepEqual(pollAnswers(log, meta.token_endpoint), ['access_denied'], log.dump(2));

    // The decided code no longer waits for a decision: the form again, with an error.
    const again = await browser.post(new URL('/device', issuer), [
      ...hiddenFields(form.text),
      ['user_code', codes.user_code],
    ]);
    assert.equal(again.status, 400, `${again.status}\n${again.text.slice(0, 600)}`);
    assert.match(again.text, /role="alert"/);
    assert.match(again.text, /not valid/);
    assert.match(again.text, /name="user_code"/);
  });

  test('slow_down: polling sooner than the interval is slowed down; at the interval plus 5 s the device gets tokens; another client\'s poll of the code is invalid_grant', async () => {
    const log = new WireLog();
    const config = await discover(issuer, tv.client_id, undefined, log);
    const meta = config.serverMetadata();
    const codes = await wire(log, () => client.initiateDeviceAuthorization(config, { scope: SCOPE }));

    // Another client polling this device code gets invalid_grant, and changes nothing (the
    // device's own first poll below is not too soon).
    const otherLog = new WireLog();
    const other = await discover(issuer, cli.client_id, cli.client_secret, otherLog);
    await rejectsWithOAuthError(
      client.pollDeviceAuthorizationGrant(other, { ...codes, interval: 0 }),
      'invalid_grant',
      otherLog,
      "another client polling this client's device code",
    );

    // An impatient device ignores the interval: its second poll, at once, is slow_down.
    // openid-client then adds 5 s to its interval; this loop is stopped during that wait
    // (its signal is checked every 5 s), before polling again.
    const impatient = client.pollDeviceAuthorizationGrant(config, { ...codes, interval: 0 }, undefined, {
      signal: AbortSignal.timeout(3_000),
    });
    impatient.catch(() => {}); // awaited below
    await until(() => pollAnswers(log, meta.token_endpoint).length === 2, `two polls\n${log.dump(2)}`);
    assert.deepEqual(
      pollAnswers(log, meta.token_endpoint),
      ['authorization_pending', 'slow_down'],
      log.dump(2),
    );

    // The device polls on at the raised interval (5 + 5 s, RFC 8628 §3.5) ...
    const patientLog = new WireLog();
    const patient = await discover(issuer, tv.client_id, undefined, patientLog);
    const polling = client.pollDeviceAuthorizationGrant(patient, { ...codes, interval: codes.interval + 5 });
    polling.catch(() => {}); // awaited below

    // ... while the user allows it.
    const browser = new Browser();
    const { page: form } = await openCodeForm(browser, codes.verification_uri_complete, issuer);
    const consent = await enterCode(browser, issuer, form, codes.user_code, codes.user_code, 'interop TV');
    await decide(browser, issuer, consent, 'allow');

    await assert.rejects(impatient, (err) => {
      assert.ok(!(err instanceof client.ResponseBodyError), `${err.name}: ${err.message}\n${log.dump(2)}`);
      return true;
    });
    assert.equal(pollAnswers(log, meta.token_endpoint).length, 2, 'the stopped loop polled no more');

    const tokens = await wire(patientLog, () => polling);
    assertPendingThenTokens(pollAnswers(patientLog, meta.token_endpoint), patientLog);
    assertDeviceTokens(tokens, issuer, tv.client_id, 'bearer');
  });
});
