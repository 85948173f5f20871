//! The PostgreSQL backend: its dialect and how it is opened.
//!
//! Event ids come from a sequence, which hands them out in call order, not commit order: two
//! transactions could take ids 7 and 8 and commit 8 first, and a reader resuming "after 8"
//! would never see 7. So every transaction that inserts into `events` first takes a
//! transaction-level advisory lock ([`EVENT_LOG_LOCK`]), held until it commits: event-writing
//! transactions commit one at a time, in id order. Everything before the lock (the session row,
//! trackers, timers, the id counter) still runs concurrently.
//!
//! JSON columns are JSONB; timestamps are TIMESTAMPTZ (microseconds).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPoolOptions, PgQueryResult};
use sqlx::Postgres;

use super::sql::{end_abandoned_transaction, Dialect, RowsAffected, SqlStore};
use super::StoreResult;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Key of the advisory lock serializing the commits of event-inserting transactions
/// (`"Flotilla"` in ASCII). Any process writing events to this database must take it.
pub const EVENT_LOG_LOCK: i64 = 0x466c_6f74_696c_6c61;
/// Upper bound of pooled connections.
const MAX_CONNECTIONS: u32 = 16;
/// How long a caller waits for a pooled connection before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// What PostgreSQL does its own way.
#[derive(Debug, Clone, Copy)]
pub struct PostgresDialect;

/// The PostgreSQL store.
pub type PostgresStore = SqlStore<PostgresDialect>;

impl RowsAffected for PgQueryResult {
    fn rows_affected(&self) -> u64 {
        PgQueryResult::rows_affected(self)
    }
}

impl Dialect for PostgresDialect {
    type Db = Postgres;
    type Ts = DateTime<Utc>;
    type Json = serde_json::Value;
    const NAME: &'static str = "PostgresStore";
    const BEGIN_WRITE: &'static str = "BEGIN";
    const BEGIN_SNAPSHOT: &'static str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
    const LOCK_EVENT_LOG: Option<(&'static str, i64)> =
        Some(("SELECT pg_advisory_xact_lock($1)", EVENT_LOG_LOCK));
    const NOW_MS: &'static str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    const NOTIFIES: bool = true;
    const CONVERSATION_SPEND_SQL: &'static str =
        "SELECT COALESCE(SUM((data->'usage'->>'cost_usd')::float8), 0.0)::float8 \
         FROM events WHERE kind = $1 AND data->>'conversation' = $2";

    fn ts(t: DateTime<Utc>) -> DateTime<Utc> {
        t
    }

    fn read_ts(_column: &str, t: DateTime<Utc>) -> StoreResult<DateTime<Utc>> {
        Ok(t)
    }

    fn json(v: &serde_json::Value) -> serde_json::Value {
        v.clone()
    }

    fn read_json(_column: &str, v: serde_json::Value) -> StoreResult<serde_json::Value> {
        Ok(v)
    }
}

/// Connects to the database at `url` (`postgres://…`; the database must exist) and runs the
/// migrations. Reads and writes share one pool.
///
/// # Errors
/// `Database` when the URL is malformed or the server cannot be reached;
/// `Migrate` when the migrations fail.
pub async fn open(url: &str) -> StoreResult<PostgresStore> {
    let pool = PgPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_release(end_abandoned_transaction::<Postgres>)
        .connect(url)
        .await?;
    MIGRATOR.run(&pool).await?;
    Ok(SqlStore::new(pool.clone(), pool, url))
}
