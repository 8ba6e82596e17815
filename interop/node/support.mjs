// Helpers for interop.test.mjs: configuration from the environment, a wire log of every
// request openid-client makes, and a tiny "browser" (cookie jar, no redirects followed)
// that walks Latchkey's own sign-in and consent pages. Nothing here speaks OAuth: the
// protocol work (discovery, authorization URL, PKCE, code exchange, ID token validation,
// DPoP proofs and nonces, refresh, userinfo) is done by openid-client.

import * as client from 'openid-client';

export const REDIRECT_URI = process.env.REDIRECT_URI ?? 'http://127.0.0.1:9/cb';

/** The value of a required environment variable; throws naming it when unset. */
export function env(name) {
  const value = process.env[name];
  if (value === undefined || value === '') {
    throw new Error(`environment variable ${name} must be set (see the top of interop.test.mjs)`);
  }
  return value;
}

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
 * `http://` issuers need `allowInsecureRequests` (tests run on loopback without TLS).
 */
export async function discover(issuer, clientId, secret, log) {
  const insecure = new URL(issuer).protocol === 'http:';
  const auth = secret === undefined ? client.None() : client.ClientSecretBasic(secret);
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

/** The claims of a JWT (no verification: only to read `cnf.jkt` of an access token). */
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
