-- Initial schema: agents, sessions, messages, API keys and plugin key-value state.
-- Append-only: never edit a released migration, add a new file instead.
--
-- Ids and keys use the "C" collation so ordering is byte order, the same as SQLite's, which
-- cursor pagination and prefix listing rely on. Documents are JSON, not JSONB: the stored text
-- comes back verbatim (as on SQLite) and nothing queries inside them.

CREATE TABLE agents (
    id            TEXT COLLATE "C" PRIMARY KEY,
    name          TEXT NOT NULL,
    system_prompt TEXT NOT NULL,
    model         JSON NOT NULL,
    capabilities  JSON NOT NULL,
    archived      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    CONSTRAINT agents_name_key UNIQUE (name)
);

CREATE TABLE sessions (
    id         TEXT COLLATE "C" PRIMARY KEY,
    agent_id   TEXT COLLATE "C" NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    title      TEXT,
    status     TEXT NOT NULL CHECK (status IN ('idle', 'running')),
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX sessions_agent_id_idx ON sessions (agent_id, id);

CREATE TABLE messages (
    id         TEXT COLLATE "C" PRIMARY KEY,
    session_id TEXT COLLATE "C" NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    role       TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'tool')),
    content    TEXT NOT NULL,
    metadata   JSON NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX messages_session_id_idx ON messages (session_id, id);

CREATE TABLE api_keys (
    id           TEXT COLLATE "C" PRIMARY KEY,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    hash         TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ,
    CONSTRAINT api_keys_name_key UNIQUE (name),
    CONSTRAINT api_keys_hash_key UNIQUE (hash)
);

CREATE TABLE plugin_kv (
    plugin     TEXT COLLATE "C" NOT NULL,
    owner      TEXT COLLATE "C" NOT NULL,
    key        TEXT COLLATE "C" NOT NULL,
    value      BYTEA NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (plugin, owner, key)
);
