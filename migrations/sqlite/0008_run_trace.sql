-- The W3C traceparent a run's spans continue: the request that started it, so a run taken
-- over by another process stays in one trace. NULL when tracing was off.
ALTER TABLE runs ADD COLUMN trace_parent TEXT;
