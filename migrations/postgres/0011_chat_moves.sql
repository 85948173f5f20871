-- Chats a platform gave a new id: a Telegram group upgraded to a supergroup answers every call
-- naming the old id with `parameters.migrate_to_chat_id` (and says so in a service message).
-- Kept so that sends to the old chat go to the new one at once, also after a restart.
CREATE TABLE chat_moves (
    platform  TEXT NOT NULL,
    from_chat TEXT NOT NULL,
    to_chat   TEXT NOT NULL,
    moved_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (platform, from_chat)
);
