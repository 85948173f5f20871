//! Spawning on a remote host (an sshd this bench starts on loopback, reached through the
//! system's ssh with a shared control connection) against spawning locally, in one run:
//! `flotilla spawn` (which returns once the agent runs) alternately with `--host r` and
//! without, against one `flotilla serve`, tmux on both sides, agent `sleep 3600`. One warm-up
//! spawn each first (the host clones the repository once). Reports ms/spawn and the ratio.
//!
//! `cargo bench --bench remote_spawn` (`FLOTILLA_BENCH_ROUNDS`, default 10).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/proc.rs"]
mod proc;
#[path = "../tests/support/sshd.rs"]
mod sshd;
use proc::run;

const TOKEN: &str = "bench-token";

/// A repository cloned from a bare origin.
fn repo_with_origin(root: &Path) -> std::path::PathBuf {
    let seed = root.join("seed");
    std::fs::create_dir_all(&seed).expect("mkdir");
    run(&seed, &["git", "init", "-q", "-b", "main"]);
    std::fs::write(seed.join("README.md"), "bench\n").expect("write");
    run(&seed, &["git", "add", "."]);
    run(
        &seed,
        &[
            "git",
            "-c",
            "user.email=b@b",
            "-c",
            "user.name=b",
            "commit",
            "-q",
            "-m",
            "init",
        ],
    );
    let origin = root.join("origin.git");
    let (s, o) = (seed.display().to_string(), origin.display().to_string());
    run(root, &["git", "clone", "-q", "--bare", &s, &o]);
    let repo = root.join("repo");
    run(
        root,
        &["git", "clone", "-q", &o, &repo.display().to_string()],
    );
    repo
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(root: &Path, cfg: &Path, home: &Path, port: u16) -> Server {
    let log = std::fs::File::create(root.join("server.log")).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["serve", "--config"])
        .arg(cfg)
        .current_dir(root)
        .env("FLOTILLA_HOME", home)
        .env("FLOTILLA__SERVER__PORT", port.to_string())
        .stdout(Stdio::from(log.try_clone().expect("clone")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("serve");
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
            use std::io::{Read, Write};
            let _ = s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n");
            let mut buf = [0u8; 16];
            s.read(&mut buf)
                .is_ok_and(|n| buf[..n].windows(5).any(|w| w == b" 200 "))
        });
        if ready {
            return server;
        }
        assert!(Instant::now() < deadline, "server not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One `flotilla spawn` until the agent runs; its wall time.
fn spawn(
    root: &Path,
    cfg: &Path,
    home: &Path,
    port: u16,
    n: usize,
    host: Option<&str>,
) -> Duration {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flotilla"));
    c.args(["--config"])
        .arg(cfg)
        .args(["--server", &format!("http://127.0.0.1:{port}")])
        .args(["--token", TOKEN])
        .args([
            "spawn",
            "--project",
            "bench",
            "--prompt",
            &format!("task {n}"),
        ])
        .current_dir(root)
        .env("FLOTILLA_HOME", home)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
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
    let repo = repo_with_origin(root);
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
