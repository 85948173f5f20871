-- Flotilla schema, SQLite flavour.
--
-- Timestamps are TEXT in RFC 3339, always UTC with exactly six fractional digits
-- (`2025-01-01T00:00:00.000000+00:00`), written by the store: fixed width makes text order equal
-- time order, so `<=` and ORDER BY on them are correct. JSON columns hold serialized JSON text.
-- Enum-like columns (state, status…) are free TEXT rather than CHECKed: SQLite cannot alter a
-- CHECK without rebuilding the table, and the store rejects unknown values when reading.

-- One row per agent session; explicit columns (not a JSON blob) so the fleet can be filtered
-- and counted in SQL.
CREATE TABLE sessions (
    id             TEXT PRIMARY KEY,            -- "{prefix}-{number}"
    -- prefix/number kept apart so listings order demo-2 before demo-10.
    prefix         TEXT    NOT NULL,
    number         INTEGER NOT NULL,
    project        TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    reason         TEXT,
    agent          TEXT    NOT NULL,
    runtime        TEXT    NOT NULL,
    workspace_kind TEXT    NOT NULL,
    branch         TEXT,
    workspace      TEXT,
    pr_number      INTEGER,
    pr_url         TEXT,
    issue          TEXT,
    prompt         TEXT,
    runtime_handle TEXT,                        -- JSON, opaque to the store
    activity       TEXT    NOT NULL,
    activity_at    TEXT,
    restart_count  INTEGER NOT NULL DEFAULT 0,
    created_at     TEXT    NOT NULL,
    updated_at     TEXT    NOT NULL,
    UNIQUE (prefix, number),
    -- A PR is a (number, url) pair: half of one is a bug.
    CHECK ((pr_number IS NULL) = (pr_url IS NULL))
);
CREATE INDEX sessions_project_idx ON sessions (project);
CREATE INDEX sessions_state_idx ON sessions (state);

-- Id reservation: bumping this row inside the create transaction is what makes concurrent
-- spawns get distinct numbers; the counter never goes back, so ids of deleted sessions are
-- never reused.
CREATE TABLE session_counters (
    prefix      TEXT PRIMARY KEY,
    last_number INTEGER NOT NULL
);

-- Append-only log; the id is the SSE event id clients resume from. AUTOINCREMENT (not plain
-- ROWID) so an id is never handed out twice, even if the newest rows were deleted.
CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    -- NULL for fleet-wide events. No cascade: history is never dropped as a side effect;
    -- purging a session deletes its events explicitly first.
    session_id TEXT REFERENCES sessions (id),
    kind       TEXT NOT NULL,
    data       TEXT NOT NULL,                   -- JSON
    at         TEXT NOT NULL
);
CREATE INDEX events_session_idx ON events (session_id, id);

-- Reaction retry/escalation state, persisted so a restart neither resets nor repeats a
-- reaction. Owned by the session: replaced wholesale by every transition.
CREATE TABLE reaction_trackers (
    session_id         TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    reaction           TEXT    NOT NULL,
    attempts           INTEGER NOT NULL,
    first_triggered_at TEXT    NOT NULL,
    last_triggered_at  TEXT    NOT NULL,
    fingerprint        TEXT,
    escalated          INTEGER NOT NULL DEFAULT 0,  -- boolean
    PRIMARY KEY (session_id, reaction)
);

-- Durable one-shot timers, re-armed from their deadline after a restart.
CREATE TABLE timers (
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    deadline   TEXT NOT NULL,
    PRIMARY KEY (session_id, kind)
);

-- Recorded before answering 2xx; the primary key turns a platform's redelivery into a no-op.
CREATE TABLE webhook_deliveries (
    platform     TEXT NOT NULL,
    delivery_id  TEXT NOT NULL,
    event        TEXT NOT NULL,
    payload      TEXT NOT NULL,                 -- raw body, byte for byte (signatures)
    received_at  TEXT NOT NULL,
    processed_at TEXT,
    PRIMARY KEY (platform, delivery_id)
);
-- For pruning old deliveries.
CREATE INDEX webhook_deliveries_received_idx ON webhook_deliveries (received_at);

-- Chat threads bridged to an assistant; id is "{platform}:{thread}".
CREATE TABLE conversations (
    id         TEXT PRIMARY KEY,
    platform   TEXT NOT NULL,
    thread     TEXT NOT NULL,
    resume_id  TEXT,
    cwd        TEXT,
    codebase   TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (platform, thread)
);

-- Durable inbox: a message is stored before it is acknowledged, and processed in id order
-- per conversation; the unique pair dedupes platform redeliveries.
CREATE TABLE chat_messages (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id     TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    platform_message_id TEXT NOT NULL,
    author              TEXT NOT NULL,
    body                TEXT NOT NULL,
    status              TEXT NOT NULL,          -- queued | running | done | failed
    received_at         TEXT NOT NULL,
    started_at          TEXT,
    finished_at         TEXT,
    UNIQUE (conversation_id, platform_message_id)
);
-- Unfinished messages are few and finished ones pile up: index only the former.
CREATE INDEX chat_messages_pending_idx ON chat_messages (conversation_id, id)
    WHERE status IN ('queued', 'running');

-- Notification outbox: written with the event that caused it, delivered (and retried) later.
-- No foreign key to sessions: fleet-wide notifications have none, and the outbox may outlive
-- a purged session.
CREATE TABLE notifications (
    id              TEXT PRIMARY KEY,           -- UUID; receivers dedupe on it
    notifier        TEXT    NOT NULL,
    priority        TEXT    NOT NULL,
    event           TEXT    NOT NULL,
    session_id      TEXT,
    message         TEXT    NOT NULL,
    dedupe_key      TEXT    NOT NULL UNIQUE,
    status          TEXT    NOT NULL,           -- pending | delivered | failed
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT    NOT NULL,
    created_at      TEXT    NOT NULL,
    last_error      TEXT
);
CREATE INDEX notifications_due_idx ON notifications (status, next_attempt_at);
