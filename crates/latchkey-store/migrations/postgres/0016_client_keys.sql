-- private_key_jwt (RFC 7523, SPEC 13): a client's public keys, registered as a JWK set
-- (`jwks`, JSON) or fetched from `jwks_uri`. Such a client has no secret.
ALTER TABLE clients ADD COLUMN jwks TEXT;
ALTER TABLE clients ADD COLUMN jwks_uri TEXT;
