//! Running the effects a committed step asks for: starting, restarting and destroying the
//! runtime, typing instructions, notifying, merging and cleaning up the workspace.

use std::sync::Arc;

use super::{deliver, launch, sandboxed, scm};
use crate::actors::fleet::Fleet;
use crate::domain::machine::{Effect, EventKind};
use crate::plugins::PluginError;
use crate::store::{NewEvent, SessionSnapshot, SessionState};

/// Removes a session's workspace (and its branch when asked); says truthfully what it did.
///
/// # Errors
/// The workspace plugin's error when removal fails.
pub async fn cleanup_workspace(
    fleet: &Fleet,
    rec: &crate::store::SessionRecord,
    delete_branch: bool,
) -> Result<serde_json::Value, PluginError> {
    let (Some(p), Some(project)) = (&rec.workspace, fleet.project(&rec.project)) else {
        return Ok(serde_json::json!({"removed": false, "reason": "no workspace"}));
    };
    let ws = fleet.plugins.workspace(&rec.workspace_kind)?;
    let path = std::path::Path::new(p);
    let existed = ws.exists(path).await;
    ws.destroy(&project.repo, path).await?;
    let mut branch_deleted = false;
    if delete_branch {
        if let Some(b) = &rec.branch {
            ws.delete_branch(&project.repo, b).await?;
            branch_deleted = true;
        }
    }
    Ok(serde_json::json!({"removed": existed, "path": p, "branch_deleted": branch_deleted}))
}

/// Performs one effect; returns the event it produced, if any.
pub(super) async fn run_effect(
    fleet: &Arc<Fleet>,
    s: &SessionSnapshot,
    effect: Effect,
    input: &deliver::InputLock,
) -> Option<EventKind> {
    let rec = &s.session;
    match effect {
        Effect::StartRuntime { resume } => {
            Some(launch::start(fleet.clone(), rec.clone(), resume).await)
        }
        Effect::DestroyRuntime => {
            if let (Some(h), Ok(rt)) = (&rec.runtime_handle, fleet.plugins.runtime(&rec.runtime)) {
                if let Err(e) = rt.destroy(h).await {
                    tracing::warn!(error = %e, "destroying the runtime failed");
                }
            }
            sandboxed::release(fleet, rec).await;
            None
        }
        Effect::CleanupWorkspace => {
            let delete_branch = rec.state == SessionState::Killed
                && fleet
                    .project(&rec.project)
                    .is_some_and(|p| p.delete_branch_on_kill);
            let data = match cleanup_workspace(fleet, rec, delete_branch).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "removing the workspace failed");
                    serde_json::json!({"removed": false, "error": e.to_string()})
                }
            };
            let _ = fleet
                .journal
                .append(&NewEvent {
                    session_id: Some(rec.id.clone()),
                    kind: "workspace.cleanup".into(),
                    data,
                    at: fleet.clock.now(),
                })
                .await;
            None
        }
        Effect::SendToAgent {
            reaction,
            given_at_launch: true,
            ..
        } => {
            // The restarted agent got it as its first prompt: only the record is left.
            let data =
                serde_json::json!({"reaction": reaction, "delivered": true, "via": "restart"});
            let _ = fleet
                .journal
                .append(&NewEvent {
                    session_id: Some(rec.id.clone()),
                    kind: "reaction.sent".into(),
                    data,
                    at: fleet.clock.now(),
                })
                .await;
            None
        }
        Effect::SendToAgent { .. } => {
            // Queued with the step; typed in order with whatever else is open.
            let _g = input.lock().await;
            if let Err(e) = deliver::deliver_open(fleet, rec, None).await {
                tracing::warn!(error = ?e, "delivering a reaction's message failed");
            }
            None
        }
        Effect::RestartAgent { due } => {
            Some(launch::restart(fleet.clone(), rec.clone(), due).await)
        }
        Effect::Notify {
            reaction,
            priority,
            message,
            escalation,
        } => {
            // Already in the outbox (written with the step); the outbox actor delivers it.
            tracing::info!(?reaction, ?priority, escalation, %message, "notification queued");
            None
        }
        Effect::Merge { method } => match scm::merge(fleet, s, method).await {
            Ok(()) => Some(EventKind::PrMerged),
            Err(e) => {
                // The machine goes back to approved and retries on the next observation
                // that finds the PR ready, then tells a human.
                tracing::warn!(error = %e, "auto-merge failed");
                Some(EventKind::MergeFailed {
                    reason: scm::refusal(&e).unwrap_or_else(|| e.to_string()),
                })
            }
        },
        // Run by the actor itself (`after_commit`): a check is the actor's to coalesce.
        Effect::CheckPr => None,
        Effect::Log { message } => {
            tracing::warn!(%message, "session machine");
            None
        }
    }
}
