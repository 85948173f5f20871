-- Chat bridge: per-conversation worktree and last command, and global command templates.
ALTER TABLE conversations ADD COLUMN worktree TEXT;
ALTER TABLE conversations ADD COLUMN last_command TEXT;
-- "Does another conversation still use this worktree?" before removing it.
CREATE INDEX conversations_worktree_idx ON conversations (worktree) WHERE worktree IS NOT NULL;

CREATE TABLE chat_templates (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    content     TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

-- What the platform said besides the text (GitHub issue/PR kind, closing refs, a close event).
ALTER TABLE chat_messages ADD COLUMN meta TEXT NOT NULL DEFAULT '{}';

-- Per-codebase commands (`/command-set`, `/load-commands`): name -> file path relative to
-- the conversation's directory, re-read on every `/command-invoke`.
CREATE TABLE chat_codebase_commands (
    codebase TEXT NOT NULL,
    name     TEXT NOT NULL,
    path     TEXT NOT NULL,
    PRIMARY KEY (codebase, name)
);

-- Fleet sessions started from a chat (`/spawn`): where their escalations should go back to.
CREATE TABLE chat_session_links (
    session_id      TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE
);
