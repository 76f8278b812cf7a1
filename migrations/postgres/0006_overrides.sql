-- Sessions keep configuration overrides (the agent's settings changed for this session's
-- runs), and every run keeps the configuration it was created with: the executor runs from
-- that snapshot only, so editing the agent or the session never changes an existing run.
-- NULL: no overrides; for runs, created before snapshots were recorded.
ALTER TABLE sessions ADD COLUMN overrides JSON;
ALTER TABLE runs ADD COLUMN config JSON;
