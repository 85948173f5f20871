//! `flotilla sandbox-exec`: the first program inside an agent's sandbox. It binds the loopback
//! ports that lead to the egress proxy (the proxy port `HTTP(S)_PROXY` names, and transparent
//! forwards to allowed loopback services of the host such as Flotilla itself), hands them to a
//! forked helper that serves them, applies the resource limits, and then becomes the agent
//! (`exec`), so the runtime's pid, exit status and terminal are the agent's own.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use super::proxy;

/// What `sandbox-exec` was asked to do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecOptions {
    /// The proxy's socket (inside).
    pub proxy: Option<PathBuf>,
    /// Serve an HTTP proxy on this loopback address (bridged to `proxy`).
    pub bridge: Option<SocketAddr>,
    /// Forward these loopback addresses to the same address on the host (through `proxy`).
    pub forward: Vec<SocketAddr>,
    /// RLIMIT_NPROC.
    pub processes: Option<u64>,
    /// RLIMIT_AS, in MiB.
    pub memory_mb: Option<u64>,
    /// RLIMIT_CPU, in seconds.
    pub cpu_seconds: Option<u64>,
    /// The agent's argument vector.
    pub command: Vec<String>,
}

impl ExecOptions {
    /// The `sandbox-exec` arguments (after the verb) that ask for `self`.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(p) = &self.proxy {
            a.extend(["--proxy".to_string(), p.to_string_lossy().into_owned()]);
        }
        if let Some(b) = &self.bridge {
            a.extend(["--bridge".to_string(), b.to_string()]);
        }
        for f in &self.forward {
            a.extend(["--forward".to_string(), f.to_string()]);
        }
        for (flag, v) in [
            ("--processes", self.processes),
            ("--memory-mb", self.memory_mb),
            ("--cpu-seconds", self.cpu_seconds),
        ] {
            if let Some(v) = v {
                a.extend([flag.to_string(), v.to_string()]);
            }
        }
        a.push("--".into());
        a.extend(self.command.iter().cloned());
        a
    }
}

/// Runs `opts`; returns only on failure, with the exit code to use (127: cannot start).
pub fn run(opts: ExecOptions) -> i32 {
    let Some(program) = opts.command.first().cloned() else {
        eprintln!("flotilla sandbox-exec: no command");
        return 2;
    };
    if let Err(e) = start_network(&opts) {
        eprintln!("flotilla sandbox-exec: the sandbox's network bridge failed: {e}");
        return 127;
    }
    if let Err(e) = apply_limits(&opts) {
        eprintln!("flotilla sandbox-exec: {e}");
        return 127;
    }
    let err = std::process::Command::new(&program)
        .args(&opts.command[1..])
        .exec();
    eprintln!("flotilla sandbox-exec: cannot run {program}: {err}");
    127
}

/// Forks a helper that binds every relay port and serves it until the sandbox ends (its PID
/// namespace dies with the agent); returns once the ports accept, so the agent never starts
/// before its proxy does.
fn start_network(opts: &ExecOptions) -> std::io::Result<()> {
    let Some(proxy) = opts.proxy.clone() else {
        return Ok(());
    };
    if opts.bridge.is_none() && opts.forward.is_empty() {
        return Ok(());
    }
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into the array we own.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (ready_r, ready_w) = (fds[0], fds[1]);
    // SAFETY: no thread has been started in this process yet (the CLI runs this before any
    // runtime), so the child may run arbitrary code after `fork`.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => {
            // The helper: never returns. It must not write to the agent's terminal.
            // SAFETY: plain syscalls on our own descriptors.
            unsafe {
                libc::close(ready_r);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null >= 0 {
                    for fd in 0..3 {
                        libc::dup2(null, fd);
                    }
                }
            }
            std::process::exit(serve(opts, proxy, ready_w));
        }
        _ => {
            // SAFETY: our descriptors; `read` fills the one byte we own.
            let ok = unsafe {
                libc::close(ready_w);
                let mut byte = 0u8;
                let n = libc::read(ready_r, (&mut byte as *mut u8).cast(), 1);
                libc::close(ready_r);
                n == 1 && byte == 1
            };
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::other("the relay ports could not be bound"))
            }
        }
    }
}

/// The helper's body: binds the relays, tells the parent (one byte on `ready`: 1 bound, 0
/// failed), then serves them.
fn serve(opts: &ExecOptions, proxy: PathBuf, ready: libc::c_int) -> i32 {
    let tell = |ok: bool| {
        let byte = u8::from(ok);
        // SAFETY: writes one byte from our stack to our descriptor, then closes it.
        unsafe {
            libc::write(ready, (&byte as *const u8).cast(), 1);
            libc::close(ready);
        }
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        tell(false);
        return 1;
    };
    rt.block_on(async move {
        let mut relays = Vec::new();
        if let Some(b) = opts.bridge {
            match proxy::Relay::bridge(b, proxy.clone()).await {
                Ok(r) => relays.push(r),
                Err(_) => {
                    tell(false);
                    return 1;
                }
            }
        }
        for f in &opts.forward {
            match proxy::Relay::forward(*f, proxy.clone(), &f.ip().to_string(), f.port()).await {
                Ok(r) => relays.push(r),
                Err(_) => {
                    tell(false);
                    return 1;
                }
            }
        }
        tell(true);
        let mut tasks = tokio::task::JoinSet::new();
        for r in relays {
            tasks.spawn(r.run());
        }
        while tasks.join_next().await.is_some() {}
        0
    })
}

fn apply_limits(opts: &ExecOptions) -> Result<(), String> {
    let limits = [
        (libc::RLIMIT_NPROC, opts.processes, 1, "processes"),
        (libc::RLIMIT_AS, opts.memory_mb, 1024 * 1024, "memory_mb"),
        (libc::RLIMIT_CPU, opts.cpu_seconds, 1, "cpu_seconds"),
    ];
    for (resource, value, unit, name) in limits {
        let Some(v) = value else { continue };
        let v = v.saturating_mul(unit) as libc::rlim_t;
        let lim = libc::rlimit {
            rlim_cur: v,
            rlim_max: v,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(resource, &lim) } != 0 {
            return Err(format!(
                "cannot apply the sandbox limit {name}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_through_arguments() {
        let o = ExecOptions {
            proxy: Some("/run/flotilla/proxy.sock".into()),
            bridge: Some("127.0.0.1:3128".parse().expect("addr")),
            forward: vec!["127.0.0.1:7700".parse().expect("addr")],
            processes: None,
            memory_mb: Some(4096),
            cpu_seconds: None,
            command: vec!["claude".into(), "--flag".into()],
        };
        assert_eq!(
            o.to_args(),
            [
                "--proxy",
                "/run/flotilla/proxy.sock",
                "--bridge",
                "127.0.0.1:3128",
                "--forward",
                "127.0.0.1:7700",
                "--memory-mb",
                "4096",
                "--",
                "claude",
                "--flag"
            ]
        );
    }
}
