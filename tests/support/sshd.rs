//! An OpenSSH server the test starts itself on 127.0.0.1: its own host key, an authorized
//! client key, its own `sshd_config` (`-f`), run in the foreground (`-D`) as the current user
//! (root here: `PermitRootLogin prohibit-password` lets the key in; `StrictModes no` accepts
//! the temp dir's modes). `known_hosts` holds its key, so clients check it strictly.
//!
//! [`Sshd::vanish`] kills the server and every connection it forked (what a host that drops
//! off the network looks like to the client); [`Sshd::restart`] brings it back on the same
//! port with the same keys. Shared by tests/api/remote_hosts.rs and benches/remote_spawn.rs.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's openssh-server puts the daemon.
pub const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd.
pub struct Sshd {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The client's private key.
    pub key: PathBuf,
    /// A known_hosts file with the server's key.
    pub known_hosts: PathBuf,
    /// The user to log in as (the current one).
    pub user: String,
    /// Where every command a client runs is logged, when started with [`Sshd::start_logged`].
    log: Option<PathBuf>,
    config: PathBuf,
    child: Option<Child>,
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success(), "ssh-keygen: {out:?}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Whether sshd (and the ssh client) are installed; under `CI=true` their absence panics.
pub fn available() -> bool {
    let ok = Path::new(SSHD).is_file()
        && Command::new("ssh")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "sshd or ssh is missing (install openssh-server and openssh-client: .ci/deps.sh)"
        );
        eprintln!("skipped: sshd or ssh is missing");
    }
    ok
}

impl Sshd {
    /// Generates keys and a config in `dir` and starts the server.
    pub fn start(dir: &Path) -> Sshd {
        Sshd::start_with_env(dir, &[])
    }

    /// As [`Sshd::start`], its sessions getting `env` too (`SetEnv`: a `PATH` here replaces
    /// the login's, say to leave a tool out).
    pub fn start_with_env(dir: &Path, env: &[(&str, &str)]) -> Sshd {
        Sshd::start_inner(dir, env, false)
    }

    /// As [`Sshd::start`], every command a client runs also logged, one line each (its
    /// newlines as spaces), for [`Sshd::commands`]: the server runs a `ForceCommand` that
    /// appends `SSH_ORIGINAL_COMMAND` to the log and then runs it with `sh -c`. The control
    /// connection's own requests (`ssh -O forward`) are no commands and are not logged.
    pub fn start_logged(dir: &Path) -> Sshd {
        Sshd::start_inner(dir, &[], true)
    }

    /// The commands run so far (see [`Sshd::start_logged`]; empty otherwise), in order.
    pub fn commands(&self) -> Vec<String> {
        self.log
            .as_ref()
            .and_then(|l| std::fs::read_to_string(l).ok())
            .map(|t| t.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    fn start_inner(dir: &Path, env: &[(&str, &str)], logged: bool) -> Sshd {
        std::fs::create_dir_all(dir).expect("mkdir");
        let host_key = dir.join("host_key");
        let key = dir.join("client_key");
        keygen(&host_key);
        keygen(&key);
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).expect("keys");
        let port = free_port();
        let log = logged.then(|| dir.join("commands.log"));
        let force = match &log {
            Some(l) => {
                let wrapper = dir.join("log-command");
                // One `printf` per command: one write, so concurrent sessions' lines never mix.
                std::fs::write(
                    &wrapper,
                    format!(
                        "#!/bin/sh\nc=$(printf '%s' \"$SSH_ORIGINAL_COMMAND\" | tr '\\n' ' ')\n\
                         printf '%s\\n' \"$c\" >> '{}'\nexec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n",
                        l.display()
                    ),
                )
                .expect("log-command");
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
                    .expect("chmod");
                format!("ForceCommand {}\n", wrapper.display())
            }
            None => String::new(),
        };
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {dir}/authorized_keys\n\
                 PidFile {dir}/sshd.pid\nStrictModes no\nPermitRootLogin prohibit-password\n\
                 PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 UsePAM no\nMaxSessions 64\nMaxStartups 64\nLogLevel ERROR\n\
                 {force}SetEnv PYENV_REHASH_TIMEOUT=1{extra}\n",
                hk = host_key.display(),
                dir = dir.display(),
                extra = env
                    .iter()
                    .map(|(k, v)| format!(" {k}={v}"))
                    .collect::<String>(),
            ),
        )
        .expect("sshd_config");
        let pubkey = std::fs::read_to_string(dir.join("host_key.pub")).expect("host key");
        let mut f = pubkey.split_whitespace();
        let (kind, body) = (f.next().expect("kind"), f.next().expect("key"));
        let known_hosts = dir.join("known_hosts");
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {kind} {body}\n"))
            .expect("known_hosts");
        let user = String::from_utf8(Command::new("id").arg("-un").output().expect("id").stdout)
            .expect("utf8")
            .trim()
            .to_string();
        let mut s = Sshd {
            port,
            key,
            known_hosts,
            user,
            log,
            config,
            child: None,
        };
        s.restart();
        s
    }

    /// Starts the server (again) on its port and waits until it accepts connections.
    pub fn restart(&mut self) {
        // sshd running as root wants its privilege-separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("sshd starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                panic!("sshd exited: {st}");
            }
            assert!(Instant::now() < deadline, "sshd did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server and every process it forked (its connections and their sessions;
    /// daemons such as a tmux server have left its tree and live on).
    pub fn vanish(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let root = child.id() as i32;
        let mut doomed = vec![root];
        let mut i = 0;
        let parents = parents();
        while i < doomed.len() {
            let p = doomed[i];
            doomed.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
            i += 1;
        }
        // SIGTERM first, so that shells run their exit traps (a login shell killed inside
        // `pyenv rehash` leaves its lock file behind, and every later ssh session on this
        // machine then waits for it), then SIGKILL whatever is left.
        for pid in doomed.iter().rev() {
            // SAFETY: plain syscall on pids of our own sshd's tree.
            unsafe { libc::kill(*pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline
            && doomed[1..]
                .iter()
                .any(|p| Path::new(&format!("/proc/{p}")).exists())
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in doomed {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = child.wait();
    }

    /// `hosts.<name>` YAML for this server, with `work_dir` and `capacity`.
    pub fn host_yaml(&self, name: &str, work_dir: &Path, capacity: u32) -> String {
        format!(
            "  {name}: {{ ssh: \"{user}@127.0.0.1\", port: {port}, workdir: \"{wd}\", capacity: {capacity}, identity_file: \"{key}\", known_hosts: \"{kh}\" }}\n",
            user = self.user,
            port = self.port,
            wd = work_dir.display(),
            key = self.key.display(),
            kh = self.known_hosts.display()
        )
    }
}

/// (pid, parent pid) of every process.
fn parents() -> Vec<(i32, i32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = &stat[stat.rfind(')')? + 1..];
            let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect()
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.vanish();
    }
}
