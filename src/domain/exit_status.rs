//! An agent process's exit status, with a death by signal written as a shell writes it:
//! 128 + the signal's number (`137` for `SIGKILL`). Runtimes report it so; the lifecycle
//! names the signal.

/// The status a shell reports for a process killed by `signal`.
pub fn signal_status(signal: i32) -> i32 {
    128 + signal
}

/// The signal a status of 129 to 192 stands for, named as `signal 9 (SIGKILL)`.
pub fn killed_by(status: i32) -> Option<String> {
    let n = status.checked_sub(128).filter(|n| (1..=64).contains(n))?;
    let name = match n {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return Some(format!("signal {n}")),
    };
    Some(format!("signal {n} ({name})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_is_the_shells_status_and_back() {
        assert_eq!(signal_status(9), 137);
        assert_eq!(killed_by(137).as_deref(), Some("signal 9 (SIGKILL)"));
        assert_eq!(killed_by(139).as_deref(), Some("signal 11 (SIGSEGV)"));
        assert_eq!(killed_by(128 + 40).as_deref(), Some("signal 40"));
        assert_eq!(killed_by(1), None);
        assert_eq!(killed_by(128), None);
        assert_eq!(killed_by(255), None);
    }
}
