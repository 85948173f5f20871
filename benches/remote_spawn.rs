//! Spawning on a remote host (an sshd this bench starts on loopback, reached through the
//! system's ssh with a shared control connection) against spawning locally, in one run:
//! `flotilla spawn` (which returns once the agent runs) alternately with `--host r` and
//! without, against one `flotilla serve`, tmux on both sides, agent `sleep 3600`. One warm-up
//! spawn each first (the host clones the repository once). Reports ms/spawn and the ratio.
//!
//! `cargo bench --bench remote_spawn` (`FLOTILLA_BENCH_ROUNDS`, default 10).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "support/proc.rs"]
mod proc;
#[path = "support/serve.rs"]
mod serve;
#[path = "../tests/support/sshd.rs"]
mod sshd;
use serve::{free_port, repo_with_origin, serve, spawn_cmd, TOKEN};

/// One `flotilla spawn` until the agent runs; its wall time.
fn spawn(
    root: &Path,
    cfg: &Path,
    home: &Path,
    port: u16,
    n: usize,
    host: Option<&str>,
) -> Duration {
    let mut c = spawn_cmd(root, cfg, home, port, n);
    if let Some(h) = host {
        c.args(["--host", h]);
    }
    let t = Instant::now();
    let out = c.output().expect("spawn");
    let d = t.elapsed();
    assert!(
        out.status.success(),
        "flotilla spawn: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if !sshd::available() {
        return;
    }
    let rounds: usize = std::env::var("FLOTILLA_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let repo = repo_with_origin(root, "repo");
    let ssh = sshd::Sshd::start(&root.join("sshd"));
    let home = root.join("home");
    let cfg = root.join("flotilla.yaml");
    std::fs::write(
        &cfg,
        format!(
            "server: {{ port: 0, token: {TOKEN} }}\nlog: {{ level: error }}\n\
             lifecycle: {{ reconcile_interval: 5m }}\n\
             agents:\n  sleeper: {{ kind: command, command: [sleep, \"3600\"] }}\n\
             projects:\n  bench: {{ repo: {}, agent: sleeper, runtime: tmux, setup: {{ ports: 0 }} }}\n\
             hosts:\n{}",
            repo.display(),
            ssh.host_yaml("r", &root.join("host-r"), 1000)
        ),
    )
    .expect("config");
    let port = free_port();
    let server = serve(root, &cfg, &home, port);
    spawn(root, &cfg, &home, port, 0, None);
    spawn(root, &cfg, &home, port, 1, Some("r"));
    let (mut local, mut remote) = (Duration::ZERO, Duration::ZERO);
    for n in 0..rounds {
        local += spawn(root, &cfg, &home, port, 2 + 2 * n, None);
        remote += spawn(root, &cfg, &home, port, 3 + 2 * n, Some("r"));
    }
    drop(server);
    let socket = flotilla::app::tmux_socket(&home);
    for s in [socket.clone(), format!("{socket}-r")] {
        let _ = Command::new("tmux")
            .args(["-L", &s, "kill-server"])
            .status();
    }
    drop(ssh);
    let per = |d: Duration| d.as_secs_f64() * 1000.0 / rounds as f64;
    println!(
        "spawn through the CLI until the agent runs ({rounds} each, alternating, tmux, SQLite):"
    );
    println!(
        "  local {:.0} ms/spawn, remote (ssh to loopback) {:.0} ms/spawn, ratio {:.2}×",
        per(local),
        per(remote),
        remote.as_secs_f64() / local.as_secs_f64()
    );
}
