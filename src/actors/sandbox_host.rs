//! The fleet's side of agent sandboxes: which sandbox a session's agent gets, what every
//! sandbox hides, and each sandboxed session's egress proxy (one per session, so that a
//! refused connection is an event on that session). The proxy's allow list is kept in the
//! session's run directory, so a restarted Flotilla serves adopted agents again.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::Utc;

use super::fleet::ProjectSpec;
use super::journal::Journal;
use crate::config::{Sandbox, SandboxSettings};
use crate::plugins::{PluginError, PluginResult};
use crate::sandbox::proxy::{AllowList, EgressProxy, Refused};
use crate::store::NewEvent;

/// The allow list of a session's proxy, in its run directory.
const ALLOW_FILE: &str = "allow.json";
/// The proxy's socket in a session's run directory (mounted at `bwrap::INNER_RUN`).
pub const PROXY_SOCKET: &str = "proxy.sock";

/// Sandboxes across the fleet.
#[derive(Default)]
pub struct SandboxHost {
    /// Agents' own `sandbox:` settings by agent name (over the project's, field by field).
    pub agents: BTreeMap<String, SandboxSettings>,
    /// Files every sandbox hides: the config file and the database.
    pub hidden: Vec<PathBuf>,
    proxies: Mutex<HashMap<String, EgressProxy>>,
}

impl SandboxHost {
    /// Agents' `sandbox:` settings by name, and the files every sandbox hides.
    pub fn new(agents: BTreeMap<String, SandboxSettings>, hidden: Vec<PathBuf>) -> Self {
        SandboxHost {
            agents,
            hidden,
            proxies: Mutex::default(),
        }
    }

    /// The sandbox `agent` runs in for `project`, or `None`.
    pub fn sandbox_for(&self, project: &ProjectSpec, agent: &str) -> Option<Sandbox> {
        match self.agents.get(agent) {
            Some(a) => project.sandbox.overlay(a).resolve(),
            None => project.sandbox.resolve(),
        }
    }

    /// The key that turns `agent`'s sandbox on for `project` (the agent's when it decides,
    /// else the project's), for errors about the sandbox to name.
    pub fn key(&self, project: &ProjectSpec, agent: &str) -> String {
        match self.agents.get(agent).and_then(|a| a.enabled) {
            Some(true) => format!("agents.{agent}.sandbox"),
            _ => format!("projects.{}.sandbox", project.name),
        }
    }

    /// A session's run directory under Flotilla's home.
    pub fn run_dir(home: &Path, session: &str) -> PathBuf {
        home.join("run").join(session)
    }

    /// Starts (or restarts) `session`'s egress proxy allowing `allow`, remembering the list
    /// for a restart; a refused connection becomes a `sandbox.refused` event.
    ///
    /// # Errors
    /// `Invalid` for a bad allow list, `Io` when the socket cannot be made.
    pub async fn start_proxy(
        &self,
        journal: Arc<Journal>,
        run_dir: &Path,
        session: &str,
        allow: &[String],
    ) -> PluginResult<()> {
        let list = AllowList::parse(allow).map_err(|e| PluginError::Invalid(e.to_string()))?;
        tokio::fs::create_dir_all(run_dir).await?;
        set_private(run_dir).await?;
        let saved = serde_json::to_vec(allow).map_err(|e| PluginError::Io(e.into()))?;
        tokio::fs::write(run_dir.join(ALLOW_FILE), saved).await?;
        // The old proxy (a restart of the agent) goes first: the socket path is reused.
        self.stop(session);
        let id = session.to_string();
        let on_refused = Arc::new(move |r: Refused| {
            let journal = journal.clone();
            let event = NewEvent {
                session_id: Some(crate::store::SessionId(id.clone())),
                kind: "sandbox.refused".into(),
                data: serde_json::json!({"host": r.host, "port": r.port, "reason": r.reason}),
                at: Utc::now(),
            };
            tokio::spawn(async move {
                if let Err(e) = journal.append(&event).await {
                    tracing::warn!(error = %e, "recording a refused connection failed");
                }
            });
        });
        let proxy = EgressProxy::start(&run_dir.join(PROXY_SOCKET), list, on_refused)
            .await
            .map_err(|e| PluginError::Io(std::io::Error::other(e.to_string())))?;
        self.lock().insert(session.to_string(), proxy);
        Ok(())
    }

    /// Serves an adopted session's proxy again after a restart of Flotilla, from the allow
    /// list its launch saved; nothing when it was not sandboxed. Whether it is sandboxed.
    ///
    /// # Errors
    /// As [`SandboxHost::start_proxy`].
    pub async fn restore_proxy(
        &self,
        journal: Arc<Journal>,
        run_dir: &Path,
        session: &str,
    ) -> PluginResult<bool> {
        if self.lock().contains_key(session) {
            return Ok(true);
        }
        let Ok(saved) = tokio::fs::read(run_dir.join(ALLOW_FILE)).await else {
            return Ok(false);
        };
        let allow: Vec<String> =
            serde_json::from_slice(&saved).map_err(|e| PluginError::Io(e.into()))?;
        self.start_proxy(journal, run_dir, session, &allow).await?;
        Ok(true)
    }

    /// Stops `session`'s proxy (its agent is gone).
    pub fn stop(&self, session: &str) {
        self.lock().remove(session);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, EgressProxy>> {
        // A panic while holding it left a map that is still consistent.
        self.proxies.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn set_private(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).await
}
