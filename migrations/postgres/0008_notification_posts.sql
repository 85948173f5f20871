-- Where each notification landed on a chat platform (Telegram, Slack, Discord), so a reply
-- to it (or in its thread) answers the session it was about.
CREATE TABLE notification_posts (
    platform        TEXT NOT NULL,
    post_key        TEXT NOT NULL,
    chat            TEXT NOT NULL,
    session_id      TEXT NOT NULL,
    notification_id TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (platform, post_key)
);
