//! Reading OpenCode's own record of its sessions: the SQLite database OpenCode 1.18 keeps at
//! `$OPENCODE_DB`, else `$XDG_DATA_HOME/opencode/opencode.db` (default
//! `$HOME/.local/share/opencode/opencode.db`), as the agent process sees those variables. Its
//! `session` table has one row per conversation with the `directory` it ran in and running
//! totals (`cost`, `tokens_input` (without cache reads), `tokens_output` and
//! `tokens_reasoning` (apart; both priced as output), `tokens_cache_read`,
//! `tokens_cache_write`). Opened read-only with a timeout; a database
//! without that table or those columns (another OpenCode version) reads as nothing, not as an
//! error. The connection is kept between looks ([`Databases`]): a look reads the database
//! twice (activity and usage), up to twice a second per working session, and each new SQLite
//! connection costs a thread and an open.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{Row, Sqlite};

use super::recent::Recent;
use crate::plugins::activity::{agent_home, ApiFailure, Reading, Usage};
use crate::plugins::{PluginError, PluginResult};

/// How long one read of the database may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Where OpenCode keeps its database for an agent with environment `env`.
pub fn db_path(env: &BTreeMap<String, String>) -> Option<PathBuf> {
    let nonempty = |k: &str| {
        env.get(k)
            .cloned()
            .or_else(|| std::env::var(k).ok())
            .filter(|v| !v.is_empty())
    };
    if let Some(db) = nonempty("OPENCODE_DB").filter(|d| Path::new(d).is_absolute()) {
        return Some(PathBuf::from(db));
    }
    let data = match nonempty("XDG_DATA_HOME") {
        Some(d) => PathBuf::from(d),
        None => agent_home(env)?.join(".local/share"),
    };
    Some(data.join("opencode/opencode.db"))
}

/// The newest top-level conversation of a directory (`?1`).
const NEWEST_SESSION: &str = "SELECT id FROM session WHERE directory = ?1 AND parent_id IS NULL \
     ORDER BY time_updated DESC LIMIT 1";

/// How many databases' connections are kept (the least recently read goes first).
const KEPT: usize = 64;

/// How long a kept connection may sit unused before it is closed (a fleet at rest holds no
/// file of OpenCode's open).
const IDLE: Duration = Duration::from_secs(30);

/// Read-only connections to the OpenCode databases an agent's sessions use, kept between
/// looks (at most [`KEPT`] databases). A database replaced by another file (another inode)
/// gets new connections.
#[derive(Debug, Clone)]
pub struct Databases(Arc<Mutex<Recent<Pool>>>);

impl Default for Databases {
    fn default() -> Self {
        Databases(Arc::new(Mutex::new(Recent::new(KEPT))))
    }
}

/// A database's connections, with the file they were opened on.
#[derive(Debug)]
struct Pool {
    file: Option<(u64, u64)>,
    pool: SqlitePool,
}

impl Databases {
    /// The pool for `db`, whose file is `file`.
    fn pool(&self, db: &Path, file: Option<(u64, u64)>) -> SqlitePool {
        let mut kept = match self.0.lock() {
            Ok(k) => k,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(p) = kept.get_mut(db).filter(|p| p.file == file) {
            return p.pool.clone();
        }
        let pool = SqlitePoolOptions::new()
            .min_connections(0)
            .max_connections(2)
            .idle_timeout(IDLE)
            .acquire_timeout(TIMEOUT)
            .test_before_acquire(false)
            .connect_lazy_with(SqliteConnectOptions::new().filename(db).read_only(true));
        kept.insert(
            db,
            Pool {
                file,
                pool: pool.clone(),
            },
        );
        pool
    }
}

/// Runs `query` on a read-only connection to `db`, within [`TIMEOUT`]. `None` when there is no
/// database, or when it is not readable as 1.18's (another version's schema).
async fn read<T, F, Fut>(dbs: &Databases, db: &Path, query: F) -> PluginResult<Option<T>>
where
    F: FnOnce(PoolConnection<Sqlite>) -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let Ok(meta) = tokio::fs::metadata(db).await else {
        return Ok(None);
    };
    let pool = dbs.pool(db, super::log_tally::identity(&meta));
    let run = async {
        let conn = pool.acquire().await?;
        query(conn).await
    };
    match tokio::time::timeout(TIMEOUT, run).await {
        Err(_) => Err(PluginError::Timeout {
            what: format!("reading {}", db.display()),
            after: TIMEOUT,
        }),
        Ok(Err(e)) => {
            tracing::debug!(db = %db.display(), error = %e, "opencode database not readable as 1.18's");
            Ok(None)
        }
        Ok(Ok(v)) => Ok(Some(v)),
    }
}

/// The errors OpenCode 1.18.33 records on a tool call a human refused (its
/// `PermissionRejectedError` and `QuestionRejectedError`): its loop stops on them, so the step
/// that called the tool is the turn's last although it finished to call tools.
const REFUSALS: [&str; 2] = [
    "The user rejected permission to use this specific tool call.",
    "The user dismissed this question",
];

/// Where the newest conversation run in `workspace` stands, from its newest message: a user
/// message, or an assistant message not completed or completed to call tools (OpenCode's
/// `finish: "tool-calls"`, another step follows), is work going on since the message last
/// changed; an assistant message completed otherwise (`stop`, a length cut, an error), or one
/// whose tool call a human refused (see [`REFUSALS`]), ended the turn at its completion.
/// `None` without a database or a conversation there.
pub async fn last_turn(
    dbs: &Databases,
    db: &Path,
    workspace: &Path,
) -> PluginResult<Option<Reading>> {
    let dir = workspace.to_string_lossy().into_owned();
    let newest = read(dbs, db, |mut conn| async move {
        let Some(session): Option<String> = sqlx::query_scalar(NEWEST_SESSION)
            .bind(&dir)
            .fetch_optional(&mut *conn)
            .await?
        else {
            return Ok(None);
        };
        let Some((id, data, updated)) = sqlx::query_as::<_, (String, String, i64)>(
            "SELECT id, data, time_updated FROM message WHERE session_id = ?1 \
             ORDER BY time_created DESC, id DESC LIMIT 1",
        )
        .bind(session)
        .fetch_optional(&mut *conn)
        .await?
        else {
            return Ok(None);
        };
        let message: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
        // Only a step that called tools can have stopped on a refusal.
        let parts: Vec<String> = if message["finish"] == "tool-calls" {
            sqlx::query_scalar("SELECT data FROM part WHERE message_id = ?1")
                .bind(&id)
                .fetch_all(&mut *conn)
                .await?
        } else {
            Vec::new()
        };
        let refused = parts.iter().any(|p| refused_call(p));
        Ok(Some((message, refused, updated)))
    });
    Ok(newest
        .await?
        .flatten()
        .and_then(|(message, refused, updated)| reading(&message, refused, updated)))
}

/// Whether a message part (its `data` JSON) is a tool call a human refused.
fn refused_call(part: &str) -> bool {
    let Ok(part) = serde_json::from_str::<serde_json::Value>(part) else {
        return false;
    };
    let state = &part["state"];
    part["type"] == "tool"
        && state["status"] == "error"
        && state["error"]
            .as_str()
            .is_some_and(|e| REFUSALS.contains(&e.trim()))
}

/// The [`Reading`] of a conversation whose newest message is `message` (OpenCode's `data`
/// JSON), last updated at `updated_ms`, `refused` when a tool call of that step was refused.
/// A turn that ended on the model API's error (OpenCode's `error` of name `APIError` or
/// `ProviderAuthError`, e.g. a 401 for a bad key) ended failed: a human decides whether to
/// try again.
fn reading(message: &serde_json::Value, refused: bool, updated_ms: i64) -> Option<Reading> {
    let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms);
    let completed = message["time"]["completed"].as_i64();
    match (message["role"].as_str()?, completed) {
        ("assistant", Some(done)) if message["finish"] != "tool-calls" || refused => {
            let at = at(done)?;
            let error = &message["error"];
            Some(match error["name"].as_str() {
                Some("APIError" | "ProviderAuthError") => Reading::ApiFailed(
                    at,
                    ApiFailure {
                        logged_at: at,
                        status: error["data"]["statusCode"]
                            .as_u64()
                            .and_then(|s| u16::try_from(s).ok()),
                        message: error["data"]["message"]
                            .as_str()
                            .or(error["name"].as_str())
                            .unwrap_or_default()
                            .to_string(),
                        attempt: None,
                        max_retries: None,
                    },
                ),
                _ => Reading::Finished(at),
            })
        }
        _ => Some(Reading::Working(at(updated_ms)?)),
    }
}

/// What the database says about the conversations run in `workspace`: their summed usage and
/// the newest top-level conversation's id. `None` when there is no database or no session of
/// that directory.
pub async fn sessions_of(
    dbs: &Databases,
    db: &Path,
    workspace: &Path,
) -> PluginResult<Option<(Usage, String)>> {
    let dir = workspace.to_string_lossy().into_owned();
    let read = read(dbs, db, |mut conn| async move {
        let totals = sqlx::query(
            "SELECT COUNT(*), COALESCE(SUM(cost), 0.0), COALESCE(SUM(tokens_input), 0), \
             COALESCE(SUM(tokens_output), 0), COALESCE(SUM(tokens_cache_read), 0), \
             COALESCE(SUM(tokens_cache_write), 0), COALESCE(SUM(tokens_reasoning), 0) \
             FROM session WHERE directory = ?1",
        )
        .bind(&dir)
        .fetch_one(&mut *conn)
        .await?;
        let newest: Option<String> = sqlx::query_scalar(NEWEST_SESSION)
            .bind(&dir)
            .fetch_optional(&mut *conn)
            .await?;
        Ok((totals, newest))
    });
    let Some((totals, newest)) = read.await? else {
        return Ok(None);
    };
    let count: i64 = totals.try_get(0).unwrap_or(0);
    let Some(id) = newest.filter(|_| count > 0) else {
        return Ok(None);
    };
    let n = |i: usize| totals.try_get::<i64, _>(i).unwrap_or(0).max(0) as u64;
    let cost: f64 = totals.try_get(1).unwrap_or(0.0);
    // OpenCode records 0 for a model without a configured price: unknown, not free.
    let cost = (cost > 0.0).then_some(cost);
    let usage = Usage {
        input_tokens: n(2),
        // Reasoning is billed as output; OpenCode counts it apart.
        output_tokens: n(3) + n(6),
        cache_tokens: n(4) + n(5),
        cost_usd: cost,
        cost_source: cost.map(|_| crate::store::CostSource::Agent),
        unpriced_models: Vec::new(),
    };
    Ok(Some((usage, id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::ConnectOptions;

    #[test]
    fn the_database_is_where_opencode_puts_it() {
        let mut env = BTreeMap::new();
        env.insert("HOME".to_string(), "/h".to_string());
        if std::env::var_os("XDG_DATA_HOME").is_none() && std::env::var_os("OPENCODE_DB").is_none()
        {
            assert_eq!(
                db_path(&env),
                Some(PathBuf::from("/h/.local/share/opencode/opencode.db"))
            );
        }
        env.insert("XDG_DATA_HOME".into(), "/d".into());
        assert_eq!(
            db_path(&env),
            Some(PathBuf::from("/d/opencode/opencode.db"))
        );
        env.insert("OPENCODE_DB".into(), "/x/o.db".into());
        assert_eq!(db_path(&env), Some(PathBuf::from("/x/o.db")));
    }

    /// An empty database file in a scratch directory, and a connection to it.
    async fn scratch_db() -> (tempfile::TempDir, PathBuf, sqlx::SqliteConnection) {
        let dir = tempfile::tempdir().expect("tmp");
        let db = dir.path().join("opencode.db");
        let conn = SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true)
            .connect()
            .await
            .expect("create");
        (dir, db, conn)
    }

    /// OpenCode 1.18.33's `session` table, the columns Flotilla reads as it declares them.
    async fn session_table(conn: &mut sqlx::SqliteConnection) {
        sqlx::query(
            "CREATE TABLE session (id text PRIMARY KEY, parent_id text, directory text NOT NULL, \
             cost real DEFAULT 0 NOT NULL, tokens_input integer DEFAULT 0 NOT NULL, \
             tokens_output integer DEFAULT 0 NOT NULL, tokens_reasoning integer DEFAULT 0 NOT NULL, \
             tokens_cache_read integer DEFAULT 0 NOT NULL, \
             tokens_cache_write integer DEFAULT 0 NOT NULL, time_updated integer NOT NULL)",
        )
        .execute(conn)
        .await
        .expect("table");
    }

    /// A connection kept between reads sees what OpenCode wrote since, and a database replaced
    /// by another file (OpenCode's data reset) is read from the new file, not the old one.
    #[tokio::test]
    async fn a_kept_connection_reads_new_rows_and_a_replaced_database_afresh() {
        async fn add(conn: &mut sqlx::SqliteConnection, id: &str, cost: f64) {
            sqlx::query("INSERT INTO session VALUES (?1, NULL, '/w', ?2, 1, 1, 0, 0, 0, 1)")
                .bind(id)
                .bind(cost)
                .execute(conn)
                .await
                .expect("insert");
        }
        let (_dir, db, mut conn) = scratch_db().await;
        let dbs = Databases::default();
        let cost = || async {
            sessions_of(&dbs, &db, Path::new("/w"))
                .await
                .expect("read")
                .and_then(|(u, _)| u.cost_usd)
        };
        session_table(&mut conn).await;
        add(&mut conn, "ses_a", 0.5).await;
        assert_eq!(cost().await, Some(0.5));
        add(&mut conn, "ses_b", 0.25).await;
        assert_eq!(cost().await, Some(0.75));
        drop(conn);
        std::fs::remove_file(&db).expect("remove");
        let mut conn = SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true)
            .connect()
            .await
            .expect("create");
        session_table(&mut conn).await;
        add(&mut conn, "ses_c", 2.0).await;
        assert_eq!(cost().await, Some(2.0));
    }

    #[tokio::test]
    async fn usage_sums_the_sessions_of_the_directory() {
        let (dir, db, mut conn) = scratch_db().await;
        let dbs = Databases::default();
        session_table(&mut conn).await;
        for (id, parent, d, cost, t) in [
            ("ses_a", None, "/w", 0.0042, 1),
            ("ses_b", None, "/w", 0.001, 2),
            ("ses_c", Some("ses_b"), "/w", 0.0, 3),
            ("ses_d", None, "/other", 1.0, 4),
        ] {
            sqlx::query("INSERT INTO session VALUES (?1, ?2, ?3, ?4, 800, 40, 10, 200, 1, ?5)")
                .bind(id)
                .bind(parent)
                .bind(d)
                .bind(cost)
                .bind(t)
                .execute(&mut conn)
                .await
                .expect("insert");
        }
        let (u, id) = sessions_of(&dbs, &db, Path::new("/w"))
            .await
            .expect("read")
            .expect("sessions");
        assert_eq!(id, "ses_b", "the newest top-level session");
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.cache_tokens),
            (2400, 150, 603)
        );
        assert!((u.cost_usd.expect("cost") - 0.0052).abs() < 1e-12);
        assert_eq!(
            sessions_of(&dbs, &db, Path::new("/none"))
                .await
                .expect("read"),
            None
        );
        assert_eq!(
            sessions_of(&dbs, &dir.path().join("missing.db"), Path::new("/w"))
                .await
                .expect("read"),
            None
        );
        // Another schema: nothing, not an error.
        sqlx::query("DROP TABLE session")
            .execute(&mut conn)
            .await
            .expect("drop");
        assert_eq!(
            sessions_of(&dbs, &db, Path::new("/w")).await.expect("read"),
            None
        );
    }

    #[tokio::test]
    async fn the_last_turn_is_read_from_the_newest_message_of_the_newest_conversation() {
        let (_dir, db, mut conn) = scratch_db().await;
        let dbs = Databases::default();
        // The columns Flotilla reads, as OpenCode 1.18.33 declares them.
        for ddl in [
            "CREATE TABLE session (id text PRIMARY KEY, parent_id text, directory text NOT NULL, \
             time_updated integer NOT NULL)",
            "CREATE TABLE message (id text PRIMARY KEY, session_id text NOT NULL, \
             time_created integer NOT NULL, time_updated integer NOT NULL, data text NOT NULL)",
            "CREATE TABLE part (id text PRIMARY KEY, message_id text NOT NULL, \
             data text NOT NULL)",
        ] {
            sqlx::query(ddl).execute(&mut conn).await.expect("table");
        }
        assert_eq!(
            last_turn(&dbs, &db, Path::new("/w")).await.expect("read"),
            None
        );
        let session = |id: &'static str, parent: Option<&'static str>, updated: i64| {
            sqlx::query("INSERT OR REPLACE INTO session VALUES (?1, ?2, '/w', ?3)")
                .bind(id)
                .bind(parent)
                .bind(updated)
        };
        let message = |id: &'static str, session: &'static str, t: i64, data: &'static str| {
            sqlx::query("INSERT OR REPLACE INTO message VALUES (?1, ?2, ?3, ?4, ?5)")
                .bind(id)
                .bind(session)
                .bind(t)
                .bind(t + 5)
                .bind(data)
        };
        let ms = |t: i64| chrono::DateTime::from_timestamp_millis(t).expect("time");
        session("ses_a", None, 10)
            .execute(&mut conn)
            .await
            .expect("insert");
        // A turn as OpenCode 1.18.33 records it (a step that called tools, then one that
        // stopped), in the order it writes them; then an interrupted step, and one that ended
        // on the model API's 401 (as the real OpenCode records it, headers aside).
        let user = r#"{"role":"user","time":{"created":1000},"agent":"build"}"#;
        let steps = [
            (user, Reading::Working(ms(1005))),
            (
                r#"{"parentID":"msg_1","role":"assistant","time":{"created":2000}}"#,
                Reading::Working(ms(2005)),
            ),
            (
                r#"{"role":"assistant","time":{"created":2000,"completed":2900},"finish":"tool-calls"}"#,
                Reading::Working(ms(2005)),
            ),
            (
                r#"{"role":"assistant","time":{"created":2000,"completed":2900},"finish":"stop"}"#,
                Reading::Finished(ms(2900)),
            ),
            (
                r#"{"role":"assistant","time":{"created":2000,"completed":2950},"error":{"name":"MessageAbortedError"}}"#,
                Reading::Finished(ms(2950)),
            ),
            (
                r#"{"role":"assistant","time":{"created":2000,"completed":2960},"error":{"name":"APIError","data":{"message":"Incorrect API key provided.","statusCode":401,"isRetryable":false}}}"#,
                Reading::ApiFailed(
                    ms(2960),
                    ApiFailure {
                        logged_at: ms(2960),
                        status: Some(401),
                        message: "Incorrect API key provided.".into(),
                        attempt: None,
                        max_retries: None,
                    },
                ),
            ),
        ];
        message("msg_1", "ses_a", 1000, user)
            .execute(&mut conn)
            .await
            .expect("insert");
        for (data, want) in steps.iter().skip(1).cloned() {
            message("msg_2", "ses_a", 2000, data)
                .execute(&mut conn)
                .await
                .expect("insert");
            assert_eq!(
                last_turn(&dbs, &db, Path::new("/w")).await.expect("read"),
                Some(want),
                "{data}"
            );
        }
        // A step that called a tool a human refused is the turn's last (OpenCode stops its
        // loop); one whose tool merely failed goes on (the model is told the error).
        message("msg_2", "ses_a", 2000, steps[2].0)
            .execute(&mut conn)
            .await
            .expect("insert");
        let part = |id: &'static str, error: &'static str| {
            sqlx::query("INSERT OR REPLACE INTO part VALUES (?1, 'msg_2', ?2)")
                .bind(id)
                .bind(format!(
                    r#"{{"type":"tool","tool":"bash","callID":"call_2","state":{{"status":"error","error":"{error}"}}}}"#
                ))
        };
        part("prt_1", "Command failed: exit 1")
            .execute(&mut conn)
            .await
            .expect("insert");
        assert_eq!(
            last_turn(&dbs, &db, Path::new("/w")).await.expect("read"),
            Some(Reading::Working(ms(2005)))
        );
        for refusal in REFUSALS {
            part("prt_2", refusal)
                .execute(&mut conn)
                .await
                .expect("insert");
            assert_eq!(
                last_turn(&dbs, &db, Path::new("/w")).await.expect("read"),
                Some(Reading::Finished(ms(2900))),
                "{refusal}"
            );
        }
        // A new prompt starts the next turn; a sub-agent's conversation is not the one shown.
        message("msg_3", "ses_a", 3000, user)
            .execute(&mut conn)
            .await
            .expect("insert");
        session("ses_sub", Some("ses_a"), 99)
            .execute(&mut conn)
            .await
            .expect("insert");
        message("msg_4", "ses_sub", 4000, steps[3].0)
            .execute(&mut conn)
            .await
            .expect("insert");
        assert_eq!(
            last_turn(&dbs, &db, Path::new("/w")).await.expect("read"),
            Some(Reading::Working(ms(3005)))
        );
        assert_eq!(
            last_turn(&dbs, &db, Path::new("/other"))
                .await
                .expect("read"),
            None
        );
    }
}
