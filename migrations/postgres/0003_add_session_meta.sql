-- Per-session details without a column of their own (agent resume id, usage, role), as JSON.
ALTER TABLE sessions ADD COLUMN meta JSONB NOT NULL DEFAULT '{}'::jsonb;
