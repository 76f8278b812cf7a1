-- LLM providers and plugin secrets. Their secret parts (the provider's API key, the secret's
-- value) are stored only sealed by envelope encryption (see host/secrets): `key_id` names the
-- master key that wrapped the per-value data key `wrapped_key`; `key_nonce` and `nonce` are
-- the AES-GCM nonces of the wrapping and of the value; `ciphertext` is the sealed value. No
-- column ever holds plaintext; `api_key_hint` keeps at most the last 4 characters of a key.

CREATE TABLE providers (
    id            TEXT COLLATE "C" PRIMARY KEY,
    name          TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('openai', 'anthropic')),
    base_url      TEXT NOT NULL,
    default_model TEXT,
    models        JSON NOT NULL,
    api_key_hint  TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    wrapped_key   BYTEA NOT NULL,
    key_nonce     BYTEA NOT NULL,
    nonce         BYTEA NOT NULL,
    ciphertext    BYTEA NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    CONSTRAINT providers_name_key UNIQUE (name)
);

CREATE TABLE secrets (
    name        TEXT COLLATE "C" PRIMARY KEY,
    key_id      TEXT NOT NULL,
    wrapped_key BYTEA NOT NULL,
    key_nonce   BYTEA NOT NULL,
    nonce       BYTEA NOT NULL,
    ciphertext  BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
