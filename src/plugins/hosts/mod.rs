//! Agents on remote hosts over SSH.
//!
//! - [`crate::config::hosts`]: the `hosts:` section (destination, work directory, capacity) and
//!   its checks.
//! - [`ssh`]: the transport — the system's OpenSSH client, one shared control connection per
//!   host, argv quoted into one remote command line, every call with a timeout.
//! - [`crate::actors::placement`]: which host a session goes to when a project or spawn says `host: auto`.
//! - [`state`]: what Flotilla knows of each host (reachable?, its panes, their exits).
//! - [`monitor`]: one long-lived ssh stream per host that tails every pane log and the exit
//!   events of the host's tmux server, filling the local mirrors and the state; it notices a
//!   host going away and coming back ([`HostEvent`]).
//! - [`workspace`]: git worktrees made on the host.
//! - [`launch`]: what a launch on the host needs beyond its worktree and tmux: Flotilla's own
//!   executable there (the agents' hooks), Flotilla's API through a reverse forward, the
//!   project's workspace `setup`; [`files`]: the agent's configuration files there.
//! - [`sandbox`]: what an agent sandbox on the host needs there: a look at the host (bwrap,
//!   paths) and the egress proxy's socket, reverse-forwarded from Flotilla.
//! - [`crate::actors::host_events`]: a host's loss and return, told to the sessions on it.
//!
//! A host `NAME` is registered as the runtime and the workspace plugin `ssh:NAME`
//! ([`crate::plugins::remote_tmux`]): a session placed there stores those names, so its
//! actor, restore and kill go to the host without knowing about SSH.

pub mod files;
pub mod launch;
pub mod monitor;
pub mod sandbox;
pub mod ssh;
pub mod state;
pub mod workspace;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::config::hosts::{HostSettings, AUTO};
pub use state::Host;

/// The plugin name (runtime and workspace) of host `name`.
pub fn plugin_name(host: &str) -> String {
    format!("ssh:{host}")
}

/// The host a plugin name stands for (`ssh:NAME` → `NAME`).
pub fn host_of(plugin: &str) -> Option<&str> {
    plugin.strip_prefix("ssh:")
}

/// A host went away or came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEvent {
    /// The host's name.
    pub host: String,
    /// Whether it is reachable now.
    pub reachable: bool,
    /// What failed, when it is not.
    pub detail: Option<String>,
}

/// Every configured host, and where their changes are announced.
#[derive(Clone)]
pub struct HostSet {
    hosts: BTreeMap<String, Arc<Host>>,
    events: tokio::sync::broadcast::Sender<HostEvent>,
}

impl Default for HostSet {
    fn default() -> Self {
        HostSet {
            hosts: BTreeMap::new(),
            events: tokio::sync::broadcast::channel(64).0,
        }
    }
}

impl HostSet {
    /// The hosts of `settings`, with their control sockets and log mirrors under `home`.
    pub fn new(settings: &BTreeMap<String, HostSettings>, home: &Path) -> Self {
        let control = control_dir(home);
        if !settings.is_empty() {
            // ssh makes the sockets, not their directory; only Flotilla's user may use them.
            use std::os::unix::fs::DirBuilderExt;
            if let Err(e) = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&control)
            {
                tracing::error!(dir = %control.display(), error = %e, "cannot make the ssh control directory");
            }
        }
        let hosts = settings
            .iter()
            .map(|(name, h)| {
                let mirror: PathBuf = home.join("hosts").join(name);
                (
                    name.clone(),
                    Arc::new(Host::new(
                        name,
                        h,
                        &control,
                        mirror,
                        tmux_socket(home, name),
                    )),
                )
            })
            .collect();
        HostSet {
            hosts,
            events: tokio::sync::broadcast::channel(64).0,
        }
    }

    /// Host `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Host>> {
        self.hosts.get(name)
    }

    /// Every host, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<Host>)> {
        self.hosts.iter()
    }

    /// Whether no host is configured.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Hears every [`HostEvent`] from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<HostEvent> {
        self.events.subscribe()
    }

    /// Starts each host's monitor (must run inside a tokio runtime). The tasks end when the
    /// returned guard is dropped.
    pub fn start(&self) -> MonitorGuard {
        let tasks = self
            .hosts
            .values()
            .map(|h| tokio::spawn(monitor::run(h.clone(), self.events.clone())))
            .collect();
        MonitorGuard(tasks)
    }

    /// The host for a `host` value: the named one, or the least loaded for `auto`.
    ///
    /// # Errors
    /// A reason when the name is unknown or no host has room.
    pub fn resolve(&self, wanted: &str) -> Result<String, String> {
        if wanted != AUTO {
            return match self.hosts.contains_key(wanted) {
                true => Ok(wanted.to_string()),
                false => Err(format!("unknown host `{wanted}`")),
            };
        }
        crate::domain::placement::least_loaded(&self.loads())
            .map(str::to_string)
            .ok_or_else(|| "every host is full or unreachable".to_string())
    }

    /// Hosts for `n` sessions placed together with `auto` (a batch), spread by load; `None`
    /// for a session no host has room for.
    pub fn place_many(&self, n: usize) -> Vec<Option<String>> {
        crate::domain::placement::place_many(&self.loads(), n)
    }

    /// Counts a session placed on host `name` as that host's load until its pane starts (see
    /// [`Host::reserve`]); `None` for a name that is no host.
    pub fn reserve(&self, name: &str) -> Option<Placement> {
        let host = self.hosts.get(name)?.clone();
        let n = host.reserve();
        Some(Placement {
            host,
            n,
            kept: false,
        })
    }

    fn loads(&self) -> Vec<crate::domain::placement::Load> {
        self.hosts
            .iter()
            .map(|(name, h)| crate::domain::placement::Load {
                host: name.clone(),
                live: h.live(),
                capacity: h.settings.capacity as usize,
                reachable: h.reachable() != Some(false),
            })
            .collect()
    }
}

/// A session placed on a host and not started yet. Dropped before [`Placement::keep`] (the
/// spawn failed), it stops counting as the host's load at once.
pub struct Placement {
    host: Arc<Host>,
    n: u64,
    kept: bool,
}

impl Placement {
    /// The session was created: it counts until its pane starts.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        if !self.kept {
            self.host.release(self.n);
        }
    }
}

/// Keeps the host monitors running; aborts them when dropped.
pub struct MonitorGuard(Vec<tokio::task::JoinHandle<()>>);

impl Drop for MonitorGuard {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Where ssh keeps the control sockets of Flotilla's connections.
pub fn control_dir(home: &Path) -> PathBuf {
    home.join("ssh")
}

/// The tmux socket name Flotilla uses on host `host`: the local one's (distinct per Flotilla
/// instance) and the host's name (two host entries reaching one machine keep two servers,
/// each with its own exit hook).
fn tmux_socket(home: &Path, host: &str) -> String {
    format!("{}-{host}", crate::plugins::tmux::socket_name(home))
}
