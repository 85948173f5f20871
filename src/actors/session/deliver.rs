//! Typing instructions into an agent exactly once, through crashes.
//!
//! Intent before effect: every instruction (a human's `send`, a reaction's message) is stored
//! as `pending` before anything is typed (a reaction's in the very transaction of the step that
//! decided it), is marked `typing` together with the runtime's input mark before the first key,
//! and `delivered` only after its Enter was confirmed. One delivery runs at a time per session
//! (the [`InputLock`]), so two instructions never share the input line. When the actor starts
//! (after a crash) or its agent changes, it delivers what is open in order before anything new:
//! a `pending` one is sent, a `typing` one is finished by the runtime from its mark
//! ([`Runtime::resume_message`]): completed, confirmed, or cleared and re-sent, never doubled.
//!
//! [`Runtime::resume_message`]: crate::plugins::Runtime::resume_message

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;

use crate::actors::fleet::Fleet;
use crate::plugins::{PluginError, ScreenQuestion};
use crate::store::{
    InstructionKind, InstructionRecord, InstructionState, NewEvent, SessionRecord, StoreError,
};

/// Held while typing into one session's agent: deliveries of a session never overlap.
pub type InputLock = Arc<tokio::sync::Mutex<()>>;

/// What delivering one instruction did.
#[derive(Debug)]
pub struct Delivery {
    /// The instruction.
    pub id: i64,
    /// Whether the runtime confirmed it, or why it failed.
    pub result: Result<bool, PluginError>,
}

/// Delivers `rec`'s open instructions in order, up to and including `through` when given.
/// The caller holds the session's [`InputLock`]. Without a runtime handle nothing is typed
/// (the instructions wait for the agent).
///
/// # Errors
/// `StoreError` when the instructions cannot be read or their progress cannot be recorded
/// (then nothing more is typed: what is not recorded is not done).
pub async fn deliver_open(
    fleet: &Fleet,
    rec: &SessionRecord,
    through: Option<i64>,
) -> Result<Vec<Delivery>, StoreError> {
    let Some(handle) = rec.runtime_handle.as_ref() else {
        return Ok(Vec::new());
    };
    let Ok(runtime) = fleet.plugins.runtime(&rec.runtime) else {
        return Ok(Vec::new());
    };
    let open = fleet.store.open_instructions(&rec.id).await?;
    let mut done = Vec::with_capacity(open.len());
    for ins in open {
        if through.is_some_and(|t| ins.id > t) {
            break;
        }
        let result = match ins.state {
            InstructionState::Typing => match ins.kind {
                // Keys for a menu cannot be told apart afterwards: never typed twice.
                InstructionKind::Answer => Ok(false),
                _ => {
                    let mark = ins.mark.and_then(|m| u64::try_from(m).ok());
                    runtime.resume_message(handle, &ins.body, mark).await
                }
            },
            _ => {
                let mark = runtime.input_mark(handle).await.ok().flatten();
                fleet
                    .store
                    .set_instruction_state(
                        ins.id,
                        InstructionState::Typing,
                        mark.and_then(|m| i64::try_from(m).ok()),
                        Utc::now(),
                    )
                    .await?;
                match ins.kind {
                    InstructionKind::Answer => {
                        // The question on screen as the agent's plugin reads it.
                        let agent = fleet.plugins.agent(&rec.agent).ok();
                        let read = agent.as_ref().map_or(
                            crate::plugins::activity::terminal_question as ScreenQuestion,
                            |a| a.screen_question(),
                        );
                        // The answer is for the question the session showed its sender: a
                        // key typed onto another (the agent moved on before the session saw
                        // it) would answer what nobody read.
                        let asked = rec.meta["question"].as_str();
                        let workspace = match rec.workspace.as_deref() {
                            Some(w) => tokio::fs::canonicalize(w)
                                .await
                                .unwrap_or_else(|_| PathBuf::from(w)),
                            None => PathBuf::new(),
                        };
                        let other = |screen: &str| match (&agent, asked) {
                            (Some(a), Some(q)) => a.shows_other_question(screen, q, &workspace),
                            _ => false,
                        };
                        runtime.answer_to(handle, &ins.body, read, &other).await
                    }
                    _ => runtime.send_message(handle, &ins.body).await,
                }
            }
        };
        let state = outcome(&result);
        fleet
            .store
            .set_instruction_state(ins.id, state, None, Utc::now())
            .await?;
        if ins.kind == InstructionKind::Reaction {
            record_reaction(fleet, rec, &ins, state).await;
        }
        done.push(Delivery { id: ins.id, result });
    }
    Ok(done)
}

/// The stored state a delivery's result means.
fn outcome(result: &Result<bool, PluginError>) -> InstructionState {
    match result {
        Ok(true) => InstructionState::Delivered,
        // The agent was gone, or asked another question, before anything was typed.
        Err(PluginError::NotFound(_) | PluginError::AnotherQuestion) => InstructionState::Dropped,
        // Typed but unconfirmed, or failed part-way: never typed again.
        Ok(false) | Err(_) => InstructionState::Unconfirmed,
    }
}

/// The `reaction.sent` event of a reaction's instruction.
async fn record_reaction(
    fleet: &Fleet,
    rec: &SessionRecord,
    ins: &InstructionRecord,
    state: InstructionState,
) {
    let data = serde_json::json!({
        "reaction": ins.reaction,
        "delivered": state == InstructionState::Delivered,
        "instruction": ins.id,
    });
    if let Err(e) = fleet
        .journal
        .append(&NewEvent {
            session_id: Some(rec.id.clone()),
            kind: "reaction.sent".into(),
            data,
            at: Utc::now(),
        })
        .await
    {
        tracing::warn!(error = ?e, "recording a reaction's delivery failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_confirmed_delivery_counts_and_nothing_typed_is_typed_again() {
        assert_eq!(outcome(&Ok(true)), InstructionState::Delivered);
        assert_eq!(outcome(&Ok(false)), InstructionState::Unconfirmed);
        assert_eq!(
            outcome(&Err(PluginError::NotFound("gone".into()))),
            InstructionState::Dropped
        );
        assert_eq!(
            outcome(&Err(PluginError::AnotherQuestion)),
            InstructionState::Dropped
        );
        assert_eq!(
            outcome(&Err(PluginError::Invalid("x".into()))),
            InstructionState::Unconfirmed
        );
    }
}
