//! Transitions per second: the pure `step` alone, and `step` + persist (one
//! `commit_transition` per step, what a `SessionActor` does) on a temp-file SQLite database
//! and, with `FLOTILLA_TEST_PG_URL` set, on a fresh PostgreSQL database.
//!
//! The event cycle is a realistic PR loop: CI fails (a reaction fires, a tracker is bumped),
//! CI passes, review pending, changes requested (another reaction with an escalation timer),
//! approved, CI fails again. Each step writes the session row, its trackers, its timers and a
//! ~500 B event row.

use std::time::Duration;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flotilla::domain::machine::{step, Event, EventKind};
use flotilla::domain::policy::Policy;
use flotilla::store::{
    self, NewEvent, NewSession, PrRef, SessionSnapshot, SessionState, SharedStore, TransitionCommit,
};
use sqlx::Connection;
use tokio::runtime::Runtime;

fn cycle() -> Vec<EventKind> {
    vec![
        EventKind::CiFailed {
            summary: "check `test` failed: https://ci.example/run/1\n…log excerpt…".repeat(4),
            fingerprint: "fp-a".into(),
        },
        EventKind::CiPassed,
        EventKind::ReviewPending,
        EventKind::ChangesRequested {
            summary: "src/lib.rs:42 alice: rename this".into(),
            fingerprint: "threads-1".into(),
        },
        EventKind::Approved,
        EventKind::CiFailed {
            summary: "check `lint` failed".into(),
            fingerprint: "fp-b".into(),
        },
        EventKind::CiPassed,
    ]
}

fn pr_open(s: &SessionSnapshot) -> SessionSnapshot {
    let mut s = s.clone();
    s.session.state = SessionState::PrOpen;
    s.session.pr = Some(PrRef {
        number: 7,
        url: "https://github.com/acme/platform/pull/7".into(),
    });
    s
}

async fn session(store: &SharedStore) -> SessionSnapshot {
    let (rec, _) = store
        .create_session(&NewSession {
            project: "acme".into(),
            prefix: "bench".into(),
            agent: "claude-code".into(),
            runtime: "process".into(),
            workspace_kind: "worktree".into(),
            branch: Some("feat/x".into()),
            issue: None,
            prompt: Some("Fix the parser. ".repeat(50)),
            skip_numbers: vec![],
            fixed_id: None,
            meta: serde_json::Value::Null,
            at: Utc::now(),
        })
        .await
        .expect("create");
    let snap = store.load_snapshot(&rec.id).await.expect("load");
    pr_open(&snap)
}

/// Steps through the cycle `n` times, persisting each applied step; returns steps done.
async fn run(store: &SharedStore, mut s: SessionSnapshot, policy: &Policy, n: usize) -> usize {
    let events = cycle();
    let mut done = 0;
    for i in 0..n {
        let kind = events[i % events.len()].clone();
        let ev = Event {
            at: Utc::now(),
            kind,
        };
        let from = s.session.state;
        let out = step(&s, &ev, policy);
        if out.outcome != flotilla::domain::machine::Outcome::Applied {
            continue;
        }
        store
            .commit_transition(&TransitionCommit {
                snapshot: out.snapshot.clone(),
                event: NewEvent {
                    session_id: Some(s.session.id.clone()),
                    kind: ev.kind.name().into(),
                    data: out.event_data(from, &ev),
                    at: ev.at,
                },
                notifications: Vec::new(),
                instructions: Vec::new(),
            })
            .await
            .expect("commit");
        s = out.snapshot;
        done += 1;
    }
    done
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let policy = Policy::defaults();
    let mut g = c.benchmark_group("machine");
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(20);

    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = rt
        .block_on(store::open(&format!(
            "sqlite://{}/b.db",
            dir.path().display()
        )))
        .expect("sqlite");
    let base = rt.block_on(session(&sqlite));
    let events = cycle();
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("step_only", |b| {
        b.iter(|| {
            let mut s = base.clone();
            for kind in &events {
                s = step(
                    &s,
                    &Event {
                        at: Utc::now(),
                        kind: kind.clone(),
                    },
                    &policy,
                )
                .snapshot;
            }
            s
        })
    });
    g.throughput(Throughput::Elements(70));
    g.bench_function("step_and_persist_sqlite", |b| {
        b.iter(|| rt.block_on(run(&sqlite, base.clone(), &policy, 70)))
    });
    if let Ok(admin) = std::env::var("FLOTILLA_TEST_PG_URL") {
        let name = format!("flotilla_bench_{}", uuid::Uuid::new_v4().simple());
        rt.block_on(async {
            let mut c = sqlx::PgConnection::connect(&admin).await.expect("pg");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut c)
                .await
                .expect("create db");
        });
        let url = format!(
            "{}/{name}",
            admin.rsplit_once('/').map(|p| p.0).unwrap_or(&admin)
        );
        let pg = rt.block_on(store::open(&url)).expect("pg store");
        let pbase = rt.block_on(session(&pg));
        g.bench_function("step_and_persist_postgres", |b| {
            b.iter(|| rt.block_on(run(&pg, pbase.clone(), &policy, 70)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
