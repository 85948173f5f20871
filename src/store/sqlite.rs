//! The embedded SQLite backend (WAL).
//!
//! SQLite allows one writer at a time, and a deferred transaction that first reads and then
//! writes can fail with `SQLITE_BUSY` when it upgrades its lock, whatever the busy timeout. So
//! every write goes through a dedicated pool of **one** connection and starts with
//! `BEGIN IMMEDIATE` (writers queue in the pool, not in SQLite), while reads use a separate
//! pool of several connections that WAL lets run alongside the writer. An in-memory database
//! (`sqlite::memory:`) lives in a single connection, so it gets one pool for both.
//!
//! Timestamps are TEXT in RFC 3339 with exactly six fractional digits and a `+00:00` offset,
//! so comparing and ordering them as text is comparing them as times.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Decode, QueryBuilder, Row, Sqlite, Transaction, Type};

use super::{
    activity_str, clamp_limit, column_err, parse_activity, parse_message_status,
    parse_notification_status, parse_state, pr_from_columns, session_not_found, terminal_states,
    write_err, ChatActivity, ChatMessageRecord, ChatTemplateRecord, ConversationRecord,
    EventRecord, MessageStatus, NewEvent, NewSession, NotificationRecord, NotificationStatus,
    ReactionTracker, SessionFilter, SessionId, SessionRecord, SessionSnapshot, SessionState, Store,
    StoreError, StoreResult, TimerRecord, TransitionCommit, WebhookDelivery,
};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How many connections serve reads on a file database.
const READ_CONNECTIONS: u32 = 4;
/// How long SQLite waits on a lock held by another process before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a caller waits for a pooled connection (the writer may be queued behind others).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

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

/// The SQLite implementation of [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    /// One connection: every write and every transaction.
    write: SqlitePool,
    /// Several connections for plain reads (the same pool as `write` in memory).
    read: SqlitePool,
    /// The URL, for `Debug`.
    url: String,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("url", &super::redact_url(&self.url))
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating it and its directory if missing) the database at `url`
    /// (`sqlite://PATH`, `sqlite:PATH` or `sqlite::memory:`) and runs the migrations.
    ///
    /// # Errors
    /// `Database` when the URL is malformed or the file cannot be opened or created;
    /// `Migrate` when the migrations fail.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);

        if is_in_memory(url) {
            // Every connection to `:memory:` is its own database: keep exactly one, forever.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await?;
            MIGRATOR.run(&pool).await?;
            return Ok(SqliteStore {
                write: pool.clone(),
                read: pool,
                url: url.to_string(),
            });
        }

        if let Some(dir) = options.get_filename().parent() {
            if !dir.as_os_str().is_empty() {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
            }
        }
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        Ok(SqliteStore {
            write,
            read,
            url: url.to_string(),
        })
    }

    /// A write transaction that holds SQLite's write lock from its first statement.
    async fn begin_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.write.begin_with("BEGIN IMMEDIATE").await?)
    }
}

fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

// ---- encoding and decoding -----------------------------------------------------------------

/// The one timestamp format written: fixed width, UTC, microseconds.
fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

fn opt_ts(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(ts)
}

fn get<'r, T>(row: &'r SqliteRow, column: &str) -> StoreResult<T>
where
    T: Decode<'r, Sqlite> + Type<Sqlite>,
{
    row.try_get(column).map_err(|e| column_err(column, e))
}

fn parse_ts(column: &str, s: &str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("column `{column}`: timestamp `{s}`: {e}")))
}

fn get_ts(row: &SqliteRow, column: &str) -> StoreResult<DateTime<Utc>> {
    parse_ts(column, &get::<String>(row, column)?)
}

fn get_opt_ts(row: &SqliteRow, column: &str) -> StoreResult<Option<DateTime<Utc>>> {
    get::<Option<String>>(row, column)?
        .map(|s| parse_ts(column, &s))
        .transpose()
}

fn parse_json(column: &str, s: &str) -> StoreResult<serde_json::Value> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("column `{column}`: {e}")))
}

fn session_from_row(row: &SqliteRow) -> StoreResult<SessionRecord> {
    Ok(SessionRecord {
        id: SessionId(get(row, "id")?),
        project: get(row, "project")?,
        state: parse_state(&get::<String>(row, "state")?)?,
        reason: get(row, "reason")?,
        agent: get(row, "agent")?,
        runtime: get(row, "runtime")?,
        workspace_kind: get(row, "workspace_kind")?,
        branch: get(row, "branch")?,
        workspace: get(row, "workspace")?,
        pr: pr_from_columns(get(row, "pr_number")?, get(row, "pr_url")?)?,
        issue: get(row, "issue")?,
        prompt: get(row, "prompt")?,
        runtime_handle: get::<Option<String>>(row, "runtime_handle")?
            .map(|s| parse_json("runtime_handle", &s))
            .transpose()?,
        activity: parse_activity(&get::<String>(row, "activity")?)?,
        activity_at: get_opt_ts(row, "activity_at")?,
        restart_count: get(row, "restart_count")?,
        created_at: get_ts(row, "created_at")?,
        updated_at: get_ts(row, "updated_at")?,
        meta: parse_json("meta", &get::<String>(row, "meta")?)?,
    })
}

fn event_from_row(row: &SqliteRow) -> StoreResult<EventRecord> {
    Ok(EventRecord {
        id: get(row, "id")?,
        session_id: get::<Option<String>>(row, "session_id")?.map(SessionId),
        kind: get(row, "kind")?,
        data: parse_json("data", &get::<String>(row, "data")?)?,
        at: get_ts(row, "at")?,
    })
}

fn tracker_from_row(row: &SqliteRow) -> StoreResult<ReactionTracker> {
    Ok(ReactionTracker {
        reaction: get(row, "reaction")?,
        attempts: get(row, "attempts")?,
        first_triggered_at: get_ts(row, "first_triggered_at")?,
        last_triggered_at: get_ts(row, "last_triggered_at")?,
        fingerprint: get(row, "fingerprint")?,
        escalated: get(row, "escalated")?,
    })
}

fn timer_from_row(row: &SqliteRow) -> StoreResult<TimerRecord> {
    Ok(TimerRecord {
        kind: get(row, "kind")?,
        deadline: get_ts(row, "deadline")?,
    })
}

fn conversation_from_row(row: &SqliteRow) -> StoreResult<ConversationRecord> {
    Ok(ConversationRecord {
        id: get(row, "id")?,
        platform: get(row, "platform")?,
        thread: get(row, "thread")?,
        resume_id: get(row, "resume_id")?,
        cwd: get(row, "cwd")?,
        codebase: get(row, "codebase")?,
        worktree: get(row, "worktree")?,
        last_command: get(row, "last_command")?,
        created_at: get_ts(row, "created_at")?,
        updated_at: get_ts(row, "updated_at")?,
    })
}

fn template_from_row(row: &SqliteRow) -> StoreResult<ChatTemplateRecord> {
    Ok(ChatTemplateRecord {
        name: get(row, "name")?,
        description: get(row, "description")?,
        content: get(row, "content")?,
        updated_at: get_ts(row, "updated_at")?,
    })
}

fn message_from_row(row: &SqliteRow) -> StoreResult<ChatMessageRecord> {
    Ok(ChatMessageRecord {
        id: get(row, "id")?,
        conversation_id: get(row, "conversation_id")?,
        platform_message_id: get(row, "platform_message_id")?,
        author: get(row, "author")?,
        body: get(row, "body")?,
        meta: {
            let m: String = get(row, "meta")?;
            serde_json::from_str(&m).map_err(|e| StoreError::Corrupt(format!("chat meta: {e}")))?
        },
        status: parse_message_status(&get::<String>(row, "status")?)?,
        received_at: get_ts(row, "received_at")?,
    })
}

fn notification_from_row(row: &SqliteRow) -> StoreResult<NotificationRecord> {
    Ok(NotificationRecord {
        id: get(row, "id")?,
        notifier: get(row, "notifier")?,
        priority: get(row, "priority")?,
        event: get(row, "event")?,
        session_id: get::<Option<String>>(row, "session_id")?.map(SessionId),
        message: get(row, "message")?,
        dedupe_key: get(row, "dedupe_key")?,
        status: parse_notification_status(&get::<String>(row, "status")?)?,
        attempts: get(row, "attempts")?,
        next_attempt_at: get_ts(row, "next_attempt_at")?,
        created_at: get_ts(row, "created_at")?,
        last_error: get(row, "last_error")?,
        // Rows written before migration 0002 have none: their window ended at creation.
        dedupe_until: match get::<Option<String>>(row, "dedupe_until")? {
            Some(_) => get_ts(row, "dedupe_until")?,
            None => get_ts(row, "created_at")?,
        },
        context: parse_json("context", &get::<String>(row, "context")?)?,
        digest_id: get(row, "digest_id")?,
    })
}

/// Writes one outbox row inside the caller's transaction: archives the key of an expired
/// holder of its dedupe group, then inserts unless a live holder remains. Returns whether it
/// was written.
async fn insert_notification(
    conn: &mut SqliteConnection,
    n: &NotificationRecord,
) -> StoreResult<bool> {
    sqlx::query(super::ARCHIVED_KEY_SQL)
        .bind(&n.dedupe_key)
        .bind(ts(n.created_at))
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
    .bind(ts(n.next_attempt_at))
    .bind(ts(n.created_at))
    .bind(&n.last_error)
    .bind(ts(n.dedupe_until))
    .bind(n.context.to_string())
    .bind(&n.digest_id)
    .execute(&mut *conn)
    .await
    .map_err(write_err)?
    .rows_affected();
    Ok(inserted == 1)
}

/// Appends one event inside the caller's transaction (the single writer keeps ids in commit
/// order on SQLite).
async fn insert_event(
    conn: &mut SqliteConnection,
    session_id: Option<&SessionId>,
    kind: &str,
    data: &serde_json::Value,
    at: DateTime<Utc>,
) -> StoreResult<EventRecord> {
    let row = sqlx::query(concat!(
        "INSERT INTO events (session_id, kind, data, at) VALUES ($1, $2, $3, $4) RETURNING ",
        event_columns!()
    ))
    .bind(session_id.map(SessionId::as_str))
    .bind(kind)
    .bind(data.to_string())
    .bind(ts(at))
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| match (&e, session_id) {
        (sqlx::Error::Database(d), Some(id)) if d.is_foreign_key_violation() => {
            session_not_found(id)
        }
        _ => write_err(e),
    })?;
    event_from_row(&row)
}

// ---- the store -------------------------------------------------------------------------------

#[async_trait]
impl Store for SqliteStore {
    #[tracing::instrument(skip_all)]
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(prefix = %new.prefix))]
    async fn create_session(&self, new: &NewSession) -> StoreResult<(SessionRecord, EventRecord)> {
        let mut tx = self.begin_write().await?;
        let number = if new.fixed_id.is_some() {
            // A fixed id (the orchestrator's) is reserved by the primary key alone.
            0
        } else {
            loop {
                let n: i64 = sqlx::query_scalar(
                    "INSERT INTO session_counters (prefix, last_number) VALUES ($1, 1) \
                 ON CONFLICT (prefix) DO UPDATE SET last_number = session_counters.last_number + 1 \
                 RETURNING last_number",
                )
                .bind(&new.prefix)
                .fetch_one(&mut *tx)
                .await?;
                if !new.skip_numbers.contains(&n) {
                    break n;
                }
            }
        };
        let id = match &new.fixed_id {
            Some(fixed) => SessionId(fixed.clone()),
            None => SessionId::new(&new.prefix, number),
        };
        let row = sqlx::query(concat!(
            "INSERT INTO sessions (id, prefix, number, project, state, agent, runtime, \
             workspace_kind, branch, issue, prompt, activity, restart_count, created_at, \
             updated_at, meta) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, $13, $13, $14) RETURNING ",
            session_columns!()
        ))
        .bind(id.as_str())
        .bind(&new.prefix)
        .bind(number)
        .bind(&new.project)
        .bind(SessionState::Spawning.as_str())
        .bind(&new.agent)
        .bind(&new.runtime)
        .bind(&new.workspace_kind)
        .bind(&new.branch)
        .bind(&new.issue)
        .bind(&new.prompt)
        .bind(activity_str(Default::default()))
        .bind(ts(new.at))
        .bind(meta_of(new).to_string())
        .fetch_one(&mut *tx)
        .await
        .map_err(write_err)?;
        let session = session_from_row(&row)?;
        let data = serde_json::json!({
            "project": new.project,
            "agent": new.agent,
            "state": SessionState::Spawning.as_str(),
        });
        let event = insert_event(&mut tx, Some(&id), "session.created", &data, new.at).await?;
        tx.commit().await?;
        Ok((session, event))
    }

    #[tracing::instrument(skip_all, fields(id = %id))]
    async fn load_session(&self, id: &SessionId) -> StoreResult<SessionRecord> {
        let row = sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| session_not_found(id))?;
        session_from_row(&row)
    }

    #[tracing::instrument(skip_all, fields(id = %id))]
    async fn load_snapshot(&self, id: &SessionId) -> StoreResult<SessionSnapshot> {
        // One read transaction: the three reads see the same commit.
        let mut tx = self.read.begin().await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| session_not_found(id))?;
        let session = session_from_row(&row)?;
        let trackers = sqlx::query(
            "SELECT reaction, attempts, first_triggered_at, last_triggered_at, fingerprint, \
             escalated FROM reaction_trackers WHERE session_id = $1 ORDER BY reaction",
        )
        .bind(id.as_str())
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| tracker_from_row(r).map(|t| (t.reaction.clone(), t)))
        .collect::<StoreResult<_>>()?;
        let timers =
            sqlx::query("SELECT kind, deadline FROM timers WHERE session_id = $1 ORDER BY kind")
                .bind(id.as_str())
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| timer_from_row(r).map(|t| (t.kind.clone(), t)))
                .collect::<StoreResult<_>>()?;
        tx.commit().await?;
        Ok(SessionSnapshot {
            session,
            trackers,
            timers,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn list_sessions(&self, filter: &SessionFilter) -> StoreResult<Vec<SessionRecord>> {
        let mut qb = QueryBuilder::<Sqlite>::new(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE 1 = 1"
        ));
        if let Some(project) = &filter.project {
            qb.push(" AND project = ").push_bind(project);
        }
        if !filter.states.is_empty() {
            qb.push(" AND state IN (");
            let mut list = qb.separated(", ");
            for state in &filter.states {
                list.push_bind(state.as_str());
            }
            qb.push(")");
        }
        if filter.active_only {
            qb.push(" AND state NOT IN (");
            let mut list = qb.separated(", ");
            for state in terminal_states() {
                list.push_bind(state.as_str());
            }
            qb.push(")");
        }
        qb.push(" ORDER BY created_at, number, id");
        qb.build()
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(session_from_row)
            .collect()
    }

    #[tracing::instrument(skip_all)]
    async fn count_by_state(&self) -> StoreResult<Vec<(SessionState, i64)>> {
        let mut counts = sqlx::query("SELECT state, COUNT(*) AS n FROM sessions GROUP BY state")
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(|r| Ok((parse_state(&get::<String>(r, "state")?)?, get(r, "n")?)))
            .collect::<StoreResult<Vec<_>>>()?;
        counts.sort();
        Ok(counts)
    }

    #[tracing::instrument(skip_all, fields(id = %commit.snapshot.session.id))]
    async fn commit_transition(&self, commit: &TransitionCommit) -> StoreResult<EventRecord> {
        let s = &commit.snapshot.session;
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE sessions SET project = $2, state = $3, reason = $4, agent = $5, \
             runtime = $6, workspace_kind = $7, branch = $8, workspace = $9, pr_number = $10, \
             pr_url = $11, issue = $12, prompt = $13, runtime_handle = $14, activity = $15, \
             activity_at = $16, restart_count = $17, updated_at = $18, meta = $19 WHERE id = $1",
        )
        .bind(s.id.as_str())
        .bind(&s.project)
        .bind(s.state.as_str())
        .bind(&s.reason)
        .bind(&s.agent)
        .bind(&s.runtime)
        .bind(&s.workspace_kind)
        .bind(&s.branch)
        .bind(&s.workspace)
        .bind(s.pr.as_ref().map(|p| p.number))
        .bind(s.pr.as_ref().map(|p| p.url.as_str()))
        .bind(&s.issue)
        .bind(&s.prompt)
        .bind(s.runtime_handle.as_ref().map(|v| v.to_string()))
        .bind(activity_str(s.activity))
        .bind(opt_ts(s.activity_at))
        .bind(s.restart_count)
        .bind(ts(s.updated_at))
        .bind(s.meta.to_string())
        .execute(&mut *tx)
        .await
        .map_err(write_err)?
        .rows_affected();
        if updated == 0 {
            tx.rollback().await?;
            return Err(session_not_found(&s.id));
        }

        sqlx::query("DELETE FROM reaction_trackers WHERE session_id = $1")
            .bind(s.id.as_str())
            .execute(&mut *tx)
            .await?;
        for (reaction, t) in &commit.snapshot.trackers {
            sqlx::query(
                "INSERT INTO reaction_trackers (session_id, reaction, attempts, \
                 first_triggered_at, last_triggered_at, fingerprint, escalated) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(s.id.as_str())
            .bind(reaction)
            .bind(t.attempts)
            .bind(ts(t.first_triggered_at))
            .bind(ts(t.last_triggered_at))
            .bind(&t.fingerprint)
            .bind(t.escalated)
            .execute(&mut *tx)
            .await
            .map_err(write_err)?;
        }

        sqlx::query("DELETE FROM timers WHERE session_id = $1")
            .bind(s.id.as_str())
            .execute(&mut *tx)
            .await?;
        for (kind, t) in &commit.snapshot.timers {
            sqlx::query("INSERT INTO timers (session_id, kind, deadline) VALUES ($1, $2, $3)")
                .bind(s.id.as_str())
                .bind(kind)
                .bind(ts(t.deadline))
                .execute(&mut *tx)
                .await
                .map_err(write_err)?;
        }

        for n in &commit.notifications {
            insert_notification(&mut tx, n).await?;
        }

        let e = &commit.event;
        let event = insert_event(&mut tx, e.session_id.as_ref(), &e.kind, &e.data, e.at).await?;
        tx.commit().await?;
        Ok(event)
    }

    #[tracing::instrument(skip_all, fields(kind = %event.kind))]
    async fn append_event(&self, event: &NewEvent) -> StoreResult<EventRecord> {
        let mut tx = self.begin_write().await?;
        let record = insert_event(
            &mut tx,
            event.session_id.as_ref(),
            &event.kind,
            &event.data,
            event.at,
        )
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    #[tracing::instrument(skip_all)]
    async fn events_after(&self, after: i64, limit: i64) -> StoreResult<Vec<EventRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after)
        .bind(clamp_limit(limit))
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(event_from_row)
        .collect()
    }

    #[tracing::instrument(skip_all, fields(id = %id))]
    async fn session_events(
        &self,
        id: &SessionId,
        after: i64,
        limit: i64,
    ) -> StoreResult<Vec<EventRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE session_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        ))
        .bind(id.as_str())
        .bind(after)
        .bind(clamp_limit(limit))
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(event_from_row)
        .collect()
    }

    #[tracing::instrument(skip_all)]
    async fn last_event_id(&self) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events")
                .fetch_one(&self.read)
                .await?,
        )
    }

    #[tracing::instrument(skip_all)]
    async fn last_project_event_id(&self, project: &str, kind: &str) -> StoreResult<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT MAX(e.id) FROM events e JOIN sessions s ON s.id = e.session_id \
             WHERE s.project = $1 AND e.kind = $2",
        )
        .bind(project)
        .bind(kind)
        .fetch_one(&self.read)
        .await?)
    }

    #[tracing::instrument(skip_all)]
    async fn latest_session_events(&self) -> StoreResult<Vec<EventRecord>> {
        // One index probe per session (events_session_idx), not a scan of the whole log.
        sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE id IN (SELECT (SELECT MAX(e.id) FROM events e \
             WHERE e.session_id = s.id) FROM sessions s) ORDER BY id"
        ))
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(event_from_row)
        .collect()
    }

    #[tracing::instrument(skip_all)]
    async fn list_trackers(&self) -> StoreResult<Vec<(SessionId, ReactionTracker)>> {
        sqlx::query(
            "SELECT session_id, reaction, attempts, first_triggered_at, last_triggered_at, \
             fingerprint, escalated FROM reaction_trackers ORDER BY session_id, reaction",
        )
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(|r| Ok((SessionId(get(r, "session_id")?), tracker_from_row(r)?)))
        .collect()
    }

    #[tracing::instrument(skip_all, fields(platform = %delivery.platform))]
    async fn record_webhook_delivery(&self, delivery: &WebhookDelivery) -> StoreResult<bool> {
        let inserted = sqlx::query(
            "INSERT INTO webhook_deliveries (platform, delivery_id, event, payload, received_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (platform, delivery_id) DO NOTHING",
        )
        .bind(&delivery.platform)
        .bind(&delivery.delivery_id)
        .bind(&delivery.event)
        .bind(&delivery.payload)
        .bind(ts(delivery.received_at))
        .execute(&self.write)
        .await
        .map_err(write_err)?
        .rows_affected();
        Ok(inserted == 1)
    }

    #[tracing::instrument(skip_all)]
    async fn upsert_conversation(
        &self,
        platform: &str,
        thread: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<ConversationRecord> {
        let id = format!("{platform}:{thread}");
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO conversations (id, platform, thread, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&id)
        .bind(platform)
        .bind(thread)
        .bind(ts(at))
        .execute(&mut *tx)
        .await
        .map_err(write_err)?;
        let row = sqlx::query(concat!(
            "SELECT ",
            conversation_columns!(),
            " FROM conversations WHERE id = $1"
        ))
        .bind(&id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        conversation_from_row(&row)
    }

    #[tracing::instrument(skip_all)]
    async fn list_conversations(&self) -> StoreResult<Vec<ConversationRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            conversation_columns!(),
            " FROM conversations ORDER BY updated_at DESC, id"
        ))
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(conversation_from_row)
        .collect()
    }

    #[tracing::instrument(skip_all)]
    async fn set_resume_id(
        &self,
        conversation_id: &str,
        resume_id: Option<&str>,
    ) -> StoreResult<()> {
        let updated =
            sqlx::query("UPDATE conversations SET resume_id = $2, updated_at = $3 WHERE id = $1")
                .bind(conversation_id)
                .bind(resume_id)
                .bind(ts(Utc::now()))
                .execute(&self.write)
                .await?
                .rows_affected();
        if updated == 0 {
            return Err(StoreError::NotFound {
                what: format!("conversation {conversation_id}"),
            });
        }
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn enqueue_chat_message(
        &self,
        conversation_id: &str,
        platform_message_id: &str,
        author: &str,
        body: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<ChatMessageRecord>> {
        self.enqueue_chat_message_with_meta(
            conversation_id,
            platform_message_id,
            author,
            body,
            &BTreeMap::new(),
            at,
        )
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn enqueue_chat_message_with_meta(
        &self,
        conversation_id: &str,
        platform_message_id: &str,
        author: &str,
        body: &str,
        meta: &BTreeMap<String, String>,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<ChatMessageRecord>> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(concat!(
            "INSERT INTO chat_messages (conversation_id, platform_message_id, author, body, \
             status, received_at, meta) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (conversation_id, platform_message_id) DO NOTHING RETURNING ",
            message_columns!()
        ))
        .bind(conversation_id)
        .bind(platform_message_id)
        .bind(author)
        .bind(body)
        .bind(MessageStatus::Queued.as_str())
        .bind(ts(at))
        .bind(serde_json::to_string(meta).unwrap_or_else(|_| "{}".into()))
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_foreign_key_violation() => StoreError::NotFound {
                what: format!("conversation {conversation_id}"),
            },
            _ => write_err(e),
        })?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let message = message_from_row(&row)?;
        // A new message is what makes a conversation "recently updated".
        sqlx::query("UPDATE conversations SET updated_at = $2 WHERE id = $1 AND updated_at < $2")
            .bind(conversation_id)
            .bind(ts(at))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(message))
    }

    #[tracing::instrument(skip_all)]
    async fn next_chat_message(
        &self,
        conversation_id: &str,
    ) -> StoreResult<Option<ChatMessageRecord>> {
        // The status literals match the partial index's predicate.
        sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            " FROM chat_messages WHERE conversation_id = $1 \
             AND status IN ('queued', 'running') ORDER BY id LIMIT 1"
        ))
        .bind(conversation_id)
        .fetch_optional(&self.read)
        .await?
        .as_ref()
        .map(message_from_row)
        .transpose()
    }

    #[tracing::instrument(skip_all)]
    async fn set_chat_message_status(&self, id: i64, status: MessageStatus) -> StoreResult<()> {
        let now = Utc::now();
        let started = (status == MessageStatus::Running).then_some(now);
        let finished = matches!(status, MessageStatus::Done | MessageStatus::Failed).then_some(now);
        let updated = sqlx::query(
            "UPDATE chat_messages SET status = $2, started_at = COALESCE($3, started_at), \
             finished_at = COALESCE($4, finished_at) WHERE id = $1",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(opt_ts(started))
        .bind(opt_ts(finished))
        .execute(&self.write)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(StoreError::NotFound {
                what: format!("chat message {id}"),
            });
        }
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn get_conversation(&self, id: &str) -> StoreResult<ConversationRecord> {
        let row = sqlx::query(concat!(
            "SELECT ",
            conversation_columns!(),
            " FROM conversations WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: format!("conversation {id}"),
        })?;
        conversation_from_row(&row)
    }

    #[tracing::instrument(skip_all)]
    async fn update_conversation(&self, c: &ConversationRecord) -> StoreResult<()> {
        let updated = sqlx::query(
            "UPDATE conversations SET resume_id = $2, cwd = $3, codebase = $4, worktree = $5, \
             last_command = $6, updated_at = $7 WHERE id = $1",
        )
        .bind(&c.id)
        .bind(&c.resume_id)
        .bind(&c.cwd)
        .bind(&c.codebase)
        .bind(&c.worktree)
        .bind(&c.last_command)
        .bind(ts(Utc::now()))
        .execute(&self.write)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(StoreError::NotFound {
                what: format!("conversation {}", c.id),
            });
        }
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn conversations_with_worktree(&self, worktree: &str) -> StoreResult<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM conversations WHERE worktree = $1 ORDER BY id")
                .bind(worktree)
                .fetch_all(&self.read)
                .await?,
        )
    }

    #[tracing::instrument(skip_all)]
    async fn conversation_spend(&self, conversation_id: &str) -> StoreResult<f64> {
        Ok(sqlx::query_scalar::<_, f64>(
            "SELECT COALESCE(SUM(CAST(json_extract(data, '$.usage.cost_usd') AS REAL)), 0.0) FROM events WHERE kind = $1 AND json_extract(data, '$.conversation') = $2",
        )
        .bind(super::CHAT_TURN_USAGE)
        .bind(conversation_id)
        .fetch_one(&self.read)
        .await?)
    }

    #[tracing::instrument(skip_all)]
    async fn pending_chat_messages(
        &self,
        conversation_id: &str,
    ) -> StoreResult<Vec<ChatMessageRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            " FROM chat_messages WHERE conversation_id = $1 \
             AND status IN ('queued', 'running') ORDER BY id"
        ))
        .bind(conversation_id)
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(message_from_row)
        .collect()
    }

    #[tracing::instrument(skip_all)]
    async fn chat_activity(&self) -> StoreResult<ChatActivity> {
        let latest = sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            " FROM chat_messages WHERE id IN \
             (SELECT MAX(id) FROM chat_messages GROUP BY conversation_id) ORDER BY id"
        ))
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(message_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
        let pending: Vec<(String, i64)> = sqlx::query_as(
            "SELECT conversation_id, COUNT(*) FROM chat_messages \
             WHERE status IN ('queued', 'running') GROUP BY conversation_id",
        )
        .fetch_all(&self.read)
        .await?;
        Ok(ChatActivity {
            latest,
            pending: pending.into_iter().collect(),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn upsert_chat_template(&self, t: &ChatTemplateRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO chat_templates (name, description, content, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET \
             description = excluded.description, content = excluded.content, \
             updated_at = excluded.updated_at",
        )
        .bind(&t.name)
        .bind(&t.description)
        .bind(&t.content)
        .bind(ts(t.updated_at))
        .execute(&self.write)
        .await
        .map_err(write_err)?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn get_chat_template(&self, name: &str) -> StoreResult<Option<ChatTemplateRecord>> {
        sqlx::query(
            "SELECT name, description, content, updated_at FROM chat_templates WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.read)
        .await?
        .as_ref()
        .map(template_from_row)
        .transpose()
    }

    #[tracing::instrument(skip_all)]
    async fn list_chat_templates(&self) -> StoreResult<Vec<ChatTemplateRecord>> {
        sqlx::query(
            "SELECT name, description, content, updated_at FROM chat_templates ORDER BY name",
        )
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(template_from_row)
        .collect()
    }

    #[tracing::instrument(skip_all)]
    async fn delete_chat_template(&self, name: &str) -> StoreResult<bool> {
        Ok(sqlx::query("DELETE FROM chat_templates WHERE name = $1")
            .bind(name)
            .execute(&self.write)
            .await?
            .rows_affected()
            == 1)
    }

    #[tracing::instrument(skip_all)]
    async fn add_codebase_commands(
        &self,
        codebase: &str,
        commands: &BTreeMap<String, String>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        for (name, path) in commands {
            sqlx::query(
                "INSERT INTO chat_codebase_commands (codebase, name, path) VALUES ($1, $2, $3) \
                 ON CONFLICT (codebase, name) DO UPDATE SET path = excluded.path",
            )
            .bind(codebase)
            .bind(name)
            .bind(path)
            .execute(&mut *tx)
            .await
            .map_err(write_err)?;
        }
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn codebase_commands(&self, codebase: &str) -> StoreResult<BTreeMap<String, String>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, path FROM chat_codebase_commands WHERE codebase = $1 ORDER BY name",
        )
        .bind(codebase)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.into_iter().collect())
    }

    #[tracing::instrument(skip_all)]
    async fn link_session_to_conversation(
        &self,
        session_id: &str,
        conversation_id: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO chat_session_links (session_id, conversation_id) VALUES ($1, $2) \
             ON CONFLICT (session_id) DO UPDATE SET conversation_id = excluded.conversation_id",
        )
        .bind(session_id)
        .bind(conversation_id)
        .execute(&self.write)
        .await
        .map_err(write_err)?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn conversation_for_session(&self, session_id: &str) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT conversation_id FROM chat_session_links WHERE session_id = $1",
        )
        .bind(session_id)
        .fetch_optional(&self.read)
        .await?)
    }

    #[tracing::instrument(skip_all)]
    async fn conversations_with_pending(&self) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT conversation_id FROM chat_messages \
             WHERE status IN ('queued', 'running') ORDER BY conversation_id",
        )
        .fetch_all(&self.read)
        .await?)
    }

    #[tracing::instrument(skip_all)]
    async fn enqueue_notification(&self, n: &NotificationRecord) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let inserted = insert_notification(&mut tx, n).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    #[tracing::instrument(skip_all)]
    async fn due_notifications(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<NotificationRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            notification_columns!(),
            " FROM notifications WHERE status = $1 AND next_attempt_at <= $2 \
             ORDER BY created_at, id LIMIT $3"
        ))
        .bind(NotificationStatus::Pending.as_str())
        .bind(ts(now))
        .bind(clamp_limit(limit))
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(notification_from_row)
        .collect()
    }

    #[tracing::instrument(skip_all)]
    async fn update_notification(
        &self,
        id: &str,
        status: NotificationStatus,
        attempts: i64,
        next_attempt_at: DateTime<Utc>,
        last_error: Option<&str>,
    ) -> StoreResult<()> {
        let updated = sqlx::query(
            "UPDATE notifications SET status = $2, attempts = $3, next_attempt_at = $4, \
             last_error = $5 WHERE id = $1",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(attempts)
        .bind(ts(next_attempt_at))
        .bind(last_error)
        .execute(&self.write)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(StoreError::NotFound {
                what: format!("notification {id}"),
            });
        }
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn list_notifications(
        &self,
        status: Option<NotificationStatus>,
        limit: i64,
    ) -> StoreResult<Vec<NotificationRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            notification_columns!(),
            " FROM notifications WHERE ($1 IS NULL OR status = $1) \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        ))
        .bind(status.map(NotificationStatus::as_str))
        .bind(clamp_limit(limit))
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(notification_from_row)
        .collect()
    }

    #[tracing::instrument(skip_all)]
    async fn count_notifications(&self) -> StoreResult<Vec<(NotificationStatus, i64)>> {
        sqlx::query("SELECT status, COUNT(*) AS n FROM notifications GROUP BY status")
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(|r| {
                Ok((
                    parse_notification_status(&get::<String>(r, "status")?)?,
                    get(r, "n")?,
                ))
            })
            .collect()
    }

    #[tracing::instrument(skip_all, fields(n = ids.len()))]
    async fn defer_notifications(&self, ids: &[String], until: DateTime<Utc>) -> StoreResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut q = QueryBuilder::<Sqlite>::new("UPDATE notifications SET next_attempt_at = ");
        q.push_bind(ts(until))
            .push(" WHERE status = ")
            .push_bind(NotificationStatus::Pending.as_str())
            .push(" AND id IN (");
        let mut list = q.separated(", ");
        for id in ids {
            list.push_bind(id);
        }
        q.push(")");
        Ok(q.build().execute(&self.write).await?.rows_affected())
    }

    #[tracing::instrument(skip_all, fields(n = members.len()))]
    async fn fold_into_digest(
        &self,
        digest: &NotificationRecord,
        members: &[String],
    ) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        if !insert_notification(&mut tx, digest).await? {
            tx.rollback().await?;
            return Err(StoreError::Conflict(format!(
                "digest {} could not be written",
                digest.id
            )));
        }
        let mut folded = 0;
        if !members.is_empty() {
            let mut q = QueryBuilder::<Sqlite>::new("UPDATE notifications SET status = ");
            q.push_bind(NotificationStatus::Digested.as_str())
                .push(", digest_id = ")
                .push_bind(&digest.id)
                .push(" WHERE status = ")
                .push_bind(NotificationStatus::Pending.as_str())
                .push(" AND id IN (");
            let mut list = q.separated(", ");
            for id in members {
                list.push_bind(id);
            }
            q.push(")");
            folded = q.build().execute(&mut *tx).await?.rows_affected();
        }
        if usize::try_from(folded).ok() != Some(members.len()) {
            // A member is no longer pending (delivered or folded meanwhile): listing it in the
            // digest would send it twice.
            tx.rollback().await?;
            return Err(StoreError::Conflict(format!(
                "only {folded} of {} digest members are pending",
                members.len()
            )));
        }
        tx.commit().await?;
        Ok(folded)
    }
}

/// A new session's meta: its object, or `{}`.
fn meta_of(new: &NewSession) -> serde_json::Value {
    if new.meta.is_object() {
        new.meta.clone()
    } else {
        serde_json::json!({})
    }
}
