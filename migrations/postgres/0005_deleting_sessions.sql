-- What deleting a session or an agent deletes, and what that costs the writers.
--
-- The event log and the conversation are written several rows per step, and each foreign key
-- cost a lookup and a row lock per row: most of the database's work per step. Every write
-- path already holds its session (or its run, which belongs to it) locked when it inserts
-- them, and deleting a session or an agent deletes its events and messages itself
-- (PgStore::delete_session / delete_agent), so these two constraints checked nothing the
-- writers do not already guarantee. (SQLite keeps them: there they cost little.)
ALTER TABLE events DROP CONSTRAINT events_session_id_fkey;
ALTER TABLE messages DROP CONSTRAINT messages_session_id_fkey;

-- Plugin state of a deleted agent or session is deleted with it, found by owner.
CREATE INDEX plugin_kv_owner_idx ON plugin_kv (owner);
