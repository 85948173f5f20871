//! Every query of the store, written once and generic over a [`Dialect`].
//!
//! The dialect holds only what really differs between the backends: how a write transaction
//! starts (SQLite's `BEGIN IMMEDIATE` on its one-connection write pool), how a consistent read
//! starts, the lock taken before appending events (PostgreSQL's advisory lock), how timestamps
//! and JSON are stored (TEXT on SQLite, TIMESTAMPTZ and JSONB on PostgreSQL) and the one query
//! that reads inside JSON. The area traits are implemented in [`sessions`] (with events and
//! webhook deliveries), [`instructions`], [`writebacks`], [`chat`], [`chat_replies`],
//! [`chat_moves`], [`outbox`] and [`leases`].
//!
//! sqlx states per driver what it can bind, read and run, and Rust does not imply a trait's
//! `where` clauses on other types, so every generic `impl` block needs the same bounds; they
//! are written once, in [`sql_impl!`].

// Column lists of the queries returning whole records (rows are then read by name).
macro_rules! session_columns {
    () => {
        "id, project, state, reason, agent, runtime, workspace_kind, branch, workspace, \
         pr_number, pr_url, issue, prompt, runtime_handle, activity, activity_at, \
         restart_count, created_at, updated_at, meta"
    };
}
macro_rules! event_columns {
    () => {
        "id, session_id, kind, data, at"
    };
}
macro_rules! message_columns {
    () => {
        "id, conversation_id, platform_message_id, author, body, status, received_at, meta"
    };
}
macro_rules! conversation_columns {
    () => {
        "id, platform, thread, resume_id, cwd, codebase, worktree, last_command, created_at, \
         updated_at"
    };
}
macro_rules! notification_columns {
    () => {
        "id, notifier, priority, event, session_id, message, dedupe_key, status, attempts, \
         next_attempt_at, created_at, last_error, dedupe_until, context, digest_id"
    };
}

/// `sql_impl! { #[attr] impl Trait; items… }` is `#[attr] impl<D> Trait for SqlStore<D>
/// where <bounds> { items… }` (`impl;` for the inherent block), with the bounds sqlx needs to
/// run queries on a pool or a connection, bind and read `String`, `&str`, `i64`, `bool` and
/// `f64`, and read columns by name and by position.
macro_rules! sql_impl {
    ($(#[$attr:meta])* impl $($trait_:path)?; $($items:tt)*) => {
        $(#[$attr])*
        impl<D> $($trait_ for)? crate::store::sql::SqlStore<D>
        where
            D: crate::store::sql::Dialect,
            for<'c> &'c mut crate::store::sql::Conn<D>:
                sqlx::Executor<'c, Database = crate::store::sql::Db<D>>,
            for<'q> crate::store::sql::Args<'q, D>:
                sqlx::IntoArguments<'q, crate::store::sql::Db<D>>,
            for<'a> &'a str: sqlx::ColumnIndex<crate::store::sql::Row<D>>
                + sqlx::Encode<'a, crate::store::sql::Db<D>>
                + sqlx::Type<crate::store::sql::Db<D>>,
            usize: sqlx::ColumnIndex<crate::store::sql::Row<D>>,
            for<'a> Option<&'a str>: sqlx::Encode<'a, crate::store::sql::Db<D>>,
            String: crate::store::sql::Value<crate::store::sql::Db<D>>,
            Option<String>: crate::store::sql::Value<crate::store::sql::Db<D>>,
            i64: crate::store::sql::Value<crate::store::sql::Db<D>>,
            Option<i64>: crate::store::sql::Value<crate::store::sql::Db<D>>,
            bool: crate::store::sql::Value<crate::store::sql::Db<D>>,
            f64: crate::store::sql::Value<crate::store::sql::Db<D>>,
            Option<D::Ts>: crate::store::sql::Value<crate::store::sql::Db<D>>,
            Option<D::Json>: crate::store::sql::Value<crate::store::sql::Db<D>>,
        {
            $($items)*
        }
    };
}

mod chat;
mod chat_moves;
mod chat_replies;
mod instructions;
mod leases;
mod outbox;
mod sessions;
mod writebacks;

use std::fmt;
use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use sqlx::{Database, Decode, Encode, Pool, Row as _, Transaction, Type};

use super::{
    column_err, from_text, not_found, pr_from_columns, write_err, ChatMessageRecord,
    ChatTemplateRecord, ConversationRecord, EventRecord, NewEvent, NotificationRecord,
    ReactionTracker, SessionId, SessionRecord, StoreError, StoreResult, TimerRecord,
};

/// What differs between two SQL backends; everything else is in [`SqlStore`].
pub trait Dialect: Send + Sync + 'static {
    /// The sqlx driver.
    type Db: Database<QueryResult: RowsAffected>;
    /// How a timestamp is bound and read.
    type Ts: Value<Self::Db>;
    /// How a JSON document is bound and read.
    type Json: Value<Self::Db>;
    /// The store's name in `Debug` output.
    const NAME: &'static str;
    /// Starts a transaction that writes (on the write pool).
    const BEGIN_WRITE: &'static str;
    /// Starts a transaction whose reads all see one commit (on the read pool).
    const BEGIN_SNAPSHOT: &'static str;
    /// A statement, with its one `i64` argument, run in a transaction before it appends an
    /// event so event ids commit in id order (none where the single writer already does).
    const LOCK_EVENT_LOG: Option<(&'static str, i64)>;
    /// The sum of `data.usage.cost_usd` of events of kind `$1` with `data.conversation = $2`.
    const CONVERSATION_SPEND_SQL: &'static str;

    /// An expression for the database clock's time in milliseconds since the epoch (leases
    /// expire by the database's clock, never a node's).
    const NOW_MS: &'static str;
    /// What ends a `SELECT` whose rows another node may be claiming at the same moment
    /// (`FOR UPDATE SKIP LOCKED`; nothing where one writer runs at a time).
    const SKIP_LOCKED: &'static str;
    /// Whether the backend wakes other connections (`LISTEN`/`NOTIFY`).
    const NOTIFIES: bool;

    /// A timestamp as stored.
    fn ts(t: DateTime<Utc>) -> Self::Ts;
    /// A stored timestamp read from `column` (`Corrupt` when it does not parse).
    fn read_ts(column: &str, v: Self::Ts) -> StoreResult<DateTime<Utc>>;
    /// A JSON document as stored.
    fn json(v: &serde_json::Value) -> Self::Json;
    /// A stored JSON document read from `column` (`Corrupt` when it does not parse).
    fn read_json(column: &str, v: Self::Json) -> StoreResult<serde_json::Value>;
}

/// What a statement that changes rows reports.
pub trait RowsAffected {
    /// How many rows it changed.
    fn rows_affected(&self) -> u64;
}

/// A Rust type a driver binds and reads.
pub trait Value<DB: Database>:
    for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB> + Send + Sync + 'static
{
}

impl<DB: Database, T> Value<DB> for T where
    T: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB> + Send + Sync + 'static
{
}

/// A query's rows (or its one optional row) read into records by a `*_from_row`.
trait ReadRows<R> {
    type Out<T>;
    fn read<T>(self, row: impl Fn(&R) -> StoreResult<T>) -> StoreResult<Self::Out<T>>;
}

impl<R> ReadRows<R> for Vec<R> {
    type Out<T> = Vec<T>;
    fn read<T>(self, row: impl Fn(&R) -> StoreResult<T>) -> StoreResult<Vec<T>> {
        self.iter().map(row).collect()
    }
}

impl<R> ReadRows<R> for Option<R> {
    type Out<T> = Option<T>;
    fn read<T>(self, row: impl Fn(&R) -> StoreResult<T>) -> StoreResult<Option<T>> {
        self.as_ref().map(row).transpose()
    }
}

/// The driver of dialect `D`.
pub type Db<D> = <D as Dialect>::Db;
/// A connection of dialect `D`.
pub type Conn<D> = <Db<D> as Database>::Connection;
/// The query arguments of dialect `D`.
pub type Args<'q, D> = <Db<D> as Database>::Arguments<'q>;
/// A result row of dialect `D`.
pub type Row<D> = <Db<D> as Database>::Row;

/// `n` numbered placeholders after the first `before`: `$3, $4` for (2, 2).
fn placeholders(before: usize, n: usize) -> String {
    let numbers: Vec<String> = (before + 1..=before + n).map(|i| format!("${i}")).collect();
    numbers.join(", ")
}

/// The store over dialect `D`: a write pool and a read pool (one connection and several on a
/// SQLite file; the same pool where the backend needs no split).
pub struct SqlStore<D: Dialect> {
    write: Pool<D::Db>,
    read: Pool<D::Db>,
    url: String,
    dialect: PhantomData<fn() -> D>,
}

impl<D: Dialect> fmt::Debug for SqlStore<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(D::NAME)
            .field("url", &super::redact_url(&self.url))
            .finish_non_exhaustive()
    }
}

impl<D: Dialect> SqlStore<D> {
    /// A store over pools already connected and migrated.
    pub(super) fn new(write: Pool<D::Db>, read: Pool<D::Db>, url: &str) -> Self {
        SqlStore {
            write,
            read,
            url: url.to_string(),
            dialect: PhantomData,
        }
    }
}

/// The hook every pool runs as a connection comes back to it: it rolls back a transaction the
/// connection is still inside. sqlx's SQLite driver leaves one when a `begin_with` future is
/// dropped after `BEGIN` ran but before it returned (a chat turn cut short by its timeout did
/// so); the next `begin_with` on that connection, the SQLite store's only writer, then failed
/// with `InvalidSavePointStatement`, and so did every write after it. A dropped SQLite
/// `Transaction` has queued its own rollback that its worker may not have run yet; ours then
/// runs after it and finds nothing to do, which is why this is no warning. A committed
/// transaction leaves nothing here: the hook then costs one atomic load.
pub(super) fn end_abandoned_transaction<DB: Database>(
    conn: &mut DB::Connection,
    _: sqlx::pool::PoolConnectionMetadata,
) -> futures::future::BoxFuture<'_, Result<bool, sqlx::Error>> {
    use sqlx::TransactionManager as _;
    Box::pin(async move {
        while DB::TransactionManager::get_transaction_depth(conn) > 0 {
            tracing::debug!("rolling back a transaction left open on a pooled connection");
            DB::TransactionManager::rollback(conn).await?;
        }
        Ok(true)
    })
}

sql_impl! { impl;
    /// A transaction that writes.
    async fn begin_write(&self) -> StoreResult<Transaction<'static, D::Db>> {
        Ok(self.write.begin_with(D::BEGIN_WRITE).await?)
    }

    /// A read-only transaction whose reads see one commit.
    async fn begin_snapshot(&self) -> StoreResult<Transaction<'static, D::Db>> {
        Ok(self.read.begin_with(D::BEGIN_SNAPSHOT).await?)
    }

    fn get<'r, T>(row: &'r Row<D>, column: &str) -> StoreResult<T>
    where
        T: Decode<'r, D::Db> + Type<D::Db>,
    {
        row.try_get(column).map_err(|e| column_err(column, e))
    }

    /// A text column holding a name parsed with `FromStr` (a state, a status).
    fn get_parsed<T>(row: &Row<D>, column: &str) -> StoreResult<T>
    where
        T: std::str::FromStr<Err: fmt::Display>,
    {
        let text: String = Self::get(row, column)?;
        text.parse()
            .map_err(|e| StoreError::Corrupt(format!("column `{column}`: {e}")))
    }

    fn get_ts(row: &Row<D>, column: &str) -> StoreResult<DateTime<Utc>> {
        D::read_ts(column, Self::get(row, column)?)
    }

    fn get_opt_ts(row: &Row<D>, column: &str) -> StoreResult<Option<DateTime<Utc>>> {
        Self::get::<Option<D::Ts>>(row, column)?
            .map(|v| D::read_ts(column, v))
            .transpose()
    }

    fn get_json(row: &Row<D>, column: &str) -> StoreResult<serde_json::Value> {
        D::read_json(column, Self::get(row, column)?)
    }

    fn session_from_row(row: &Row<D>) -> StoreResult<SessionRecord> {
        Ok(SessionRecord {
            id: SessionId(Self::get(row, "id")?),
            project: Self::get(row, "project")?,
            state: Self::get_parsed(row, "state")?,
            reason: Self::get(row, "reason")?,
            agent: Self::get(row, "agent")?,
            runtime: Self::get(row, "runtime")?,
            workspace_kind: Self::get(row, "workspace_kind")?,
            branch: Self::get(row, "branch")?,
            workspace: Self::get(row, "workspace")?,
            pr: pr_from_columns(Self::get(row, "pr_number")?, Self::get(row, "pr_url")?)?,
            issue: Self::get(row, "issue")?,
            prompt: Self::get(row, "prompt")?,
            runtime_handle: Self::get::<Option<D::Json>>(row, "runtime_handle")?
                .map(|v| D::read_json("runtime_handle", v))
                .transpose()?
                .map(|v| crate::domain::runtime_handle::RuntimeHandle::from_json(&v)),
            activity: from_text("activity", &Self::get::<String>(row, "activity")?)?,
            activity_at: Self::get_opt_ts(row, "activity_at")?,
            restart_count: Self::get(row, "restart_count")?,
            created_at: Self::get_ts(row, "created_at")?,
            updated_at: Self::get_ts(row, "updated_at")?,
            meta: Self::get_json(row, "meta")?,
        })
    }

    fn event_from_row(row: &Row<D>) -> StoreResult<EventRecord> {
        Ok(EventRecord {
            id: Self::get(row, "id")?,
            session_id: Self::get::<Option<String>>(row, "session_id")?.map(SessionId),
            kind: Self::get(row, "kind")?,
            data: Self::get_json(row, "data")?,
            at: Self::get_ts(row, "at")?,
        })
    }

    fn tracker_from_row(row: &Row<D>) -> StoreResult<ReactionTracker> {
        Ok(ReactionTracker {
            reaction: Self::get(row, "reaction")?,
            attempts: Self::get(row, "attempts")?,
            first_triggered_at: Self::get_ts(row, "first_triggered_at")?,
            last_triggered_at: Self::get_ts(row, "last_triggered_at")?,
            fingerprint: Self::get(row, "fingerprint")?,
            escalated: Self::get(row, "escalated")?,
        })
    }

    fn timer_from_row(row: &Row<D>) -> StoreResult<TimerRecord> {
        Ok(TimerRecord {
            kind: Self::get(row, "kind")?,
            deadline: Self::get_ts(row, "deadline")?,
        })
    }

    fn conversation_from_row(row: &Row<D>) -> StoreResult<ConversationRecord> {
        Ok(ConversationRecord {
            id: Self::get(row, "id")?,
            platform: Self::get(row, "platform")?,
            thread: Self::get(row, "thread")?,
            resume_id: Self::get(row, "resume_id")?,
            cwd: Self::get(row, "cwd")?,
            codebase: Self::get(row, "codebase")?,
            worktree: Self::get(row, "worktree")?,
            last_command: Self::get(row, "last_command")?,
            created_at: Self::get_ts(row, "created_at")?,
            updated_at: Self::get_ts(row, "updated_at")?,
        })
    }

    fn template_from_row(row: &Row<D>) -> StoreResult<ChatTemplateRecord> {
        Ok(ChatTemplateRecord {
            name: Self::get(row, "name")?,
            description: Self::get(row, "description")?,
            content: Self::get(row, "content")?,
            updated_at: Self::get_ts(row, "updated_at")?,
        })
    }

    fn message_from_row(row: &Row<D>) -> StoreResult<ChatMessageRecord> {
        let meta: String = Self::get(row, "meta")?;
        Ok(ChatMessageRecord {
            id: Self::get(row, "id")?,
            conversation_id: Self::get(row, "conversation_id")?,
            platform_message_id: Self::get(row, "platform_message_id")?,
            author: Self::get(row, "author")?,
            body: Self::get(row, "body")?,
            meta: serde_json::from_str(&meta)
                .map_err(|e| StoreError::Corrupt(format!("chat meta: {e}")))?,
            status: Self::get_parsed(row, "status")?,
            received_at: Self::get_ts(row, "received_at")?,
        })
    }

    fn notification_from_row(row: &Row<D>) -> StoreResult<NotificationRecord> {
        let created_at = Self::get_ts(row, "created_at")?;
        Ok(NotificationRecord {
            id: Self::get(row, "id")?,
            notifier: Self::get(row, "notifier")?,
            priority: Self::get(row, "priority")?,
            event: Self::get(row, "event")?,
            session_id: Self::get::<Option<String>>(row, "session_id")?.map(SessionId),
            message: Self::get(row, "message")?,
            dedupe_key: Self::get(row, "dedupe_key")?,
            status: Self::get_parsed(row, "status")?,
            attempts: Self::get(row, "attempts")?,
            next_attempt_at: Self::get_ts(row, "next_attempt_at")?,
            created_at,
            last_error: Self::get(row, "last_error")?,
            // SQLite rows written before migration 0002 have none: their window ended at
            // creation.
            dedupe_until: Self::get_opt_ts(row, "dedupe_until")?.unwrap_or(created_at),
            context: Self::get_json(row, "context")?,
            digest_id: Self::get(row, "digest_id")?,
        })
    }

    /// Writes one outbox row inside the caller's transaction: archives the key of an expired
    /// holder of its dedupe group, then inserts unless a live holder remains. Returns whether
    /// it was written.
    async fn insert_notification(conn: &mut Conn<D>, n: &NotificationRecord) -> StoreResult<bool> {
        // The archived key is unique because ids are.
        sqlx::query(
            "UPDATE notifications SET dedupe_key = dedupe_key || '#' || id \
             WHERE dedupe_key = $1 AND dedupe_until <= $2",
        )
        .bind(&n.dedupe_key)
        .bind(D::ts(n.created_at))
        .execute(&mut *conn)
        .await
        .map_err(write_err)?;
        let inserted = sqlx::query(
            "INSERT INTO notifications (id, notifier, priority, event, session_id, message, \
             dedupe_key, status, attempts, next_attempt_at, created_at, last_error, dedupe_until, \
             context, digest_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .bind(&n.id)
        .bind(&n.notifier)
        .bind(&n.priority)
        .bind(&n.event)
        .bind(n.session_id.as_ref().map(SessionId::as_str))
        .bind(&n.message)
        .bind(&n.dedupe_key)
        .bind(n.status.as_str())
        .bind(n.attempts)
        .bind(D::ts(n.next_attempt_at))
        .bind(D::ts(n.created_at))
        .bind(&n.last_error)
        .bind(D::ts(n.dedupe_until))
        .bind(D::json(&n.context))
        .bind(&n.digest_id)
        .execute(&mut *conn)
        .await
        .map_err(write_err)?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// Appends one event inside the caller's transaction, after the dialect's event-log lock
    /// (if any) so the transaction commits before any later event id can.
    async fn insert_event(conn: &mut Conn<D>, event: &NewEvent) -> StoreResult<EventRecord> {
        if let Some((lock, key)) = D::LOCK_EVENT_LOG {
            sqlx::query(lock).bind(key).execute(&mut *conn).await?;
        }
        let row = sqlx::query(concat!(
            "INSERT INTO events (session_id, kind, data, at) VALUES ($1, $2, $3, $4) RETURNING ",
            event_columns!()
        ))
        .bind(event.session_id.as_ref().map(SessionId::as_str))
        .bind(&event.kind)
        .bind(D::json(&event.data))
        .bind(D::ts(event.at))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| match (&e, &event.session_id) {
            (sqlx::Error::Database(d), Some(id)) if d.is_foreign_key_violation() => {
                not_found(format!("session {id}"))
            }
            _ => write_err(e),
        })?;
        Self::event_from_row(&row)
    }
}

#[cfg(test)]
impl<D: Dialect> SqlStore<D>
where
    for<'c> &'c mut Conn<D>: sqlx::Executor<'c, Database = Db<D>>,
{
    /// Leaves the write connection as a `begin_write` dropped at the wrong moment does: inside
    /// a transaction that no `Transaction` will ever end, back in its pool.
    pub(super) async fn abandon_a_write_transaction(&self) {
        use sqlx::TransactionManager as _;
        let mut conn = self
            .write
            .acquire()
            .await
            .expect("acquire the write connection");
        <Db<D> as Database>::TransactionManager::begin(&mut conn, Some(D::BEGIN_WRITE.into()))
            .await
            .expect("begin");
    }
}
