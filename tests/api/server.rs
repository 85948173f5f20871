//! The real `flotilla` binary as a child process, for CLI and crash tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::helpers::*;

/// Path of the built binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_flotilla")
}

/// A free loopback port (the listener is dropped before the server binds it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Runs the CLI to completion with `home` as `$FLOTILLA_HOME`, in `cwd`.
pub fn cli(cwd: &Path, home: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(cwd)
        .env("FLOTILLA_HOME", home)
        .env_remove("FLOTILLA_TOKEN")
        .env_remove("FLOTILLA_SERVER")
        .env_remove("FLOTILLA_CONFIG")
        .output()
        .expect("flotilla runs")
}

/// A `flotilla serve` child.
pub struct ServerProc {
    child: Child,
    /// Base URL.
    pub address: String,
}

impl ServerProc {
    /// Starts `flotilla serve --config cfg` and waits for `/readyz`.
    pub async fn start(cwd: &Path, home: &Path, cfg: &Path, port: u16) -> ServerProc {
        ServerProc::start_with_env(cwd, home, cfg, port, &[]).await
    }

    /// [`ServerProc::start`] with extra environment variables (`FLOTILLA__…` overrides).
    pub async fn start_with_env(
        cwd: &Path,
        home: &Path,
        cfg: &Path,
        port: u16,
        env: &[(&str, &str)],
    ) -> ServerProc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(cwd.join("server.log"))
            .expect("log file");
        let child = Command::new(bin())
            .args(["serve", "--config"])
            .arg(cfg)
            .current_dir(cwd)
            .env("FLOTILLA_HOME", home)
            .env("FLOTILLA__SERVER__PORT", port.to_string())
            .envs(env.iter().copied())
            .stdout(Stdio::from(log.try_clone().expect("clone")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("serve starts");
        let mut s = ServerProc {
            child,
            address: format!("http://127.0.0.1:{port}"),
        };
        let url = format!("{}/readyz", s.address);
        // Each probe is bounded, and the last answer is kept: a server that never gets ready
        // says how (refused, 503 and why, exited).
        let probe = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .expect("client");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut last: String;
        loop {
            match probe.get(&url).send().await {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => last = format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => last = format!("{e:?}"),
            }
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("the server exited ({status}) before it was ready; last answer: {last}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for server ready; last /readyz answer: {last}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        s
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A scratch directory with a repo and a config on a fixed port.
pub struct Scratch {
    /// Owns the files.
    pub dir: tempfile::TempDir,
    /// `$FLOTILLA_HOME`.
    pub home: PathBuf,
    /// Config path.
    pub cfg: PathBuf,
    /// Port.
    pub port: u16,
}

impl Scratch {
    /// A repo and config with `extra` appended to the YAML.
    pub fn new(extra: &str) -> Scratch {
        let agents = format!("  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n");
        Scratch::with_agents(tempfile::tempdir().expect("tempdir"), &agents, extra)
    }

    /// A repo and config in `dir` with `agents` lines and `extra` project lines.
    pub fn with_agents(dir: tempfile::TempDir, agents: &str, extra: &str) -> Scratch {
        let home = dir.path().join("home");
        let repo = make_repo(dir.path());
        let db = format!("sqlite://{}/flotilla.db", home.display());
        let cfg = write_config_agents(dir.path(), &repo, &db, agents, extra);
        Scratch {
            dir,
            home,
            cfg,
            port: free_port(),
        }
    }

    /// Client-verb args prefix: `--config CFG --server URL --token T`.
    pub fn client_args(&self) -> Vec<String> {
        vec![
            "--config".into(),
            self.cfg.display().to_string(),
            "--server".into(),
            format!("http://127.0.0.1:{}", self.port),
            "--token".into(),
            TOKEN.into(),
        ]
    }

    /// Runs a client verb.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut all: Vec<String> = self.client_args();
        all.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        cli(self.dir.path(), &self.home, &refs)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        kill_agents(&self.home);
    }
}
