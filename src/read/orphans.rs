//! Orphans: what runs or sits on disk without a live session.
//!
//! A store that cannot be read is an error, never "no sessions": otherwise every live agent
//! would be reported as an orphan (and someone might clean them up).

use serde::{Deserialize, Serialize};

use super::{ReadModel, ReadResult};
use crate::store::{SessionFilter, SessionRecord, SessionState};

/// Something found that Flotilla did not start or no longer tracks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Orphan {
    /// `runtime` or `workspace`.
    pub kind: String,
    /// Its name (runtime instance or path).
    pub name: String,
    /// Why it is an orphan.
    pub detail: String,
}

fn state_of(sessions: &[SessionRecord], name: &str) -> Option<SessionState> {
    sessions
        .iter()
        .find(|s| s.id.as_str() == name)
        .map(|s| s.state)
}

/// Why a running runtime instance named `name` is an orphan (`None`: its session is live).
fn runtime_orphan(sessions: &[SessionRecord], name: &str) -> Option<String> {
    match state_of(sessions, name) {
        None => Some("running, but no such session".to_string()),
        Some(st) if st.is_terminal() => Some(format!("running, but the session is {st}")),
        Some(_) => None,
    }
}

/// Why a workspace directory named `name` is an orphan (`None`: its session may use it; a
/// done session's workspace is kept for a restore).
fn workspace_orphan(sessions: &[SessionRecord], name: &str) -> Option<String> {
    match state_of(sessions, name) {
        None => Some("workspace of no known session".to_string()),
        Some(st @ (SessionState::Killed | SessionState::Terminated)) => {
            Some(format!("workspace of a {st} session"))
        }
        Some(_) => None,
    }
}

impl ReadModel {
    /// Runtime instances the store does not know (or knows as ended), and workspaces of
    /// unknown or killed sessions. A runtime that cannot list what runs is skipped (logged).
    ///
    /// # Errors
    /// `Store` when the sessions cannot be read.
    pub async fn orphans(&self) -> ReadResult<Vec<Orphan>> {
        let sessions = self.store.list_sessions(&SessionFilter::default()).await?;
        let mut out = Vec::new();
        for (rname, rt) in &self.runtimes {
            let live = match rt.list_live().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(runtime = %rname, error = %e, "cannot list what the runtime runs");
                    continue;
                }
            };
            for name in live {
                if let Some(detail) = runtime_orphan(&sessions, &name) {
                    out.push(Orphan {
                        kind: "runtime".into(),
                        name: format!("{rname}:{name}"),
                        detail,
                    });
                }
            }
        }
        for (project, _) in &self.catalog.projects {
            let dir = self.catalog.worktrees.join(project);
            let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
                continue;
            };
            while let Ok(Some(e)) = entries.next_entry().await {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(detail) = workspace_orphan(&sessions, &name) {
                    out.push(Orphan {
                        kind: "workspace".into(),
                        name: e.path().to_string_lossy().into_owned(),
                        detail,
                    });
                }
            }
        }
        Ok(out)
    }
}
