-- Several nodes on one database (issue 14): who owns what, and commands for the owner.
-- Times are milliseconds since the epoch read from the database's own clock, so nodes with
-- skewed clocks still agree on when a lease expires.

-- One row per owned resource (a session, a chat conversation). `generation` grows by one at
-- every change of owner: the fencing token every write of the owner is checked against.
CREATE TABLE leases (
    kind          TEXT   NOT NULL,
    key           TEXT   NOT NULL,
    owner         TEXT   NOT NULL,
    generation    BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX leases_owner_idx ON leases (owner);
CREATE INDEX leases_expiry_idx ON leases (expires_at_ms);

-- Commands that arrived at one node for a session another node owns; the owner claims them.
CREATE TABLE cluster_commands (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id    TEXT   NOT NULL,
    command       TEXT   NOT NULL,               -- JSON
    status        TEXT   NOT NULL DEFAULT 'queued',
    claimed_by    TEXT,
    result        TEXT,                          -- JSON
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX cluster_commands_queued_idx ON cluster_commands (status, session_id);

-- The outbox is claimed in the database: a node delivers only rows it claimed.
ALTER TABLE notifications ADD COLUMN claimed_by TEXT;
ALTER TABLE notifications ADD COLUMN claimed_until_ms BIGINT;
