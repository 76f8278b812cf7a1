-- Tool approval: an agent's policy of which tool calls need a person's decision, and one row
-- per call that waits (or waited) for one. A run waiting for decisions has status 'waiting'
-- (reserved for it in 0002; the API calls it `waiting_approval`), no lease, and no worker.
ALTER TABLE agents ADD COLUMN tool_approval TEXT CHECK (tool_approval IS NULL OR json_valid(tool_approval));

CREATE TABLE approvals (
    -- Derived from the run and the call's step (`ApprovalId::for_call`): a replay asks for
    -- the same approval, never a second one.
    id               TEXT PRIMARY KEY NOT NULL,
    run_id           TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    session_id       TEXT NOT NULL,
    step_no          INTEGER NOT NULL,
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
    decided_at       TEXT,
    expires_at       TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    UNIQUE (run_id, step_no)
) STRICT;

-- Lists (all approvals, or those of one status) in id order.
CREATE INDEX approvals_status_idx ON approvals (status, id);
-- What the expiry sweeper scans: pending approvals by deadline.
CREATE INDEX approvals_expiry_idx ON approvals (expires_at) WHERE status = 'pending';
-- Approvals of a run (and deleting a run's approvals with it).
CREATE INDEX approvals_run_idx ON approvals (run_id, id);
