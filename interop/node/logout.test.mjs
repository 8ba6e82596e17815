// Interoperability: OpenID Connect RP-Initiated Logout 1.0 and Back-Channel Logout 1.0.
// openid-client 6 signs the user in (code flow with PKCE, state, nonce), builds the
// end-session URL from discovery (`buildEndSessionUrl`), refreshes and revokes; `jose`
// (the JOSE library openid-client is built with) validates the logout tokens the server
// POSTs to a back-channel receiver here, as Back-Channel Logout §2.6 tells an app to. The
// only hand-written HTTP is the user's browser on the server's pages (support.mjs) and
// the app's receiver.
//
// Environment (set by the harness, or by ./run-local.sh):
//
//   LATCHKEY_URL                 issuer of the server under test, e.g. http://127.0.0.1:18977
//   LATCHKEY_CLI                 the server's binary, and ...
//   LATCHKEY_DATABASE_URL        ... its database: the tests register their own clients with
//                                `client add` (the receiver's port is only known now)
//   LATCHKEY_USERNAME            a user on it ...
//   LATCHKEY_PASSWORD            ... and the password
//   REDIRECT_URI                 optional, default http://127.0.0.1:9/cb (the clients'
//                                redirect URI; nothing listens there)
//
// Run: `npm test` (or `node --test`) in this directory.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as client from 'openid-client';
import { createRemoteJWKSet, jwtVerify } from 'jose';

import {
  Browser,
  LogoutReceiver,
  REDIRECT_URI,
  WireLog,
  addClient,
  codeFlow,
  discover,
  hiddenFields,
  jwtClaims,
  rejectsWithOAuthError,
  wire,
} from './support.mjs';

/** Where the apps send the browser after logout (registered; nothing listens there). */
const POST_LOGOUT_REDIRECT_URI = 'http://127.0.0.1:9/logged-out';
/** The event a logout token must carry (Back-Channel Logout §2.4). */
const BACKCHANNEL_LOGOUT_EVENT = 'http://schemas.openid.net/event/backchannel-logout';
/** The browser session cookie (SPEC 5.3). */
const SESSION_COOKIE = 'lk_session';

/** Asserts a 303 to exactly POST_LOGOUT_REDIRECT_URI with `state` as its only parameter. */
function assertSentBack(answer, state, what) {
  const got = `${answer.status} ${answer.location}\n${answer.text.slice(0, 600)}`;
  assert.equal(answer.status, 303, `${what}: ${got}`);
  const to = new URL(answer.location);
  assert.equal(`${to.origin}${to.pathname}`, POST_LOGOUT_REDIRECT_URI, `${what}: ${answer.location}`);
  assert.deepEqual([...to.searchParams], [['state', state]], `${what}: ${answer.location}`);
}

/** Asserts that `browser` is not signed in: the account page sends it to /login. */
async function assertSignedOut(browser, issuer, what) {
  const page = await browser.get(new URL('/account', issuer));
  assert.equal(page.status, 303, `${what}: /account answered ${page.status}`);
  assert.equal(new URL(page.location, issuer).pathname, '/login', `${what}: ${page.location}`);
}

/** The unverified claims of a received request's logout token (to pick the right one). */
function peek(entry) {
  try {
    return jwtClaims(entry.logoutToken);
  } catch {
    return {};
  }
}

describe('openid-client 6 and jose: RP-initiated and back-channel logout against Latchkey', () => {
  // Required: a missing LATCHKEY_URL fails every test rather than skipping it.
  const issuer = process.env.LATCHKEY_URL ?? 'http://LATCHKEY_URL.unset.invalid';
  const receiver = new LogoutReceiver();
  const jtis = new Set();
  // The clients, registered once the receiver listens: `rp` has no back-channel URI;
  // `appA` (which requires `sid`) and `appB` receive logout tokens at /a and /b.
  let rp, appA, appB;

  before(async () => {
    await receiver.start();
    const common = ['--redirect-uri', REDIRECT_URI, '--post-logout-redirect-uri', POST_LOGOUT_REDIRECT_URI];
    rp = await addClient(['--name', 'interop logout', ...common]);
    appA = await addClient([
      '--name',
      'interop back-channel A',
      ...common,
      '--backchannel-logout-uri',
      receiver.uri('/a'),
      '--backchannel-logout-session-required',
    ]);
    appB = await addClient([
      '--name',
      'interop back-channel B',
      ...common,
      '--backchannel-logout-uri',
      receiver.uri('/b'),
    ]);
  });

  after(() => receiver.stop());

  /** openid-client's configuration for a registered (confidential) app. */
  const configFor = (app, log) => discover(issuer, app.client_id, app.client_secret, log);

  /** The user signs in to `app` in `browser`; returns its tokens and validated ID token claims. */
  async function signIn(app, browser, log) {
    const config = await configFor(app, log);
    const { tokens, nonce } = await codeFlow(config, undefined, log, browser);
    const claims = tokens.claims();
    assert.equal(claims.nonce, nonce);
    assert.equal(typeof claims.sid, 'string', `the ID token carries sid: ${JSON.stringify(claims)}`);
    assert.ok(tokens.refresh_token, 'a refresh token');
    return { config, tokens, claims };
  }

  /**
   * Waits for the logout token for the session of `idClaims` at the receiver's `path` and
   * validates it as an app must (Back-Channel Logout §2.6): a form POST; signature with a
   * key from the discovered jwks_uri, an ID-token algorithm, `typ` logout+jwt, iss, aud,
   * iat/exp; `events` with the back-channel logout event; `sid` and `sub` of that session;
   * a `jti`; never a `nonce`.
   */
  async function assertLogoutToken(config, app, path, idClaims) {
    const entry = await receiver.waitFor(
      (e) => e.path === path && peek(e).sid === idClaims.sid,
      `logout token at ${path} for sid ${idClaims.sid}`,
    );
    assert.equal(entry.method, 'POST');
    assert.match(entry.contentType ?? '', /^application\/x-www-form-urlencoded\b/);
    assert.ok(entry.logoutToken, `a logout_token field: ${entry.body.slice(0, 200)}`);

    const meta = config.serverMetadata();
    const { payload, protectedHeader } = await jwtVerify(
      entry.logoutToken,
      createRemoteJWKSet(new URL(meta.jwks_uri)),
      {
        issuer: meta.issuer,
        audience: app.client_id,
        typ: 'logout+jwt',
        algorithms: meta.id_token_signing_alg_values_supported,
        requiredClaims: ['iat', 'exp', 'jti', 'sub', 'sid', 'events'],
        maxTokenAge: '5 minutes',
        clockTolerance: 5,
      },
    ).catch((err) => {
      err.message = `${err.message} [${err.code}] ${JSON.stringify(peek(entry))}`;
      throw err;
    });
    assert.equal(protectedHeader.typ, 'logout+jwt');
    const event = payload.events?.[BACKCHANNEL_LOGOUT_EVENT];
    assert.ok(
      event !== null && typeof event === 'object' && !Array.isArray(event),
      `events ${JSON.stringify(payload.events)}`,
    );
    assert.equal(payload.sid, idClaims.sid, 'sid is the ID token sid');
    assert.equal(payload.sub, idClaims.sub, 'sub is the ID token sub');
    assert.equal(typeof payload.jti, 'string');
    assert.ok(payload.jti.length > 0);
    assert.ok(!jtis.has(payload.jti), `jti ${payload.jti} reused for another session`);
    jtis.add(payload.jti);
    assert.ok(!('nonce' in payload), `a logout token must not carry nonce: ${JSON.stringify(payload)}`);
    return payload;
  }

  test('discovery advertises end_session_endpoint and back-channel logout', async () => {
    const log = new WireLog();
    const meta = (await configFor(rp, log)).serverMetadata();
    assert.equal(meta.end_session_endpoint, `${issuer}/oauth/logout`);
    assert.equal(meta.backchannel_logout_supported, true);
    assert.equal(meta.backchannel_logout_session_supported, true);
  });

  test('RP-initiated logout from the browser that signed in: 303 back with state; refresh, userinfo and the browser session end', async () => {
    const log = new WireLog();
    const browser = new Browser();
    const { config, tokens, claims } = await signIn(rp, browser, log);
    const cookie = browser.cookies.get(SESSION_COOKIE);
    assert.ok(cookie, `the browser holds ${SESSION_COOKIE}: ${[...browser.cookies.keys()]}`);
    assert.equal((await browser.get(new URL('/account', issuer))).status, 200, 'signed in before');

    const state = client.randomState();
    const url = client.buildEndSessionUrl(config, {
      id_token_hint: tokens.id_token,
      post_logout_redirect_uri: POST_LOGOUT_REDIRECT_URI,
      state,
    });
    assert.equal(`${url.origin}${url.pathname}`, `${issuer}/oauth/logout`);
    // The hint names an app session of this browser's own session: no confirmation.
    const answer = await browser.get(url);
    assertSentBack(answer, state, 'end session');
    assert.ok(!browser.cookies.has(SESSION_COOKIE), 'the session cookie is cleared');

    await rejectsWithOAuthError(
      client.refreshTokenGrant(config, tokens.refresh_token),
      'invalid_grant',
      log,
      'refresh after logout',
    );
    const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub).then(
      (ok) => ({ ok }),
      (err) => ({ err }),
    );
    assert.ok(info.err, `userinfo still answers after logout: ${JSON.stringify(info.ok)}`);
    assert.equal(info.err.status, 401, `${info.err.name}: ${info.err.message}\n${log.dump(1)}`);

    await assertSignedOut(browser, issuer, 'after logout');
    // Not just the cookie: the session behind it ended on the server.
    const replay = new Browser();
    replay.cookies.set(SESSION_COOKIE, cookie);
    await assertSignedOut(replay, issuer, 'the old session cookie replayed');
  });

  test('back-channel logout: RP-initiated logout from one app ends the apps signed in from the same browser; each gets a valid logout token', async () => {
    const log = new WireLog();
    const browser = new Browser();
    const a = await signIn(appA, browser, log);
    const b = await signIn(appB, browser, log);

    const state = client.randomState();
    const url = client.buildEndSessionUrl(a.config, {
      id_token_hint: a.tokens.id_token,
      post_logout_redirect_uri: POST_LOGOUT_REDIRECT_URI,
      state,
    });
    assertSentBack(await browser.get(url), state, 'end session');

    await assertLogoutToken(a.config, appA, '/a', a.claims);
    await assertLogoutToken(b.config, appB, '/b', b.claims);
    for (const [name, app] of [
      ['A', a],
      ['B', b],
    ]) {
      await rejectsWithOAuthError(
        client.refreshTokenGrant(app.config, app.tokens.refresh_token),
        'invalid_grant',
        log,
        `app ${name}'s refresh after logout`,
      );
    }
    await assertSignedOut(browser, issuer, 'after logout');
  });

  test('back-channel logout: revoking the refresh token (RFC 7009, tokenRevocation) sends a logout token', async () => {
    const log = new WireLog();
    const { config, tokens, claims } = await signIn(appA, new Browser(), log);
    await wire(log, () => client.tokenRevocation(config, tokens.refresh_token));
    await assertLogoutToken(config, appA, '/a', claims);
    await rejectsWithOAuthError(
      client.refreshTokenGrant(config, tokens.refresh_token),
      'invalid_grant',
      log,
      'refresh after revocation',
    );
  });

  test('RP-initiated logout without id_token_hint asks the user (Sign out), then ends the session', async () => {
    const log = new WireLog();
    const browser = new Browser();
    const { config, tokens, claims } = await signIn(appA, browser, log);

    const state = client.randomState();
    const url = client.buildEndSessionUrl(config, {
      post_logout_redirect_uri: POST_LOGOUT_REDIRECT_URI,
      state,
    });
    assert.equal(url.searchParams.get('client_id'), appA.client_id, 'openid-client adds client_id');
    const page = await browser.get(url);
    assert.equal(page.status, 200, `a confirmation page: ${page.status} ${page.location}`);
    assert.equal(page.location, null);
    assert.match(page.text, />\s*Sign out\s*<\/button>/);

    // Nothing ended yet: the app still refreshes (and its session keeps its sid).
    const refreshed = await wire(log, () => client.refreshTokenGrant(config, tokens.refresh_token));
    if (refreshed.id_token) assert.equal(refreshed.claims().sid, claims.sid, 'sid after refresh');

    // The user presses Sign out (the form posts its hidden fields, CSRF token included).
    const answer = await browser.post(new URL('/oauth/logout', issuer), hiddenFields(page.text));
    assertSentBack(answer, state, 'confirmed sign-out');
    await assertSignedOut(browser, issuer, 'after the confirmed sign-out');
    await rejectsWithOAuthError(
      client.refreshTokenGrant(config, refreshed.refresh_token),
      'invalid_grant',
      log,
      'refresh after the confirmed sign-out',
    );
    await assertLogoutToken(config, appA, '/a', claims);
  });

  test('bad end-session requests get a 400 page, never a redirect, and end nothing', async () => {
    const log = new WireLog();
    const browser = new Browser();
    const { config, tokens } = await signIn(rp, browser, log);
    const hint = tokens.id_token;
    const cases = [
      [
        'an unregistered post_logout_redirect_uri',
        { id_token_hint: hint, post_logout_redirect_uri: 'http://127.0.0.1:9/elsewhere', state: 's' },
      ],
      [
        'a registered URI with a trailing slash (exact match)',
        { id_token_hint: hint, post_logout_redirect_uri: `${POST_LOGOUT_REDIRECT_URI}/`, state: 's' },
      ],
      [
        'a client_id other than the hint audience',
        {
          id_token_hint: hint,
          client_id: appB.client_id,
          post_logout_redirect_uri: POST_LOGOUT_REDIRECT_URI,
          state: 's',
        },
      ],
      [
        'an access token as id_token_hint',
        {
          id_token_hint: tokens.access_token,
          post_logout_redirect_uri: POST_LOGOUT_REDIRECT_URI,
          state: 's',
        },
      ],
    ];
    for (const [what, parameters] of cases) {
      const answer = await browser.get(client.buildEndSessionUrl(config, parameters));
      assert.equal(answer.status, 400, `${what}: ${answer.status} ${answer.location}`);
      assert.equal(answer.location, null, `${what}: no Location`);
      assert.match(answer.text, /<html/i, `${what}: an HTML page`);
    }
    // The browser and the app are still signed in.
    assert.ok(browser.cookies.has(SESSION_COOKIE));
    assert.equal((await browser.get(new URL('/account', issuer))).status, 200, 'still signed in');
    await wire(log, () => client.refreshTokenGrant(config, tokens.refresh_token));
  });
});
