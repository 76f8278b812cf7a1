-- Initial schema: agents, sessions, messages, API keys and plugin key-value state.
-- Append-only: never edit a released migration, add a new file instead.
--
-- Timestamps are TEXT in RFC 3339 UTC with exactly six fractional digits
-- (`2024-01-02T03:04:05.123456Z`), so lexical order is time order. JSON columns hold JSON
-- text. Text compares with the BINARY collation (byte order), which cursor pagination and
-- prefix listing rely on.

CREATE TABLE agents (
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL UNIQUE,
    system_prompt TEXT NOT NULL,
    model         TEXT NOT NULL CHECK (json_valid(model)),
    capabilities  TEXT NOT NULL CHECK (json_valid(capabilities)),
    archived      INTEGER NOT NULL DEFAULT 0 CHECK (archived IN (0, 1)),
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
) STRICT;

CREATE TABLE sessions (
    id         TEXT PRIMARY KEY NOT NULL,
    agent_id   TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    title      TEXT,
    status     TEXT NOT NULL CHECK (status IN ('idle', 'running')),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;

CREATE INDEX sessions_agent_id_idx ON sessions (agent_id, id);

CREATE TABLE messages (
    id         TEXT PRIMARY KEY NOT NULL,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    role       TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'tool')),
    content    TEXT NOT NULL,
    metadata   TEXT NOT NULL CHECK (json_valid(metadata)),
    created_at TEXT NOT NULL
) STRICT;

CREATE INDEX messages_session_id_idx ON messages (session_id, id);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
) STRICT;

CREATE TABLE plugin_kv (
    plugin     TEXT NOT NULL,
    owner      TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      BLOB NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (plugin, owner, key)
) WITHOUT ROWID, STRICT;
