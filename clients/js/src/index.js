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
// - DPoP (RFC 9449, SPEC 12) with `dpop: true`: each session gets its own ES256 key pair,
//   made by WebCrypto when it begins (login, setTokens), the private key non-extractable.
//   The sign-in and every refresh carry a fresh proof from it; a bound access token
//   (token_type DPoP) goes out as `Authorization: DPoP` with a fresh proof naming it
//   (`ath`). A server's `use_dpop_nonce` gets one retry with its nonce. The key pair is kept
//   in IndexedDB when the session is in a shared storage in a browser, so that tabs find
//   it; otherwise in this client's memory. A stored session whose key is not there counts as
//   signed out: a refresh without the key would make the server revoke the session as stolen.
// - Tokens never appear in errors or logs.

const STORAGE_KEY = 'latchkey.session';
const LEASE_KEY = 'latchkey.refresh-lease';
const LOCK_NAME = 'latchkey.refresh';
const KEYS_DATABASE = 'latchkey.dpop-keys';
const KEYS_STORE = 'keys';

/** Why a call failed. `code` is one of `not_signed_in`, `reauth`, `step_up_required` (the
 * session is kept: call stepUp()), `invalid_credentials`,
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

function withAuthorization(init, scheme, token) {
  const headers = new Headers(init?.headers ?? {});
  headers.set('authorization', `${scheme} ${token}`);
  return { ...init, headers };
}

function randomId() {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const encoder = new TextEncoder();

function base64url(bytes) {
  let binary = '';
  for (const b of new Uint8Array(bytes)) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

const sha256 = (text) => globalThis.crypto.subtle.digest('SHA-256', encoder.encode(text));

/** A key pair as proofs use it: the public JWK with only the members RFC 7638 hashes, and
 * its thumbprint, which the server puts in the access token's `cnf.jkt`. Exporting the
 * public key works though the pair was made non-extractable: that covers the private key. */
async function dpopKey(pair) {
  const { crv, kty, x, y } = await globalThis.crypto.subtle.exportKey('jwk', pair.publicKey);
  const jwk = { crv, kty, x, y };
  // RFC 7638: the members in lexicographic order without whitespace, which this is.
  return { pair, jwk, jkt: base64url(await sha256(JSON.stringify(jwk))) };
}

/** A DPoP proof (RFC 9449 §4.2) for one request. `ath` ties it to the access token the
 * request carries, `nonce` is the server's when it asked for one. */
async function dpopProof(key, method, url, accessToken, nonce) {
  const claims = {
    jti: randomId(),
    htm: method,
    htu: url,
    // The real clock, not options.now: the server holds iat against its own.
    iat: Math.floor(Date.now() / 1000),
  };
  if (accessToken !== null) claims.ath = base64url(await sha256(accessToken));
  if (nonce !== null) claims.nonce = nonce;
  const part = (value) => base64url(encoder.encode(JSON.stringify(value)));
  const input = `${part({ typ: 'dpop+jwt', alg: 'ES256', jwk: key.jwk })}.${part(claims)}`;
  // WebCrypto's ECDSA signature is r||s (64 bytes), the form JWS wants (RFC 7518 §3.4).
  const signature = await globalThis.crypto.subtle.sign(
    { name: 'ECDSA', hash: 'SHA-256' }, key.pair.privateKey, encoder.encode(input),
  );
  return `${input}.${base64url(signature)}`;
}

// fetch() sends these methods in upper case whatever case they were given in (the Fetch
// standard's normalisation) and any other as given; htm names the method sent.
const NORMALISED_METHODS = new Set(['DELETE', 'GET', 'HEAD', 'OPTIONS', 'POST', 'PUT']);

function sentMethod(method = 'GET') {
  const upper = String(method).toUpperCase();
  return NORMALISED_METHODS.has(upper) ? upper : String(method);
}

/** Whether `res` asks for a proof with the nonce it carries: `400 use_dpop_nonce` from a
 * token endpoint (RFC 9449 §8) or a 401 `use_dpop_nonce` challenge from an API (§9). */
async function asksForNonce(res) {
  if (!res.headers.has('dpop-nonce')) return false;
  if (res.status === 401) return /error="use_dpop_nonce"/.test(res.headers.get('www-authenticate') ?? '');
  if (res.status !== 400) return false;
  // A copy, so that the caller can still read the answer.
  try { return (await res.clone().json()).error === 'use_dpop_nonce'; } catch { return false; }
}

/** DPoP keys in this client's memory: they go with the page or process. */
class MemoryKeys {
  #map = new Map();
  async get(jkt) { return this.#map.get(jkt) ?? null; }
  async put(key) { this.#map.set(key.jkt, key); }
  async remove(jkt) { this.#map.delete(jkt); }
}

/** DPoP key pairs in IndexedDB, by thumbprint, where every tab of the origin finds them.
 * IndexedDB keeps a CryptoKey as it is (structured clone), so the private key stays
 * non-extractable there too. */
class IndexedDbKeys {
  #db = null;

  #open() {
    this.#db ??= new Promise((resolve, reject) => {
      const req = globalThis.indexedDB.open(KEYS_DATABASE, 1);
      req.onupgradeneeded = () => req.result.createObjectStore(KEYS_STORE);
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    }).catch((e) => {
      this.#db = null; // the next call tries again
      throw e;
    });
    return this.#db;
  }

  // Settles when the transaction commits: a key is in place before the session that names
  // it is written to the storage, where other tabs may read it at once.
  async #run(mode, op) {
    const db = await this.#open();
    return new Promise((resolve, reject) => {
      const tx = db.transaction(KEYS_STORE, mode);
      const req = op(tx.objectStore(KEYS_STORE));
      tx.oncomplete = () => resolve(req.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  }

  async get(jkt) {
    const pair = await this.#run('readonly', (store) => store.get(jkt));
    return pair ? dpopKey(pair) : null;
  }

  async put(key) {
    const { privateKey, publicKey } = key.pair;
    await this.#run('readwrite', (store) => store.put({ privateKey, publicKey }, key.jkt));
  }

  async remove(jkt) { await this.#run('readwrite', (store) => store.delete(jkt)); }
}

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
  #keys;
  #nonces = new Map();
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
   * @param {boolean} [options.dpop]  Bind each session to a key of its own (RFC 9449).
   */
  constructor({
    issuer, apiOrigins = [], onReauth, storage, fetch: fetchImpl, refreshMargin = 30, oauth, now, locks, dpop = false,
  } = {}) {
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
    if (dpop && !globalThis.crypto?.subtle) {
      throw new TypeError('dpop needs WebCrypto (crypto.subtle), which browsers give only to secure contexts (https, localhost)');
    }
    // Without `dpop` there is no key store at all: a stored session bound to a key is then
    // signed out here, never refreshed without its key.
    this.#keys = !dpop ? null : this.#shared && globalThis.indexedDB ? new IndexedDbKeys() : new MemoryKeys();
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
    const stored = await this.#load();
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

  /** The stored session with its key, or null. One whose key is not here counts as none,
   * but stays in the storage for whoever holds the key (a client in another process). */
  async #load() {
    const stored = parse(await this.#storage.get(STORAGE_KEY));
    if (stored === null) return null;
    const { jkt, ...tokens } = stored;
    if (jkt === undefined && tokens.scheme !== 'DPoP') return { ...tokens, key: null };
    if (typeof jkt !== 'string') return null;
    const key = this.#tokens?.key?.jkt === jkt ? this.#tokens.key : await this.#keys?.get(jkt);
    return key ? { ...tokens, key } : null;
  }

  #url(path) { return `${this.#base}${path}`; }

  /** A key for a session about to begin, in the key store before anything names it. */
  async #newKey() {
    const pair = await globalThis.crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
    const key = await dpopKey(pair);
    await this.#keys.put(key);
    return key;
  }

  /** Drops the key of a session that ended. A key left behind opens nothing, so a failure
   * here must not fail what ended the session. */
  async #forgetKey(key) {
    if (key) await this.#keys.remove(key.jkt).catch(() => {});
  }

  /** fetch(url, init), with a fresh proof from `key` when there is one, and once more with a
   * new proof when the server asks for a nonce. `accessToken` is the token the request
   * carries, for `ath`. The latest nonce of each origin is kept for the next proof. */
  async #send(url, init, key, accessToken = null) {
    if (!key) return this.#fetch(url, init);
    const target = new URL(url);
    // htu: the URL without query and fragment (RFC 9449 §4.2).
    const htu = `${target.origin}${target.pathname}`;
    const method = sentMethod(init.method);
    const attempt = async () => {
      const headers = new Headers(init.headers ?? {});
      const nonce = this.#nonces.get(target.origin) ?? null;
      headers.set('dpop', await dpopProof(key, method, htu, accessToken, nonce));
      const res = await this.#fetch(url, { ...init, headers });
      const next = res.headers.get('dpop-nonce');
      if (next) this.#nonces.set(target.origin, next);
      return res;
    };
    const res = await attempt();
    return (await asksForNonce(res)) ? attempt() : res;
  }

  /** First-party sign-in (SPEC 5.1). */
  async login({ username, password }) {
    const epoch = this.#epoch;
    const key = this.#keys ? await this.#newKey() : null;
    const res = await this.#send(this.#url('/auth/login'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username, password }),
    }, key).catch(() => null);
    if (!res?.ok) {
      await this.#forgetKey(key);
      if (!res) throw new LatchkeyError('network', 'The server could not be reached.');
      const e = await errorOf(res);
      if (e.status === 401) throw new LatchkeyError('invalid_credentials', 'Wrong username or password.', e);
      if (e.status === 429) throw new LatchkeyError('throttled', 'Too many attempts; retry later.', e);
      throw new LatchkeyError('server', `The server answered ${e.status} ${e.error}.`, e);
    }
    await this.#adopt(epoch, this.#tokensFrom(await res.json(), null, key));
    return this.session;
  }

  /** Continues a session the server stopped with `step_up_required`: the user's password,
   * or `{ method: 'totp' | 'recovery_code', code }` for a user with a second factor
   * (`POST /auth/step-up`, SPEC 12). First-party sessions only. */
  async stepUp(proof) {
    await this.#sync();
    const t = this.#tokens;
    if (!t?.refreshToken) throw notSignedIn();
    const epoch = this.#epoch;
    const body = JSON.stringify({ refresh_token: t.refreshToken, ...proof });
    const res = await this.#sendWith(t, this.#url('/auth/step-up'), {
      method: 'POST', headers: { 'content-type': 'application/json' }, body,
    }).catch(() => null);
    if (!res) throw new LatchkeyError('network', 'The server could not be reached.');
    if (!res.ok) {
      const e = await errorOf(res);
      if (e.status === 401 && e.error === 'invalid_credentials') {
        throw new LatchkeyError('invalid_credentials', 'Wrong password or code.', e);
      }
      if (e.status === 429) throw new LatchkeyError('throttled', 'Too many attempts; retry later.', e);
      throw new LatchkeyError('server', `The server answered ${e.status} ${e.error}.`, e);
    }
    await this.#adopt(epoch, this.#tokensFrom(await res.json(), t.refreshToken, t.key));
    return this.session;
  }

  /** Takes over tokens the app obtained itself (the OAuth token endpoint's answer). With
   * `dpop` the session gets a key here, and its refreshes bind the access tokens they get;
   * an answer already bound to a key is refused, as that key is not this client's. */
  async setTokens(answer) {
    if (isDpopType(answer.token_type)) {
      throw new TypeError('setTokens() takes Bearer tokens: DPoP-bound ones need the key their proof was made with');
    }
    const key = this.#keys ? await this.#newKey() : null;
    await this.#adopt(this.#epoch, this.#tokensFrom(answer, null, key));
    return this.session;
  }

  #tokensFrom(answer, keepRefresh, key) {
    return {
      accessToken: answer.access_token,
      refreshToken: answer.refresh_token ?? keepRefresh,
      sessionId: answer.session_id ?? null,
      expiresAt: this.#now() + Number(answer.expires_in) * 1000,
      // How this access token is sent: a DPoP one with a proof from the session's key.
      scheme: isDpopType(answer.token_type) ? 'DPoP' : 'Bearer',
      key,
    };
  }

  /** The tokens of a late answer: revoked, and their key dropped. */
  #discard(tokens) {
    this.#revoke(tokens).catch(() => {});
    this.#forgetKey(tokens.key);
  }

  async #adopt(epoch, tokens) {
    if (epoch !== this.#epoch) {
      this.#discard(tokens);
      throw notSignedIn();
    }
    const replaced = this.#tokens?.key;
    this.#tokens = tokens;
    this.#reauthReported = false;
    await this.#storage.set(STORAGE_KEY, storedForm(tokens));
    if (epoch !== this.#epoch) {
      // A logout ran while the storage was written: its removal must win.
      await this.#storage.remove(STORAGE_KEY);
      this.#discard(tokens);
      throw notSignedIn();
    }
    // A sign-in over another session: no session in the storage names that key any more.
    if (replaced && replaced.jkt !== tokens.key?.jkt) await this.#forgetKey(replaced);
  }

  /** Signs out: the barrier first, then the server. Signed out locally either way. */
  async logout() {
    this.#epoch += 1;
    const tokens = this.#tokens;
    this.#tokens = null;
    await this.#storage.remove(STORAGE_KEY);
    if (tokens) {
      await this.#forgetKey(tokens.key);
      await this.#revoke(tokens);
    }
  }

  // A form POST to an OAuth endpoint as the app: HTTP Basic with its secret
  // (client_secret_basic), or its client_id in the form when it is a public client.
  #oauthPost(path, fields, key = null) {
    const form = new URLSearchParams(fields);
    const headers = { 'content-type': 'application/x-www-form-urlencoded' };
    if (this.#oauth.clientSecret) {
      headers.authorization = `Basic ${btoa(`${encodeURIComponent(this.#oauth.clientId)}:${encodeURIComponent(this.#oauth.clientSecret)}`)}`;
    } else {
      form.set('client_id', this.#oauth.clientId);
    }
    return this.#send(this.#url(path), { method: 'POST', headers, body: form.toString() }, key);
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
      res = await this.#sendWith(tokens, this.#url('/auth/logout'), { method: 'POST' });
    }
    if (!res.ok) {
      const e = await errorOf(res);
      throw new LatchkeyError('server', `Logout answered ${e.status} ${e.error}.`, e);
    }
  }

  /** A current access token, refreshed first when it expires within the margin. */
  async accessToken() {
    return (await this.#current()).accessToken;
  }

  /** The session's tokens, refreshed first when the access token expires within the margin. */
  async #current() {
    await this.#sync();
    const t = this.#tokens;
    if (!t) throw notSignedIn();
    if (this.#now() + this.#marginMs < t.expiresAt) return t;
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
    if (t.accessToken !== stale) return t;
    const epoch = this.#epoch;
    let res;
    try {
      res = await this.#postRefresh(t);
    } catch {
      throw new LatchkeyError('network', 'The server could not be reached.');
    }
    if (res.ok) {
      const tokens = this.#tokensFrom(await res.json(), t.refreshToken, t.key);
      await this.#adopt(epoch, tokens);
      return tokens;
    }
    const e = await errorOf(res);
    if (e.status !== 400 || e.error !== 'invalid_grant') {
      throw new LatchkeyError('server', `Refresh answered ${e.status} ${e.error}.`, e);
    }
    const reason = e.reason ?? 'unknown_token';
    // The session stays, waiting for its user (SPEC 12): stepUp() continues it.
    if (reason === 'step_up_required') {
      throw new LatchkeyError('step_up_required', 'Sign in again to continue the session.', { reason, status: e.status });
    }
    if (epoch !== this.#epoch) throw notSignedIn();
    this.#tokens = null;
    this.#epoch += 1;
    await this.#storage.remove(STORAGE_KEY);
    await this.#forgetKey(t.key);
    const first = !this.#reauthReported;
    this.#reauthReported = true;
    if (first && this.#onReauth) {
      try { this.#onReauth(reason); } catch { /* the app's callback must not break us */ }
    }
    throw new LatchkeyError('reauth', `The session ended (${reason}); sign in again.`, { reason, status: e.status });
  }

  /** The refresh request, with a proof from the session's key when it has one: a bound
   * session's refresh without it would be taken for theft. */
  #postRefresh({ refreshToken, key }) {
    if (!refreshToken) {
      return Promise.resolve(new Response(JSON.stringify({ error: 'invalid_grant', error_reason: 'unknown_token' }), { status: 400 }));
    }
    if (this.#oauth) {
      return this.#oauthPost('/oauth/token', { grant_type: 'refresh_token', refresh_token: refreshToken }, key);
    }
    return this.#send(this.#url('/auth/refresh'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ refresh_token: refreshToken }),
    }, key);
  }

  /** A request carrying the access token of `tokens`: Bearer, or DPoP with a proof. */
  #sendWith(tokens, url, init) {
    const key = tokens.scheme === 'DPoP' ? tokens.key : null;
    return this.#send(url, withAuthorization(init, key ? 'DPoP' : 'Bearer', tokens.accessToken), key, tokens.accessToken);
  }

  /** fetch() with the access token (Bearer, or DPoP with a proof); one refresh and one
   * retry on 401 invalid_token, and one more proof when the API asks for a DPoP nonce. The
   * body must be re-sendable (a string, not a stream) for the retries. Only to the issuer's
   * origin and `apiOrigins`: another URL is refused before anything is sent (no refresh
   * either). A relative URL is resolved against the page's address (`location`), as
   * fetch() would; without a page (Node), it must be absolute. */
  async fetch(url, init = {}) {
    const target = this.#admit(url);
    const tokens = await this.#current();
    const res = await this.#sendWith(tokens, target, init);
    if (!isInvalidToken(res)) return res;
    return this.#sendWith(await this.#refreshOnce(tokens.accessToken), target, init);
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

function isDpopType(tokenType) {
  // RFC 6749 §5.1: token_type is case-insensitive.
  return typeof tokenType === 'string' && tokenType.toLowerCase() === 'dpop';
}

/** The session as the storage keeps it: its key by thumbprint only. */
function storedForm({ key, ...tokens }) {
  return JSON.stringify(key ? { ...tokens, jkt: key.jkt } : tokens);
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
