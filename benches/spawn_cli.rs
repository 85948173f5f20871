//! Spawning as a user does: `flotilla spawn` from the shell against a running `flotilla serve`
//! (real git, real tmux, SQLite), until the command returns with the agent running:
//! 1. 10 spawns in a row;
//! 2. a burst of 10 `flotilla spawn` processes at once;
//!
//! each against a plain loop doing the same work by hand: `git fetch` of the base from the
//! origin, `git worktree add -b`, `tmux new-session -d`. The agent is `sleep 3600` on both
//! sides, so only the orchestration differs. The origin is a local bare repository (a real
//! remote adds a second or more per fetch, which Flotilla pays once per burst and the loop
//! once per session). Goal: ≤ 2× the plain loop.
//!
//! `cargo bench --bench spawn_cli` (`FLOTILLA_BENCH_ROUNDS`, default 10).

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

#[path = "support/proc.rs"]
mod proc;
#[path = "support/serve.rs"]
mod serve;
use proc::run;
use serve::{free_port, repo_with_origin, serve, spawn_cmd, TOKEN};

fn check(out: std::process::Output) {
    assert!(
        out.status.success(),
        "flotilla spawn: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The plain loop's work for session `n`, worktree under `wt`, on tmux socket `socket`.
fn by_hand(wt: &Path, socket: &str, n: usize) -> Vec<Vec<String>> {
    let path = wt.join(format!("s-{n}"));
    let s = |x: &str| x.to_string();
    vec![
        vec![s("git"), s("fetch"), s("--quiet"), s("origin"), s("main")],
        vec![
            s("git"),
            s("worktree"),
            s("add"),
            s("--quiet"),
            s("--no-track"),
            s("-b"),
            format!("hand/{n}"),
            path.display().to_string(),
            s("origin/main"),
        ],
        vec![
            s("tmux"),
            s("-L"),
            s(socket),
            s("new-session"),
            s("-d"),
            s("-s"),
            format!("hand-{n}"),
            s("-c"),
            path.display().to_string(),
            s("sleep"),
            s("3600"),
        ],
    ]
}

fn run_all(repo: &Path, steps: &[Vec<String>]) {
    for argv in steps {
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        run(repo, &refs);
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rounds: usize = std::env::var("FLOTILLA_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let repo = repo_with_origin(root, "repo");
    let home = root.join("home");
    let cfg = root.join("flotilla.yaml");
    std::fs::write(
        &cfg,
        format!(
            "server: {{ port: 0, token: {TOKEN} }}\nlog: {{ level: error }}\n\
             lifecycle: {{ reconcile_interval: 5m }}\n\
             agents:\n  sleeper: {{ kind: command, command: [sleep, \"3600\"] }}\n\
             projects:\n  bench: {{ repo: {}, agent: sleeper, runtime: tmux, setup: {{ ports: 0 }} }}\n",
            repo.display()
        ),
    )
    .expect("config");
    let port = free_port();
    let server = serve(root, &cfg, &home, port);

    // 1. In a row.
    let t = Instant::now();
    for n in 0..rounds {
        check(
            spawn_cmd(root, &cfg, &home, port, n)
                .output()
                .expect("spawn"),
        );
    }
    let flotilla_row = t.elapsed();

    // 2. A burst.
    let t = Instant::now();
    let children: Vec<Child> = (0..rounds)
        .map(|n| {
            spawn_cmd(root, &cfg, &home, port, rounds + n)
                .spawn()
                .expect("spawn")
        })
        .collect();
    for c in children {
        check(c.wait_with_output().expect("wait"));
    }
    let flotilla_burst = t.elapsed();
    drop(server);
    let _ = Command::new("tmux")
        .args(["-L", &flotilla::app::tmux_socket(&home), "kill-server"])
        .status();

    // The plain loop, on its own repository and tmux server.
    let hand_repo = repo_with_origin(root, "hand");
    let wt = root.join("hand-wt");
    let socket = format!("flotilla-bench-{}", std::process::id());
    let t = Instant::now();
    for n in 0..rounds {
        run_all(&hand_repo, &by_hand(&wt, &socket, n));
    }
    let hand_row = t.elapsed();
    // A burst by hand: the same loop (git's worktree bookkeeping is not safe in parallel).
    let t = Instant::now();
    for n in rounds..2 * rounds {
        run_all(&hand_repo, &by_hand(&wt, &socket, n));
    }
    let hand_burst = t.elapsed();
    let _ = Command::new("tmux")
        .args(["-L", &socket, "kill-server"])
        .status();

    let per = |d: Duration| d.as_secs_f64() * 1000.0 / rounds as f64;
    println!("spawn through the CLI until the agent runs ({rounds} sessions, tmux, SQLite):");
    println!(
        "  in a row: flotilla {:.0} ms/spawn, plain loop {:.0} ms/spawn, ratio {:.2}×",
        per(flotilla_row),
        per(hand_row),
        flotilla_row.as_secs_f64() / hand_row.as_secs_f64()
    );
    println!(
        "  burst:    flotilla {:.0} ms for all ({:.0} ms/spawn), plain loop {:.0} ms, ratio {:.2}×",
        flotilla_burst.as_secs_f64() * 1000.0,
        per(flotilla_burst),
        hand_burst.as_secs_f64() * 1000.0,
        flotilla_burst.as_secs_f64() / hand_burst.as_secs_f64()
    );
}
