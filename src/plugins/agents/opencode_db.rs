//! Reading OpenCode's own record of its sessions: the SQLite database OpenCode 1.18 keeps at
//! `$OPENCODE_DB`, else `$XDG_DATA_HOME/opencode/opencode.db` (default
//! `$HOME/.local/share/opencode/opencode.db`), as the agent process sees those variables. Its
//! `session` table has one row per conversation with the `directory` it ran in and running
//! totals (`cost`, `tokens_input` (without cache reads), `tokens_output` and
//! `tokens_reasoning` (apart; both priced as output), `tokens_cache_read`,
//! `tokens_cache_write`). Opened read-only with a timeout; a database
//! without that table or those columns (another OpenCode version) reads as nothing, not as an
//! error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Row};

use crate::plugins::activity::{agent_home, Usage};
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

/// What the database says about the conversations run in `workspace`: their summed usage and
/// the newest top-level conversation's id. `None` when there is no database or no session of
/// that directory.
pub async fn sessions_of(db: &Path, workspace: &Path) -> PluginResult<Option<(Usage, String)>> {
    if tokio::fs::metadata(db).await.is_err() {
        return Ok(None);
    }
    let dir = workspace.to_string_lossy().into_owned();
    let read = async {
        let mut conn = SqliteConnectOptions::new()
            .filename(db)
            .read_only(true)
            .connect()
            .await?;
        let totals = sqlx::query(
            "SELECT COUNT(*), COALESCE(SUM(cost), 0.0), COALESCE(SUM(tokens_input), 0), \
             COALESCE(SUM(tokens_output), 0), COALESCE(SUM(tokens_cache_read), 0), \
             COALESCE(SUM(tokens_cache_write), 0), COALESCE(SUM(tokens_reasoning), 0) \
             FROM session WHERE directory = ?1",
        )
        .bind(&dir)
        .fetch_one(&mut conn)
        .await?;
        let newest: Option<String> = sqlx::query_scalar(
            "SELECT id FROM session WHERE directory = ?1 AND parent_id IS NULL \
             ORDER BY time_updated DESC LIMIT 1",
        )
        .bind(&dir)
        .fetch_optional(&mut conn)
        .await?;
        Ok::<_, sqlx::Error>((totals, newest))
    };
    let (totals, newest) = match tokio::time::timeout(TIMEOUT, read).await {
        Err(_) => {
            return Err(PluginError::Timeout {
                what: format!("reading {}", db.display()),
                after: TIMEOUT,
            })
        }
        Ok(Err(e)) => {
            tracing::debug!(db = %db.display(), error = %e, "opencode database not readable as 1.18's");
            return Ok(None);
        }
        Ok(Ok(v)) => v,
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

    #[tokio::test]
    async fn usage_sums_the_sessions_of_the_directory() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = dir.path().join("opencode.db");
        let mut conn = SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true)
            .connect()
            .await
            .expect("create");
        // The columns Flotilla reads, as OpenCode 1.18.33 declares them.
        sqlx::query(
            "CREATE TABLE session (id text PRIMARY KEY, parent_id text, directory text NOT NULL, \
             cost real DEFAULT 0 NOT NULL, tokens_input integer DEFAULT 0 NOT NULL, \
             tokens_output integer DEFAULT 0 NOT NULL, tokens_reasoning integer DEFAULT 0 NOT NULL, \
             tokens_cache_read integer DEFAULT 0 NOT NULL, \
             tokens_cache_write integer DEFAULT 0 NOT NULL, time_updated integer NOT NULL)",
        )
        .execute(&mut conn)
        .await
        .expect("table");
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
        let (u, id) = sessions_of(&db, Path::new("/w"))
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
            sessions_of(&db, Path::new("/none")).await.expect("read"),
            None
        );
        assert_eq!(
            sessions_of(&dir.path().join("missing.db"), Path::new("/w"))
                .await
                .expect("read"),
            None
        );
        // Another schema: nothing, not an error.
        sqlx::query("DROP TABLE session")
            .execute(&mut conn)
            .await
            .expect("drop");
        assert_eq!(sessions_of(&db, Path::new("/w")).await.expect("read"), None);
    }
}
