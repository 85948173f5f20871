//! The command bus: a command for a session that another node owns is queued in the store
//! (`cluster_commands`, announced with PostgreSQL `NOTIFY`), claimed there by whichever node
//! holds the session's lease, run by that node's supervisor, and answered in the same row.
//! A command is claimed once (an `UPDATE … RETURNING`), so it never runs twice.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::actors::session::messages::{SendReport, StepReport};
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
        /// The question the text answers (absent from commands of older nodes).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        question: Option<String>,
    },
    /// Kill the session (`POST /api/v1/sessions/{id}/kill`).
    Kill,
    /// Restore the session (`POST /api/v1/sessions/{id}/restore`).
    Restore,
    /// Merge the session's PR (`POST /api/v1/sessions/{id}/merge`).
    Merge,
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
        /// Whether it was still being typed when the owner answered.
        #[serde(default)]
        pending: bool,
    },
    /// A kill, restore or merge ran; the session's row holds the result.
    Stepped {
        /// Whether anything changed.
        changed: bool,
        /// Why nothing changed, when it did not.
        message: Option<String>,
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
                pending: rep.pending,
            },
            Err(e) => Self::failed(&e),
        }
    }

    /// The answer for a kill's, restore's or merge's result.
    pub fn of_step(r: Result<StepReport, FleetError>) -> Self {
        match r {
            Ok(rep) => CommandAnswer::Stepped {
                changed: rep.changed,
                message: rep.message,
            },
            Err(e) => Self::failed(&e),
        }
    }

    fn failed(e: &FleetError) -> Self {
        let class = match e {
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

    fn into_error(class: &str, message: String, id: &SessionId) -> FleetError {
        match class {
            "not_found" => FleetError::NotFound { id: id.0.clone() },
            "invalid" => FleetError::Invalid {
                field: "message".into(),
                reason: message,
            },
            "busy" => FleetError::Busy,
            _ => FleetError::Conflict(message),
        }
    }

    /// Back into a send's result.
    ///
    /// # Errors
    /// The owner's, or `Conflict` for an answer that is not a send's.
    pub fn into_result(self, id: &SessionId) -> Result<SendReport, FleetError> {
        match self {
            CommandAnswer::Sent {
                delivered,
                restored,
                pending,
            } => Ok(SendReport {
                session: id.0.clone(),
                delivered,
                restored,
                pending,
            }),
            CommandAnswer::Failed { class, message } => Err(Self::into_error(&class, message, id)),
            CommandAnswer::Stepped { .. } => Err(FleetError::Conflict(format!(
                "session {id}: its owner answered a send with a step"
            ))),
        }
    }

    /// Back into a kill's, restore's or merge's `(changed, message)`.
    ///
    /// # Errors
    /// The owner's, or `Conflict` for an answer that is not a step's.
    pub fn into_step(self, id: &SessionId) -> Result<(bool, Option<String>), FleetError> {
        match self {
            CommandAnswer::Stepped { changed, message } => Ok((changed, message)),
            CommandAnswer::Failed { class, message } => Err(Self::into_error(&class, message, id)),
            CommandAnswer::Sent { .. } => Err(FleetError::Conflict(format!(
                "session {id}: its owner answered a step with a send"
            ))),
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
) -> Result<CommandAnswer, FleetError> {
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
    serde_json::from_str(&answer).map_err(|e| FleetError::Store(StoreError::Corrupt(e.to_string())))
}
