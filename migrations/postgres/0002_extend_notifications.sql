-- Notifications: a sliding dedupe window, structured context for rich messages, and digests.
--
-- `dedupe_key` keeps naming the live notification of a (notifier, session, event, reaction,
-- priority) group. A newer notification of the same group may only be written once the live
-- one's `dedupe_until` has passed; the old row's key is then archived (suffixed with its id)
-- so the UNIQUE constraint holds and the history stays.
ALTER TABLE notifications ADD COLUMN dedupe_until TIMESTAMPTZ;
UPDATE notifications SET dedupe_until = created_at WHERE dedupe_until IS NULL;
ALTER TABLE notifications ALTER COLUMN dedupe_until SET NOT NULL;
-- What the notifiers render: project, reaction, PR, digest items.
ALTER TABLE notifications ADD COLUMN context JSONB NOT NULL DEFAULT '{}'::jsonb;
-- For a notification folded into a digest (status `digested`): the digest that carried it.
ALTER TABLE notifications ADD COLUMN digest_id TEXT;
CREATE INDEX notifications_digest_idx ON notifications (digest_id) WHERE digest_id IS NOT NULL;
CREATE INDEX notifications_created_idx ON notifications (created_at);
