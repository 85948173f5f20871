//! `RuntimeHandle`: what a runtime persists about the agent it started, one type per runtime.
//!
//! Stored in the session row as JSON, exactly as before this type existed: each variant
//! serializes as its bare fields (no tag), and loading tells them apart by their fields, so
//! rows written by earlier versions load unchanged. A handle of a runtime outside this crate
//! (a test's or a bench's) is kept as the JSON it was ([`RuntimeHandle::Other`]).
//!
//! Callers ask the handle for what they need ([`RuntimeHandle::log`],
//! [`RuntimeHandle::attach`]); nobody reads keys out of the JSON.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{AttachInfo, PluginError, PluginResult};

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

    /// How a human attaches: tmux's own attach command, or following a process's log.
    pub fn attach(&self) -> Option<AttachInfo> {
        match self {
            RuntimeHandle::Tmux(h) => Some(AttachInfo {
                kind: "tmux".into(),
                target: h.session.clone(),
                command: vec![
                    "tmux".into(),
                    "-L".into(),
                    h.socket.clone(),
                    "attach-session".into(),
                    "-t".into(),
                    h.session.clone(),
                ],
            }),
            RuntimeHandle::Process(h) => {
                let log = h.log.to_string_lossy().to_string();
                Some(AttachInfo {
                    kind: "process".into(),
                    target: log.clone(),
                    command: vec!["tail".into(), "-f".into(), log],
                })
            }
            // Attaching needs the host's ssh options: the remote runtime answers.
            RuntimeHandle::Remote(_) | RuntimeHandle::Other(_) => None,
        }
    }

    /// The remote tmux handle.
    ///
    /// # Errors
    /// `Invalid` for another runtime's handle.
    pub fn remote(&self) -> PluginResult<&RemoteTmuxHandle> {
        match self {
            RuntimeHandle::Remote(h) => Ok(h),
            other => Err(PluginError::Invalid(format!(
                "not a remote tmux runtime handle: {}",
                other.to_json()
            ))),
        }
    }

    /// The tmux handle.
    ///
    /// # Errors
    /// `Invalid` for another runtime's handle.
    pub fn tmux(&self) -> PluginResult<&TmuxHandle> {
        match self {
            RuntimeHandle::Tmux(h) => Ok(h),
            other => Err(PluginError::Invalid(format!(
                "not a tmux runtime handle: {}",
                other.to_json()
            ))),
        }
    }

    /// The process handle.
    ///
    /// # Errors
    /// `Invalid` for another runtime's handle.
    pub fn process(&self) -> PluginResult<&ProcessHandle> {
        match self {
            RuntimeHandle::Process(h) => Ok(h),
            other => Err(PluginError::Invalid(format!(
                "not a process runtime handle: {}",
                other.to_json()
            ))),
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Handles exactly as earlier versions stored them in `sessions.runtime_handle`.
    fn stored_tmux() -> serde_json::Value {
        json!({"socket": "flotilla-0123456789ab", "session": "demo-1", "pane": "%3",
            "pane_pid": 4242, "start_ticks": 987654, "log": "/home/f/tmux/demo-1.log"})
    }

    fn stored_process() -> serde_json::Value {
        json!({"pid": 4242, "start_ticks": 987654, "log": "/home/f/runtime/demo-1/output.log",
            "stdin": "/home/f/runtime/demo-1/stdin"})
    }

    fn process_from_fields() -> RuntimeHandle {
        RuntimeHandle::Process(ProcessHandle {
            pid: 4242,
            start_ticks: 987654,
            log: "/home/f/runtime/demo-1/output.log".into(),
            stdin: "/home/f/runtime/demo-1/stdin".into(),
        })
    }

    #[test]
    fn stored_handles_load_as_their_runtime_and_store_back_unchanged() {
        let tmux = RuntimeHandle::from_json(&stored_tmux());
        assert!(matches!(tmux, RuntimeHandle::Tmux(_)), "{tmux:?}");
        assert_eq!(tmux.to_json(), stored_tmux());
        // Serialized directly (not through `to_json`), it is the same document too.
        let text = serde_json::to_string(&tmux).expect("json");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).expect("parse"),
            stored_tmux()
        );
        // And a row's text as the store keeps it loads back.
        let row: RuntimeHandle = serde_json::from_str(&stored_process().to_string()).expect("row");
        assert_eq!(row, process_from_fields());
        let process = RuntimeHandle::from_json(&stored_process());
        assert!(matches!(process, RuntimeHandle::Process(_)), "{process:?}");
        assert_eq!(process.to_json(), stored_process());
        let other = json!({"idle": true});
        assert_eq!(
            RuntimeHandle::from_json(&other),
            RuntimeHandle::Other(other.clone())
        );
        assert_eq!(RuntimeHandle::from_json(&other).to_json(), other);
    }

    #[test]
    fn a_handle_names_its_log_and_how_to_attach() {
        let tmux = RuntimeHandle::from_json(&stored_tmux());
        assert_eq!(tmux.log(), Some(Path::new("/home/f/tmux/demo-1.log")));
        let a = tmux.attach().expect("attach");
        assert_eq!(a.kind, "tmux");
        assert_eq!(
            a.command,
            [
                "tmux",
                "-L",
                "flotilla-0123456789ab",
                "attach-session",
                "-t",
                "demo-1"
            ]
        );
        let process = RuntimeHandle::from_json(&stored_process());
        assert_eq!(
            process.log(),
            Some(Path::new("/home/f/runtime/demo-1/output.log"))
        );
        assert_eq!(process.attach().expect("attach").kind, "process");
        let other = RuntimeHandle::Other(json!({"pid": 1}));
        assert_eq!(other.log(), None);
        assert_eq!(other.attach(), None);
        assert!(matches!(other.tmux(), Err(PluginError::Invalid(_))));
        assert!(matches!(tmux.process(), Err(PluginError::Invalid(_))));
    }
}
