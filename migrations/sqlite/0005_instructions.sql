-- Instructions for agents (a human's send, a reaction's message), stored as "to deliver"
-- before they are typed: after a crash each is finished or re-sent, never lost or doubled.
CREATE TABLE instructions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  TEXT NOT NULL,
    kind        TEXT NOT NULL,                 -- message | answer | reaction
    reaction    TEXT,                          -- the reaction key, for kind = reaction
    body        TEXT NOT NULL,
    state       TEXT NOT NULL,                 -- pending | typing | delivered | unconfirmed | dropped
    mark        INTEGER,                       -- the runtime's input mark taken before typing
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
-- A session's open instructions, in order.
CREATE INDEX instructions_open_idx ON instructions (session_id, state, id);
-- Webhook deliveries not processed yet (read again at start-up).
CREATE INDEX webhook_deliveries_unprocessed_idx ON webhook_deliveries (platform, received_at)
    WHERE processed_at IS NULL;
