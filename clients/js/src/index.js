// @latchkey/client: holds one Latchkey session for an app and makes its API calls
// (SPEC 5.7). No runtime dependencies; browsers and Node 20+.
//
// - Single-flight refresh: concurrent calls that need a refresh share one request; across
//   tabs too, with the Web Locks API (navigator.locks) and tabs sharing one `storage`.
//   Without Web Locks, a short lease kept in the shared storage stands in. Share an
//   IndexedDB-backed storage between tabs: localStorage can show another tab's write late.
// - Proactive refresh shortly before the access token expires; a 401 invalid_token
//   (claims_stale, expired) triggers one refresh and one retry.
// - Logout barrier: logout() raises the epoch and forgets the tokens before it calls the
//   server; tokens that arrive later from a request begun before (a refresh, a login) are
//   discarded and revoked on the server.
// - onReauth(reason) is called once when the server ends the session; later calls fail
//   at once with `not_signed_in`, without a request, so nothing loops.
// - lk.fetch() sends the token only to the issuer's origin and the `apiOrigins` the app
//   listed (scheme, host and port compared exactly); any other URL is refused with
//   `origin_not_allowed` before anything is sent. fetch() itself drops Authorization on a
//   redirect to another origin (the Fetch standard; Node 20's fetch and current browsers).
// - Tokens never appear in errors or logs.

const STORAGE_KEY = 'latchkey.session';
const LEASE_KEY = 'latchkey.refresh-lease';
const LOCK_NAME = 'latchkey.refresh';

/** Why a call failed. `code` is one of `not_signed_in`, `reauth`, `invalid_credentials`,
 * `throttled`, `server`, `network`, `origin_not_allowed`, `invalid_url`; `reason` is the
 * server's error_reason for `reauth`; `origin` the refused origin for `origin_not_allowed`. */
export class LatchkeyError extends Error {
  constructor(code, message, { reason = null, status = null, retryAfter = null, origin = null } = {}) {
    super(message);
    this.name = 'LatchkeyError';
    this.code = code;
    this.reason = reason;
    this.status = status;
    this.retryAfter = retryAfter;
    this.origin = origin;
  }
}

/** Storage in memory (the default): nothing outlives the page or process. */
export class MemoryStorage {
  #map = new Map();
  async get(key) { return this.#map.has(key) ? this.#map.get(key) : null; }
  async set(key, value) { this.#map.set(key, String(value)); }
  async remove(key) { this.#map.delete(key); }
}

const notSignedIn = () => new LatchkeyError('not_signed_in', 'Not signed in.');

async function errorOf(res) {
  let body = {};
  try { body = await res.json(); } catch { /* not JSON */ }
  const retry = Number(res.headers.get('retry-after'));
  return {
    status: res.status,
    error: typeof body.error === 'string' ? body.error : '',
    reason: typeof body.error_reason === 'string' ? body.error_reason : null,
    retryAfter: Number.isFinite(retry) && retry > 0 ? retry : null,
  };
}

function isInvalidToken(res) {
  return res.status === 401 && /error="invalid_token"/.test(res.headers.get('www-authenticate') ?? '');
}

function withBearer(init, token) {
  const headers = new Headers(init?.headers ?? {});
  headers.set('authorization', `Bearer ${token}`);
  return { ...init, headers };
}

function randomId() {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The origin of an absolute http(s) URL (`scheme://host[:port]`, default port left out, as
 * the URL parser normalises it), or null for any other URL: other schemes have opaque
 * origins, which equal nothing. */
function httpOrigin(url) {
  return url.protocol === 'http:' || url.protocol === 'https:' ? url.origin : null;
}

/** The origins the token may go to: the issuer's, then each of `apiOrigins`, which must be
 * bare origins. A path would suggest the token is kept to it, which it is not, so one is
 * refused rather than ignored. */
function allowedOrigins(issuer, apiOrigins) {
  let issuerUrl;
  try { issuerUrl = new URL(issuer); } catch { issuerUrl = null; }
  const issuerOrigin = issuerUrl && httpOrigin(issuerUrl);
  if (!issuerOrigin) throw new TypeError(`issuer must be an absolute http(s) URL: ${JSON.stringify(issuer)}`);
  const origins = new Set([issuerOrigin]);
  if (!Array.isArray(apiOrigins)) throw new TypeError('apiOrigins must be an array of origins');
  for (const api of apiOrigins) {
    let url;
    try { url = new URL(String(api)); } catch { url = null; }
    const origin = url && httpOrigin(url);
    const isBare = url && url.pathname === '/' && !url.search && !url.hash && !url.username && !url.password
      && !String(api).endsWith('?') && !String(api).endsWith('#');
    if (!origin || !isBare) {
      throw new TypeError(`apiOrigins: ${JSON.stringify(String(api))} is not an http(s) origin (scheme://host[:port])`);
    }
    origins.add(origin);
  }
  return origins;
}

export class Latchkey {
  #base;
  #origins;
  #fetch;
  #storage;
  #shared;
  #onReauth;
  #marginMs;
  #now;
  #locks;
  #oauth;
  #epoch = 0;
  #tokens = null;
  #flight = null;
  #reauthReported = false;

  /**
   * @param {object} options
   * @param {string} options.issuer  The Latchkey server's URL (absolute, http or https).
   * @param {string[]} [options.apiOrigins]  The origins (`scheme://host[:port]`) of the APIs
   *   lk.fetch() may send the token to, besides the issuer's. Others are refused.
   * @param {(reason: string) => void} [options.onReauth]  Called once when the session ends.
   * @param {{get, set, remove}} [options.storage]  Shared by tabs to share one session.
   * @param {typeof fetch} [options.fetch]
   * @param {number} [options.refreshMargin]  Seconds before expiry to refresh (default 30).
   * @param {{clientId: string, clientSecret?: string}} [options.oauth]  Tokens from the
   *   OAuth code flow: refresh and revoke through /oauth/token and /oauth/revoke.
   * @param {() => number} [options.now]  The clock in milliseconds (tests).
   * @param {object|null} [options.locks]  A Web Locks implementation (default
   *   navigator.locks when present; null forces the storage lease).
   */
  constructor({ issuer, apiOrigins = [], onReauth, storage, fetch: fetchImpl, refreshMargin = 30, oauth, now, locks } = {}) {
    if (typeof issuer !== 'string' || issuer === '') throw new TypeError('issuer is required');
    this.#origins = allowedOrigins(issuer, apiOrigins);
    this.#base = issuer.replace(/\/+$/, '');
    this.#fetch = fetchImpl ?? globalThis.fetch.bind(globalThis);
    this.#shared = Boolean(storage);
    this.#storage = storage ?? new MemoryStorage();
    this.#onReauth = typeof onReauth === 'function' ? onReauth : null;
    this.#marginMs = refreshMargin * 1000;
    this.#now = now ?? (() => Date.now());
    this.#locks = locks === undefined ? (globalThis.navigator?.locks ?? null) : locks;
    this.#oauth = oauth ?? null;
  }

  /** `{ sessionId, expiresAt }` (expiresAt in ms since the epoch), or null. */
  get session() {
    const t = this.#tokens;
    return t ? { sessionId: t.sessionId ?? null, expiresAt: t.expiresAt } : null;
  }

  toJSON() { return { issuer: this.#base, apiOrigins: [...this.#origins].slice(1), session: this.session }; }

  /** Loads the session kept in the storage; true when there is one. */
  async resume() {
    await this.#sync();
    return this.#tokens !== null;
  }

  /** With a shared storage, the storage is the truth: another tab may have refreshed or
   * signed out. */
  async #sync() {
    if (!this.#shared) return;
    const epoch = this.#epoch;
    const stored = parse(await this.#storage.get(STORAGE_KEY));
    if (epoch !== this.#epoch) return;
    if (stored === null) {
      if (this.#tokens !== null) { this.#tokens = null; this.#epoch += 1; }
    } else if (
      this.#tokens?.accessToken !== stored.accessToken &&
      // A read that began before this tab's own refresh wrote its result must not put the
      // older tokens back: newer tokens expire later.
      (this.#tokens === null || stored.expiresAt > this.#tokens.expiresAt)
    ) {
      this.#tokens = stored;
      this.#reauthReported = false;
    }
  }

  #url(path) { return `${this.#base}${path}`; }

  /** First-party sign-in (SPEC 5.1). */
  async login({ username, password }) {
    const epoch = this.#epoch;
    let res;
    try {
      res = await this.#fetch(this.#url('/auth/login'), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username, password }),
      });
    } catch {
      throw new LatchkeyError('network', 'The server could not be reached.');
    }
    if (!res.ok) {
      const e = await errorOf(res);
      if (e.status === 401) throw new LatchkeyError('invalid_credentials', 'Wrong username or password.', e);
      if (e.status === 429) throw new LatchkeyError('throttled', 'Too many attempts; retry later.', e);
      throw new LatchkeyError('server', `The server answered ${e.status} ${e.error}.`, e);
    }
    await this.#adopt(epoch, this.#tokensFrom(await res.json(), null));
    return this.session;
  }

  /** Takes over tokens the app obtained itself (the OAuth token endpoint's answer). */
  async setTokens(answer) {
    await this.#adopt(this.#epoch, this.#tokensFrom(answer, null));
    return this.session;
  }

  #tokensFrom(answer, keepRefresh) {
    return {
      accessToken: answer.access_token,
      refreshToken: answer.refresh_token ?? keepRefresh,
      sessionId: answer.session_id ?? null,
      expiresAt: this.#now() + Number(answer.expires_in) * 1000,
    };
  }

  async #adopt(epoch, tokens) {
    if (epoch !== this.#epoch) {
      this.#revoke(tokens).catch(() => {});
      throw notSignedIn();
    }
    this.#tokens = tokens;
    this.#reauthReported = false;
    await this.#storage.set(STORAGE_KEY, JSON.stringify(tokens));
    if (epoch !== this.#epoch) {
      // A logout ran while the storage was written: its removal must win.
      await this.#storage.remove(STORAGE_KEY);
      this.#revoke(tokens).catch(() => {});
      throw notSignedIn();
    }
  }

  /** Signs out: the barrier first, then the server. Signed out locally either way. */
  async logout() {
    this.#epoch += 1;
    const tokens = this.#tokens;
    this.#tokens = null;
    await this.#storage.remove(STORAGE_KEY);
    if (tokens) await this.#revoke(tokens);
  }

  // A form POST to an OAuth endpoint as the app: HTTP Basic with its secret
  // (client_secret_basic), or its client_id in the form when it is a public client.
  #oauthPost(path, fields) {
    const form = new URLSearchParams(fields);
    const headers = { 'content-type': 'application/x-www-form-urlencoded' };
    if (this.#oauth.clientSecret) {
      headers.authorization = `Basic ${btoa(`${encodeURIComponent(this.#oauth.clientId)}:${encodeURIComponent(this.#oauth.clientSecret)}`)}`;
    } else {
      form.set('client_id', this.#oauth.clientId);
    }
    return this.#fetch(this.#url(path), { method: 'POST', headers, body: form.toString() });
  }

  async #revoke(tokens) {
    let res;
    if (this.#oauth) {
      res = await this.#oauthPost('/oauth/revoke', { token: tokens.refreshToken ?? tokens.accessToken });
    } else if (tokens.refreshToken) {
      res = await this.#fetch(this.#url('/auth/logout'), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ refresh_token: tokens.refreshToken }),
      });
    } else {
      res = await this.#fetch(this.#url('/auth/logout'), {
        method: 'POST',
        headers: { authorization: `Bearer ${tokens.accessToken}` },
      });
    }
    if (!res.ok) {
      const e = await errorOf(res);
      throw new LatchkeyError('server', `Logout answered ${e.status} ${e.error}.`, e);
    }
  }

  /** A current access token, refreshed first when it expires within the margin. */
  async accessToken() {
    await this.#sync();
    const t = this.#tokens;
    if (!t) throw notSignedIn();
    if (this.#now() + this.#marginMs < t.expiresAt) return t.accessToken;
    return this.#refreshOnce(t.accessToken);
  }

  /** Refreshes now, joining a refresh already in flight. */
  async refresh() {
    await this.#sync();
    if (!this.#tokens) throw notSignedIn();
    await this.#refreshOnce(this.#tokens.accessToken);
    return this.session;
  }

  /** One refresh for every caller that found `stale` wanting: in this tab by sharing the
   * promise, across tabs by the lock and re-reading the shared storage. */
  #refreshOnce(stale) {
    if (this.#flight) return this.#flight;
    const flight = this.#exclusive(() => this.#refreshUnlocked(stale)).finally(() => {
      if (this.#flight === flight) this.#flight = null;
    });
    this.#flight = flight;
    return flight;
  }

  async #exclusive(work) {
    if (this.#locks?.request) return this.#locks.request(LOCK_NAME, work);
    if (!this.#shared) return work();
    // Fallback without Web Locks: a lease in the shared storage, re-read after writing.
    const me = randomId();
    for (let i = 0; i < 200; i += 1) {
      const lease = parse(await this.#storage.get(LEASE_KEY));
      if (!lease || lease.until < this.#now()) {
        await this.#storage.set(LEASE_KEY, JSON.stringify({ owner: me, until: this.#now() + 10_000 }));
        await sleep(20);
        if (parse(await this.#storage.get(LEASE_KEY))?.owner === me) {
          try { return await work(); } finally { await this.#storage.remove(LEASE_KEY); }
        }
      }
      await sleep(25);
    }
    return work();
  }

  async #refreshUnlocked(stale) {
    await this.#sync();
    const t = this.#tokens;
    if (!t) throw notSignedIn();
    // Another tab, or an earlier flight, replaced the token meanwhile: use its result.
    if (t.accessToken !== stale) return t.accessToken;
    const epoch = this.#epoch;
    let res;
    try {
      res = await this.#postRefresh(t.refreshToken);
    } catch {
      throw new LatchkeyError('network', 'The server could not be reached.');
    }
    if (res.ok) {
      const tokens = this.#tokensFrom(await res.json(), t.refreshToken);
      await this.#adopt(epoch, tokens);
      return tokens.accessToken;
    }
    const e = await errorOf(res);
    if (e.status !== 400 || e.error !== 'invalid_grant') {
      throw new LatchkeyError('server', `Refresh answered ${e.status} ${e.error}.`, e);
    }
    const reason = e.reason ?? 'unknown_token';
    if (epoch !== this.#epoch) throw notSignedIn();
    this.#tokens = null;
    this.#epoch += 1;
    await this.#storage.remove(STORAGE_KEY);
    const first = !this.#reauthReported;
    this.#reauthReported = true;
    if (first && this.#onReauth) {
      try { this.#onReauth(reason); } catch { /* the app's callback must not break us */ }
    }
    throw new LatchkeyError('reauth', `The session ended (${reason}); sign in again.`, { reason, status: e.status });
  }

  #postRefresh(refreshToken) {
    if (!refreshToken) {
      return Promise.resolve(new Response(JSON.stringify({ error: 'invalid_grant', error_reason: 'unknown_token' }), { status: 400 }));
    }
    if (this.#oauth) {
      return this.#oauthPost('/oauth/token', { grant_type: 'refresh_token', refresh_token: refreshToken });
    }
    return this.#fetch(this.#url('/auth/refresh'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ refresh_token: refreshToken }),
    });
  }

  /** fetch() with the Bearer token; one refresh and one retry on 401 invalid_token. The
   * body must be re-sendable (a string, not a stream) for the retry. Only to the issuer's
   * origin and `apiOrigins`: another URL is refused before anything is sent (no refresh
   * either). A relative URL is resolved against the page's address (`location`), as
   * fetch() would; without a page (Node), it must be absolute. */
  async fetch(url, init = {}) {
    const target = this.#admit(url);
    const token = await this.accessToken();
    const res = await this.#fetch(target, withBearer(init, token));
    if (!isInvalidToken(res)) return res;
    const fresh = await this.#refreshOnce(token);
    return this.#fetch(target, withBearer(init, fresh));
  }

  /** The URL to fetch, when its origin may receive the token. The URL itself stays out of
   * the error: it is the app's, and its query may hold something private. */
  #admit(url) {
    if (typeof url !== 'string' && !(url instanceof URL)) {
      // A Request would carry its own method and body, which the retry could not resend.
      throw new LatchkeyError('invalid_url', 'lk.fetch() takes a URL (a string or a URL object).');
    }
    let parsed;
    try {
      parsed = new URL(String(url), globalThis.location?.href);
    } catch {
      throw new LatchkeyError('invalid_url', 'The URL is not valid (relative URLs need a page to resolve against).');
    }
    const origin = httpOrigin(parsed) ?? parsed.protocol;
    if (!this.#origins.has(origin)) {
      throw new LatchkeyError(
        'origin_not_allowed',
        `Refused to send the access token to ${origin}: it is neither the issuer's origin nor one of apiOrigins.`,
        { origin },
      );
    }
    return parsed.href;
  }
}

function parse(text) {
  if (typeof text !== 'string') return null;
  try {
    const v = JSON.parse(text);
    return v && typeof v === 'object' ? v : null;
  } catch {
    return null;
  }
}

export default Latchkey;
