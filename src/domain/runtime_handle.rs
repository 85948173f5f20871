//! `RuntimeHandle`: what a runtime persists about the agent it started, one type per runtime.
//!
//! Stored in the session row as JSON, exactly as before this type existed: each variant
//! serializes as its bare fields (no tag), and loading tells them apart by their fields, so
//! rows written by earlier versions load unchanged. A handle of a runtime outside this crate
//! (a test's or a bench's) is kept as the JSON it was ([`RuntimeHandle::Other`]).
//!
//! Plain data, part of the session record; what runtimes do with it (attach, the typed
//! views) is in `plugins::runtime_handle`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What the tmux runtime persists about an agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TmuxHandle {
    /// tmux socket name (`-L`).
    pub socket: String,
    /// tmux session name (the Flotilla session id, with characters tmux rewrites replaced).
    pub session: String,
    /// Pane id (`%N`), unique for the server's lifetime.
    pub pane: String,
    /// Pid of the pane's process: the agent itself (tmux execs it directly).
    pub pane_pid: i32,
    /// Its start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_ticks: u64,
    /// Everything the pane printed (appended by `pipe-pane`), with terminal escapes.
    pub log: PathBuf,
}

/// What the remote tmux runtime persists about an agent on a host reached over SSH: the tmux
/// handle as on the host (pid and start time are the host's), with `log` the local mirror of
/// the pane log that the host's event stream fills.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemoteTmuxHandle {
    /// The host's name under `hosts:`.
    pub host: String,
    /// The pane log on the host.
    pub remote_log: PathBuf,
    /// The tmux session, pane and process on the host; `log` is the local mirror.
    #[serde(flatten)]
    pub tmux: TmuxHandle,
}

/// What the process runtime persists about an agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessHandle {
    /// Process id (also the process group id).
    pub pid: i32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22): guards against pid reuse.
    pub start_ticks: u64,
    /// Output log.
    pub log: PathBuf,
    /// Named pipe the agent reads messages from.
    pub stdin: PathBuf,
}

/// The handle of a running (or once running) agent, by runtime.
///
/// Variant order matters for loading: a tmux handle has every field a process handle lacks
/// (`socket`, `pane`…), and a process handle has `stdin`, which tmux lacks; anything else is
/// `Other`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum RuntimeHandle {
    /// An agent in a tmux pane on a remote host (has `host`, which the others lack).
    Remote(RemoteTmuxHandle),
    /// An agent in a tmux pane.
    Tmux(TmuxHandle),
    /// An agent as a plain process group.
    Process(ProcessHandle),
    /// A handle of a runtime this crate does not define, kept as stored.
    Other(serde_json::Value),
}

impl RuntimeHandle {
    /// The handle stored as `json` (never fails: an unknown shape is `Other`).
    pub fn from_json(json: &serde_json::Value) -> Self {
        serde_json::from_value(json.clone()).unwrap_or_else(|_| RuntimeHandle::Other(json.clone()))
    }

    /// The JSON to store: the same as the handle was loaded from.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            RuntimeHandle::Other(v) => v.clone(),
            // Plain structs of strings and integers: serializing cannot fail.
            h => serde_json::to_value(h).unwrap_or_default(),
        }
    }

    /// The file the agent's output is appended to, when the runtime keeps one (both of ours
    /// do): what the output watch follows.
    pub fn log(&self) -> Option<&Path> {
        match self {
            RuntimeHandle::Tmux(h) => Some(&h.log),
            RuntimeHandle::Remote(h) => Some(&h.tmux.log),
            RuntimeHandle::Process(h) => Some(&h.log),
            RuntimeHandle::Other(_) => None,
        }
    }
}

impl From<TmuxHandle> for RuntimeHandle {
    fn from(h: TmuxHandle) -> Self {
        RuntimeHandle::Tmux(h)
    }
}

impl From<RemoteTmuxHandle> for RuntimeHandle {
    fn from(h: RemoteTmuxHandle) -> Self {
        RuntimeHandle::Remote(h)
    }
}

impl From<ProcessHandle> for RuntimeHandle {
    fn from(h: ProcessHandle) -> Self {
        RuntimeHandle::Process(h)
    }
}
