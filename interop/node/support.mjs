// Helpers for the tests here: configuration from the environment, a wire log of every
// request openid-client makes, a tiny "browser" (cookie jar, no redirects followed) that
// walks Latchkey's own sign-in and consent pages, the code flow as a relying party runs
// it, the CLI (to register clients whose URIs are only known at run time), and a receiver
// for back-channel logout tokens. The protocol work (discovery, authorization URL, PKCE,
// code exchange, ID token validation, DPoP proofs and nonces, refresh, userinfo,
// revocation, end-session URLs) is done by openid-client; nothing here speaks OAuth by hand.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer } from 'node:http';
import { promisify } from 'node:util';
import * as client from 'openid-client';

export const REDIRECT_URI = process.env.REDIRECT_URI ?? 'http://127.0.0.1:9/cb';

/** The value of a required environment variable; throws naming it when unset. */
export function env(name) {
  const value = process.env[name];
  if (value === undefined || value === '') {
    throw new Error(`environment variable ${name} must be set (see the top of the *.test.mjs files)`);
  }
  return value;
}

/** The test user (LATCHKEY_USERNAME, LATCHKEY_PASSWORD). */
export const USERNAME = () => env('LATCHKEY_USERNAME');
export const PASSWORD = () => env('LATCHKEY_PASSWORD');

/**
 * Records every request made through it and its response (status, headers, body), so a
 * failing assertion can show exactly what went over the wire. Used as openid-client's
 * `customFetch`.
 */
export class WireLog {
  constructor() {
    this.entries = [];
    this.fetch = this.fetch.bind(this);
  }

  async fetch(url, options = {}) {
    const headers = new Headers(options.headers);
    const entry = {
      method: options.method ?? 'GET',
      url: String(url),
      requestHeaders: Object.fromEntries(headers),
      requestBody: typeof options.body === 'string' ? options.body : options.body?.toString(),
    };
    this.entries.push(entry);
    const response = await fetch(url, options);
    entry.status = response.status;
    entry.responseHeaders = Object.fromEntries(response.headers);
    entry.responseBody = await response.clone().text();
    return response;
  }

  /** The entries whose URL starts with `prefix`. */
  to(prefix) {
    return this.entries.filter((e) => e.url.startsWith(prefix));
  }

  /** A readable dump of the last `n` exchanges (secrets and proofs shortened). */
  dump(n = 4) {
    return this.entries
      .slice(-n)
      .map((e) => {
        const h = { ...e.requestHeaders };
        if (h.authorization) h.authorization = h.authorization.slice(0, 24) + '…';
        return [
          `> ${e.method} ${e.url}`,
          `> headers ${JSON.stringify(h)}`,
          e.requestBody ? `> body ${e.requestBody}` : null,
          `< ${e.status} ${JSON.stringify(e.responseHeaders)}`,
          `< ${e.responseBody?.slice(0, 600)}`,
        ]
          .filter(Boolean)
          .join('\n');
      })
      .join('\n---\n');
  }
}

/**
 * openid-client's discovery of `issuer` for one client, with the wire log installed.
 * `secret` is the client's secret (`client_secret_basic`), undefined for a public client
 * (`none`), or an openid-client client authentication method (`client.PrivateKeyJwt(…)`).
 * `http://` issuers need `allowInsecureRequests` (tests run on loopback without TLS).
 */
export async function discover(issuer, clientId, secret, log) {
  const insecure = new URL(issuer).protocol === 'http:';
  const auth =
    secret === undefined ? client.None() : typeof secret === 'function' ? secret : client.ClientSecretBasic(secret);
  const config = await client.discovery(
    new URL(issuer),
    clientId,
    { redirect_uris: [REDIRECT_URI], response_types: ['code'] },
    auth,
    {
      execute: insecure ? [client.allowInsecureRequests] : [],
      [client.customFetch]: log.fetch,
    },
  );
  config[client.customFetch] = log.fetch;
  return config;
}

/** A browser: a cookie jar, no redirects followed, an Origin header on form posts. */
export class Browser {
  constructor() {
    this.cookies = new Map();
  }

  async request(url, init = {}) {
    const headers = new Headers(init.headers);
    if (this.cookies.size > 0) {
      headers.set('cookie', [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; '));
    }
    const response = await fetch(url, { ...init, headers, redirect: 'manual' });
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const expired = attrs.some((a) => /^\s*max-age\s*=\s*0\s*$/i.test(a)) || value === '';
      if (expired) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
    const text = await response.text();
    return { status: response.status, location: response.headers.get('location'), text };
  }

  get(url) {
    return this.request(url);
  }

  post(url, fields) {
    return this.request(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        origin: new URL(url).origin,
      },
      body: new URLSearchParams(fields).toString(),
    });
  }
}

/** Decodes the character references the server writes in attribute values. */
function unescape(text) {
  const named = { amp: '&', quot: '"', apos: "'", lt: '<', gt: '>' };
  return text.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (all, ent) => {
    if (ent[0] === '#') {
      const code = ent[1] === 'x' || ent[1] === 'X' ? parseInt(ent.slice(2), 16) : parseInt(ent.slice(1), 10);
      return String.fromCodePoint(code);
    }
    return named[ent.toLowerCase()] ?? all;
  });
}

/** Every `<input type="hidden" name="…" value="…">` of a page, unescaped. */
export function hiddenFields(html) {
  const fields = [];
  const re = /<input type="hidden" name="([^"]*)" value="([^"]*)"/g;
  for (const m of html.matchAll(re)) fields.push([unescape(m[1]), unescape(m[2])]);
  return fields;
}

/**
 * The user in `browser` goes to `authorizationUrl`, signs in as `username` if the server
 * asks, allows the app if it asks, and is sent back to the app. Returns the URL the app
 * receives (`REDIRECT_URI?code=…&state=…&iss=…`).
 */
export async function userAuthorizes(browser, authorizationUrl, username, password) {
  const base = new URL(authorizationUrl);
  let url = authorizationUrl;
  const trail = [];
  for (let step = 0; step < 10; step++) {
    const page = await browser.get(url);
    trail.push(`GET ${url} -> ${page.status} ${page.location ?? ''}`);
    let answer;
    if (page.status === 303 || page.status === 302) {
      answer = page;
    } else if (page.status === 200 && page.text.includes('name="password"')) {
      answer = await browser.post(new URL('/login', base), [
        ...hiddenFields(page.text),
        ['username', username],
        ['password', password],
      ]);
      trail.push(`POST /login -> ${answer.status} ${answer.location ?? ''}`);
    } else if (page.status === 200 && page.text.includes('>Allow</button>')) {
      answer = await browser.post(new URL('/oauth/authorize', base), [
        ...hiddenFields(page.text),
        ['decision', 'allow'],
      ]);
      trail.push(`POST /oauth/authorize -> ${answer.status} ${answer.location ?? ''}`);
    } else {
      throw new Error(
        `unexpected page ${page.status} at ${url}:\n${page.text.slice(0, 800)}\n${trail.join('\n')}`,
      );
    }
    const redirected = answer === page ? [302, 303] : [303];
    if (!redirected.includes(answer.status) || !answer.location) {
      throw new Error(
        `expected a 303, got ${answer.status}:\n${answer.text.slice(0, 800)}\n${trail.join('\n')}`,
      );
    }
    const next = new URL(answer.location, base).href;
    if (next.startsWith(REDIRECT_URI)) return new URL(next);
    url = next;
  }
  throw new Error(`no redirect to the app after 10 steps:\n${trail.join('\n')}`);
}

/**
 * The whole first leg as a relying party does it: openid-client builds the authorization
 * URL (PKCE S256, state, nonce), the user signs in and allows on the server's pages, and
 * openid-client validates the response (state, iss) and redeems the code with `DPoP`,
 * validating the ID token (signature via jwks_uri, iss, aud, exp, iat, nonce). `browser`
 * is the user's (a fresh one unless given: pass one to sign in to several apps from it).
 */
export async function codeFlow(config, DPoP, log, browser = new Browser()) {
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const authorizationUrl = client.buildAuthorizationUrl(config, {
    redirect_uri: config.clientMetadata().redirect_uris[0],
    scope: 'openid profile',
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
    nonce,
  });
  const callback = await userAuthorizes(browser, authorizationUrl.href, USERNAME(), PASSWORD());
  assert.equal(callback.searchParams.get('iss'), config.serverMetadata().issuer, 'RFC 9207 iss');
  try {
    const tokens = await client.authorizationCodeGrant(
      config,
      callback,
      { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true },
      undefined,
      DPoP ? { DPoP } : undefined,
    );
    return { tokens, nonce };
  } catch (err) {
    throw withWire(err, log);
  }
}

/** Adds the last exchanges of the wire log to an error's message. */
export function withWire(err, log) {
  err.message = `${err.message} [${err.name}${err.code ? ' ' + err.code : ''}${
    err.error ? ' error=' + err.error : ''
  }${err.cause?.error_reason ? ' error_reason=' + err.cause.error_reason : ''}]\n${log.dump()}`;
  return err;
}

/** Runs `fn` with the wire log attached to any error it throws. */
export async function wire(log, fn) {
  try {
    return await fn();
  } catch (err) {
    throw withWire(err, log);
  }
}

/** Asserts that `promise` rejects with an OAuth error `code` at the token endpoint. */
export async function rejectsWithOAuthError(promise, code, log, what) {
  let err;
  try {
    const ok = await promise;
    assert.fail(`${what}: expected ${code}, got tokens ${JSON.stringify(ok)}\n${log.dump(2)}`);
  } catch (e) {
    err = e;
  }
  if (err instanceof assert.AssertionError) throw err;
  assert.ok(
    err instanceof client.ResponseBodyError,
    `${what}: expected a ResponseBodyError, got ${err?.name}: ${err?.message}\n${log.dump(2)}`,
  );
  assert.equal(err.error, code, `${what}: ${err.message} ${JSON.stringify(err.cause)}\n${log.dump(2)}`);
  return err;
}

/** The claims of a JWT, unverified: `cnf.jkt` of an access token, or which logout token is which. */
export function jwtClaims(jwt) {
  const [, payload] = jwt.split('.');
  return JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
}

/** RFC 7638 SHA-256 thumbprint of a public CryptoKey (EC P-256 or OKP Ed25519). */
export async function thumbprint(publicKey) {
  const jwk = await crypto.subtle.exportKey('jwk', publicKey);
  let members;
  if (jwk.kty === 'EC') members = { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y };
  else if (jwk.kty === 'OKP') members = { crv: jwk.crv, kty: jwk.kty, x: jwk.x };
  else throw new Error(`unexpected key type ${jwk.kty}`);
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(JSON.stringify(members)));
  return Buffer.from(digest).toString('base64url');
}

/**
 * Registers a client with the server's CLI (`LATCHKEY_CLI client add --database-url
 * LATCHKEY_DATABASE_URL ARGS…`) and returns what it prints: `{client_id, client_secret}`.
 * For clients whose URIs are only known once the test runs (a receiver's port).
 */
export async function addClient(args) {
  const { stdout } = await promisify(execFile)(
    env('LATCHKEY_CLI'),
    ['--database-url', env('LATCHKEY_DATABASE_URL'), 'client', 'add', ...args],
    { timeout: 30_000 },
  );
  return JSON.parse(stdout);
}

/**
 * An app's back-channel logout endpoint (Back-Channel Logout 1.0 §2.5) on a random loopback
 * port: it records every request (method, path, content type, the `logout_token` form
 * field) and answers 200, leaving validation to the test. Several apps share one receiver
 * under different paths (`uri(path)`).
 */
export class LogoutReceiver {
  constructor() {
    this.received = [];
    this.waiters = new Set();
    this.server = createServer((req, res) => {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        const entry = {
          method: req.method,
          path: req.url,
          contentType: req.headers['content-type'],
          cacheControl: req.headers['cache-control'],
          body,
          logoutToken: new URLSearchParams(body).get('logout_token'),
        };
        this.received.push(entry);
        for (const w of this.waiters) w();
        res.writeHead(200, { 'cache-control': 'no-store' }).end();
      });
    });
  }

  /** Starts listening on 127.0.0.1 (a free port). */
  async start() {
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', resolve);
    });
    this.base = `http://127.0.0.1:${this.server.address().port}`;
    return this;
  }

  async stop() {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }

  /** The receiver's URL for `path`, to register as a client's `backchannel_logout_uri`. */
  uri(path) {
    return `${this.base}${path}`;
  }

  /**
   * The first request received so far, or within `timeoutMs`, for which `match(entry)` is
   * true (the server's sender polls about once a second). Throws listing what did arrive.
   */
  async waitFor(match, what, timeoutMs = 20_000) {
    const found = () => this.received.find(match);
    if (found()) return found();
    return new Promise((resolve, reject) => {
      const check = () => {
        const entry = found();
        if (!entry) return;
        this.waiters.delete(check);
        clearTimeout(timer);
        resolve(entry);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        const seen = this.received.map((e) => `${e.method} ${e.path} ${e.contentType}`);
        reject(new Error(`no ${what} within ${timeoutMs} ms; received: ${JSON.stringify(seen)}`));
      }, timeoutMs);
      this.waiters.add(check);
    });
  }
}
