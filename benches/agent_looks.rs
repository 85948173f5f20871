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

criterion_group!(benches, looks);
criterion_main!(benches);
