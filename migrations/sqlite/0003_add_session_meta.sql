-- Per-session details without a column of their own (agent resume id, usage, role), as JSON.
ALTER TABLE sessions ADD COLUMN meta TEXT NOT NULL DEFAULT '{}';
