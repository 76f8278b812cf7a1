-- The active runs of each session in queue order. Starting a run (what it queues behind),
-- claiming one (whether an earlier run of its session is still active) and finishing one
-- (whether the session becomes idle) ask only about a session's active runs; without this
-- index they scanned every run the session ever had, which grows with the session.
CREATE INDEX runs_active_queue_idx ON runs (session_id, queue_seq)
    WHERE status IN ('queued', 'running', 'waiting', 'cancelling');
