//! One host's monitor: connect (one listing of the host's panes), then one long-lived ssh
//! stream — `tail -F` of the host's exit events and of the pane log of every live session —
//! until the connection drops or a new pane needs following; the panes are listed again every
//! [`RELIST`] on the way. Exit lines update the host's [`super::state`]; log lines are
//! appended to the local mirrors, which the output watch (inotify) turns into `OutputChanged`
//! for the session actors. So output and exits arrive as events, with no poll per session.
//!
//! A host that cannot be reached is announced once ([`HostEvent`] with `reachable: false`),
//! retried with a growing pause, and announced again when it answers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::state::{parse_exit_line, parse_listing_line, Host};
use super::HostEvent;
use crate::plugins::tmux::{is_gone, DEAD_STATUS};
use crate::plugins::PluginResult;

/// Timeout of the listing and set-up calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Pauses between attempts to reach a lost host: from the first to the last.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(10);
/// How often the host's panes are listed again while connected, on the same stream: catches
/// an exit the server never reported (tmux 3.3 at times never reaps a pane's killed process,
/// so its `pane-died` hook never runs). One call on the shared connection per host.
const RELIST: Duration = Duration::from_secs(5);

/// Runs the monitor of `host` forever, announcing changes on `events`.
pub async fn run(host: Arc<Host>, events: tokio::sync::broadcast::Sender<HostEvent>) {
    let mut pause = RETRY_FIRST;
    // Whether the last stream ended on purpose: the connection is up and the host's
    // directories are there, so the next stream need not make them again.
    let mut restarted = false;
    loop {
        let announce = |up: bool, detail: Option<String>| {
            if host.set_reachable(up) {
                match &detail {
                    Some(d) => tracing::warn!(host = %host.name, error = %d, "host unreachable"),
                    None => tracing::info!(host = %host.name, "host reachable"),
                }
                let _ = events.send(HostEvent {
                    host: host.name.clone(),
                    reachable: up,
                    detail,
                });
            }
        };
        let ended = follow(&host, !restarted, || announce(true, None)).await;
        restarted = matches!(ended, Ok(Ended::Restart));
        match ended {
            Ok(Ended::Restart) => {
                pause = RETRY_FIRST;
                continue;
            }
            Ok(Ended::Lost(why)) => announce(false, Some(why)),
            Err(e) => announce(false, Some(e.to_string())),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_MAX);
    }
}

/// How a stream ended.
enum Ended {
    /// On purpose (a new pane to follow, the re-listing): connect again at once.
    Restart,
    /// The connection or the listing failed.
    Lost(String),
}

/// Makes the host's directories.
///
/// # Errors
/// When the host cannot be reached.
pub async fn make_dirs(host: &Host) -> PluginResult<()> {
    let dirs = [
        host.logs_dir(),
        host.prompts_dir(),
        host.worktrees_dir(),
        host.repos_dir(),
    ];
    // `$0` is the events file (created so `tail` names it at once), `$@` the directories.
    let mut argv: Vec<String> = vec![
        "sh".into(),
        "-c".into(),
        "mkdir -p -- \"$@\" && touch -- \"$0\"".into(),
        host.events_path().to_string_lossy().into_owned(),
    ];
    argv.extend(dirs.iter().map(|d| d.to_string_lossy().into_owned()));
    host.ssh.run(&argv, None, CALL_TIMEOUT).await?;
    Ok(())
}

/// Lists the host's panes into its state.
///
/// # Errors
/// When the host cannot be reached or tmux fails for another reason than "no server".
pub async fn list(host: &Host) -> PluginResult<()> {
    let taken = Instant::now();
    let listing = host
        .ssh
        .run(
            &[
                "env",
                "-i",
                "tmux",
                "-L",
                &host.socket,
                "-f",
                "/dev/null",
                "list-panes",
                "-a",
                "-F",
                &format!(
                    "#{{session_name}} #{{pane_id}} #{{pane_pid}} #{{pane_dead}} {DEAD_STATUS}"
                ),
            ],
            None,
            CALL_TIMEOUT,
        )
        .await;
    let out = match listing {
        Ok(o) => o,
        // No tmux server there: no panes (an ssh failure whose words look alike is not one).
        Err(e) if is_gone(&e) && !super::ssh::is_unreachable(&e) => String::new(),
        Err(e) => return Err(e),
    };
    tracing::debug!(host = %host.name, listing = %out.trim(), "host panes listed");
    host.apply_listing(out.lines().filter_map(parse_listing_line).collect(), taken);
    Ok(())
}

/// Starts the stream (exit events and pane logs), lists the host's panes once the stream
/// is set up (so no exit falls between the two), calls `ready`, then follows the stream until
/// it ends, a new pane is to be followed, or the re-listing is due. `connect`: the stream
/// follows a (re)connection, so the host's directories are made first (a stream started
/// again on purpose finds them: one ssh call less per new pane; should they be gone, the
/// stream does not start and the next attempt connects afresh).
async fn follow(
    host: &Host,
    connect: bool,
    ready: impl FnOnce(),
) -> Result<Ended, crate::plugins::PluginError> {
    let events = host.events_path().to_string_lossy().into_owned();
    let sessions = host.followed();
    let logs: HashMap<String, String> = sessions
        .iter()
        .map(|s| (host.remote_log(s).to_string_lossy().into_owned(), s.clone()))
        .collect();
    let mut argv: Vec<String> = ["tail", "-n", "0", "-v", "-F", &events]
        .iter()
        .map(|s| s.to_string())
        .collect();
    argv.extend(logs.keys().cloned());
    // The directories first: the first call also opens the shared control connection (and
    // says why when it cannot).
    if connect {
        if let Err(e) = make_dirs(host).await {
            return Ok(Ended::Lost(e.to_string()));
        }
    }
    let mut child = host.ssh.stream(&argv)?;
    let Some(stdout) = child.stdout.take() else {
        return Ok(Ended::Lost("no stream".into()));
    };
    tokio::fs::create_dir_all(&host.mirror_dir).await?;
    let mut reader = BufReader::new(stdout);
    let mut mirrors: HashMap<String, tokio::fs::File> = HashMap::new();
    // Which file the lines now come from (tail names it in a `==> PATH <==` header).
    let mut current: Option<String> = None;
    let mut line = Vec::new();
    // tail names the events file first, once it follows it: then the listing is taken.
    let first = tokio::time::timeout(CALL_TIMEOUT, reader.read_until(b'\n', &mut line)).await;
    match first {
        Ok(Ok(n)) if n > 0 => {}
        Ok(Err(e)) => return Ok(Ended::Lost(e.to_string())),
        _ => return Ok(Ended::Lost("the host's event stream did not start".into())),
    }
    if let Err(e) = list(host).await {
        return Ok(Ended::Lost(e.to_string()));
    }
    // A new control connection has none of the old one's forwards (a no-op on the same one).
    super::launch::restore_forward(host).await;
    super::sandbox::restore_forwards(host).await;
    ready();
    let relist = tokio::time::sleep(RELIST);
    tokio::pin!(relist);
    loop {
        let text = String::from_utf8_lossy(&line);
        let trimmed = text.trim_end_matches(['\n', '\r']);
        let header = trimmed
            .strip_prefix("==> ")
            .and_then(|r| r.strip_suffix(" <=="))
            .filter(|p| *p == events || logs.contains_key(*p));
        match (header, current.as_deref()) {
            (Some(path), _) => current = Some(path.to_string()),
            (None, Some(p)) if p == events => {
                if let Some((session, pane, status)) = parse_exit_line(trimmed) {
                    tracing::debug!(host = %host.name, %session, %pane, ?status, "host pane exited");
                    host.pane_exited(&session, &pane, status);
                }
            }
            (None, Some(p)) => {
                if let Some(session) = logs.get(p) {
                    if !mirrors.contains_key(session) {
                        let f = open_mirror(host.mirror_log(session)).await?;
                        mirrors.insert(session.clone(), f);
                    }
                    if let Some(f) = mirrors.get_mut(session) {
                        f.write_all(&line).await?;
                    }
                }
            }
            (None, None) => {}
        }
        line.clear();
        // A listing may come between the bytes of a line: `read_until` keeps them in `line`
        // and goes on appending, so the line is handled once whole.
        loop {
            tokio::select! {
                n = reader.read_until(b'\n', &mut line) => {
                    if n? == 0 {
                        return Ok(Ended::Lost("the connection closed".into()));
                    }
                    break;
                }
                _ = host.follow_more.notified() => return Ok(Ended::Restart),
                _ = &mut relist => {
                    if let Err(e) = list(host).await {
                        return Ok(Ended::Lost(e.to_string()));
                    }
                    relist.as_mut().reset(tokio::time::Instant::now() + RELIST);
                }
            }
        }
    }
}

async fn open_mirror(path: PathBuf) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
}
