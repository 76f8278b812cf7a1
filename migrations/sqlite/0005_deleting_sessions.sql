-- Plugin state of a deleted agent or session is deleted with it, found by owner. (On
-- PostgreSQL this migration also drops the foreign keys of the event log and messages; here
-- they stay.)
CREATE INDEX plugin_kv_owner_idx ON plugin_kv (owner);
