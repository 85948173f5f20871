-- Flotilla schema, PostgreSQL flavour. Same tables and meaning as migrations/sqlite; types are
-- native (TIMESTAMPTZ, JSONB, BIGSERIAL, BOOLEAN).
--
-- Enum-like columns (state, status…) are free TEXT rather than enum types or CHECKs, so adding
-- a state needs no migration on either backend; the store rejects unknown values when reading.

-- One row per agent session; explicit columns (not a JSON blob) so the fleet can be filtered
-- and counted in SQL.
CREATE TABLE sessions (
    id             TEXT PRIMARY KEY,            -- "{prefix}-{number}"
    -- prefix/number kept apart so listings order demo-2 before demo-10.
    prefix         TEXT        NOT NULL,
    number         BIGINT      NOT NULL,
    project        TEXT        NOT NULL,
    state          TEXT        NOT NULL,
    reason         TEXT,
    agent          TEXT        NOT NULL,
    runtime        TEXT        NOT NULL,
    workspace_kind TEXT        NOT NULL,
    branch         TEXT,
    workspace      TEXT,
    pr_number      BIGINT,
    pr_url         TEXT,
    issue          TEXT,
    prompt         TEXT,
    runtime_handle JSONB,                       -- opaque to the store
    activity       TEXT        NOT NULL,
    activity_at    TIMESTAMPTZ,
    restart_count  BIGINT      NOT NULL DEFAULT 0,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    UNIQUE (prefix, number),
    -- A PR is a (number, url) pair: half of one is a bug.
    CHECK ((pr_number IS NULL) = (pr_url IS NULL))
);
CREATE INDEX sessions_project_idx ON sessions (project);
CREATE INDEX sessions_state_idx ON sessions (state);

-- Id reservation: the upsert on this row (row-locked until commit) is what makes concurrent
-- spawns get distinct numbers; the counter never goes back, so ids are never reused.
CREATE TABLE session_counters (
    prefix      TEXT PRIMARY KEY,
    last_number BIGINT NOT NULL
);

-- Append-only log; the id is the SSE event id clients resume from. A sequence alone hands out
-- ids in call order, not commit order: every inserting transaction takes a transaction-level
-- advisory lock first (see postgres.rs), so ids also become visible in increasing order.
CREATE TABLE events (
    id         BIGSERIAL PRIMARY KEY,
    -- NULL for fleet-wide events. No cascade: history is never dropped as a side effect;
    -- purging a session deletes its events explicitly first.
    session_id TEXT REFERENCES sessions (id),
    kind       TEXT        NOT NULL,
    data       JSONB       NOT NULL,
    at         TIMESTAMPTZ NOT NULL
);
CREATE INDEX events_session_idx ON events (session_id, id);

-- Reaction retry/escalation state, persisted so a restart neither resets nor repeats a
-- reaction. Owned by the session: replaced wholesale by every transition.
CREATE TABLE reaction_trackers (
    session_id         TEXT        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    reaction           TEXT        NOT NULL,
    attempts           BIGINT      NOT NULL,
    first_triggered_at TIMESTAMPTZ NOT NULL,
    last_triggered_at  TIMESTAMPTZ NOT NULL,
    fingerprint        TEXT,
    escalated          BOOLEAN     NOT NULL DEFAULT FALSE,
    PRIMARY KEY (session_id, reaction)
);

-- Durable one-shot timers, re-armed from their deadline after a restart.
CREATE TABLE timers (
    session_id TEXT        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    kind       TEXT        NOT NULL,
    deadline   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (session_id, kind)
);

-- Recorded before answering 2xx; the primary key turns a platform's redelivery into a no-op.
CREATE TABLE webhook_deliveries (
    platform     TEXT        NOT NULL,
    delivery_id  TEXT        NOT NULL,
    event        TEXT        NOT NULL,
    payload      TEXT        NOT NULL,          -- raw body, byte for byte (signatures), not JSONB
    received_at  TIMESTAMPTZ NOT NULL,
    processed_at TIMESTAMPTZ,
    PRIMARY KEY (platform, delivery_id)
);
-- For pruning old deliveries.
CREATE INDEX webhook_deliveries_received_idx ON webhook_deliveries (received_at);

-- Chat threads bridged to an assistant; id is "{platform}:{thread}".
CREATE TABLE conversations (
    id         TEXT PRIMARY KEY,
    platform   TEXT        NOT NULL,
    thread     TEXT        NOT NULL,
    resume_id  TEXT,
    cwd        TEXT,
    codebase   TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    UNIQUE (platform, thread)
);

-- Durable inbox: a message is stored before it is acknowledged, and processed in id order
-- per conversation; the unique pair dedupes platform redeliveries.
CREATE TABLE chat_messages (
    id                  BIGSERIAL PRIMARY KEY,
    conversation_id     TEXT        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    platform_message_id TEXT        NOT NULL,
    author              TEXT        NOT NULL,
    body                TEXT        NOT NULL,
    status              TEXT        NOT NULL,   -- queued | running | done | failed
    received_at         TIMESTAMPTZ NOT NULL,
    started_at          TIMESTAMPTZ,
    finished_at         TIMESTAMPTZ,
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
    notifier        TEXT        NOT NULL,
    priority        TEXT        NOT NULL,
    event           TEXT        NOT NULL,
    session_id      TEXT,
    message         TEXT        NOT NULL,
    dedupe_key      TEXT        NOT NULL UNIQUE,
    status          TEXT        NOT NULL,       -- pending | delivered | failed
    attempts        BIGINT      NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    last_error      TEXT
);
CREATE INDEX notifications_due_idx ON notifications (status, next_attempt_at);
