//! An agent's process as `/proc` tells it, for the runtimes that start agents here (`process`,
//! `tmux`): alive (pid and start time, so a reused pid is never taken for the agent), a
//! zombie's exit status, its end (a pidfd) and its group's signals.

use tokio::io::unix::AsyncFd;

use super::{PluginError, PluginResult};
use crate::domain::exit_status::signal_status;

/// Start time of `pid` in clock ticks, or `None` if there is no such process.
pub(crate) fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` runs, is not a zombie, and started at `ticks`.
pub(crate) fn process_alive(pid: i32, ticks: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        .unwrap_or("X");
    state != "Z" && state != "X" && start_ticks(pid) == Some(ticks)
}

/// For an unreaped (zombie) `pid` that started at `ticks`: its exit status, 128 + N if signal
/// N killed it (`/proc/PID/stat` field 52, Linux ≥ 3.5). `None` when the process is not such a
/// zombie.
pub(crate) fn zombie_exit_status(pid: i32, ticks: u64) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    zombie_status(&stat, Some(ticks))
}

/// The exit status a `/proc/PID/stat` line records for a zombie (that started at `ticks`,
/// when given), as [`zombie_exit_status`] reads it; `None` for a process that is not one.
pub(crate) fn zombie_status(stat: &str, ticks: Option<u64>) -> Option<i32> {
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    // fields[0] is field 3 (state), fields[19] field 22 (start time), fields[49] field 52.
    if fields.first() != Some(&"Z") {
        return None;
    }
    if let Some(t) = ticks {
        if fields.get(19)?.parse::<u64>().ok()? != t {
            return None;
        }
    }
    let raw: i32 = fields.get(49)?.parse().ok()?;
    Some(if raw & 0x7f == 0 {
        (raw >> 8) & 0xff
    } else {
        signal_status(raw & 0x7f)
    })
}

/// Resolves when the process `pid` (started at `ticks`) has ended; at once if it already has.
pub(crate) async fn process_ended(pid: i32, ticks: u64) -> PluginResult<()> {
    let fd = match crate::plugins::pidfd::open(pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    // Checked after opening the pidfd: the fd now pins this exact process, so a pid reused
    // between the two calls is caught here.
    if !process_alive(pid, ticks) {
        return Ok(());
    }
    // SAFETY: `fd` is an owned pidfd that stays open for as long as the AsyncFd lives.
    let afd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| PluginError::Io(e.into()))?;
    let _ready = afd.readable().await?;
    Ok(())
}

pub(crate) fn signal_group(pid: i32, sig: i32) -> std::io::Result<()> {
    // SAFETY: killpg takes plain integers.
    if unsafe { libc::killpg(pid, sig) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zombie_exit_status_is_read_from_proc() {
        // Any program that exits 5 will do; no shell in this crate, even in tests.
        let mut child = std::process::Command::new("python3")
            .args(["-c", "raise SystemExit(5)"])
            .spawn()
            .expect("spawn");
        let pid = child.id() as i32;
        let ticks = start_ticks(pid).expect("ticks");
        // Not reaped yet: a zombie once it has exited.
        let code = (0..200).find_map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            zombie_exit_status(pid, ticks)
        });
        assert_eq!(code, Some(5));
        assert_eq!(zombie_exit_status(pid, ticks + 1), None, "another process");
        child.wait().expect("reap");
        assert_eq!(zombie_exit_status(pid, ticks), None);
    }

    /// A host's `/proc/PID/stat` line, read over ssh: a zombie's status (a signal as the
    /// shell's 128 + N), only for a zombie, and of the start time asked for when one is.
    #[test]
    fn a_zombie_status_is_read_from_a_stat_line() {
        // Fields 3 (state) to 52 (exit code) after the command; field 22 is the start time.
        let stat = |state: &str, start: u64, raw: i32| {
            let mut f: Vec<String> = (3..=52).map(|_| "0".to_string()).collect();
            f[0] = state.into();
            f[19] = start.to_string();
            f[49] = raw.to_string();
            format!("19916 (sleep 600) {}", f.join(" "))
        };
        assert_eq!(zombie_status(&stat("Z", 7, 9), None), Some(137), "SIGKILL");
        assert_eq!(zombie_status(&stat("Z", 7, 5 << 8), None), Some(5));
        assert_eq!(zombie_status(&stat("Z", 7, 5 << 8), Some(7)), Some(5));
        assert_eq!(
            zombie_status(&stat("Z", 7, 9), Some(8)),
            None,
            "another process"
        );
        assert_eq!(zombie_status(&stat("S", 7, 0), None), None, "not a zombie");
        assert_eq!(zombie_status("", None), None);
    }
}
