//! The cost of the agent sandbox, in one run: `batch-spawn` of N sessions (default 20,
//! `FLOTILLA_BENCH_SPAWNS`) into a plain project and into a sandboxed one (bubblewrap, egress
//! proxy, `flotilla sandbox-exec`), the agent `sleep 3600` under tmux for both; time until every
//! agent runs, and resident memory per session (every process of the session's pane, plus
//! what Flotilla itself grew by), each as a sandboxed / plain ratio.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use actix::Addr;
use flotilla::actors::supervisor::messages::{BatchSpawn, BatchSpawnRequest};
use flotilla::actors::supervisor::FleetSupervisor;
use flotilla::app::Application;
use flotilla::config::{load_with, LoadOptions};
use flotilla::store::SessionState;

#[path = "support/proc.rs"]
mod proc;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Every process's parent.
fn parents() -> HashMap<u32, u32> {
    let mut m = HashMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // The fields after the command name (which may hold spaces) in parentheses.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            m.insert(pid, ppid);
        }
    }
    m
}

/// Resident memory of `root` and all its descendants, KiB.
fn tree_rss(root: u32, parents: &HashMap<u32, u32>) -> u64 {
    parents
        .keys()
        .filter(|&&p| {
            let mut cur = p;
            loop {
                if cur == root {
                    return true;
                }
                match parents.get(&cur) {
                    Some(&pp) if pp != 0 && pp != cur => cur = pp,
                    _ => return false,
                }
            }
        })
        .map(|&p| rss_kib(p))
        .sum()
}

/// Batch-spawns `n` sessions of `project` (issues `first..`) and waits until none is spawning; returns the time.
async fn spawn_all(
    sup: &Addr<FleetSupervisor>,
    store: &flotilla::store::SharedStore,
    project: &str,
    first: usize,
    n: usize,
) -> Duration {
    let t = Instant::now();
    sup.send(BatchSpawn {
        order: BatchSpawnRequest {
            project: project.into(),
            // One repository for both projects: distinct issues, distinct branches.
            issues: (first..first + n).map(|i| i.to_string()).collect(),
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
        let mine: Vec<_> = all.iter().filter(|s| s.project == project).collect();
        if mine.len() == n && mine.iter().all(|s| s.state != SessionState::Spawning) {
            let failed: Vec<String> = mine
                .iter()
                .filter(|s| s.state != SessionState::Working)
                .map(|s| format!("{} {} {:?}", s.id, s.state, s.reason))
                .collect();
            assert!(failed.is_empty(), "{project}: did not start: {failed:?}");
            return t.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: usize = std::env::var("FLOTILLA_BENCH_SPAWNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    proc::repo(&repo);
    let home = dir.path().join("home");
    let cfg = dir.path().join("flotilla.yaml");
    std::fs::write(
        &cfg,
        format!(
            "server: {{ port: 0, token: bench, cli_path: \"{cli}\" }}\nlog: {{ level: error }}\n\
             lifecycle: {{ reconcile_interval: 5m }}\n\
             agents:\n  sleeper: {{ kind: command, command: [sleep, \"3600\"] }}\n\
             projects:\n\
             \x20 plain: {{ repo: {repo}, agent: sleeper, runtime: tmux, setup: {{ ports: 0 }} }}\n\
             \x20 boxed: {{ repo: {repo}, agent: sleeper, runtime: tmux, setup: {{ ports: 0 }}, \
             sandbox: {{ enabled: true, allow_hosts: [] }} }}\n",
            cli = env!("CARGO_BIN_EXE_flotilla"),
            repo = repo.display()
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
        let me = std::process::id();
        let r0 = rss_kib(me);
        let plain = spawn_all(&sup, &store, "plain", 1, n).await;
        let r1 = rss_kib(me);
        let boxed = spawn_all(&sup, &store, "boxed", n + 1, n).await;
        let r2 = rss_kib(me);
        // Each pane's process tree, by project.
        let out = Command::new("tmux")
            .args(["-L", &socket, "list-panes", "-a", "-F", "#{session_name} #{pane_pid}"])
            .output()
            .expect("tmux");
        let procs = parents();
        let mut mem: HashMap<&str, u64> = HashMap::new();
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            let Some((name, pid)) = l.split_once(' ') else { continue };
            let Ok(pid) = pid.parse::<u32>() else { continue };
            let key = if name.starts_with("boxed") { "boxed" } else { "plain" };
            *mem.entry(key).or_default() += tree_rss(pid, &procs);
        }
        let per = |k: &str, own: u64| (mem.get(k).copied().unwrap_or(0) + own) as f64 / n as f64 / 1024.0;
        let plain_mib = per("plain", r1.saturating_sub(r0));
        let boxed_mib = per("boxed", r2.saturating_sub(r1));
        println!(
            "sandbox: spawn {n} sessions: plain {:.2?} ({:.1} ms each), sandboxed {:.2?} ({:.1} ms each), ratio {:.2}x",
            plain,
            plain.as_secs_f64() * 1000.0 / n as f64,
            boxed,
            boxed.as_secs_f64() * 1000.0 / n as f64,
            boxed.as_secs_f64() / plain.as_secs_f64()
        );
        println!(
            "sandbox: resident memory per session: plain {plain_mib:.2} MiB, sandboxed {boxed_mib:.2} MiB, ratio {:.2}x",
            boxed_mib / plain_mib
        );
        let _ = Command::new("tmux").args(["-L", &socket, "kill-server"]).output();
    });
}
