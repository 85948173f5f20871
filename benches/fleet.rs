//! Load harness for the fleet (real git, real tmux):
//! 1. `batch-spawn` of N sessions (default 100) through the supervisor, until every agent runs,
//!    against a plain loop of `git worktree add` + `tmux new-session` doing the same work, as a
//!    ratio (goal ≤ 1.3×), and Flotilla's resident memory per session;
//! 2. those N sessions left idle for `FLOTILLA_BENCH_IDLE_SECS` (default 300): subprocesses
//!    Flotilla started and CPU time it used meanwhile (goal: no subprocess per idle session).
//!
//! The agent is `sleep 3600` under tmux for both sides, so only the orchestration differs.

use std::process::Command;
use std::time::{Duration, Instant};

use flotilla::actors::supervisor::messages::{BatchSpawn, BatchSpawnRequest};
use flotilla::app::Application;
use flotilla::config::{load_with, LoadOptions};
use flotilla::store::SessionState;
use flotilla::telemetry::METRICS;

#[path = "support/proc.rs"]
mod proc;
use proc::run;

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

fn subprocesses() -> u64 {
    ["git", "tmux", "other"]
        .iter()
        .map(|p| METRICS.subprocesses.with_label_values(&[p]).get())
        .sum()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: usize = std::env::var("FLOTILLA_BENCH_SPAWNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let idle: u64 = std::env::var("FLOTILLA_BENCH_IDLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    proc::repo(&repo);
    let home = dir.path().join("home");
    let cfg = dir.path().join("flotilla.yaml");
    std::fs::write(
        &cfg,
        format!(
            "server: {{ port: 0, token: bench }}\nlog: {{ level: error }}\n\
             lifecycle: {{ reconcile_interval: 5m }}\n\
             agents:\n  sleeper: {{ kind: command, command: [sleep, \"3600\"] }}\n\
             projects:\n  bench: {{ repo: {}, agent: sleeper, runtime: tmux, setup: {{ ports: 0 }} }}\n",
            repo.display()
        ),
    )
    .expect("config");
    let settings = load_with(&LoadOptions {
        config_path: Some(cfg),
        cwd: dir.path().to_path_buf(),
        env: Default::default(),
    })
    .expect("config");
    let socket = flotilla::app::tmux_socket(&home);
    let sys = actix::System::new();
    sys.block_on(async move {
        let app = Application::build(settings, home.clone())
            .await
            .expect("app");
        let sup = app.supervisor();
        let store = app.store();
        let _h = app.spawn();
        let rss0 = rss_kib();
        let t = Instant::now();
        sup.send(BatchSpawn {
            order: BatchSpawnRequest {
                project: "bench".into(),
                issues: (1..=n).map(|i| i.to_string()).collect(),
                agent: None,
                prompt: None,
            }
            .try_into()
            .expect("a valid batch"),
        })
        .await
        .expect("mailbox")
        .expect("batch");
        loop {
            let all = store
                .list_sessions(&Default::default())
                .await
                .expect("list");
            if all
                .iter()
                .filter(|s| s.state != SessionState::Spawning)
                .count()
                == n
            {
                let failed: Vec<String> = all
                    .iter()
                    .filter(|s| s.state != SessionState::Working)
                    .map(|s| format!("{} {} {:?}", s.id, s.state, s.reason))
                    .collect();
                if !failed.is_empty() {
                    println!(
                        "fleet: {} of {n} did not start: {:?}",
                        failed.len(),
                        &failed[..failed.len().min(5)]
                    );
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let flotilla = t.elapsed();
        let per_session = rss_kib().saturating_sub(rss0) as f64 / n as f64;

        // The same work done by hand.
        let plain_socket = format!("{socket}-plain");
        let t = Instant::now();
        for i in 1..=n {
            let path = dir.path().join(format!("plain/{i}"));
            let p = path.display().to_string();
            let b = format!("plain/{i}");
            run(
                &repo,
                &[
                    "git",
                    "worktree",
                    "add",
                    "-q",
                    "--no-track",
                    "-b",
                    &b,
                    &p,
                    "main",
                ],
            );
            run(
                &repo,
                &[
                    "tmux",
                    "-L",
                    &plain_socket,
                    "new-session",
                    "-d",
                    "-s",
                    &format!("p{i}"),
                    "-c",
                    &p,
                    "sleep",
                    "3600",
                ],
            );
        }
        let plain = t.elapsed();
        let _ = Command::new("tmux")
            .args(["-L", &plain_socket, "kill-server"])
            .status();

        println!(
            "fleet: batch-spawn of {n}: {:.2} s; plain loop: {:.2} s; ratio {:.2}x",
            flotilla.as_secs_f64(),
            plain.as_secs_f64(),
            flotilla.as_secs_f64() / plain.as_secs_f64()
        );
        println!("fleet: Flotilla resident memory per session: {per_session:.1} KiB");

        let (s0, c0) = (subprocesses(), cpu_time());
        tokio::time::sleep(Duration::from_secs(idle)).await;
        let (s1, c1) = (subprocesses(), cpu_time());
        println!(
            "fleet: {n} idle sessions watched for {idle} s: {} subprocesses started, {:.1} ms CPU",
            s1 - s0,
            (c1 - c0).as_secs_f64() * 1000.0
        );
        let _ = Command::new("tmux")
            .args(["-L", &socket, "kill-server"])
            .status();
        actix::System::current().stop();
    });
}
