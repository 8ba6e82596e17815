// Type declarations for @latchkey/client (SPEC 5.7).

/** A small async key-value store; tabs sharing one share a session. Strings only. */
export interface TokenStorage {
  get(key: string): Promise<string | null>;
  set(key: string, value: string): Promise<void>;
  remove(key: string): Promise<void>;
}

export interface LatchkeyOptions {
  /** The Latchkey server's URL: absolute, http or https. Its origin may receive the token. */
  issuer: string;
  /**
   * The origins (`scheme://host[:port]`, nothing more) of the APIs `fetch()` may send the
   * token to, besides the issuer's. Scheme, host and port are compared exactly; a URL at any
   * other origin is refused with `origin_not_allowed` before anything is sent. Default: none.
   */
  apiOrigins?: string[];
  /** Called once, with the server's error_reason, when the session ends. */
  onReauth?: (reason: string) => void;
  /** Where the session is kept (default: memory). */
  storage?: TokenStorage;
  /** The fetch to use (default: globalThis.fetch). */
  fetch?: typeof fetch;
  /** Seconds before expiry at which the access token is refreshed (default 30). */
  refreshMargin?: number;
  /** Tokens from the OAuth code flow: refresh and revoke through the OAuth endpoints. */
  oauth?: { clientId: string; clientSecret?: string };
  /** The clock, in milliseconds since the epoch (tests). */
  now?: () => number;
  /** A Web Locks implementation (default navigator.locks); null forces the storage lease. */
  locks?: { request<T>(name: string, work: () => Promise<T>): Promise<T> } | null;
  /**
   * Bind each session to a key of its own with DPoP (RFC 9449; default false). Each session
   * (`login()`, `setTokens()`) gets a new ES256 key pair from WebCrypto, its private key
   * non-extractable. The sign-in, every refresh and every `fetch()` with a DPoP-bound access
   * token carry a fresh proof from it (`logout()` too when it sends the access token), with
   * one retry when the server asks for a nonce. The key pair is kept in IndexedDB when a
   * `storage` is given in a browser (tabs find it there), else in this client's memory. A
   * stored session whose key is not found counts as signed out: `resume()` answers false
   * and nothing is sent (a refresh without the key would make the server revoke the
   * session). Needs `crypto.subtle`: a secure context in browsers.
   */
  dpop?: boolean;
}

export interface Session {
  sessionId: string | null;
  /** Expiry of the current access token, in milliseconds since the epoch. */
  expiresAt: number;
}

export type LatchkeyErrorCode =
  | 'not_signed_in'
  | 'reauth'
  /** The server waits for the user to sign in again; the session is kept: call stepUp(). */
  | 'step_up_required'
  | 'invalid_credentials'
  | 'throttled'
  | 'server'
  | 'network'
  /** `fetch()` to an origin that is neither the issuer's nor in `apiOrigins`; nothing was sent. */
  | 'origin_not_allowed'
  /** `fetch()` with a URL that does not parse (a relative one outside a page). */
  | 'invalid_url';

export class LatchkeyError extends Error {
  readonly code: LatchkeyErrorCode;
  /** The server's error_reason, for `reauth`. */
  readonly reason: string | null;
  readonly status: number | null;
  readonly retryAfter: number | null;
  /** The refused origin (`scheme://host[:port]`), for `origin_not_allowed`. */
  readonly origin: string | null;
}

export class MemoryStorage implements TokenStorage {
  get(key: string): Promise<string | null>;
  set(key: string, value: string): Promise<void>;
  remove(key: string): Promise<void>;
}

/** The token endpoint's answer, for setTokens(). */
export interface TokenAnswer {
  access_token: string;
  /** `Bearer` (or absent); a `DPoP` answer is refused, as its key is not the client's. */
  token_type?: string;
  expires_in: number;
  refresh_token?: string;
  session_id?: string;
  scope?: string;
}

export class Latchkey {
  constructor(options: LatchkeyOptions);
  /** The session, or null when signed out. */
  readonly session: Session | null;
  resume(): Promise<boolean>;
  login(credentials: { username: string; password: string }): Promise<Session>;
  /** Takes over tokens from the OAuth code flow. With `dpop`, the session gets a key and
   * its refreshes bind the access tokens they get. Throws a TypeError for a `DPoP` answer. */
  setTokens(answer: TokenAnswer): Promise<Session>;
  /** Continues a session the server stopped with `step_up_required` (SPEC 12). */
  stepUp(proof: { password: string } | { method: 'totp' | 'recovery_code'; code: string }): Promise<Session>;
  /** fetch() with the access token (Bearer, or DPoP with a proof naming this request), to
   * the issuer's origin or one of `apiOrigins` only. Relative URLs resolve against
   * `location`, as fetch() does. */
  fetch(url: string | URL, init?: RequestInit): Promise<Response>;
  /** The current access token. A DPoP-bound one is of no use without a proof from the
   * session's key, which only `fetch()` can make. */
  accessToken(): Promise<string>;
  refresh(): Promise<Session>;
  logout(): Promise<void>;
}

export default Latchkey;
