//! The turn guard: `flotilla turn-guard [--parent PID] [--alive FILE --within-ms N] -- argv…`
//! runs between the node and each assistant process, so the assistant dies by itself when
//! its node stops being alive (see `guard_exec` for the process that does it).
//!
//! The node may die with `kill -9` (the assistant's process group is then nobody's to kill),
//! or, clustered, be paused (SIGSTOP, a stalled VM) past its lease time while another node
//! takes the conversation and its turn slot and runs the message again. The guard stops the
//! assistant (SIGKILL to its process group, the guard included) when
//! - its parent, the node, is gone: `getppid()` is no longer the node's pid (passed as
//!   `--parent`, so a node that died before the guard looked is seen too). Not
//!   `PR_SET_PDEATHSIG`: that fires when the *thread* that forked the guard exits, and the
//!   node's runtime threads come and go;
//! - clustered, the node's heartbeat file (written by the lease manager after each renewal
//!   it committed, with the time the renewal was *sent*) is older than `--within-ms`
//!   ([`within`]): the node has not renewed its leases, so they are about to expire.
//!
//! The heartbeat's time is read on the machine's boot clock ([`boot_clock`], the file's text),
//! which every process shares and nobody sets: a wall clock stepped forward (NTP, a VM
//! restored) would stop a live node's turns, and one stepped back would let a stale node's
//! turn run on while another node takes its conversation. The file's mtime (the wall-clock
//! time) is read only from a file without that text.
//!
//! Everything else here is pure: the decision ([`decide`]), the limit ([`within`]), the argv
//! ([`TurnGuard::wrap`]) and the exit-status forwarding ([`Exit`]).

use std::path::PathBuf;
use std::time::Duration;

/// The hidden verb.
pub const VERB: &str = "turn-guard";

/// The first words of the line the guard writes to stderr when the assistant cannot start;
/// followed by the OS error number, so the node reports the same `Io` error as when it
/// started the assistant itself.
pub const SPAWN_FAILED: &str = "flotilla turn-guard: cannot start the assistant: os error ";

/// The exit code of a guard whose assistant could not start.
pub const SPAWN_FAILED_CODE: i32 = 127;

/// Latency allowed between the heartbeat going stale and the assistant being dead (the
/// guard's wake-up, the kill), taken off the lease time with the renewal's half.
pub const KILL_SLACK: Duration = Duration::from_millis(100);

/// How long a heartbeat may be old before the guard stops the turn, for leases of `ttl`
/// renewed every `renew`.
///
/// The heartbeat's time is the node's clock when the renewal was *sent*, which is before the
/// database stamped the lease's new expiry (`now + ttl` on its clock, measured inside the
/// transaction): the lease cannot expire before `heartbeat + ttl`, whatever the round trip
/// took. Another node takes it over only after that, at its next renewal tick, and only then
/// claims the turn slot and starts its run. Stopping at `heartbeat + ttl − renew/2 −
/// KILL_SLACK` leaves at least `renew/2` (plus the taker's tick) between the kill and the
/// takeover, and still survives one missed renewal with the defaults (15 s / 5 s: 12.4 s,
/// the gap after one miss is 10 s) as the lease does. Never below one renewal interval
/// (`renew ≤ ttl/2` is validated, so this only guards odd inputs).
pub fn within(ttl: Duration, renew: Duration) -> Duration {
    ttl.saturating_sub(renew / 2)
        .saturating_sub(KILL_SLACK)
        .max(renew)
}

/// The machine's boot clock: the time since it booted, suspension included (Linux's
/// `CLOCK_BOOTTIME`; the monotonic clock elsewhere). The same for every process on the
/// machine, and never set. `None` if the OS does not tell.
pub fn boot_clock() -> Option<Duration> {
    #[cfg(target_os = "linux")]
    let clock = libc::CLOCK_BOOTTIME;
    #[cfg(not(target_os = "linux"))]
    let clock = libc::CLOCK_MONOTONIC;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a plain syscall writing into our own struct.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(ts.tv_sec).ok()?,
        u32::try_from(ts.tv_nsec).ok()?,
    ))
}

/// A heartbeat file's text for a renewal sent at `at` on the [`boot_clock`]: nanoseconds.
pub fn beat_text(at: Duration) -> String {
    format!("{}\n", at.as_nanos())
}

/// The [`boot_clock`] time a heartbeat file's `text` holds (`None`: it holds none).
pub fn beat_time(text: &str) -> Option<Duration> {
    text.trim().parse::<u64>().ok().map(Duration::from_nanos)
}

/// How the node asks for a guarded turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnGuard {
    /// The `flotilla` executable (this one when it is `flotilla`, else `server.cli_path`).
    pub exe: PathBuf,
    /// The node's pid: the guard's parent while the node lives.
    pub parent: u32,
    /// Clustered: the heartbeat file and how old it may get.
    pub alive: Option<Heartbeat>,
}

/// A heartbeat file and how old it may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// The file that holds the last renewal's time ([`beat_text`]).
    pub file: PathBuf,
    /// How old it may be ([`within`]).
    pub within: Duration,
}

impl TurnGuard {
    /// A guard for this process's turns, run by `exe`.
    pub fn new(exe: PathBuf, alive: Option<Heartbeat>) -> Self {
        TurnGuard {
            exe,
            parent: std::process::id(),
            alive,
        }
    }

    /// The argument vector running `argv` under the guard (no shell; the assistant's
    /// environment is passed through the environment, never here).
    pub fn wrap(&self, argv: &[String]) -> Vec<String> {
        let mut a = vec![self.exe.to_string_lossy().into_owned(), VERB.to_string()];
        a.extend(["--parent".to_string(), self.parent.to_string()]);
        if let Some(h) = &self.alive {
            a.extend([
                "--alive".to_string(),
                h.file.to_string_lossy().into_owned(),
                "--within-ms".to_string(),
                h.within.as_millis().to_string(),
            ]);
        }
        a.push("--".into());
        a.extend(argv.iter().cloned());
        a
    }
}

/// The OS error of a guard that could not start its assistant, from its exit code and the
/// last line of its stderr.
pub fn spawn_error(code: Option<i32>, stderr: &str) -> Option<std::io::Error> {
    if code != Some(SPAWN_FAILED_CODE) {
        return None;
    }
    let errno = stderr
        .lines()
        .last()?
        .trim()
        .strip_prefix(SPAWN_FAILED)?
        .parse::<i32>()
        .ok()?;
    Some(std::io::Error::from_raw_os_error(errno))
}

/// What the guard sees at one wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// The node is no longer the guard's parent.
    pub parent_gone: bool,
    /// How old the heartbeat is (`None` when not clustered). A missing file counts from the
    /// guard's own start: the node's first renewal has not been written yet.
    pub heartbeat_age: Option<Duration>,
}

/// Why the guard stops the assistant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The node died.
    ParentGone,
    /// The node has not renewed its leases for this long.
    Stale(Duration),
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::ParentGone => f.write_str("its Flotilla node is gone"),
            StopReason::Stale(age) => write!(
                f,
                "no lease renewal by its node for {} ms (paused, or cut off from the database)",
                age.as_millis()
            ),
        }
    }
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Kill the group and exit.
    Stop(StopReason),
    /// Look again after at most this long (`None`: only when the assistant or the node
    /// ends).
    Wait(Option<Duration>),
}

/// The guard's decision from what it sees, with `within` the heartbeat's allowed age.
pub fn decide(seen: Observation, within: Option<Duration>) -> Decision {
    if seen.parent_gone {
        return Decision::Stop(StopReason::ParentGone);
    }
    match (seen.heartbeat_age, within) {
        (Some(age), Some(limit)) if age >= limit => Decision::Stop(StopReason::Stale(age)),
        (Some(age), Some(limit)) => Decision::Wait(Some(limit - age)),
        _ => Decision::Wait(None),
    }
}

/// How the assistant ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl Exit {
    /// From a wait status.
    pub fn of(status: std::process::ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(s)) => Exit::Signal(s),
            (None, None) => Exit::Code(1),
        }
    }

    /// The exit code the guard uses when it cannot die of the same signal itself: the
    /// code, or the shell's `128 + signal`.
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_fresh_heartbeat_waits_until_it_would_be_stale() {
        let seen = Observation {
            parent_gone: false,
            heartbeat_age: Some(ms(400)),
        };
        assert_eq!(decide(seen, Some(ms(1000))), Decision::Wait(Some(ms(600))));
    }

    #[test]
    fn a_stale_heartbeat_stops_the_turn() {
        let seen = Observation {
            parent_gone: false,
            heartbeat_age: Some(ms(1000)),
        };
        assert_eq!(
            decide(seen, Some(ms(1000))),
            Decision::Stop(StopReason::Stale(ms(1000)))
        );
    }

    #[test]
    fn a_gone_parent_stops_the_turn_clustered_or_not() {
        let gone = Observation {
            parent_gone: true,
            heartbeat_age: None,
        };
        assert_eq!(decide(gone, None), Decision::Stop(StopReason::ParentGone));
        let fresh = Observation {
            parent_gone: true,
            heartbeat_age: Some(ms(1)),
        };
        assert_eq!(
            decide(fresh, Some(ms(1000))),
            Decision::Stop(StopReason::ParentGone)
        );
    }

    #[test]
    fn on_one_node_only_the_parent_matters() {
        let seen = Observation {
            parent_gone: false,
            heartbeat_age: None,
        };
        assert_eq!(decide(seen, None), Decision::Wait(None));
    }

    #[test]
    fn the_limit_kills_before_the_lease_can_expire_and_survives_one_missed_renewal() {
        let (ttl, renew) = (Duration::from_secs(15), Duration::from_secs(5));
        let n = within(ttl, renew);
        assert!(n + KILL_SLACK + renew / 2 <= ttl, "{n:?}");
        assert!(n > 2 * renew, "{n:?}: one missed renewal is survived");
        let (ttl, renew) = (ms(3000), ms(300));
        assert_eq!(within(ttl, renew), ms(2750));
        // Odd inputs never give a limit below one renewal.
        assert_eq!(within(ms(100), ms(300)), ms(300));
    }

    #[test]
    fn exit_statuses_are_forwarded_as_codes_or_signals() {
        use std::os::unix::process::ExitStatusExt;
        let exited = std::process::ExitStatus::from_raw(3 << 8);
        assert_eq!(Exit::of(exited), Exit::Code(3));
        assert_eq!(Exit::of(exited).code(), 3);
        let killed = std::process::ExitStatus::from_raw(libc::SIGKILL);
        assert_eq!(Exit::of(killed), Exit::Signal(9));
        assert_eq!(Exit::of(killed).code(), 137);
    }

    #[test]
    fn the_wrapped_argv_names_the_guard_then_the_assistant() {
        let g = TurnGuard {
            exe: "/bin/flotilla".into(),
            parent: 42,
            alive: Some(Heartbeat {
                file: "/h/run/heartbeat".into(),
                within: ms(2750),
            }),
        };
        assert_eq!(
            g.wrap(&["claude".into(), "-p".into()]),
            [
                "/bin/flotilla",
                "turn-guard",
                "--parent",
                "42",
                "--alive",
                "/h/run/heartbeat",
                "--within-ms",
                "2750",
                "--",
                "claude",
                "-p"
            ]
        );
    }

    #[test]
    fn a_guard_that_could_not_start_its_assistant_reports_the_os_error() {
        let e = spawn_error(Some(127), &format!("noise\n{SPAWN_FAILED}2\n")).expect("io");
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        assert!(spawn_error(Some(127), "sh: x: not found").is_none());
        assert!(spawn_error(Some(1), &format!("{SPAWN_FAILED}2")).is_none());
    }
}
