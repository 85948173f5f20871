//! The `flotilla turn-guard` process: starts the assistant in its own process group (it
//! inherits stdin, stdout and stderr), forwards how it ended, and kills the group when the
//! node is gone or, clustered, its heartbeat went stale (see [`super::guard`]).
//!
//! It never busy-loops: it sleeps in `poll(2)` on pidfds of the assistant and of the node
//! (readable when they end) until the heartbeat would go stale, then looks at the file
//! again. Without pidfds (Linux before 5.3) it looks every [`FALLBACK_TICK`].

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, SystemTime};

use super::guard::{
    beat_time, boot_clock, decide, Decision, Exit, Observation, SPAWN_FAILED, SPAWN_FAILED_CODE,
};

/// How often the guard looks when it cannot wait on pidfds.
pub const FALLBACK_TICK: Duration = Duration::from_millis(200);

/// What `turn-guard` was asked to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardOptions {
    /// The node's pid (default: the guard's parent when it starts).
    pub parent: Option<u32>,
    /// The heartbeat file (clustered).
    pub alive: Option<PathBuf>,
    /// How old the heartbeat may be, in ms (with `alive`).
    pub within_ms: Option<u64>,
    /// The assistant's argument vector.
    pub command: Vec<String>,
}

/// Runs `opts`; returns the exit code to use (the assistant's), or dies of the signal that
/// killed the assistant, or of the group kill.
pub fn run(opts: GuardOptions) -> i32 {
    let Some((program, args)) = opts.command.split_first() else {
        say("flotilla turn-guard: no command");
        return 2;
    };
    if opts.alive.is_some() != opts.within_ms.is_some() {
        say("flotilla turn-guard: --alive and --within-ms go together");
        return 2;
    }
    let parent = opts
        .parent
        .unwrap_or_else(std::os::unix::process::parent_id);
    let within = opts.within_ms.map(Duration::from_millis);
    // The node starts the guard as its group's leader; run any other way (a shell, a test),
    // it leads a group of its own, so its group kill reaches the assistant and nobody else.
    // SAFETY: plain syscalls on this process.
    unsafe {
        if libc::getpgrp() != libc::getpid() {
            libc::setpgid(0, 0);
        }
    }
    let started = (SystemTime::now(), boot_clock());
    let mut child = match std::process::Command::new(program).args(args).spawn() {
        Ok(c) => c,
        Err(e) => {
            say(&format!(
                "{SPAWN_FAILED}{}",
                e.raw_os_error().unwrap_or(libc::EIO)
            ));
            return SPAWN_FAILED_CODE;
        }
    };
    let child_fd = pidfd(child.id());
    // Opened, then checked: while the node is our parent, its pid is not reused.
    let parent_fd = pidfd(parent).filter(|_| parent_alive(parent));
    let tick = if child_fd.is_some() && parent_fd.is_some() {
        None
    } else {
        Some(FALLBACK_TICK)
    };
    // The node's pidfd said it ended (its children may be handed to the reaper a moment
    // later): gone, without looping on a descriptor that stays readable.
    let mut parent_ended = false;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return forward(Exit::of(status)),
            Ok(None) => {}
            Err(e) => {
                say(&format!(
                    "flotilla turn-guard: cannot wait for the assistant: {e}"
                ));
                stop(&mut child);
            }
        }
        let seen = Observation {
            parent_gone: parent_ended || !parent_alive(parent),
            heartbeat_age: opts.alive.as_deref().map(|f| age(f, started)),
        };
        match decide(seen, within) {
            Decision::Stop(reason) => {
                say(&format!(
                    "flotilla turn-guard: stopped the assistant: {reason}"
                ));
                stop(&mut child);
            }
            Decision::Wait(d) => {
                let d = match (d, tick) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let ready = wait(&[child_fd.as_ref(), parent_fd.as_ref()], d);
                parent_ended = parent_fd.is_some() && ready.contains(&1);
            }
        }
    }
}

/// One line on stderr, if anybody still reads it: the node that read the pipe may be dead,
/// and a failed write must not keep the guard from killing (`eprintln!` would panic).
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Whether the node is still the guard's parent.
fn parent_alive(parent: u32) -> bool {
    std::os::unix::process::parent_id() == parent
}

/// How old the heartbeat is, on the boot clock (see [`super::guard`]); a missing or unreadable
/// file counts from the guard's start (`started`: then, on the wall and boot clocks). A file
/// without a boot-clock time is dated by its mtime, on the wall clock.
fn age(file: &Path, started: (SystemTime, Option<Duration>)) -> Duration {
    let (started_wall, started_boot) = started;
    let now = boot_clock();
    let on_boot_clock = match std::fs::read_to_string(file) {
        Ok(text) => beat_time(&text),
        Err(_) => started_boot,
    };
    if let (Some(at), Some(now)) = (on_boot_clock, now) {
        return now.saturating_sub(at);
    }
    let since = std::fs::metadata(file)
        .and_then(|m| m.modified())
        .unwrap_or(started_wall);
    SystemTime::now()
        .duration_since(since)
        .unwrap_or(Duration::ZERO)
}

/// Kills the assistant and the whole group (the guard with it).
fn stop(child: &mut Child) -> ! {
    let _ = child.kill();
    // SAFETY: plain syscalls; the group is the guard's own (see `run`).
    unsafe {
        libc::killpg(libc::getpgrp(), libc::SIGKILL);
    }
    std::process::exit(Exit::Signal(libc::SIGKILL).code())
}

/// Ends as the assistant did: its exit code, or the same signal (no core dump), else
/// `128 + signal`.
fn forward(exit: Exit) -> i32 {
    if let Exit::Signal(s) = exit {
        // SAFETY: plain syscalls on this process; the structs are ours.
        unsafe {
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            libc::signal(s, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, s);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(s);
        }
    }
    exit.code()
}

/// A pidfd for `pid` (readable once it ends), when the kernel has them.
fn pidfd(pid: u32) -> Option<OwnedFd> {
    crate::plugins::pidfd::open(i32::try_from(pid).ok()?).ok()
}

/// Sleeps until one of `fds` is readable or `timeout` passed (`None`: no timeout); returns
/// the indexes (in `fds`) of the readable ones.
fn wait(fds: &[Option<&OwnedFd>], timeout: Option<Duration>) -> Vec<usize> {
    let index: Vec<usize> = (0..fds.len()).filter(|i| fds[*i].is_some()).collect();
    let mut polled: Vec<libc::pollfd> = fds
        .iter()
        .flatten()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |d| {
        i32::try_from(d.as_millis().saturating_add(1)).unwrap_or(i32::MAX)
    });
    // SAFETY: the array is ours and its length is passed with it.
    let n = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, ms) };
    if n <= 0 {
        return Vec::new();
    }
    polled
        .iter()
        .zip(index)
        .filter(|(p, _)| p.revents != 0)
        .map(|(_, i)| i)
        .collect()
}
