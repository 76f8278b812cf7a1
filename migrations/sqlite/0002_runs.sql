-- Durable execution: runs, their steps (the exactly-once journal) and the per-session event log.
-- Append-only: never edit a released migration, add a new file instead.
--
-- Sequence numbers come from sessions.last_event_seq, bumped by `UPDATE ... RETURNING` in the
-- (BEGIN IMMEDIATE) transaction that inserts the events, so a session's events are numbered
-- 1, 2, 3, ... in commit order, without gaps.

ALTER TABLE sessions ADD COLUMN last_event_seq INTEGER NOT NULL DEFAULT 0;

CREATE TABLE runs (
    id                 TEXT PRIMARY KEY NOT NULL,
    session_id         TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    -- Position in the session's queue: the sequence number of the run's `run.queued` event.
    queue_seq          INTEGER NOT NULL,
    status             TEXT NOT NULL CHECK (status IN
                         ('queued', 'running', 'waiting', 'completed', 'failed', 'cancelling',
                          'cancelled')),
    trigger_message_id TEXT NOT NULL,
    idempotency_key    TEXT,
    lease_owner        TEXT,
    lease_token        INTEGER NOT NULL DEFAULT 0,
    lease_expires_at   TEXT,
    recovery_attempts  INTEGER NOT NULL DEFAULT 0,
    steps_completed    INTEGER NOT NULL DEFAULT 0,
    error              TEXT,
    input_tokens       INTEGER NOT NULL DEFAULT 0,
    output_tokens      INTEGER NOT NULL DEFAULT 0,
    created_at         TEXT NOT NULL,
    started_at         TEXT,
    finished_at        TEXT,
    updated_at         TEXT NOT NULL,
    UNIQUE (session_id, idempotency_key),
    UNIQUE (session_id, queue_seq)
) STRICT;

CREATE INDEX runs_session_id_idx ON runs (session_id, id);
CREATE INDEX runs_claimable_idx ON runs (created_at, id)
    WHERE status IN ('queued', 'running', 'cancelling');

CREATE TABLE steps (
    run_id        TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_no       INTEGER NOT NULL CHECK (step_no >= 0),
    kind          TEXT NOT NULL CHECK (kind IN ('llm', 'tool')),
    input         TEXT NOT NULL CHECK (json_valid(input)),
    output        TEXT NOT NULL CHECK (json_valid(output)),
    status        TEXT NOT NULL CHECK (status IN ('completed', 'failed')),
    attempt       INTEGER NOT NULL,
    capability_id TEXT,
    digest        TEXT,
    started_at    TEXT NOT NULL,
    finished_at   TEXT NOT NULL,
    PRIMARY KEY (run_id, step_no)
) WITHOUT ROWID, STRICT;

CREATE TABLE events (
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    payload    TEXT NOT NULL CHECK (json_valid(payload)),
    run_id     TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID, STRICT;
