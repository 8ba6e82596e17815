// Type declarations for @latchkey/client (SPEC 5.7).

/** A small async key-value store; tabs sharing one share a session. Strings only. */
export interface TokenStorage {
  get(key: string): Promise<string | null>;
  set(key: string, value: string): Promise<void>;
  remove(key: string): Promise<void>;
}

export interface LatchkeyOptions {
  /** The Latchkey server's URL. */
  issuer: string;
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
}

export interface Session {
  sessionId: string | null;
  /** Expiry of the current access token, in milliseconds since the epoch. */
  expiresAt: number;
}

export type LatchkeyErrorCode =
  | 'not_signed_in'
  | 'reauth'
  | 'invalid_credentials'
  | 'throttled'
  | 'server'
  | 'network';

export class LatchkeyError extends Error {
  readonly code: LatchkeyErrorCode;
  /** The server's error_reason, for `reauth`. */
  readonly reason: string | null;
  readonly status: number | null;
  readonly retryAfter: number | null;
}

export class MemoryStorage implements TokenStorage {
  get(key: string): Promise<string | null>;
  set(key: string, value: string): Promise<void>;
  remove(key: string): Promise<void>;
}

/** The token endpoint's answer, for setTokens(). */
export interface TokenAnswer {
  access_token: string;
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
  setTokens(answer: TokenAnswer): Promise<Session>;
  fetch(url: string | URL, init?: RequestInit): Promise<Response>;
  accessToken(): Promise<string>;
  refresh(): Promise<Session>;
  logout(): Promise<void>;
}

export default Latchkey;
