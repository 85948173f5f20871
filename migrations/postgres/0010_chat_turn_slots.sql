-- A cluster-wide cap on chat turns: `chat.max_concurrent` numbered slots shared by every node
-- on the database (slot < the cap). A node takes a free or expired slot in one conditional
-- UPDATE before a turn and frees it after; it renews the expiry of the slots it holds with its
-- leases (database clock, milliseconds), so the slots of a node that died free themselves
-- after a lease time. `token` tells one claim from another (a slot that expired and was taken
-- by another node is never freed by its former holder).
CREATE TABLE chat_turn_slots (
    slot          BIGINT PRIMARY KEY,
    holder        TEXT,
    token         TEXT,
    conversation  TEXT,
    expires_at_ms BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX chat_turn_slots_holder_idx ON chat_turn_slots (holder);
