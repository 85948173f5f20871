//! Serving Flotilla in the benches: a repository with an origin to spawn in, and a
//! `flotilla serve` child that is ready (its `/readyz` answers 200) and dies with the bench.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::proc::run;

/// A repository with an origin (a bare clone) to fetch from.
pub fn repo_with_origin(root: &Path, name: &str) -> PathBuf {
    let seed = root.join(format!("{name}-seed"));
    crate::proc::repo(&seed);
    let origin = root.join(format!("{name}-origin.git"));
    run(
        root,
        &[
            "git",
            "clone",
            "-q",
            "--bare",
            seed.to_str().expect("utf-8"),
            origin.to_str().expect("utf-8"),
        ],
    );
    let repo = root.join(name);
    run(
        root,
        &[
            "git",
            "clone",
            "-q",
            origin.to_str().expect("utf-8"),
            repo.to_str().expect("utf-8"),
        ],
    );
    repo
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A `flotilla serve` child, killed and reaped when dropped.
pub struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `flotilla serve` with `cfg` and waits until `/readyz` answers 200.
pub fn serve(root: &Path, cfg: &Path, home: &Path, port: u16) -> Server {
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
    // Owned at once: a panic below still kills and reaps it.
    let server = Server { child };
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

/// The API token the benches' servers are configured with.
pub const TOKEN: &str = "bench-token";

/// `flotilla spawn` of task `n` against the server on `port`, output discarded.
pub fn spawn_cmd(root: &Path, cfg: &Path, home: &Path, port: u16, n: usize) -> Command {
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
    c
}
