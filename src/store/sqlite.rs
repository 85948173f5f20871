//! The embedded SQLite backend (WAL): its dialect and how it is opened.
//!
//! SQLite allows one writer at a time, and a deferred transaction that first reads and then
//! writes can fail with `SQLITE_BUSY` when it upgrades its lock, whatever the busy timeout. So
//! every write goes through a dedicated pool of **one** connection and starts with
//! `BEGIN IMMEDIATE` (writers queue in the pool, not in SQLite), while reads use a separate
//! pool of several connections that WAL lets run alongside the writer. An in-memory database
//! (`sqlite::memory:`) lives in a single connection, so it gets one pool for both. The single
//! writer also keeps event ids in commit order.
//!
//! Timestamps are TEXT in RFC 3339 with exactly six fractional digits and a `+00:00` offset,
//! so comparing and ordering them as text is comparing them as times. JSON is TEXT.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};
use sqlx::Sqlite;

use super::sql::{end_abandoned_transaction, Dialect, RowsAffected, SqlStore};
use super::{StoreError, StoreResult};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How many connections serve reads on a file database.
const READ_CONNECTIONS: u32 = 4;
/// How long SQLite waits on a lock held by another process before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a caller waits for a pooled connection (the writer may be queued behind others).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// What SQLite does its own way.
#[derive(Debug, Clone, Copy)]
pub struct SqliteDialect;

/// The SQLite store.
pub type SqliteStore = SqlStore<SqliteDialect>;

impl RowsAffected for SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        SqliteQueryResult::rows_affected(self)
    }
}

impl Dialect for SqliteDialect {
    type Db = Sqlite;
    type Ts = String;
    type Json = String;
    const NAME: &'static str = "SqliteStore";
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const BEGIN_SNAPSHOT: &'static str = "BEGIN";
    const LOCK_EVENT_LOG: Option<(&'static str, i64)> = None;
    const NOW_MS: &'static str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";
    const SKIP_LOCKED: &'static str = "";
    const NOTIFIES: bool = false;
    const CONVERSATION_SPEND_SQL: &'static str =
        "SELECT COALESCE(SUM(CAST(json_extract(data, '$.usage.cost_usd') AS REAL)), 0.0) \
         FROM events WHERE kind = $1 AND json_extract(data, '$.conversation') = $2";

    /// The one timestamp format written: fixed width, UTC, microseconds.
    fn ts(t: DateTime<Utc>) -> String {
        t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
    }

    fn read_ts(column: &str, s: String) -> StoreResult<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| StoreError::Corrupt(format!("column `{column}`: timestamp `{s}`: {e}")))
    }

    fn json(v: &serde_json::Value) -> String {
        v.to_string()
    }

    fn read_json(column: &str, s: String) -> StoreResult<serde_json::Value> {
        serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("column `{column}`: {e}")))
    }
}

/// Opens (creating it and its directory if missing) the database at `url`
/// (`sqlite://PATH`, `sqlite:PATH` or `sqlite::memory:`) and runs the migrations.
///
/// # Errors
/// `Database` when the URL is malformed or the file cannot be opened or created;
/// `Migrate` when the migrations fail.
pub async fn open(url: &str) -> StoreResult<SqliteStore> {
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
            .after_release(end_abandoned_transaction::<Sqlite>)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        return Ok(SqlStore::new(pool.clone(), pool, url));
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
        .after_release(end_abandoned_transaction::<Sqlite>)
        .connect_with(options.clone())
        .await?;
    MIGRATOR.run(&write).await?;
    let read = SqlitePoolOptions::new()
        .max_connections(READ_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_release(end_abandoned_transaction::<Sqlite>)
        .connect_with(options)
        .await?;
    Ok(SqlStore::new(write, read, url))
}

fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}
