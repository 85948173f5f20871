//! What runtimes do with a [`RuntimeHandle`] (the data type lives in the domain, since the
//! session record holds one): how a human attaches, and the typed view each runtime takes.
//!
//! Callers ask the handle for what they need ([`RuntimeHandle::log`],
//! [`RuntimeHandle::attach`]); nobody reads keys out of the JSON.

#[cfg(test)]
use std::path::Path;

pub use crate::domain::runtime_handle::{
    ProcessHandle, RemoteTmuxHandle, RuntimeHandle, TmuxHandle,
};

use super::{AttachInfo, PluginError, PluginResult};

impl RuntimeHandle {
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
