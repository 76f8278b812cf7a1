-- Tool approval: an agent's policy of which tool calls need a person's decision, and one row
-- per call that waits (or waited) for one. A run waiting for decisions has status 'waiting'
-- (reserved for it in 0002; the API calls it `waiting_approval`), no lease, and no worker.
ALTER TABLE agents ADD COLUMN tool_approval JSON;

CREATE TABLE approvals (
    -- Derived from the run and the call's step (`ApprovalId::for_call`): a replay asks for
    -- the same approval, never a second one.
    id               TEXT COLLATE "C" PRIMARY KEY,
    run_id           TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    session_id       TEXT COLLATE "C" NOT NULL,
    step_no          BIGINT NOT NULL,
    tool_call_id     TEXT NOT NULL,
    name             TEXT NOT NULL,
    capability       TEXT,
    -- Exactly what runs if approved, and its SHA-256 taken when it was requested.
    arguments        TEXT NOT NULL,
    arguments_sha256 TEXT NOT NULL,
    reason           TEXT NOT NULL,
    requested_by     TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN
                       ('pending', 'approved', 'rejected', 'expired', 'cancelled')),
    decision_reason  TEXT,
    decided_by       TEXT,
    decided_at       TIMESTAMPTZ,
    expires_at       TIMESTAMPTZ NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    CONSTRAINT approvals_run_step_key UNIQUE (run_id, step_no)
);

-- Lists (all approvals, or those of one status) in id order.
CREATE INDEX approvals_status_idx ON approvals (status, id);
-- What the expiry sweeper scans: pending approvals by deadline.
CREATE INDEX approvals_expiry_idx ON approvals (expires_at) WHERE status = 'pending';
-- Approvals of a run (and deleting a run's approvals with it).
CREATE INDEX approvals_run_idx ON approvals (run_id, id);
