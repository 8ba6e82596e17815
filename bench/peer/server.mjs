// Bench-only peer: panva's oidc-provider (the OpenID-certified Node.js provider), configured
// as close to Latchkey's defaults as it allows, so a load tool can drive the same OAuth
// workloads against both servers. It exists only for benchmark comparisons: it is not part
// of Latchkey, is never shipped, and is not a reference for how Latchkey behaves.
//
//   npm install && node server.mjs --port 9100 --issuer http://127.0.0.1:9100
//   (or PORT=9100 ISSUER=http://127.0.0.1:9100 node server.mjs)
//
// - oidc-provider 8.8.1: the last release whose runtime check accepts Node.js 20 (9.x wants
//   Node 22 LTS and warns "Unsupported runtime" on 20, though this file runs on both).
// - In-memory storage (oidc-provider's default adapter); nothing is logged per request.
// - One static confidential client, `bench-client` / `bench-secret`, authenticating with
//   client_secret_post; oidc-provider takes client_secret_basic for such a client as well.
// - Access tokens: 300 s, JWTs signed with EdDSA (Ed25519, key made at startup) for the
//   resource `https://api.example` (the default), scope `api`. oidc-provider does not
//   introspect JWT access tokens (8.x answers {"active":false}, 9.x unsupported_token_type),
//   so `https://api-opaque.example` (same scope) gives opaque ones to introspect.
// - Refresh tokens: 14 days, rotated on every use; reusing a rotated one is invalid_grant
//   and revokes its whole grant (every token issued from it).
// - DPoP (RFC 9449) on, without nonces, for the DPoP rows of bench/compare.sh.
// - `POST /bench/seed?n=64` (bench only) makes n grants for account `bench-user`, each with
//   a refresh token (scope `openid offline_access api`, resource `https://api.example`),
//   and answers {"refresh_tokens": [...]}, so no browser login is needed.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: { port: { type: 'string' }, issuer: { type: 'string' } },
});
const port = Number(args.port ?? process.env.PORT ?? 9100);
const issuer = args.issuer ?? process.env.ISSUER ?? `http://127.0.0.1:${port}`;

const CLIENT_ID = 'bench-client';
const ACCOUNT_ID = 'bench-user';
const RESOURCE = 'https://api.example';
const OPAQUE_RESOURCE = 'https://api-opaque.example';
const SEED_SCOPE = 'openid offline_access api';
const ACCESS_TOKEN_TTL = 300;
const LONG_TTL = 14 * 24 * 60 * 60;

const { privateKey } = generateKeyPairSync('ed25519');
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'bench-ed25519', alg: 'EdDSA', use: 'sig' };

const provider = new Provider(issuer, {
  clients: [{
    client_id: CLIENT_ID,
    client_secret: 'bench-secret',
    token_endpoint_auth_method: 'client_secret_post',
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/cb'],
    scope: SEED_SCOPE,
  }],
  responseTypes: ['code'],
  clientDefaults: { id_token_signed_response_alg: 'EdDSA' },
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  scopes: ['openid', 'offline_access', 'api'],
  async findAccount(_ctx, sub) {
    return { accountId: sub, async claims() { return { sub }; } };
  },
  features: {
    clientCredentials: { enabled: true },
    // RFC 9449 DPoP, as Latchkey offers it: a token request with a proof gets tokens bound
    // to its key; one without stays Bearer. No server nonces (Latchkey's default).
    dPoP: { enabled: true },
    // Any authenticated client may introspect or revoke (Latchkey's rule for confidential
    // clients); setting the policies also keeps oidc-provider's first-use notices quiet.
    introspection: { enabled: true, allowedPolicy: () => true },
    revocation: { enabled: true, allowedPolicy: () => true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      // Refresh without a `resource` parameter still targets the granted resource, so
      // refreshed access tokens are JWTs too (not opaque userinfo tokens).
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, resource) => ({
        scope: 'api',
        accessTokenTTL: ACCESS_TOKEN_TTL,
        ...(resource === OPAQUE_RESOURCE
          ? { accessTokenFormat: 'opaque' }
          : { accessTokenFormat: 'jwt', jwt: { sign: { alg: 'EdDSA' } } }),
      }),
    },
  },
  rotateRefreshToken: true,
  ttl: {
    AccessToken: ACCESS_TOKEN_TTL,
    ClientCredentials: ACCESS_TOKEN_TTL,
    IdToken: ACCESS_TOKEN_TTL,
    RefreshToken: LONG_TTL,
    Grant: LONG_TTL,
    Session: LONG_TTL,
  },
});

// Makes n grants + refresh tokens as the authorization_code flow would have left them.
async function seed(n) {
  const client = await provider.Client.find(CLIENT_ID);
  const authTime = Math.floor(Date.now() / 1000);
  const tokens = [];
  for (let i = 0; i < n; i += 1) {
    const grant = new provider.Grant({ accountId: ACCOUNT_ID, clientId: CLIENT_ID });
    grant.addOIDCScope('openid offline_access');
    grant.addResourceScope(RESOURCE, 'api');
    const grantId = await grant.save();
    const refreshToken = new provider.RefreshToken({
      accountId: ACCOUNT_ID,
      client,
      grantId,
      gty: 'authorization_code',
      authTime,
      scope: SEED_SCOPE,
      resource: RESOURCE,
      expiresWithSession: false,
    });
    tokens.push(await refreshToken.save());
  }
  return tokens;
}

const providerCallback = provider.callback();

createServer((req, res) => {
  if (!req.url.startsWith('/bench/')) {
    providerCallback(req, res);
    return;
  }
  const url = new URL(req.url, issuer);
  if (req.method !== 'POST' || url.pathname !== '/bench/seed') {
    res.writeHead(404).end();
    return;
  }
  const n = Number(url.searchParams.get('n') ?? 64);
  if (!Number.isInteger(n) || n < 1 || n > 100000) {
    res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":"n must be 1..100000"}');
    return;
  }
  req.resume();
  seed(n).then(
    (tokens) => res.writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ refresh_tokens: tokens })),
    (err) => res.writeHead(500, { 'content-type': 'application/json' })
      .end(JSON.stringify({ error: String(err) })),
  );
}).listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider bench peer: ${issuer} (listening on 127.0.0.1:${port})`);
});
