//! What Flotilla knows of one host: whether it answers, the tmux panes of its sessions and
//! their exits. Filled by the host's monitor (a listing at each connection, then the exit
//! events of its stream) and by launches; read by the remote runtime without a subprocess.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use super::ssh::{shell_quote, SshTransport};
use crate::config::hosts::HostSettings;
use crate::plugins::tmux::{dead_status, double_hash, tmux_quote, DEAD_STATUS};

/// One tmux pane of a session on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pane {
    /// Pane id (`%N`).
    pub id: String,
    /// Its process on the host.
    pub pid: i32,
    /// Whether its process ended (`remain-on-exit` keeps the pane).
    pub dead: bool,
    /// The exit status, when it ended with one.
    pub status: Option<i32>,
}

/// What is known of a session's pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaneStatus {
    /// It runs.
    Alive,
    /// It ended, with this status if known.
    Ended(Option<i32>),
    /// tmux shows it dead but has not recorded its status yet: tmux closes a killed pane's
    /// terminal before it reaps the process, and its `pane-died` hook (or a later listing)
    /// brings the status once it has.
    Reaping,
    /// The host cannot be asked now.
    Unknown,
}

#[derive(Default)]
struct State {
    reachable: Option<bool>,
    /// Whether `panes` holds a full listing from the current connection.
    listed: bool,
    /// By tmux session name, with when Flotilla added it (a listing older than that does not
    /// know it yet).
    panes: HashMap<String, (Pane, Instant)>,
    /// Sessions placed here whose pane has not started yet (see [`Host::reserve`]), by
    /// reservation number, with when they were placed.
    reserved: Vec<(u64, Instant)>,
    next_reservation: u64,
}

/// How long a placement counts as load before its pane starts: longer than a spawn takes
/// (worktree, set-up, the first copy of Flotilla's binary), so a spawn that failed after
/// placement stops counting by itself.
const RESERVATION_TTL: Duration = Duration::from_secs(180);

/// One configured host.
pub struct Host {
    /// Its name under `hosts:`.
    pub name: String,
    /// Its settings.
    pub settings: HostSettings,
    /// How to reach it.
    pub ssh: SshTransport,
    /// The tmux socket name on the host.
    pub socket: String,
    /// Local directory of the pane-log mirrors.
    pub mirror_dir: PathBuf,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    /// Wakes the monitor to follow a new pane log.
    pub(crate) follow_more: Notify,
    /// The `flotilla` executable installed on the host (see [`super::launch`]).
    pub(crate) cli: tokio::sync::Mutex<Option<PathBuf>>,
    /// The reverse forward to Flotilla's API (see [`super::launch`]).
    pub(crate) forward: tokio::sync::Mutex<super::launch::Forward>,
    /// The reverse forwards of sandboxed sessions' proxy sockets (see [`super::sandbox`]).
    pub(crate) proxy_forwards: tokio::sync::Mutex<super::sandbox::ProxyForwards>,
    /// Whether `bwrap` was found on the host (see [`super::sandbox::has_bwrap`]).
    pub(crate) bwrap_seen: std::sync::atomic::AtomicBool,
}

impl Host {
    /// Host `name`, its control sockets in `control_dir`, mirrors in `mirror_dir`.
    pub fn new(
        name: &str,
        settings: &HostSettings,
        control_dir: &Path,
        mirror_dir: PathBuf,
        socket: String,
    ) -> Self {
        Host {
            name: name.to_string(),
            settings: settings.clone(),
            ssh: SshTransport::new(name, settings, control_dir),
            socket,
            mirror_dir,
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
            follow_more: Notify::new(),
            cli: tokio::sync::Mutex::new(None),
            forward: tokio::sync::Mutex::new(super::launch::Forward::default()),
            proxy_forwards: tokio::sync::Mutex::new(super::sandbox::ProxyForwards::default()),
            bwrap_seen: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn dir(&self, rel: &str) -> PathBuf {
        self.settings.workdir.join(rel)
    }

    /// Pane logs on the host.
    pub fn logs_dir(&self) -> PathBuf {
        self.dir("logs")
    }

    /// The pane log of tmux session `session` on the host.
    pub fn remote_log(&self, session: &str) -> PathBuf {
        self.logs_dir().join(format!("{session}.log"))
    }

    /// The local mirror of that log.
    pub fn mirror_log(&self, session: &str) -> PathBuf {
        self.mirror_dir.join(format!("{session}.log"))
    }

    /// The file the host's tmux server appends exits to.
    pub fn events_path(&self) -> PathBuf {
        self.dir("events.log")
    }

    /// Prompt files on the host.
    pub fn prompts_dir(&self) -> PathBuf {
        self.dir("prompts")
    }

    /// Worktrees on the host.
    pub fn worktrees_dir(&self) -> PathBuf {
        self.dir("worktrees")
    }

    /// Executables Flotilla installs on the host (its own, for the agents' hooks).
    pub fn bin_dir(&self) -> PathBuf {
        self.dir("bin")
    }

    /// Repository clones on the host.
    pub fn repos_dir(&self) -> PathBuf {
        self.dir("repos")
    }

    /// tmux commands (script syntax) that make the server append `exit SESSION PANE STATUS`
    /// to [`Host::events_path`] whenever a pane's process ends (`remain-on-exit` keeps the
    /// pane, so `pane-died` fires with the status known).
    pub fn exit_hook(&self) -> String {
        let shell = format!(
            "echo exit #{{session_name}} #{{pane_id}} {DEAD_STATUS} >> {}",
            double_hash(&shell_quote(&self.events_path().to_string_lossy()))
        );
        let hook = format!("run-shell {}", tmux_quote(&shell));
        format!(
            "{} {} {} {} ;\n",
            tmux_quote("set-hook"),
            tmux_quote("-g"),
            tmux_quote("pane-died"),
            tmux_quote(&hook)
        )
    }

    /// Hears every change of the state.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut g = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g)
    }

    /// Whether the host answered last time (`None`: not tried yet).
    pub fn reachable(&self) -> Option<bool> {
        self.with(|s| s.reachable)
    }

    /// Records whether the host answers; `true` when that changed.
    pub fn set_reachable(&self, up: bool) -> bool {
        let changed = self.with(|s| {
            let was = s.reachable;
            s.reachable = Some(up);
            if !up {
                s.listed = false;
            }
            was != Some(up)
        });
        self.bump();
        changed
    }

    /// Placement's load: live sessions on the host, plus sessions placed here whose pane has
    /// not started yet (so spawns in quick succession see each other).
    pub fn live(&self) -> usize {
        self.with(|s| {
            s.reserved.retain(|(_, at)| at.elapsed() < RESERVATION_TTL);
            s.panes.values().filter(|(p, _)| !p.dead).count() + s.reserved.len()
        })
    }

    /// Counts one session placed here as load until its pane starts (the oldest reservation
    /// is taken by each new pane), [`Host::release`] gives it back, or [`RESERVATION_TTL`]
    /// passes. Returns its number.
    pub fn reserve(&self) -> u64 {
        self.reserve_since(Instant::now())
    }

    fn reserve_since(&self, at: Instant) -> u64 {
        self.with(|s| {
            s.next_reservation += 1;
            s.reserved.push((s.next_reservation, at));
            s.next_reservation
        })
    }

    /// Gives reservation `n` back (its spawn failed before anything started).
    pub fn release(&self, n: u64) {
        self.with(|s| s.reserved.retain(|(r, _)| *r != n));
    }

    /// Sessions whose logs the stream follows.
    pub fn followed(&self) -> Vec<String> {
        let mut v: Vec<String> = self.with(|s| {
            s.panes
                .iter()
                .filter(|(_, (p, _))| !p.dead)
                .map(|(n, _)| n.clone())
                .collect()
        });
        v.sort();
        v
    }

    /// A full listing of the host's panes, taken at `taken`: panes it lacks are gone, unless
    /// Flotilla added them after it was taken.
    pub fn apply_listing(&self, panes: Vec<(String, Pane)>, taken: Instant) {
        self.with(|s| {
            // A pane's recorded end is final: a listing of it taken before its exit event
            // came, or before tmux reaped it, does not undo that.
            let fresh: HashMap<String, (Pane, Instant)> = panes
                .into_iter()
                .map(|(n, p)| match s.panes.get(&n) {
                    Some((known, _)) if known.id == p.id && known.status.is_some() => {
                        (n, (known.clone(), taken))
                    }
                    _ => (n, (p, taken)),
                })
                .collect();
            s.panes
                .retain(|n, (_, added)| *added > taken && !fresh.contains_key(n));
            s.panes.extend(fresh);
            s.listed = true;
        });
        self.bump();
    }

    /// A pane Flotilla just started.
    pub fn pane_started(&self, session: &str, id: &str, pid: i32) {
        let pane = Pane {
            id: id.to_string(),
            pid,
            dead: false,
            status: None,
        };
        self.with(|s| {
            // A new session's pane (not a restart of a known one) was a placement.
            if !s.panes.contains_key(session) && !s.reserved.is_empty() {
                s.reserved.remove(0);
            }
            s.panes.insert(session.to_string(), (pane, Instant::now()))
        });
        self.bump();
        self.follow_more.notify_one();
    }

    /// The host said pane `id` of `session` ended.
    pub fn pane_exited(&self, session: &str, id: &str, status: Option<i32>) {
        self.with(|s| {
            if let Some((p, _)) = s.panes.get_mut(session).filter(|(p, _)| p.id == id) {
                p.dead = true;
                p.status = status;
            }
        });
        self.bump();
    }

    /// Flotilla removed `session`'s pane.
    pub fn pane_removed(&self, session: &str, id: &str) {
        self.with(|s| {
            if s.panes.get(session).is_some_and(|(p, _)| p.id == id) {
                s.panes.remove(session);
            }
        });
        self.bump();
    }

    /// What is known of pane `id` of `session`.
    pub fn pane(&self, session: &str, id: &str) -> PaneStatus {
        self.with(|s| match s.panes.get(session) {
            Some((p, _)) if p.id == id && p.dead => match p.status {
                Some(code) => PaneStatus::Ended(Some(code)),
                None => PaneStatus::Reaping,
            },
            Some((p, _)) if p.id == id => PaneStatus::Alive,
            // Another pane under that name: ours is gone.
            Some(_) => PaneStatus::Ended(None),
            None if s.listed && s.reachable == Some(true) => PaneStatus::Ended(None),
            None => PaneStatus::Unknown,
        })
    }
}

/// Parses one line of `list-panes -a -F '#{session_name} #{pane_id} #{pane_pid}
/// #{pane_dead} DEAD_STATUS'`.
pub fn parse_listing_line(line: &str) -> Option<(String, Pane)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let (name, id, pid) = (f.first()?, f.get(1)?, f.get(2)?.parse().ok()?);
    let dead = f.get(3) == Some(&"1");
    Some((
        (*name).to_string(),
        Pane {
            id: (*id).to_string(),
            pid,
            dead,
            status: f.get(4).and_then(|s| dead_status(s)),
        },
    ))
}

/// Parses one exit event line (`exit SESSION PANE [STATUS]`).
pub fn parse_exit_line(line: &str) -> Option<(String, String, Option<i32>)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.first() != Some(&"exit") {
        return None;
    }
    Some((
        (*f.get(1)?).to_string(),
        (*f.get(2)?).to_string(),
        f.get(3).and_then(|s| dead_status(s)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        let s = HostSettings {
            ssh: "me@box".into(),
            port: None,
            workdir: "/srv/it's".into(),
            capacity: 2,
            identity_file: None,
            known_hosts: None,
        };
        Host::new("box", &s, Path::new("/tmp"), "/tmp/m".into(), "sock".into())
    }

    #[test]
    fn placements_count_as_load_until_their_pane_starts_is_released_or_expires() {
        let h = host();
        let first = h.reserve();
        let second = h.reserve();
        assert_eq!(h.live(), 2, "two placed, none started");
        h.release(second);
        assert_eq!(h.live(), 1, "a released placement is no load");
        h.pane_started("a", "%1", 10);
        assert_eq!(h.live(), 1, "the placement became its pane");
        h.release(first);
        assert_eq!(h.live(), 1, "releasing a started placement changes nothing");
        h.reserve();
        // A restart of a known session's pane is no placement: the reservation stays.
        h.pane_started("a", "%2", 11);
        assert_eq!(h.live(), 2);
        // (`Instant` counts from boot: on a machine up for less than the TTL there is no
        // such past instant to place at.)
        if let Some(past) = Instant::now().checked_sub(RESERVATION_TTL + Duration::from_secs(1)) {
            h.reserve_since(past);
            assert_eq!(h.live(), 2, "an expired placement is no load");
        }
    }

    #[test]
    fn panes_follow_launches_listings_and_exits() {
        let h = host();
        assert_eq!(h.pane("a", "%1"), PaneStatus::Unknown);
        let before = Instant::now();
        h.pane_started("a", "%1", 10);
        // A listing taken before the launch does not forget it.
        h.set_reachable(true);
        h.apply_listing(vec![], before);
        assert_eq!(h.pane("a", "%1"), PaneStatus::Alive);
        assert_eq!(h.live(), 1);
        h.pane_exited("a", "%1", Some(3));
        assert_eq!(h.pane("a", "%1"), PaneStatus::Ended(Some(3)));
        assert_eq!(h.live(), 0);
        h.apply_listing(vec![], Instant::now());
        assert_eq!(h.pane("a", "%1"), PaneStatus::Ended(None), "gone");
        let line = parse_listing_line("demo-1 %4 77 0 ").expect("line");
        assert_eq!(line.0, "demo-1");
        assert_eq!(line.1.pid, 77);
        assert_eq!(
            parse_exit_line("exit demo-1 %4 0"),
            Some(("demo-1".into(), "%4".into(), Some(0)))
        );
        assert_eq!(
            parse_exit_line("exit demo-1 %4"),
            Some(("demo-1".into(), "%4".into(), None))
        );
        // Killed by SIGKILL: the shell's 137.
        assert_eq!(
            parse_exit_line("exit demo-1 %4 s9"),
            Some(("demo-1".into(), "%4".into(), Some(137)))
        );
        let dead = parse_listing_line("demo-1 %4 77 1 s11").expect("line");
        assert_eq!(dead.1.status, Some(139));
        // Killed, listed before tmux reaped it (dead, no status): not ended yet; the hook's
        // event then brings the status, which a listing older than it does not undo.
        h.pane_started("b", "%5", 12);
        let unreaped = parse_listing_line("b %5 12 1 ").expect("line");
        assert_eq!(unreaped.1.status, None);
        h.apply_listing(vec![unreaped.clone()], Instant::now());
        assert_eq!(h.pane("b", "%5"), PaneStatus::Reaping);
        h.pane_exited("b", "%5", Some(137));
        assert_eq!(h.pane("b", "%5"), PaneStatus::Ended(Some(137)));
        let alive = parse_listing_line("b %5 12 0 ").expect("line");
        h.apply_listing(vec![alive], Instant::now());
        assert_eq!(h.pane("b", "%5"), PaneStatus::Ended(Some(137)));
        h.apply_listing(vec![unreaped], Instant::now());
        assert_eq!(h.pane("b", "%5"), PaneStatus::Ended(Some(137)));
        assert!(h.exit_hook().contains("'\"'\"'"), "{}", h.exit_hook());
    }
}
