//! The durable store: the only place that knows SQL.
//!
//! The interface is split by area ([`SessionCommands`], [`SessionQueries`], [`EventLog`],
//! [`WebhookLog`], [`ChatStore`], [`ChatReplies`], [`ChatMoves`], [`TemplateStore`],
//! [`Outbox`], [`LeaseStore`]); [`Store`] is all of them, and anything implementing every area
//! is a `Store`. A test that injects a fault fakes one area and takes the rest from a real
//! store through [`StoreParts`].
//!
//! Every query is written once, in [`sql::SqlStore`], generic over a [`sql::Dialect`] that holds
//! what really differs between the two backends chosen from the database URL at start-up:
//! [`sqlite`] (the embedded default, WAL) and [`postgres`]. Each runs its own migrations
//! (`migrations/sqlite`, `migrations/postgres`) when opened.
//!
//! Invariants every implementation keeps:
//! - session ids `{prefix}-{N}` are reserved by the database (a counter row updated atomically
//!   plus the primary key), never by files, so concurrent spawns get distinct ids;
//! - event ids are monotonic **and committed in id order**, so a reader resuming "after id N"
//!   never misses an event that commits later with a smaller id;
//! - `commit_transition` writes the session row, its trackers, its timers and the event row in
//!   one transaction.
//!
//! Timestamps are stored with microsecond precision (what PostgreSQL keeps; the SQLite backend
//! truncates the same way), so a value read back may lack the nanoseconds it was written with.

mod lease;
pub mod models;
mod parts;
pub mod postgres;
pub mod sql;
pub mod sqlite;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use lease::*;
pub use models::*;
pub use parts::StoreParts;

/// What went wrong in the store, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row asked for does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked up (e.g. `session demo-3`).
        what: String,
    },
    /// A uniqueness rule would be broken.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database URL is not one we support.
    #[error("unsupported database url scheme `{0}` (use sqlite:// or postgres://)")]
    UnsupportedUrl(String),
    /// Stored data could not be decoded (a bug or a hand-edited database).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database could not be reached or failed.
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// Migrations failed.
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The writer no longer holds the lease of what it writes (another node took it over);
    /// nothing was written.
    #[error("{what} is owned by another node now (fenced at generation {generation})")]
    Fenced {
        /// What was written (e.g. `session demo-3`).
        what: String,
        /// The generation the refused writer held.
        generation: i64,
    },
    /// The task doing the write was stopped (the runtime is shutting down).
    #[error("store write interrupted by shutdown")]
    Interrupted,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => StoreError::NotFound { what: "row".into() },
            other => StoreError::Database(other),
        }
    }
}

/// Result alias for store calls.
///
/// Every store call fails with `Database` when the database does; the other errors a call can
/// return are named in its docs.
pub type StoreResult<T> = Result<T, StoreError>;

/// The session commands: the two writes that create a session and step it.
#[async_trait]
pub trait SessionCommands: Send + Sync + 'static {
    /// Reserves the next id `{prefix}-{N}` (skipping `skip_numbers`), inserts the session in
    /// state `spawning` and appends a `session.created` event, in one transaction.
    ///
    /// Concurrent callers never get the same id.
    async fn create_session(&self, new: &NewSession) -> StoreResult<(SessionRecord, EventRecord)>;

    /// Persists one machine step atomically: replaces the session row, its trackers and its
    /// timers with those of `commit.snapshot` and appends `commit.event`. Returns the event row.
    ///
    /// Errors: `NotFound` if the session does not exist (nothing is written).
    async fn commit_transition(&self, commit: &TransitionCommit) -> StoreResult<EventRecord>;
}

/// Reading sessions (and checking the database answers).
#[async_trait]
pub trait SessionQueries: Send + Sync + 'static {
    /// Checks the database answers (used by `/readyz`).
    async fn ping(&self) -> StoreResult<()>;

    /// Loads one session row.
    ///
    /// Errors: `NotFound` for an unknown id.
    async fn load_session(&self, id: &SessionId) -> StoreResult<SessionRecord>;

    /// Loads a session with its trackers and timers (what the actor needs after a restart).
    ///
    /// Errors: `NotFound` for an unknown id.
    async fn load_snapshot(&self, id: &SessionId) -> StoreResult<SessionSnapshot>;

    /// Lists sessions matching the filter, ordered by creation (oldest first).
    async fn list_sessions(&self, filter: &SessionFilter) -> StoreResult<Vec<SessionRecord>>;

    /// Counts sessions per state (for the `flotilla_sessions` gauge at start-up).
    async fn count_by_state(&self) -> StoreResult<Vec<(SessionState, i64)>>;

    /// Every session's reaction trackers, as `(session, tracker)` pairs ordered by session and
    /// reaction, for the dashboard's board.
    async fn list_trackers(&self) -> StoreResult<Vec<(SessionId, ReactionTracker)>>;
}

/// The event log: appending events that change no session, and reading the log.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends an event that changes no session state (e.g. `session.output`, fleet events).
    async fn append_event(&self, event: &NewEvent) -> StoreResult<EventRecord>;

    /// Events with `id > after`, oldest first, at most `limit`.
    async fn events_after(&self, after: i64, limit: i64) -> StoreResult<Vec<EventRecord>>;

    /// One session's events with `id > after`, oldest first, at most `limit`.
    async fn session_events(
        &self,
        id: &SessionId,
        after: i64,
        limit: i64,
    ) -> StoreResult<Vec<EventRecord>>;

    /// The largest event id (0 when the log is empty).
    async fn last_event_id(&self) -> StoreResult<i64>;

    /// The id of the newest event of `kind` on any session of `project`, if there is one.
    async fn last_project_event_id(&self, project: &str, kind: &str) -> StoreResult<Option<i64>>;

    /// The newest event of every session (one per session that has any), for the dashboard's
    /// board: one read, however many sessions there are.
    async fn latest_session_events(&self) -> StoreResult<Vec<EventRecord>>;
}

/// The webhook deliveries seen (to drop replays).
#[async_trait]
pub trait WebhookLog: Send + Sync + 'static {
    /// Records a webhook delivery. Returns `false` if `(platform, delivery_id)` was already
    /// recorded (a replay), in which case nothing is written.
    async fn record_webhook_delivery(&self, delivery: &WebhookDelivery) -> StoreResult<bool>;

    /// Marks a delivery processed (handed to whoever acts on it). Idempotent.
    async fn mark_webhook_processed(
        &self,
        platform: &str,
        delivery_id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// `platform`'s deliveries recorded but never marked processed (a crash came between the
    /// 2xx and the hand-over), oldest first: what start-up processes again.
    async fn unprocessed_webhook_deliveries(
        &self,
        platform: &str,
        limit: i64,
    ) -> StoreResult<Vec<WebhookDelivery>>;
}

/// Instructions for agents, stored before they are typed (see [`InstructionRecord`]).
#[async_trait]
pub trait InstructionLog: Send + Sync + 'static {
    /// Queues an instruction as `pending`.
    async fn queue_instruction(&self, new: &NewInstruction) -> StoreResult<InstructionRecord>;

    /// One instruction.
    ///
    /// Errors: `NotFound` for an unknown id.
    async fn load_instruction(&self, id: i64) -> StoreResult<InstructionRecord>;

    /// The session's instructions still to deliver (`pending` or `typing`), in order.
    async fn open_instructions(&self, session: &SessionId) -> StoreResult<Vec<InstructionRecord>>;

    /// Records how far an instruction's delivery got (`mark` is kept when `None`).
    async fn set_instruction_state(
        &self,
        id: i64,
        state: InstructionState,
        mark: Option<i64>,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
}

/// What sessions have written back to their tracker issues (each write once).
#[async_trait]
pub trait WritebackMarks: Send + Sync + 'static {
    /// Claims mark `stage` (`opened.comment`, `merged.move`…) of `session_id`'s write-back. Returns `false`
    /// when it was claimed before (the write is done or under way): nothing is written.
    async fn claim_writeback(
        &self,
        session_id: &str,
        stage: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Gives a claim back after its write failed, so a later trigger tries again.
    async fn release_writeback(&self, session_id: &str, stage: &str) -> StoreResult<()>;
}

/// The chat bridge: conversations, their message inbox and their links to sessions.
#[async_trait]
pub trait ChatStore: Send + Sync + 'static {
    /// Creates the conversation if missing and returns it.
    async fn upsert_conversation(
        &self,
        platform: &str,
        thread: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<ConversationRecord>;

    /// Lists conversations, most recently updated first.
    async fn list_conversations(&self) -> StoreResult<Vec<ConversationRecord>>;

    /// One conversation.
    ///
    /// Errors: `NotFound` for an unknown id.
    async fn get_conversation(&self, id: &str) -> StoreResult<ConversationRecord>;

    /// Saves a conversation's state: resume id, cwd, codebase, worktree, last command. With a
    /// `fence` (clustered), refused unless it still holds the conversation's lease, checked in
    /// the same transaction.
    ///
    /// Errors: `NotFound` for an unknown conversation; `Fenced` when the lease moved on
    /// (nothing is written).
    async fn update_conversation(
        &self,
        c: &ConversationRecord,
        fence: Option<&Fence>,
    ) -> StoreResult<()>;

    /// Sets (or clears) a conversation's resume id, fenced as
    /// [`ChatStore::update_conversation`].
    ///
    /// Errors: as `update_conversation`.
    async fn set_resume_id(
        &self,
        conversation_id: &str,
        resume_id: Option<&str>,
        fence: Option<&Fence>,
    ) -> StoreResult<()>;

    /// Ids of the conversations whose worktree is `worktree` (a worktree is removed only
    /// when none is left).
    async fn conversations_with_worktree(&self, worktree: &str) -> StoreResult<Vec<String>>;

    /// What a conversation's assistant turns have cost so far: the sum of the `cost_usd` of
    /// its [`CHAT_TURN_USAGE`] events (turns without a known cost count nothing).
    async fn conversation_spend(&self, conversation_id: &str) -> StoreResult<f64>;

    /// Stores an inbound message, with the platform's extra facts, in the durable inbox.
    /// Returns `None` if this `(conversation, platform_message_id)` was already stored (a
    /// redelivery).
    async fn enqueue_chat_message_with_meta(
        &self,
        conversation_id: &str,
        platform_message_id: &str,
        author: &str,
        body: &str,
        meta: &BTreeMap<String, String>,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<ChatMessageRecord>>;

    /// A conversation's queued and running messages, oldest first.
    async fn pending_chat_messages(
        &self,
        conversation_id: &str,
    ) -> StoreResult<Vec<ChatMessageRecord>>;

    /// A conversation's messages received since `since`, whatever their status, oldest first
    /// (the reply addresses they carry, after a restart).
    async fn chat_messages_since(
        &self,
        conversation_id: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<ChatMessageRecord>>;

    /// The newest message of every conversation that has one, and how many messages each
    /// has queued or running (for the conversations page: two reads, however many there are).
    async fn chat_activity(&self) -> StoreResult<ChatActivity>;

    /// Ids of conversations that have queued or running messages, or replies not posted yet
    /// (to restart after a crash).
    async fn conversations_with_pending(&self) -> StoreResult<Vec<String>>;

    /// Records that fleet session `session_id` was started from chat conversation
    /// `conversation_id` (`/spawn`), so its escalations can be routed back there.
    ///
    /// Errors: `NotFound` for an unknown conversation.
    async fn link_session_to_conversation(
        &self,
        session_id: &str,
        conversation_id: &str,
    ) -> StoreResult<()>;

    /// The chat conversation a fleet session was started from, if any.
    async fn conversation_for_session(&self, session_id: &str) -> StoreResult<Option<String>>;

    /// Records where a notification landed on a chat platform. Idempotent: a redelivery of
    /// the same post replaces it.
    async fn record_notification_post(&self, post: &NotificationPost) -> StoreResult<()>;

    /// The notification posted as `key` on `platform`, if Flotilla posted one.
    async fn notification_post(
        &self,
        platform: &str,
        key: &str,
    ) -> StoreResult<Option<NotificationPost>>;
}

/// A message's final replies, stored in the transaction that settles the message and posted
/// from there: a crash after the turn posts them after the restart rather than running the
/// turn again, and a platform that fails gets them later rather than never.
#[async_trait]
pub trait ChatReplies: Send + Sync + 'static {
    /// Sets message `id`'s final status and stores its `replies`, in one transaction fenced
    /// as [`ChatStore::update_conversation`].
    ///
    /// Errors: `NotFound` for an unknown message (or one of another conversation); `Fenced`
    /// (nothing is written either way).
    async fn settle_chat_message(
        &self,
        conversation: &str,
        id: i64,
        status: MessageStatus,
        replies: &[ChatReply],
        fence: Option<&Fence>,
    ) -> StoreResult<()>;

    /// The conversation's replies not posted yet, oldest first.
    async fn unsent_chat_replies(&self, conversation: &str) -> StoreResult<Vec<ChatReplyRecord>>;

    /// Forgets a reply once posted (or given up). Idempotent.
    async fn chat_reply_done(&self, id: i64) -> StoreResult<()>;

    /// Forgets the replies `posted` (or given up), and claims the oldest pending message of
    /// `conversation` for its turn, in one transaction: a `queued` one is marked `running` by
    /// one conditional `UPDATE` (never two claimers for one message); a `running` one (its
    /// turn was interrupted) is handed out again as `resumed`. With a `fence`, refused
    /// (`Fenced`, and nothing forgotten) unless it still holds the conversation's lease,
    /// checked in the same transaction. `None` when nothing is pending.
    async fn claim_after_posting(
        &self,
        conversation: &str,
        posted: &[i64],
        fence: Option<&Fence>,
    ) -> StoreResult<Option<ClaimedMessage>>;

    /// Counts a failed attempt at posting reply `id`; returns the attempts so far.
    ///
    /// Errors: `NotFound` for an unknown reply.
    async fn chat_reply_failed(&self, id: i64) -> StoreResult<i64>;
}

/// Chats a platform gave a new id (a Telegram group upgraded to a supergroup), so sends to
/// the old id go to the new one at once, also after a restart.
#[async_trait]
pub trait ChatMoves: Send + Sync + 'static {
    /// Records that `platform`'s chat `from` is now chat `to`. Idempotent; a later move of
    /// the same `from` replaces the earlier one.
    async fn record_chat_move(
        &self,
        platform: &str,
        from: &str,
        to: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// The chat `platform`'s chat `chat` moved to, if it moved.
    async fn chat_moved_to(&self, platform: &str, chat: &str) -> StoreResult<Option<String>>;

    /// The chat that moved to `platform`'s chat `chat` (the reverse of
    /// [`ChatMoves::chat_moved_to`]), if one did: the latest such move when several did.
    async fn chat_moved_from(&self, platform: &str, chat: &str) -> StoreResult<Option<String>>;
}

/// Chat templates and per-codebase commands.
#[async_trait]
pub trait TemplateStore: Send + Sync + 'static {
    /// Creates or replaces a global chat template.
    async fn upsert_chat_template(&self, t: &ChatTemplateRecord) -> StoreResult<()>;

    /// A global chat template by name.
    async fn get_chat_template(&self, name: &str) -> StoreResult<Option<ChatTemplateRecord>>;

    /// Every global chat template, by name.
    async fn list_chat_templates(&self) -> StoreResult<Vec<ChatTemplateRecord>>;

    /// Deletes a template; returns whether it existed.
    async fn delete_chat_template(&self, name: &str) -> StoreResult<bool>;

    /// Registers per-codebase commands (name → path relative to the conversation's
    /// directory), replacing same-named ones.
    async fn add_codebase_commands(
        &self,
        codebase: &str,
        commands: &BTreeMap<String, String>,
    ) -> StoreResult<()>;

    /// A codebase's commands, by name.
    async fn codebase_commands(&self, codebase: &str) -> StoreResult<BTreeMap<String, String>>;
}

/// The notification outbox.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Adds a notification to the outbox unless the live row holding its `dedupe_key` is still
    /// inside its dedupe window (`dedupe_until` after this one's `created_at`); returns whether
    /// it was added. (`commit_transition` writes a step's notifications the same way.)
    async fn enqueue_notification(&self, n: &NotificationRecord) -> StoreResult<bool>;

    /// Pending notifications due at `now`, oldest first, at most `limit`.
    async fn due_notifications(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<NotificationRecord>>;

    /// Records a delivery attempt's outcome.
    ///
    /// Errors: `NotFound` for an unknown id.
    async fn update_notification(
        &self,
        id: &str,
        status: NotificationStatus,
        attempts: i64,
        next_attempt_at: DateTime<Utc>,
        last_error: Option<&str>,
    ) -> StoreResult<()>;

    /// Notifications newest first (by creation), only those in `status` when given, at most
    /// `limit`.
    async fn list_notifications(
        &self,
        status: Option<NotificationStatus>,
        limit: i64,
    ) -> StoreResult<Vec<NotificationRecord>>;

    /// How many notifications are in each status (statuses with none are left out).
    async fn count_notifications(&self) -> StoreResult<Vec<(NotificationStatus, i64)>>;

    /// Moves the next attempt of the listed **pending** notifications to `until` (a
    /// rate-limited or paused channel); returns how many moved.
    async fn defer_notifications(&self, ids: &[String], until: DateTime<Utc>) -> StoreResult<u64>;

    /// In one transaction: adds `digest` (a pending notification) and marks the listed
    /// notifications `digested` into it. All or nothing: every member must still be pending.
    /// Returns how many were folded.
    ///
    /// Errors: `Conflict` if the digest id exists or a member is not pending (nothing is
    /// written either way).
    async fn fold_into_digest(
        &self,
        digest: &NotificationRecord,
        members: &[String],
    ) -> StoreResult<u64>;
}

/// The durable state of Flotilla: every area. Implementations are cheap to clone behind an
/// `Arc` and safe to call concurrently from many actors.
pub trait Store:
    SessionCommands
    + SessionQueries
    + EventLog
    + WebhookLog
    + WritebackMarks
    + InstructionLog
    + ChatStore
    + ChatReplies
    + ChatMoves
    + TemplateStore
    + Outbox
    + LeaseStore
{
}

impl<T> Store for T where
    T: SessionCommands
        + SessionQueries
        + EventLog
        + WebhookLog
        + WritebackMarks
        + InstructionLog
        + ChatStore
        + ChatReplies
        + ChatMoves
        + TemplateStore
        + Outbox
        + LeaseStore
{
}

/// A shared store handle.
pub type SharedStore = Arc<dyn Store>;

/// Opens the store named by `url` (`sqlite://PATH`, `sqlite::memory:`, `postgres://…`) and runs
/// its migrations.
///
/// # Errors
/// `UnsupportedUrl` for another scheme; `Database`/`Migrate` when opening fails.
pub async fn open(url: &str) -> StoreResult<SharedStore> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::open(url).await?))
    } else {
        let scheme = url.split(':').next().unwrap_or_default().to_string();
        Err(StoreError::UnsupportedUrl(scheme))
    }
}

/// Runs `write` to its end on its own task (see [`crate::tasks::to_completion`]), so a caller
/// dropped mid-way (a timeout, a cancelled turn) does not cut the write short.
///
/// # Errors
/// `write`'s; `Interrupted` when the runtime stops the task. A panic in `write` is resumed.
pub async fn run_detached<T, Fut>(write: Fut) -> StoreResult<T>
where
    T: Send + 'static,
    Fut: std::future::Future<Output = StoreResult<T>> + Send + 'static,
{
    crate::tasks::to_completion(write)
        .await
        .unwrap_or(Err(StoreError::Interrupted))
}

/// Redacts the password of a database URL for logs and `Debug` output.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}://{}:***{}", &url[..s], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

// ---- private helpers shared by the backends ----------------------------------------------

/// The states the `active_only` filter excludes.
fn terminal_states() -> impl Iterator<Item = SessionState> {
    SessionState::ALL.into_iter().filter(|s| s.is_terminal())
}

/// The stored text of a value kept under its serde name (`waiting_input`, `queued`).
fn as_text<T: serde::Serialize>(v: &T) -> String {
    let v = serde_json::to_value(v).ok();
    v.and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A value read back from its stored text; an unknown name is a corrupt row.
fn from_text<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> StoreResult<T> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| StoreError::Corrupt(format!("unknown {what} `{s}`")))
}

/// Rebuilds a [`PrRef`] from its two columns; half a PR is corruption.
fn pr_from_columns(number: Option<i64>, url: Option<String>) -> StoreResult<Option<PrRef>> {
    match (number, url) {
        (Some(number), Some(url)) => Ok(Some(PrRef { number, url })),
        (None, None) => Ok(None),
        _ => Err(StoreError::Corrupt(
            "pr_number and pr_url must be both set or both null".into(),
        )),
    }
}

fn not_found(what: String) -> StoreError {
    StoreError::NotFound { what }
}

/// Maps errors of writes: unique violations the caller did not handle become `Conflict`.
fn write_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Conflict(d.message().to_string())
        }
        _ => e.into(),
    }
}

/// Maps errors of reading one column: a value that does not decode is a corrupt row.
fn column_err(column: &str, e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::ColumnDecode { source, .. } => {
            StoreError::Corrupt(format!("column `{column}`: {source}"))
        }
        other => other.into(),
    }
}

/// A negative `limit` reads nothing.
fn clamp_limit(limit: i64) -> i64 {
    limit.max(0)
}

/// The event kind of a chat turn's usage (`data.conversation`, `data.usage.cost_usd`).
pub const CHAT_TURN_USAGE: &str = "chat.turn_usage";
