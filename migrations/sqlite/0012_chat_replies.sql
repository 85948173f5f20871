-- A message's final replies, written in the transaction that settles the message and deleted
-- once posted: a crash between the two posts them after the restart instead of running the
-- turn again, and a platform that is down gets them later instead of never.
CREATE TABLE chat_replies (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    message_id      INTEGER NOT NULL,
    body            TEXT    NOT NULL,
    edit_of         TEXT,                      -- the platform message to edit, not a new post
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT    NOT NULL
);
CREATE INDEX chat_replies_conversation_idx ON chat_replies (conversation_id, id);
