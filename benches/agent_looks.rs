//! What a look at a working Claude Code session costs as its log grows: the plugin's
//! `activity` (the log's tail) and `usage` (every message's tokens) on a log of a long session
//! (2,000 model messages with their tool calls and results, ~9 MB), after the agent appended
//! one more exchange, as it does between two looks. A session at work is looked at up to twice
//! a second (the probe's debounce), so this is per working agent, twice a second.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use flotilla::config::{AgentKind, AgentSettings};
use flotilla::plugins::activity::ActivityProbe;
use flotilla::plugins::agents::ClaudeCodeAgent;
use flotilla::plugins::Agent;
use tokio::runtime::Runtime;

/// One exchange of a session: the model's text, its tool call, and the call's result (as
/// Claude Code 2.x logs them, one entry per content block).
fn exchange(n: usize) -> String {
    let at = "2026-12-01T12:00:00.000Z";
    let msg = format!("msg_{n:020}");
    let usage = r#"{"input_tokens":4,"cache_creation_input_tokens":2000,"cache_read_input_tokens":10000,"output_tokens":120,"service_tier":"standard"}"#;
    let text = "Let me look at the parser and the tests around it. ".repeat(8);
    let file = "fn parse(input: &str) -> Result<Ast, Error> { todo!() }\n".repeat(40);
    [
        format!(
            r#"{{"type":"assistant","timestamp":"{at}","uuid":"a{n}","message":{{"id":"{msg}","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{{"type":"text","text":"{text}"}}],"stop_reason":null,"usage":{usage}}}}}"#
        ),
        format!(
            r#"{{"type":"assistant","timestamp":"{at}","uuid":"b{n}","message":{{"id":"{msg}","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{{"type":"tool_use","id":"toolu_{n}","name":"Read","input":{{"file_path":"/w/src/parser.rs"}}}}],"stop_reason":"tool_use","usage":{usage}}}}}"#
        ),
        format!(
            r#"{{"type":"user","timestamp":"{at}","uuid":"u{n}","message":{{"role":"user","content":[{{"tool_use_id":"toolu_{n}","type":"tool_result","content":{}}}]}}}}"#,
            serde_json::Value::String(file)
        ),
    ]
    .join("\n")
        + "\n"
}

fn append(log: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log");
    f.write_all(text.as_bytes()).expect("append");
}

fn looks(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).expect("ws");
    let mut settings = AgentSettings::built_in(AgentKind::ClaudeCode);
    settings.env = BTreeMap::from([(
        "CLAUDE_CONFIG_DIR".to_string(),
        dir.path().join("claude").to_string_lossy().into_owned(),
    )]);
    let agent = ClaudeCodeAgent::new("claude".into(), settings);
    let project = agent.project_dir(&ws).expect("project dir");
    std::fs::create_dir_all(&project).expect("project dir");
    let log = project.join("0b0d6c1e-1111-4222-8333-444455556666.jsonl");
    let mut n = 0;
    let body: String = (0..2_000)
        .map(|_| {
            n += 1;
            exchange(n)
        })
        .collect();
    append(&log, &body);
    let size = std::fs::metadata(&log).expect("log").len();
    println!("log: {:.1} MB", size as f64 / 1e6);

    let mut g = c.benchmark_group("claude_look");
    g.sample_size(30);
    g.bench_function("usage after one more exchange", |b| {
        b.iter(|| {
            n += 1;
            append(&log, &exchange(n));
            rt.block_on(agent.usage(&ws)).expect("usage").expect("some")
        })
    });
    g.bench_function("activity after one more exchange", |b| {
        b.iter(|| {
            n += 1;
            append(&log, &exchange(n));
            let probe = ActivityProbe {
                workspace: ws.clone(),
                terminal: None,
                last_output_at: None,
                now: chrono::Utc::now(),
            };
            rt.block_on(agent.activity(&probe)).expect("activity")
        })
    });
    g.finish();
}

/// A look at a working OpenCode session: its `activity` (the newest message of the newest
/// conversation) and `usage` (the totals of the workspace's conversations), each a read of
/// OpenCode's SQLite database (in WAL mode and with the indexes OpenCode 1.18.33 keeps) holding
/// 200 conversations of 25 messages, one more message written between two looks.
fn opencode_looks(c: &mut Criterion) {
    use flotilla::plugins::agents::OpencodeAgent;
    use sqlx::ConnectOptions;
    let rt = Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).expect("ws");
    let db = dir.path().join("opencode.db");
    let wsd = ws.to_string_lossy().into_owned();
    let mut conn = rt.block_on(async {
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            // The writer stands in for OpenCode: its fsyncs are not the look's cost.
            .synchronous(sqlx::sqlite::SqliteSynchronous::Off)
            .connect()
            .await
            .expect("db");
        for ddl in [
            "CREATE TABLE session (id text PRIMARY KEY, parent_id text, directory text NOT NULL, \
             cost real DEFAULT 0 NOT NULL, tokens_input integer DEFAULT 0 NOT NULL, \
             tokens_output integer DEFAULT 0 NOT NULL, tokens_reasoning integer DEFAULT 0 NOT NULL, \
             tokens_cache_read integer DEFAULT 0 NOT NULL, \
             tokens_cache_write integer DEFAULT 0 NOT NULL, time_updated integer NOT NULL)",
            "CREATE TABLE message (id text PRIMARY KEY, session_id text NOT NULL, \
             time_created integer NOT NULL, time_updated integer NOT NULL, data text NOT NULL)",
            "CREATE TABLE part (id text PRIMARY KEY, message_id text NOT NULL, data text NOT NULL)",
            // OpenCode 1.18.33's own indexes on these tables.
            "CREATE INDEX message_session_time_created_id_idx ON message \
             (session_id, time_created, id)",
            "CREATE INDEX part_message_id_id_idx ON part (message_id, id)",
        ] {
            sqlx::query(ddl).execute(&mut conn).await.expect("table");
        }
        for s in 0..200 {
            let d = if s % 10 == 0 { wsd.clone() } else { format!("/other/{s}") };
            sqlx::query("INSERT INTO session VALUES (?1, NULL, ?2, 0.01, 800, 40, 10, 200, 1, ?3)")
                .bind(format!("ses_{s:04}"))
                .bind(d)
                .bind(s as i64)
                .execute(&mut conn)
                .await
                .expect("session");
            for m in 0..25 {
                add_message(&mut conn, s, m).await;
            }
        }
        conn
    });
    let mut settings = AgentSettings::built_in(AgentKind::Opencode);
    settings.env = BTreeMap::from([("OPENCODE_DB".to_string(), db.to_string_lossy().into_owned())]);
    let agent = OpencodeAgent::new("opencode".into(), settings);
    let mut m = 25;
    let mut g = c.benchmark_group("opencode_look");
    g.sample_size(30);
    // What the writes alone cost, to tell the looks' own cost from the figures below.
    g.bench_function("one more message (no look)", |b| {
        b.iter(|| {
            m += 1;
            rt.block_on(add_message(&mut conn, 190, m))
        })
    });
    g.bench_function("usage after one more message", |b| {
        b.iter(|| {
            m += 1;
            rt.block_on(add_message(&mut conn, 190, m));
            rt.block_on(agent.usage(&ws)).expect("usage").expect("some")
        })
    });
    g.bench_function("activity after one more message", |b| {
        b.iter(|| {
            m += 1;
            rt.block_on(add_message(&mut conn, 190, m));
            let probe = ActivityProbe {
                workspace: ws.clone(),
                terminal: None,
                last_output_at: None,
                now: chrono::Utc::now(),
            };
            rt.block_on(agent.activity(&probe))
                .expect("activity")
                .expect("some")
        })
    });
    g.finish();
}

/// Message `m` of conversation `s`: an assistant step that called tools, with its part.
async fn add_message(conn: &mut sqlx::SqliteConnection, s: usize, m: usize) {
    let id = format!("msg_{s:04}_{m:06}");
    let data = r#"{"role":"assistant","finish":"tool-calls","time":{"created":1,"completed":2}}"#;
    sqlx::query("INSERT INTO message VALUES (?1, ?2, ?3, ?3, ?4)")
        .bind(&id)
        .bind(format!("ses_{s:04}"))
        .bind((s * 1000 + m) as i64)
        .bind(data)
        .execute(&mut *conn)
        .await
        .expect("message");
    sqlx::query("INSERT INTO part VALUES (?1, ?2, ?3)")
        .bind(format!("prt_{id}"))
        .bind(&id)
        .bind(r#"{"type":"tool","tool":"read","state":{"status":"completed"}}"#)
        .execute(&mut *conn)
        .await
        .expect("part");
    sqlx::query("UPDATE session SET time_updated = ?2 WHERE id = ?1")
        .bind(format!("ses_{s:04}"))
        .bind((s * 1000 + m) as i64)
        .execute(&mut *conn)
        .await
        .expect("touch");
}

criterion_group!(benches, looks, opencode_looks);
criterion_main!(benches);
