// Interoperability: Pushed Authorization Requests (RFC 9126) and Resource Indicators
// (RFC 8707). openid-client 6 pushes the authorization request (`buildAuthorizationUrlWithPAR`,
// with client authentication, and with a DPoP key) and sends the browser with `client_id`
// and `request_uri` only; it asks for several resources at the authorization request (two
// `resource` entries of a URLSearchParams) and for one at the code exchange, the refresh
// (`refreshTokenGrant`) and the client credentials grant, and reads `invalid_target` as an
// OAuth error both from the token endpoint and from the redirect back to the app. `jose`
// decodes the access tokens to check their `aud`. The only hand-written HTTP is the user's
// browser on the server's sign-in and consent pages (support.mjs).
//
// Environment (set by the harness, or by ./run-local.sh):
//
//   LATCHKEY_URL                 issuer of the server under test, e.g. http://127.0.0.1:18977
//   LATCHKEY_CLI                 the server's binary, and ...
//   LATCHKEY_DATABASE_URL        ... its database: the tests register their own clients with
//                                `client add` (`--require-par`, `--resource URI`)
//   LATCHKEY_USERNAME            a user on it ...
//   LATCHKEY_PASSWORD            ... and the password
//   LATCHKEY_AUDIENCE            optional: the server's configured access-token audience
//                                (the `aud` when no resource is asked; default the issuer,
//                                as when the server's `audience` setting is unset)
//   REDIRECT_URI                 optional, default http://127.0.0.1:9/cb (the clients'
//                                redirect URI; nothing listens there)
//
// Run: `npm test` (or `node --test`) in this directory.

import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as client from 'openid-client';
import { decodeJwt } from 'jose';

import {
  Browser,
  PASSWORD,
  REDIRECT_URI,
  USERNAME,
  WireLog,
  addClient,
  discover,
  rejectsWithOAuthError,
  userAuthorizes,
  wire,
} from './support.mjs';

/** RFC 9126 §2.2: every `request_uri` the push answers. */
const REQUEST_URI_PREFIX = 'urn:ietf:params:oauth:request_uri:';
/** Resources (RFC 8707) the apps are registered for; nothing listens at them. */
const NOTES = 'https://api.example/notes';
const FILES = 'https://api.example/files';
const MAIL = 'https://api.example/mail';
/** Never registered for any app. */
const ELSEWHERE = 'https://evil.example/';

/** The `aud` of an access token (a JWT; jose decodes it, the test checks the claim). */
const audOf = (accessToken) => decodeJwt(accessToken).aud;

/** An `aud` as a sorted list, whatever its form (the order of several is not meaningful). */
const audList = (aud) => [aud].flat().sort();

/** The code-flow parameters a relying party sends, with fresh PKCE, state and nonce. */
async function codeRequest(extra = []) {
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const parameters = new URLSearchParams({
    redirect_uri: REDIRECT_URI,
    scope: 'openid profile',
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
    nonce,
  });
  for (const [k, v] of extra) parameters.append(k, v);
  const checks = { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true };
  return { parameters, checks, state };
}

/** Asserts the server's error page: a 400 with no redirect (nothing goes back to the app). */
function assertErrorPage(page, what, mentions) {
  const got = `${page.status} ${page.location}\n${page.text.slice(0, 800)}`;
  assert.equal(page.status, 400, `${what}: ${got}`);
  assert.equal(page.location, null, `${what}: no redirect: ${got}`);
  assert.match(page.text, /<h1>Invalid request<\/h1>/, `${what}: ${got}`);
  if (mentions) assert.match(page.text, mentions, `${what}: ${got}`);
}

/** Checks the ID token openid-client validated (signature, iss, aud, exp, iat, nonce). */
function assertIdToken(tokens, issuer, clientId, nonce) {
  const claims = tokens.claims();
  assert.ok(claims, 'an ID token was returned and validated');
  assert.equal(claims.iss, issuer);
  assert.ok([claims.aud].flat().includes(clientId), `ID token aud ${JSON.stringify(claims.aud)}`);
  assert.equal(claims.nonce, nonce);
  return claims;
}

describe('openid-client 6: pushed authorization requests (RFC 9126) and resource indicators (RFC 8707) against Latchkey', () => {
  // Required: a missing LATCHKEY_URL fails every test rather than skipping it.
  const issuer = process.env.LATCHKEY_URL ?? 'http://LATCHKEY_URL.unset.invalid';
  const defaultAudience = process.env.LATCHKEY_AUDIENCE || issuer;
  const code = ['--redirect-uri', REDIRECT_URI];
  // `parApp` (confidential) and `parPublic` must push; `resApp` asks for resources the old
  // way; `parResApp` pushes resources; `machine` uses client_credentials.
  let parApp, parPublic, resApp, parResApp, machine;

  before(async () => {
    parApp = await addClient(['--name', 'interop PAR', ...code, '--require-par']);
    parPublic = await addClient(['--name', 'interop PAR public', ...code, '--require-par', '--public']);
    const resources = ['--resource', NOTES, '--resource', FILES, '--resource', MAIL];
    resApp = await addClient(['--name', 'interop resources', ...code, ...resources]);
    parResApp = await addClient(['--name', 'interop PAR resources', ...code, '--require-par', ...resources]);
    machine = await addClient([
      '--name',
      'interop machine',
      '--grant-types',
      'client_credentials',
      '--scopes',
      'notes:read',
      '--resource',
      NOTES,
    ]);
  });

  test('discovery advertises the pushed authorization request endpoint', async () => {
    const log = new WireLog();
    const meta = (await discover(issuer, parApp.client_id, parApp.client_secret, log)).serverMetadata();
    assert.equal(meta.pushed_authorization_request_endpoint, `${issuer}/oauth/par`);
    // Pushing is required per client (`--require-par`), not for every client.
    assert.notEqual(meta.require_pushed_authorization_requests, true);
  });

  test('confidential client with require_par: buildAuthorizationUrlWithPAR, sign-in bound to one browser, tokens; the request is then spent, and an unpushed request gets an error page', async () => {
    const log = new WireLog();
    const config = await discover(issuer, parApp.client_id, parApp.client_secret, log);
    const meta = config.serverMetadata();
    const { parameters, checks, state } = await codeRequest();

    const url = await wire(log, () => client.buildAuthorizationUrlWithPAR(config, parameters));
    // The push: client_secret_basic, every parameter in the body, 201 with a request_uri.
    const push = log.to(meta.pushed_authorization_request_endpoint).at(-1);
    assert.equal(push.method, 'POST');
    assert.match(push.requestHeaders.authorization ?? '', /^Basic /, 'client_secret_basic at the push');
    const body = new URLSearchParams(push.requestBody);
    for (const [k, v] of parameters) assert.equal(body.get(k), v, `pushed ${k}`);
    assert.equal(body.get('response_type'), 'code');
    assert.equal(push.status, 201, log.dump(1));
    assert.match(push.responseHeaders['cache-control'] ?? '', /no-store/);
    const pushed = JSON.parse(push.responseBody);
    assert.equal(pushed.expires_in, 60);
    // The browser carries only the reference.
    assert.equal(`${url.origin}${url.pathname}`, meta.authorization_endpoint);
    assert.deepEqual(
      [...url.searchParams].sort(),
      [
        ['client_id', parApp.client_id],
        ['request_uri', pushed.request_uri],
      ],
      url.href,
    );
    assert.ok(pushed.request_uri.startsWith(REQUEST_URI_PREFIX), pushed.request_uri);

    // The first browser to open it is bound to it: another browser gets an error page.
    const browser = new Browser();
    const first = await browser.get(url.href);
    assert.equal(first.status, 303, `sent to sign in: ${first.status}\n${first.text.slice(0, 600)}`);
    const login = new URL(first.location, issuer);
    assert.equal(login.pathname, '/login', first.location);
    assert.doesNotMatch(first.location, /code_challenge|nonce/, 'only the reference travels');
    assertErrorPage(await new Browser().get(url.href), 'another browser opening the pushed request');

    // The user signs in and allows; openid-client checks state and iss and redeems the code.
    const callback = await userAuthorizes(browser, url.href, USERNAME(), PASSWORD());
    assert.equal(callback.searchParams.get('state'), state, 'the pushed state comes back');
    assert.equal(callback.searchParams.get('iss'), issuer, 'RFC 9207 iss');
    const tokens = await wire(log, () => client.authorizationCodeGrant(config, callback, checks));
    assert.equal(tokens.token_type.toLowerCase(), 'bearer');
    assert.ok(tokens.refresh_token, 'a refresh token');
    assertIdToken(tokens, issuer, parApp.client_id, checks.expectedNonce);
    assert.equal(audOf(tokens.access_token), defaultAudience, 'no resource asked: the default audience');

    // Spent: the same URL again, in the same browser, is an error page.
    assertErrorPage(await browser.get(url.href), 'the spent pushed request', /pushed request/);

    // require_par: the request sent the old way is an error page, never a redirect, even
    // in the signed-in browser (and even though it is otherwise valid).
    const plain = client.buildAuthorizationUrl(config, (await codeRequest()).parameters);
    assert.equal(plain.searchParams.get('request_uri'), null);
    assertErrorPage(await browser.get(plain.href), 'an unpushed request', /must push/);
    assertErrorPage(await new Browser().get(plain.href), 'an unpushed request, signed out', /must push/);

    // A request_uri cannot itself be pushed.
    await rejectsWithOAuthError(
      client.buildAuthorizationUrlWithPAR(config, { request_uri: pushed.request_uri }),
      'invalid_request',
      log,
      'pushing a request_uri',
    );
  });

  test('public client with require_par and DPoP: the push carries client_id, a DPoP proof and dpop_jkt; the code is bound to the key', async () => {
    const log = new WireLog();
    const config = await discover(issuer, parPublic.client_id, undefined, log);
    const meta = config.serverMetadata();
    const DPoP = client.getDPoPHandle(config, await client.randomDPoPKeyPair());
    const jkt = await DPoP.calculateThumbprint();
    const { parameters, checks } = await codeRequest([['dpop_jkt', jkt]]);

    const url = await wire(log, () => client.buildAuthorizationUrlWithPAR(config, parameters, { DPoP }));
    const push = log.to(meta.pushed_authorization_request_endpoint).at(-1);
    assert.equal(push.status, 201, log.dump(1));
    assert.equal(push.requestHeaders.authorization, undefined, 'a public client sends no credentials');
    assert.match(push.requestHeaders.dpop ?? '', /^ey/, 'openid-client adds a DPoP proof to the push');
    const body = new URLSearchParams(push.requestBody);
    assert.equal(body.get('client_id'), parPublic.client_id);
    assert.equal(body.get('dpop_jkt'), jkt);

    const callback = await userAuthorizes(new Browser(), url.href, USERNAME(), PASSWORD());
    // The code is bound to the pushed key: another key cannot redeem it ... (the binding
    // asserted is dpop_jkt's. RFC 9449 §10.1 has the push's DPoP proof bind the code just
    // the same, without dpop_jkt; Latchkey does not check that proof, so it is not relied on.)
    const thief = client.getDPoPHandle(config, await client.randomDPoPKeyPair());
    await rejectsWithOAuthError(
      client.authorizationCodeGrant(config, callback, checks, undefined, { DPoP: thief }),
      'invalid_grant',
      log,
      'the code redeemed with another DPoP key',
    );
    // ... and, the code having been presented once, it is spent for the key too (RFC 6749
    // §4.1.2: a code is used once).
    await rejectsWithOAuthError(
      client.authorizationCodeGrant(config, callback, checks, undefined, { DPoP }),
      'invalid_grant',
      log,
      'the code redeemed again, with the right key',
    );

    // A fresh push, redeemed with the pushed key: DPoP-bound tokens.
    const again = await codeRequest([['dpop_jkt', jkt]]);
    const url2 = await wire(log, () => client.buildAuthorizationUrlWithPAR(config, again.parameters, { DPoP }));
    const callback2 = await userAuthorizes(new Browser(), url2.href, USERNAME(), PASSWORD());
    const tokens = await wire(log, () =>
      client.authorizationCodeGrant(config, callback2, again.checks, undefined, { DPoP }),
    );
    assert.equal(tokens.token_type.toLowerCase(), 'dpop');
    assert.equal(decodeJwt(tokens.access_token).cnf?.jkt, jkt, 'the access token is bound to the key');
    assertIdToken(tokens, issuer, parPublic.client_id, again.checks.expectedNonce);
    const refreshed = await wire(log, () =>
      client.refreshTokenGrant(config, tokens.refresh_token, undefined, { DPoP }),
    );
    assert.equal(decodeJwt(refreshed.access_token).cnf?.jkt, jkt);
  });

  test('resource indicators: two resources at the authorization request, one at the code exchange, others at refresh; aud is exactly what was asked', async () => {
    const log = new WireLog();
    const config = await discover(issuer, resApp.client_id, resApp.client_secret, log);
    const meta = config.serverMetadata();
    const { parameters, checks } = await codeRequest([
      ['resource', NOTES],
      ['resource', FILES],
    ]);
    const url = client.buildAuthorizationUrl(config, parameters);
    assert.deepEqual(url.searchParams.getAll('resource'), [NOTES, FILES], 'both resources in the URL');

    const callback = await userAuthorizes(new Browser(), url.href, USERNAME(), PASSWORD());
    // One of the two at the code exchange: a token for that one (aud a string).
    const tokens = await wire(log, () =>
      client.authorizationCodeGrant(config, callback, checks, { resource: NOTES }),
    );
    const exchange = new URLSearchParams(log.to(meta.token_endpoint).at(-1).requestBody);
    assert.deepEqual(exchange.getAll('resource'), [NOTES]);
    assert.equal(audOf(tokens.access_token), NOTES);
    // The ID token is the app's, whatever the resources.
    assertIdToken(tokens, issuer, resApp.client_id, checks.expectedNonce);

    // A refresh naming the other granted resource: a token for it.
    const forFiles = await wire(log, () =>
      client.refreshTokenGrant(config, tokens.refresh_token, { resource: FILES }),
    );
    assert.equal(audOf(forFiles.access_token), FILES);
    // Both, as two entries of URLSearchParams: aud is an array of the two.
    const both = await wire(log, () =>
      client.refreshTokenGrant(
        config,
        forFiles.refresh_token,
        new URLSearchParams([
          ['resource', FILES],
          ['resource', NOTES],
        ]),
      ),
    );
    assert.deepEqual(
      new URLSearchParams(log.to(meta.token_endpoint).at(-1).requestBody).getAll('resource'),
      [FILES, NOTES],
    );
    assert.ok(Array.isArray(audOf(both.access_token)), `aud ${JSON.stringify(audOf(both.access_token))}`);
    assert.deepEqual(audList(audOf(both.access_token)), [FILES, NOTES].sort());
    // None: every resource granted to the session.
    const all = await wire(log, () => client.refreshTokenGrant(config, both.refresh_token));
    assert.deepEqual(audList(audOf(all.access_token)), [FILES, NOTES].sort());

    // A resource the app is registered for but the user did not grant, and one it is not
    // registered for: invalid_target, and the refresh token is not spent.
    await rejectsWithOAuthError(
      client.refreshTokenGrant(config, all.refresh_token, { resource: MAIL }),
      'invalid_target',
      log,
      'a registered resource not granted to the session',
    );
    const unregistered = await rejectsWithOAuthError(
      client.refreshTokenGrant(config, all.refresh_token, { resource: ELSEWHERE }),
      'invalid_target',
      log,
      'an unregistered resource',
    );
    assert.equal(unregistered.status, 400);
    const still = await wire(log, () => client.refreshTokenGrant(config, all.refresh_token, { resource: NOTES }));
    assert.equal(audOf(still.access_token), NOTES, 'the refresh token still works');
  });

  test('resource indicators: an unregistered resource at the code exchange is invalid_target; at the authorization request it comes back to the app as invalid_target with state', async () => {
    const log = new WireLog();
    const config = await discover(issuer, resApp.client_id, resApp.client_secret, log);
    const browser = new Browser();

    const { parameters, checks } = await codeRequest([['resource', NOTES]]);
    const callback = await userAuthorizes(
      browser,
      client.buildAuthorizationUrl(config, parameters).href,
      USERNAME(),
      PASSWORD(),
    );
    await rejectsWithOAuthError(
      client.authorizationCodeGrant(config, callback, checks, { resource: ELSEWHERE }),
      'invalid_target',
      log,
      'an unregistered resource at the code exchange',
    );

    // At the authorization endpoint: a redirect back with the error, state and iss, which
    // openid-client validates (iss, state) and raises as an AuthorizationResponseError.
    const bad = await codeRequest([['resource', ELSEWHERE]]);
    const answer = await browser.get(client.buildAuthorizationUrl(config, bad.parameters).href);
    assert.ok([302, 303].includes(answer.status), `${answer.status}\n${answer.text.slice(0, 600)}`);
    assert.ok(answer.location?.startsWith(REDIRECT_URI), answer.location);
    const err = await client
      .authorizationCodeGrant(config, new URL(answer.location), bad.checks)
      .then(
        (ok) => assert.fail(`tokens from an error response: ${JSON.stringify(ok)}`),
        (e) => e,
      );
    assert.ok(err instanceof client.AuthorizationResponseError, `${err.name}: ${err.message}`);
    assert.equal(err.error, 'invalid_target', `${err.message} ${answer.location}`);
    assert.equal(err.cause.get('state'), bad.state);
    assert.equal(err.cause.get('iss'), issuer);
  });

  test('resource indicators with a pushed request: both resources pushed; the token for all of them; an unregistered one is refused at the push', async () => {
    const log = new WireLog();
    const config = await discover(issuer, parResApp.client_id, parResApp.client_secret, log);
    const meta = config.serverMetadata();
    const { parameters, checks } = await codeRequest([
      ['resource', NOTES],
      ['resource', FILES],
    ]);
    const url = await wire(log, () => client.buildAuthorizationUrlWithPAR(config, parameters));
    const push = log.to(meta.pushed_authorization_request_endpoint).at(-1);
    assert.deepEqual(new URLSearchParams(push.requestBody).getAll('resource'), [NOTES, FILES]);
    assert.equal(url.searchParams.get('resource'), null, 'the resources travel in the push only');

    const callback = await userAuthorizes(new Browser(), url.href, USERNAME(), PASSWORD());
    const tokens = await wire(log, () => client.authorizationCodeGrant(config, callback, checks));
    assert.deepEqual(audList(audOf(tokens.access_token)), [FILES, NOTES].sort());

    // An unregistered resource is refused when pushed (a JSON error to the app, no
    // request_uri). The error code is not asserted: RFC 9126 §2.3 has the push answer with
    // the authorization endpoint's error codes, invalid_target here (RFC 8707 §2), as
    // /oauth/authorize does above; Latchkey's push answers invalid_request.
    const refused = await client
      .buildAuthorizationUrlWithPAR(config, (await codeRequest([['resource', ELSEWHERE]])).parameters)
      .then(
        (ok) => assert.fail(`pushed: ${ok}`),
        (e) => e,
      );
    assert.ok(refused instanceof client.ResponseBodyError, `${refused.name}: ${refused.message}`);
    assert.equal(refused.status, 400);
  });

  test('resource indicators with client_credentials: aud is the resource; an unregistered one is invalid_target', async () => {
    const log = new WireLog();
    const config = await discover(issuer, machine.client_id, machine.client_secret, log);
    const tokens = await wire(log, () =>
      client.clientCredentialsGrant(config, { scope: 'notes:read', resource: NOTES }),
    );
    assert.equal(audOf(tokens.access_token), NOTES);
    assert.equal(decodeJwt(tokens.access_token).sub, machine.client_id);
    const plain = await wire(log, () => client.clientCredentialsGrant(config, { scope: 'notes:read' }));
    assert.equal(audOf(plain.access_token), defaultAudience, 'no resource: the default audience');
    await rejectsWithOAuthError(
      client.clientCredentialsGrant(config, { scope: 'notes:read', resource: FILES }),
      'invalid_target',
      log,
      'a resource the machine client is not registered for',
    );
  });
});
