-- Tracker write-back marks: what a session started from an issue has written back to it,
-- one row per stage and part (`opened.comment`, `opened.move`, `merged.comment`…), so each
-- write is done once, across restarts. A row is claimed before the write and removed again
-- only when the write fails.
CREATE TABLE tracker_writebacks (
    session_id TEXT NOT NULL,
    stage      TEXT NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (session_id, stage)
);
