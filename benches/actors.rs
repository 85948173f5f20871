//! Load harness: 10,000 idle `SessionActor`s in one process. Reports resident memory (total
//! and per actor) and the CPU and wall time of one lifecycle tick (`ReconcileAll`: every
//! actor checks its runtime) over all of them. Goal: ≤ 160 MiB and ≤ 100 ms.
//!
//! Each session is realistic: a working session with a ~800 B prompt, a runtime handle and an
//! armed stuck timer (so 10,000 live timers). The runtime is an in-process stand-in whose
//! agents never exit, so nothing but the actors is measured.
//!
//! `FLOTILLA_BENCH_SESSIONS` changes the count.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flotilla::actors::fleet::{Fleet, Plugins, ProjectSpec};
use flotilla::actors::journal::Journal;
use flotilla::actors::supervisor::messages::{CheckReady, ReconcileAll};
use flotilla::actors::supervisor::FleetSupervisor;
use flotilla::plugins::{AttachInfo, LaunchSpec, PluginResult, Runtime, RuntimeHandle};
use flotilla::store::{self, NewEvent, NewSession, SessionState, TimerRecord, TransitionCommit};

/// Agents that live forever and cost nothing.
struct IdleRuntime;

#[async_trait]
impl Runtime for IdleRuntime {
    fn name(&self) -> &'static str {
        "idle"
    }
    async fn create(&self, _spec: &LaunchSpec) -> PluginResult<RuntimeHandle> {
        Ok(RuntimeHandle::Other(serde_json::json!({"idle": true})))
    }
    async fn destroy(&self, _h: &RuntimeHandle) -> PluginResult<()> {
        Ok(())
    }
    async fn is_alive(&self, _h: &RuntimeHandle) -> PluginResult<bool> {
        Ok(true)
    }
    async fn wait_exit(&self, _h: &RuntimeHandle) -> PluginResult<Option<i32>> {
        futures::future::pending().await
    }
    async fn output(&self, _h: &RuntimeHandle, _n: usize) -> PluginResult<String> {
        Ok(String::new())
    }
    async fn last_output_at(&self, _h: &RuntimeHandle) -> PluginResult<Option<DateTime<Utc>>> {
        Ok(None)
    }
    async fn send_message(&self, _h: &RuntimeHandle, _t: &str) -> PluginResult<bool> {
        Ok(true)
    }
    fn attach_info(&self, _h: &RuntimeHandle) -> Option<AttachInfo> {
        None
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing: skip then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: usize = std::env::var("FLOTILLA_BENCH_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let sys = actix::System::new();
    sys.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store::open(&format!("sqlite://{}/bench.db", dir.path().display()))
            .await
            .expect("store");
        let t = Instant::now();
        for _ in 0..n {
            let (rec, _) = store
                .create_session(&NewSession {
                    project: "acme".into(),
                    prefix: "b".into(),
                    agent: "scripted".into(),
                    runtime: "idle".into(),
                    workspace_kind: "worktree".into(),
                    branch: None,
                    issue: None,
                    prompt: Some("Implement the feature described in the issue. ".repeat(16)),
                    skip_numbers: vec![],
fixed_id: None,
meta: serde_json::Value::Null,
                    at: Utc::now(),
                })
                .await
                .expect("create");
            let mut snap = store.load_snapshot(&rec.id).await.expect("load");
            snap.session.state = SessionState::Working;
            snap.session.runtime_handle = Some(flotilla::plugins::RuntimeHandle::from_json(
                &serde_json::json!({"idle": true}),
            ));
            snap.session.branch = Some(format!("session/{}", rec.id));
            snap.timers.insert(
                "stuck_check".into(),
                TimerRecord {
                    kind: "stuck_check".into(),
                    deadline: Utc::now() + chrono::Duration::hours(2),
                },
            );
            store
                .commit_transition(&TransitionCommit {
                    snapshot: snap,
                    event: NewEvent {
                        session_id: Some(rec.id.clone()),
                        kind: "runtime.started".into(),
                        data: serde_json::json!({}),
                        at: Utc::now(),
                    },
                    notifications: Vec::new(),
                    instructions: Vec::new(),
                })
                .await
                .expect("commit");
        }
        eprintln!("seeded {n} sessions in {:?}", t.elapsed());

        let mut plugins = Plugins::default();
        plugins.runtimes.insert("idle".into(), Arc::new(IdleRuntime));
        let mut projects = BTreeMap::new();
        projects.insert(
            "acme".to_string(),
            ProjectSpec { prefix: "b".into(), ..ProjectSpec::simple("acme", dir.path().to_path_buf(), "scripted", "idle") },
        );
        let fleet = Arc::new(Fleet {
            journal: Arc::new(Journal::new(store.clone())),
            store: store.clone(),
            plugins,
            projects,
            home: dir.path().to_path_buf(),
            max_restarts: 3,
            actor_timeout: Duration::from_secs(60),
            agent_env_passthrough: vec![],
            report_key: vec![7; 32],
            server_url: "http://127.0.0.1:1".into(),
            cli_path: None,
            sandbox: Default::default(),
            spawn_permits: Arc::new(tokio::sync::Semaphore::new(8)),
            lifecycle_order: Default::default(),
        clock: flotilla::clock::Clock::system(),
        output_watch: Arc::new(flotilla::actors::watch::OutputWatch::new()),
            notifications: Default::default(),
        });
        let before = rss_kib();
        let t = Instant::now();
        let sup = FleetSupervisor::new(fleet, Arc::new(AtomicBool::new(false))).start();
        while sup.send(CheckReady).await.ok().and_then(|r| r.ok()).is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A first tick waits for every actor to have loaded its state.
        let live = sup.send(ReconcileAll).await.expect("tick");
        let restore = t.elapsed();
        let after = rss_kib();
        let mut ticks = Vec::new();
        for _ in 0..5 {
            let (c0, w0) = (cpu_time(), Instant::now());
            sup.send(ReconcileAll).await.expect("tick");
            ticks.push((cpu_time() - c0, w0.elapsed()));
        }
        let best_cpu = ticks.iter().map(|t| t.0).min().unwrap_or_default();
        let best_wall = ticks.iter().map(|t| t.1).min().unwrap_or_default();
        println!("actors: {live} idle SessionActors restored in {restore:?}");
        println!(
            "actors: resident memory {:.1} MiB total, {:.1} MiB for the actors ({:.2} KiB per actor)",
            after as f64 / 1024.0,
            (after.saturating_sub(before)) as f64 / 1024.0,
            (after.saturating_sub(before)) as f64 / live.max(1) as f64
        );
        println!(
            "actors: one lifecycle tick over all: {:.1} ms CPU, {:.1} ms wall (best of 5)",
            best_cpu.as_secs_f64() * 1000.0,
            best_wall.as_secs_f64() * 1000.0
        );
        actix::System::current().stop();
    });
}
