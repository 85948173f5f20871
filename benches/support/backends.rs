//! The two store backends a store-level bench runs on: SQLite in a temporary file, and
//! PostgreSQL in a fresh database on the server `FLOTILLA_TEST_PG_URL` names (dropped after),
//! skipped with a note when it is unset.

use flotilla::store::{self, SharedStore};
use sqlx::Connection;
use tokio::runtime::Runtime;

const PG_ENV: &str = "FLOTILLA_TEST_PG_URL";

/// Runs `bench(backend, store)` on SQLite, then on PostgreSQL when configured.
pub fn on_each_backend(rt: &Runtime, mut bench: impl FnMut(&str, &SharedStore)) {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let sqlite = rt.block_on(store::open(&url)).expect("open sqlite");
    bench("sqlite", &sqlite);
    drop(sqlite);

    let Ok(admin_url) = std::env::var(PG_ENV) else {
        eprintln!("note: PostgreSQL benches skipped; set {PG_ENV} to run them");
        return;
    };
    let name = format!("flotilla_bench_{}", uuid::Uuid::new_v4().simple());
    admin(rt, &admin_url, &format!("CREATE DATABASE \"{name}\""));
    let pg = rt
        .block_on(store::open(&with_database(&admin_url, &name)))
        .expect("open postgres");
    bench("postgres", &pg);
    drop(pg);
    admin(
        rt,
        &admin_url,
        &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
    );
}

/// Runs one statement on the server's admin connection.
fn admin(rt: &Runtime, url: &str, statement: &str) {
    rt.block_on(async {
        let mut c = sqlx::PgConnection::connect(url)
            .await
            .expect("connect admin");
        sqlx::query(statement)
            .execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    });
}

/// `url` with its database name replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority = base.find("://").map_or(0, |i| i + 3);
    let root = base[authority..]
        .find('/')
        .map_or(base, |slash| &base[..authority + slash]);
    match query {
        Some(q) => format!("{root}/{database}?{q}"),
        None => format!("{root}/{database}"),
    }
}
