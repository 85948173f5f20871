//! Store write/read latency: `create_session`, and `commit_transition` + `load_snapshot` (one
//! machine step followed by what an actor restart reads), on a temp-file SQLite database and,
//! when `FLOTILLA_TEST_PG_URL` names an admin URL, on a fresh PostgreSQL database (dropped at
//! the end).
//!
//! Row sizes mimic production rows: a ~1.5 KB task prompt, a ~100 B runtime handle, a PR, 3
//! reaction trackers with fingerprints, 3 armed timers and a ~300 B transition event, so a
//! commit writes ~2.5 KB across 8 rows.

#[path = "support/backends.rs"]
mod backends;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion};
use flotilla::store::{
    Activity, NewEvent, NewSession, PrRef, ReactionTracker, SessionSnapshot, SessionState,
    SharedStore, TimerRecord, TransitionCommit,
};
use serde_json::json;
use tokio::runtime::Runtime;

fn new_session() -> NewSession {
    NewSession {
        project: "acme-platform".into(),
        prefix: "bench".into(),
        agent: "claude-code".into(),
        runtime: "tmux".into(),
        workspace_kind: "worktree".into(),
        branch: Some("feat/bench-parser-rewrite".into()),
        issue: Some("ACME-1234".into()),
        // A task prompt is typically a paragraph or two.
        prompt: Some("Rewrite the config parser to report line numbers on errors. ".repeat(25)),
        skip_numbers: vec![],
        fixed_id: None,
        meta: serde_json::Value::Null,
        at: Utc::now(),
    }
}

/// One realistic machine step for `session`: PR open with CI failing, trackers and timers set.
fn commit_for(snapshot: &SessionSnapshot) -> TransitionCommit {
    let now = Utc::now();
    let mut s = snapshot.session.clone();
    s.state = SessionState::CiFailed;
    s.reason = Some("ci_failing".into());
    s.workspace = Some(format!(
        "/var/lib/flotilla/worktrees/acme-platform/{}",
        s.id
    ));
    s.pr = Some(PrRef {
        number: 4821,
        url: "https://github.com/acme/platform/pull/4821".into(),
    });
    s.runtime_handle = Some(flotilla::plugins::RuntimeHandle::from_json(&json!({
        "tmux_session": format!("flotilla-{}", s.id),
        "pid": 48213,
        "started": now.to_rfc3339(),
    })));
    s.activity = Activity::Active;
    s.activity_at = Some(now);
    s.updated_at = now;
    let trackers = ["ci-failed", "changes-requested", "agent-stuck"]
        .into_iter()
        .map(|r| {
            (
                r.to_string(),
                ReactionTracker {
                    reaction: r.into(),
                    attempts: 2,
                    first_triggered_at: now,
                    last_triggered_at: now,
                    fingerprint: Some(format!("sha256:{}", "9f86d081884c7d65".repeat(4))),
                    escalated: false,
                },
            )
        })
        .collect::<BTreeMap<_, _>>();
    let timers = ["idle_check", "escalate:ci-failed", "spawn_timeout"]
        .into_iter()
        .map(|k| {
            (
                k.to_string(),
                TimerRecord {
                    kind: k.into(),
                    deadline: now + chrono::Duration::minutes(10),
                },
            )
        })
        .collect::<BTreeMap<_, _>>();
    let event = NewEvent {
        session_id: Some(s.id.clone()),
        kind: "session.transition".into(),
        data: json!({
            "from": "pr_open",
            "to": "ci_failed",
            "reason": "ci_failing",
            "pr": { "number": 4821, "url": "https://github.com/acme/platform/pull/4821" },
            "checks": ["build (ubuntu-latest)", "test (ubuntu-latest)", "clippy", "fmt"],
            "failing": ["test (ubuntu-latest)"],
        }),
        at: now,
    };
    TransitionCommit {
        snapshot: SessionSnapshot {
            session: s,
            trackers,
            timers,
        },
        event,
        notifications: Vec::new(),
        instructions: Vec::new(),
    }
}

fn bench_backend(c: &mut Criterion, rt: &Runtime, backend: &str, store: &SharedStore) {
    let mut group = c.benchmark_group(backend);

    group.bench_function("create_session", |b| {
        b.to_async(rt).iter(|| {
            let store = Arc::clone(store);
            async move {
                store
                    .create_session(&new_session())
                    .await
                    .expect("create_session");
            }
        });
    });

    let id = rt
        .block_on(store.create_session(&new_session()))
        .expect("create_session")
        .0
        .id;
    let base = rt
        .block_on(store.load_snapshot(&id))
        .expect("load_snapshot");
    group.bench_function("commit_transition+load_snapshot", |b| {
        b.to_async(rt).iter(|| {
            let store = Arc::clone(store);
            let commit = commit_for(&base);
            async move {
                store
                    .commit_transition(&commit)
                    .await
                    .expect("commit_transition");
                store
                    .load_snapshot(&commit.snapshot.session.id)
                    .await
                    .expect("load_snapshot")
            }
        });
    });
    group.finish();
}

fn store_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    backends::on_each_backend(&rt, |backend, store| bench_backend(c, &rt, backend, store));
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = store_benches
}
criterion_main!(benches);
