-- Durable execution: runs, their steps (the exactly-once journal) and the per-session event log.
-- Append-only: never edit a released migration, add a new file instead.
--
-- Sequence numbers come from sessions.last_event_seq, bumped by `UPDATE ... RETURNING` in the
-- transaction that inserts the events: the session row lock serialises appenders of one
-- session, so its events are numbered 1, 2, 3, ... in commit order, without gaps.

ALTER TABLE sessions ADD COLUMN last_event_seq BIGINT NOT NULL DEFAULT 0;

CREATE TABLE runs (
    id                 TEXT COLLATE "C" PRIMARY KEY,
    session_id         TEXT COLLATE "C" NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    -- Position in the session's queue: the sequence number of the run's `run.queued` event.
    -- Runs of a session execute in this order, one at a time.
    queue_seq          BIGINT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN
                         ('queued', 'running', 'waiting', 'completed', 'failed', 'cancelling',
                          'cancelled')),
    trigger_message_id TEXT COLLATE "C" NOT NULL,
    idempotency_key    TEXT,
    lease_owner        TEXT,
    lease_token        BIGINT NOT NULL DEFAULT 0,
    lease_expires_at   TIMESTAMPTZ,
    recovery_attempts  BIGINT NOT NULL DEFAULT 0,
    steps_completed    BIGINT NOT NULL DEFAULT 0,
    error              TEXT,
    input_tokens       BIGINT NOT NULL DEFAULT 0,
    output_tokens      BIGINT NOT NULL DEFAULT 0,
    created_at         TIMESTAMPTZ NOT NULL,
    started_at         TIMESTAMPTZ,
    finished_at        TIMESTAMPTZ,
    updated_at         TIMESTAMPTZ NOT NULL,
    -- NULLs are distinct: runs without a key never conflict.
    CONSTRAINT runs_idempotency_key_key UNIQUE (session_id, idempotency_key),
    CONSTRAINT runs_queue_seq_key UNIQUE (session_id, queue_seq)
);

CREATE INDEX runs_session_id_idx ON runs (session_id, id);
-- What claiming scans: only unfinished runs, oldest first. Step writes do not change `status`,
-- so they stay HOT updates.
CREATE INDEX runs_claimable_idx ON runs (created_at, id)
    WHERE status IN ('queued', 'running', 'cancelling');

CREATE TABLE steps (
    run_id        TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_no       BIGINT NOT NULL CHECK (step_no >= 0),
    kind          TEXT NOT NULL CHECK (kind IN ('llm', 'tool')),
    input         JSON NOT NULL,
    output        JSON NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('completed', 'failed')),
    attempt       BIGINT NOT NULL,
    capability_id TEXT,
    digest        TEXT,
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (run_id, step_no)
);

-- No CHECK on event_type: new types are added by code, not by migrating the log.
CREATE TABLE events (
    session_id TEXT COLLATE "C" NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    payload    JSON NOT NULL,
    run_id     TEXT COLLATE "C",
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (session_id, seq)
);
