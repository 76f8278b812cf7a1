-- LLM providers and plugin secrets. Their secret parts (the provider's API key, the secret's
-- value) are stored only sealed by envelope encryption (see host/secrets): `key_id` names the
-- master key that wrapped the per-value data key `wrapped_key`; `key_nonce` and `nonce` are
-- the AES-GCM nonces of the wrapping and of the value; `ciphertext` is the sealed value. No
-- column ever holds plaintext; `api_key_hint` keeps at most the last 4 characters of a key.

CREATE TABLE providers (
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL UNIQUE,
    kind          TEXT NOT NULL CHECK (kind IN ('openai', 'anthropic')),
    base_url      TEXT NOT NULL,
    default_model TEXT,
    models        TEXT NOT NULL CHECK (json_valid(models)),
    api_key_hint  TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    wrapped_key   BLOB NOT NULL,
    key_nonce     BLOB NOT NULL,
    nonce         BLOB NOT NULL,
    ciphertext    BLOB NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
) STRICT;

CREATE TABLE secrets (
    name        TEXT PRIMARY KEY NOT NULL,
    key_id      TEXT NOT NULL,
    wrapped_key BLOB NOT NULL,
    key_nonce   BLOB NOT NULL,
    nonce       BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
) STRICT;
