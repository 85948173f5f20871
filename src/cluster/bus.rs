//! The command bus: a command for a session that another node owns is queued in the store
//! (`cluster_commands`, announced with PostgreSQL `NOTIFY`), claimed there by whichever node
//! holds the session's lease, run by that node's supervisor, and answered in the same row.
//! A command is claimed once (an `UPDATE … RETURNING`), so it never runs twice.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::actors::session::messages::SendReport;
use crate::actors::supervisor::FleetError;
use crate::store::{CommandStatus, LeaseStore, SessionId, StoreError};

/// A command forwarded to a session's owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ClusterCommand {
    /// Type `text` into the session's agent (`POST /api/v1/sessions/{id}/send`).
    Send {
        /// The message.
        text: String,
        /// Restore a dead session first.
        allow_restore: bool,
    },
}

/// The owner's answer, as stored in the command's row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CommandAnswer {
    /// Sent; the report's fields.
    Sent {
        /// Whether the runtime confirmed the agent took it.
        delivered: bool,
        /// Whether the session was restored first.
        restored: bool,
    },
    /// Refused or failed, with the status class the sender answers with.
    Failed {
        /// `not_found`, `conflict`, `invalid`, `busy` or `error`.
        class: String,
        /// What went wrong.
        message: String,
    },
}

impl CommandAnswer {
    /// The answer for a supervisor's result.
    pub fn of(r: Result<SendReport, FleetError>) -> Self {
        match r {
            Ok(rep) => CommandAnswer::Sent {
                delivered: rep.delivered,
                restored: rep.restored,
            },
            Err(e) => {
                let class = match &e {
                    FleetError::NotFound { .. } => "not_found",
                    FleetError::Conflict(_) => "conflict",
                    FleetError::Invalid { .. } => "invalid",
                    FleetError::Busy | FleetError::NotReady(_) => "busy",
                    _ => "error",
                };
                CommandAnswer::Failed {
                    class: class.into(),
                    message: e.to_string(),
                }
            }
        }
    }

    /// Back into the sender's result.
    fn into_result(self, id: &SessionId) -> Result<SendReport, FleetError> {
        match self {
            CommandAnswer::Sent {
                delivered,
                restored,
            } => Ok(SendReport {
                session: id.0.clone(),
                delivered,
                restored,
            }),
            CommandAnswer::Failed { class, message } => Err(match class.as_str() {
                "not_found" => FleetError::NotFound { id: id.0.clone() },
                "conflict" => FleetError::Conflict(message),
                "invalid" => FleetError::Invalid {
                    field: "message".into(),
                    reason: message,
                },
                "busy" => FleetError::Busy,
                _ => FleetError::Conflict(message),
            }),
        }
    }
}

/// How often a sender looks for its answer.
const ANSWER_POLL: Duration = Duration::from_millis(25);

/// Queues `command` for the owner of `id` and waits up to `wait` for its answer.
///
/// # Errors
/// `Busy` when no answer came in time (the command may still run once, later, or never if
/// its owner died after claiming it); the owner's error otherwise.
pub async fn forward(
    store: &dyn LeaseStore,
    id: &SessionId,
    command: &ClusterCommand,
    wait: Duration,
) -> Result<SendReport, FleetError> {
    let text = serde_json::to_string(command)
        .map_err(|e| FleetError::Store(StoreError::Corrupt(e.to_string())))?;
    let cmd = store.enqueue_command(id, &text).await?;
    let answer = tokio::time::timeout(wait, async {
        loop {
            if let CommandStatus::Done(a) = store.command_status(cmd).await? {
                return Ok::<_, StoreError>(a);
            }
            tokio::time::sleep(ANSWER_POLL).await;
        }
    })
    .await
    .map_err(|_| FleetError::Busy)??;
    let answer: CommandAnswer = serde_json::from_str(&answer)
        .map_err(|e| FleetError::Store(StoreError::Corrupt(e.to_string())))?;
    answer.into_result(id)
}
