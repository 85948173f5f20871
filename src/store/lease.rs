//! The cluster area of the store: lease rows, fenced writes, the command table and the claim
//! of the notification outbox (several Flotilla nodes on one PostgreSQL; see `src/actors/cluster/`).
//!
//! Every time is read from the database's clock, never a node's, so nodes agree on expiry.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    EventRecord, NewSession, NotificationRecord, SessionId, SessionRecord, StoreResult,
    TransitionCommit,
};

/// What a lease is held on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeaseKind {
    /// A fleet session (its agent is driven by the lease's owner only).
    Session,
    /// A chat conversation (its queue is run by the lease's owner only).
    Conversation,
}

impl LeaseKind {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseKind::Session => "session",
            LeaseKind::Conversation => "conversation",
        }
    }

    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<LeaseKind> {
        match s {
            "session" => Some(LeaseKind::Session),
            "conversation" => Some(LeaseKind::Conversation),
            _ => None,
        }
    }
}

/// A fencing token: who holds a lease and at which generation. A write carrying it is refused
/// once the lease moved to another owner (the generation grew).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The node holding the lease.
    pub owner: String,
    /// The lease's generation when it was acquired.
    pub generation: i64,
}

/// One lease as its owner sees it after acquiring or renewing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLease {
    /// What it is on.
    pub kind: LeaseKind,
    /// The session or conversation id.
    pub key: String,
    /// Its generation (the fencing token's number).
    pub generation: i64,
}

/// A command queued for the owner of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterCommandRecord {
    /// Row id (the sender waits on it).
    pub id: i64,
    /// The session it is for.
    pub session_id: SessionId,
    /// The command, as JSON text.
    pub command: String,
}

/// Where a queued command is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandStatus {
    /// Not claimed yet.
    Queued,
    /// Claimed by an owner, not finished.
    Claimed,
    /// Finished; the owner's answer as JSON text.
    Done(String),
}

/// The cluster area: leases, fenced writes, commands and the outbox claim.
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Acquires the lease on `(kind, key)` for `owner` for `ttl`: created at generation 1 when
    /// missing; taken with the generation + 1 when it expired; extended (same generation) when
    /// `owner` already holds it. Returns `None` when another owner holds it unexpired.
    async fn acquire_lease(
        &self,
        kind: LeaseKind,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> StoreResult<Option<HeldLease>>;

    /// Extends every lease `owner` holds by `ttl` in **one** query and returns them (a lease
    /// missing from the answer was taken over: its owner must stop driving it). The chat turn
    /// slots `owner` holds are extended in the same transaction.
    async fn renew_leases(&self, owner: &str, ttl: Duration) -> StoreResult<Vec<HeldLease>>;

    /// Takes over at most `limit` expired leases held by others (leases of ended sessions are
    /// left alone), each with its generation + 1, and at most `limit` live sessions older than
    /// `ttl` that have no lease at all (their node died between creating and leasing them).
    /// Concurrent callers take distinct leases.
    async fn take_over_expired(
        &self,
        owner: &str,
        ttl: Duration,
        limit: i64,
    ) -> StoreResult<Vec<HeldLease>>;

    /// The current holder of a lease, unexpired or not.
    async fn lease_holder(&self, kind: LeaseKind, key: &str) -> StoreResult<Option<Fence>>;

    /// Every lease of `kind` as (key, owner): one read for a whole list.
    async fn lease_owners(&self, kind: LeaseKind) -> StoreResult<Vec<(String, String)>>;

    /// Deletes the leases `owner` holds on `keys` (a session that ended, a node stopping).
    async fn release_leases(
        &self,
        kind: LeaseKind,
        keys: &[String],
        owner: &str,
    ) -> StoreResult<u64>;

    /// [`super::SessionCommands::commit_transition`], refused unless `fence` still holds the
    /// session's lease, checked in the same transaction.
    ///
    /// Errors: `Fenced` when the lease moved on (nothing is written); `NotFound` as
    /// `commit_transition`.
    async fn commit_transition_fenced(
        &self,
        commit: &TransitionCommit,
        fence: &Fence,
    ) -> StoreResult<EventRecord>;

    /// Queues a command for the owner of `session` and wakes the nodes (PostgreSQL `NOTIFY`).
    /// Returns its id.
    async fn enqueue_command(&self, session: &SessionId, command: &str) -> StoreResult<i64>;

    /// Claims at most `limit` queued commands for sessions whose lease `owner` holds.
    async fn claim_commands(
        &self,
        owner: &str,
        limit: i64,
    ) -> StoreResult<Vec<ClusterCommandRecord>>;

    /// Stores a claimed command's answer.
    async fn finish_command(&self, id: i64, result: &str) -> StoreResult<()>;

    /// Where a command is.
    ///
    /// Errors: `NotFound` for an unknown id.
    async fn command_status(&self, id: i64) -> StoreResult<CommandStatus>;

    /// Claims for `owner` during `hold` at most `limit` pending notifications due at `now` that
    /// nobody holds, oldest first, and returns them: a row is delivered by one node at a time.
    async fn claim_due_notifications(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        hold: Duration,
        limit: i64,
    ) -> StoreResult<Vec<NotificationRecord>>;

    /// Wake-ups when a command is queued (PostgreSQL `LISTEN`), or `None` where the backend
    /// has no notifications (SQLite: one node, nothing to wake).
    async fn command_wakeups(&self) -> StoreResult<Option<tokio::sync::mpsc::Receiver<()>>>;

    /// [`super::SessionCommands::create_session`] and the new session's lease for `owner`
    /// in **one** transaction: a node dying between the two leaves nothing unleased.
    ///
    /// Errors: `Fenced` when another owner holds a lease on that id (a fixed id reused while
    /// its old lease lives); nothing is created then.
    async fn create_session_leased(
        &self,
        new: &NewSession,
        owner: &str,
        ttl: Duration,
    ) -> StoreResult<(SessionRecord, EventRecord, HeldLease)>;

    /// Wakes the owner of `conversation` (PostgreSQL `NOTIFY`; nothing on SQLite, where one
    /// node owns everything). `cancel`: a `/cancel` arrived, stop the running turn.
    async fn wake_conversation_owner(&self, conversation: &str, cancel: bool) -> StoreResult<()>;

    /// The wake-ups of [`LeaseStore::wake_conversation_owner`]: `(conversation, cancel)`, or
    /// `None` where the backend has no notifications.
    async fn conversation_wakeups(
        &self,
    ) -> StoreResult<Option<tokio::sync::mpsc::Receiver<(String, bool)>>>;

    // ---- the cluster-wide cap on chat turns (`chat_turn_slots`) ----------------------------
    //
    // `cap` numbered slots shared by every node; a turn runs only while its node holds one.
    // [`LeaseStore::renew_leases`] renews the slots its owner holds in the same transaction,
    // so a dead node's slots expire with its leases.

    /// Makes sure slots `0..cap` exist and frees the slots `owner` held before (a restarted
    /// node holds none yet: its renewal must not keep its former turns' slots alive).
    async fn prepare_turn_slots(&self, owner: &str, cap: usize) -> StoreResult<()>;

    /// Takes a free or expired slot below `cap` for `owner` until `ttl` from now, marked with
    /// `token` (unique per claim): **one** conditional `UPDATE`, never two claimers for one
    /// slot. Returns the slot's number, or `None` when every slot below `cap` is held.
    async fn claim_turn_slot(
        &self,
        owner: &str,
        token: &str,
        conversation: &str,
        cap: usize,
        ttl: Duration,
    ) -> StoreResult<Option<i64>>;

    /// Frees the slot the claim `token` holds (nothing when it expired and another node took
    /// it) and wakes the nodes waiting for one (PostgreSQL `NOTIFY`). Returns whether it was
    /// still held.
    async fn release_turn_slot(&self, token: &str) -> StoreResult<bool>;

    /// How many slots are held and unexpired, by every node.
    async fn turn_slots_in_use(&self) -> StoreResult<usize>;

    /// Wake-ups when a slot is freed (PostgreSQL `LISTEN`), or `None` where the backend has no
    /// notifications.
    async fn turn_slot_wakeups(&self) -> StoreResult<Option<tokio::sync::mpsc::Receiver<()>>>;
}
