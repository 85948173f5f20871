//! `flotilla turn-guard`, the process between a node and each chat assistant: it forwards the
//! assistant's stdin, stdout and exit status (code or signal), reports an assistant that
//! cannot start, and kills the assistant's process group by itself when its parent (the
//! node) is gone or its heartbeat file went stale. The real binary; no fixed sleeps.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use crate::helpers::*;
use crate::server::bin;

fn guard(args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.arg("turn-guard").args(args);
    c
}

/// An assistant that exits 4 at once, guarded by the heartbeat file `alive` held fresh
/// `within_ms`.
fn guarded_exit_4(alive: &str, within_ms: &str) -> std::process::Output {
    guard(&[
        "--alive",
        alive,
        "--within-ms",
        within_ms,
        "--",
        "sh",
        "-c",
        "exit 4",
    ])
    .output()
    .expect("guard runs")
}

#[test]
fn the_assistants_exit_status_stdin_and_stdout_go_through_the_guard() {
    let out = guard(&["--", "sh", "-c", "exit 3"])
        .output()
        .expect("guard runs");
    assert_eq!(out.status.code(), Some(3));

    let out = guard(&["--", "sh", "-c", "kill -TERM $$"])
        .output()
        .expect("guard runs");
    assert_eq!(
        out.status.signal(),
        Some(15),
        "dies of the assistant's signal: {:?}",
        out.status
    );

    let mut child = guard(&["--", "sh", "-c", "read x; echo \"got $x\"; echo oops >&2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("guard runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"hello\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{:?}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got hello\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
}

#[test]
fn an_assistant_that_cannot_start_is_reported_with_its_os_error() {
    let out = guard(&["--", "/nonexistent/assistant"])
        .output()
        .expect("guard runs");
    assert_eq!(out.status.code(), Some(127));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let e = flotilla::plugins::assistants::guard::spawn_error(out.status.code(), &stderr)
        .expect("the node sees the OS error");
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{stderr}");
}

/// The assistant and what it started (its process group) die when the heartbeat file is
/// older than `--within-ms`; a heartbeat that stays fresh (here: dated in the future) lets it
/// finish.
#[tokio::test]
async fn a_stale_heartbeat_kills_the_assistants_whole_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let beat = dir.path().join("heartbeat");
    std::fs::write(&beat, "").expect("heartbeat");
    let future = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&beat)
        .and_then(|f| f.set_modified(future))
        .expect("mtime");
    let alive = beat.display().to_string();
    let out = guarded_exit_4(&alive, "300");
    assert_eq!(
        out.status.code(),
        Some(4),
        "a fresh heartbeat: the assistant ends"
    );

    // Now fresh for 2 s only (time for the assistant to start its own child), then stale.
    std::fs::File::options()
        .write(true)
        .open(&beat)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()))
        .expect("mtime");
    let mut child = guard(&[
        "--alive",
        &alive,
        "--within-ms",
        "2000",
        "--",
        "sh",
        "-c",
        "sleep 600 & echo $!; wait",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("guard runs");
    let status = child.wait().expect("the guard ends by itself");
    assert_eq!(status.signal(), Some(9), "{status:?}");
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
    let mut why = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut why);
    assert!(why.contains("no lease renewal"), "{why}");
    let grandchild: u32 = line.trim().parse().expect("the grandchild's pid");
    // SIGKILL is delivered asynchronously: the grandchild dies a moment after the guard.
    eventually(
        30,
        "the assistant's own child dead with the group",
        || async { gone(grandchild).then_some(()) },
    )
    .await;
}

/// The heartbeat's time is read on the machine's boot clock, not its wall clock: a file the
/// wall clock calls an hour old (as after the clock was stepped forward) but written just now
/// lets the assistant finish; one the wall clock calls fresh (as after a step back) but
/// written an hour ago on the boot clock stops it. (Read by its mtime, the first was killed
/// and the second ran on for an hour.)
#[tokio::test]
async fn the_heartbeat_is_timed_on_the_boot_clock_not_the_wall_clock() {
    use flotilla::plugins::assistants::guard::{beat_text, boot_clock};
    use std::time::{Duration, SystemTime};
    let dir = tempfile::tempdir().expect("tempdir");
    let beat = dir.path().join("heartbeat");
    let write = |boot: Duration, wall: SystemTime| {
        std::fs::write(&beat, beat_text(boot)).expect("heartbeat");
        std::fs::File::options()
            .write(true)
            .open(&beat)
            .and_then(|f| f.set_modified(wall))
            .expect("mtime");
    };
    let hour = Duration::from_secs(3600);
    let now = boot_clock().expect("a boot clock");
    write(now, SystemTime::now() - hour);
    let alive = beat.display().to_string();
    let out = guarded_exit_4(&alive, "60000");
    assert_eq!(
        out.status.code(),
        Some(4),
        "fresh on the boot clock: the assistant ends by itself ({})",
        String::from_utf8_lossy(&out.stderr)
    );

    write(now.saturating_sub(hour), SystemTime::now() + hour);
    let mut child = guard(&[
        "--alive",
        &alive,
        "--within-ms",
        "60000",
        "--",
        "sh",
        "-c",
        "sleep 600",
    ])
    .stderr(Stdio::piped())
    .spawn()
    .expect("guard runs");
    let status = eventually(30, "the guard stops the assistant", || {
        let done = child.try_wait().expect("try_wait");
        async move { done }
    })
    .await;
    assert_eq!(status.signal(), Some(9), "{status:?}");
    let mut why = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut why);
    assert!(why.contains("no lease renewal"), "{why}");
}

/// The node dies (here: the shell that started the guard exits): the guard kills the
/// assistant without any heartbeat.
#[tokio::test]
async fn the_assistant_dies_when_the_node_that_started_its_guard_is_gone() {
    let script = format!(
        "\"{}\" turn-guard -- sh -c 'echo $$; exec sleep 600' & read x",
        bin()
    );
    let mut node = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sh");
    let mut line = String::new();
    BufReader::new(node.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the assistant's pid");
    let assistant: u32 = line.trim().parse().expect("pid");
    assert!(!gone(assistant), "the assistant runs while its node lives");
    // The "node" exits.
    node.stdin
        .take()
        .expect("stdin")
        .write_all(b"\n")
        .expect("write");
    node.wait().expect("sh exits");
    eventually(30, "the orphaned assistant is gone", || async {
        gone(assistant).then_some(())
    })
    .await;
}
