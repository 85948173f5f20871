//! A human's message to a session's agent (`send`): stored as an instruction, typed, and, when
//! it answers the agent's question, recorded as the answer.

use actix::prelude::*;
use chrono::Utc;

use super::messages::*;
use super::{deliver, Apply, QuestionMoved, SessionActor, SessionError};
use crate::actors::fleet::Fleet;
use crate::actors::watch::OutputChanged;
use crate::domain::machine::EventKind;
use crate::plugins::PluginError;
use crate::store::{InstructionKind, InstructionState, NewEvent, NewInstruction};

impl Handler<SendMessage> for SessionActor {
    type Result = ResponseActFuture<Self, Result<SendReport, SessionError>>;
    fn handle(&mut self, msg: SendMessage, ctx: &mut Self::Context) -> Self::Result {
        let Some(s) = self.snapshot.clone() else {
            return Box::pin(fut::ready(Err(SessionError::NotLoaded)));
        };
        let st = s.session.state;
        match (&s.session.runtime_handle, st) {
            (Some(_), st)
                if !st.is_terminal() && s.session.activity != crate::store::Activity::Exited => {}
            _ => {
                return Box::pin(fut::ready(Err(SessionError::Rejected(format!(
                    "session {} has no running agent (state {st}); restore it first",
                    s.session.id
                )))))
            }
        }
        if let Err(e) = self.fleet.plugins.runtime(&s.session.runtime) {
            return Box::pin(fut::ready(Err(e.into())));
        }
        if let Some(answers) = &msg.question {
            if let Err(why) = crate::domain::question::still_asks(&s.session, answers) {
                return Box::pin(fut::ready(Err(SessionError::Rejected(why))));
            }
        }
        let journal = self.fleet.journal.clone();
        let id = self.id.clone();
        // While the agent waits, whatever is sent answers what is on screen: a menu's option
        // as its key (a paste and its Enter would confirm whichever option is highlighted), a
        // line prompt's answer as a line, and anything else, when no question is drawn, as a
        // message (see `Runtime::answer`).
        let asked = s.session.meta["question"].as_str().map(str::to_string);
        // A turn that ended on the model API's failure draws no dialog: the agent waits for its
        // next prompt, which the text is (its log then ends the wait).
        let waiting = st == crate::store::SessionState::NeedsInput
            && !asked
                .as_deref()
                .is_some_and(crate::plugins::activity::ApiFailure::asked);
        let addr = ctx.address();
        let (fleet, input, rec) = (self.fleet.clone(), self.input.clone(), s.session);
        // Detached: the paste and its journal row finish even while an atomic step waits.
        Box::pin(
            crate::actors::detached(async move {
                // Stored before it is typed: a crash from here on finishes or re-sends it.
                let queued = fleet
                    .store
                    .queue_instruction(&NewInstruction {
                        session_id: id.clone(),
                        kind: if waiting {
                            InstructionKind::Answer
                        } else {
                            InstructionKind::Message
                        },
                        reaction: None,
                        body: msg.text.clone(),
                        at: Utc::now(),
                    })
                    .await?;
                // Typed in its own task: a slow runtime (an ssh host under load) answers the
                // sender "pending" at the deadline instead of a timeout that says "try again",
                // which would queue the message twice.
                let margin = (fleet.actor_timeout / 4).min(std::time::Duration::from_secs(1));
                let deadline = fleet.actor_timeout - margin;
                let typing = tokio::spawn(async move {
                    let r =
                        type_message(&fleet, &input, &journal, &rec, queued.id, &msg.text).await;
                    match r {
                        Ok(delivered) if waiting && delivered => {
                            // The human answered this question; one the agent asked meanwhile
                            // (its hook can be that quick) keeps the session waiting.
                            addr.do_send(Apply {
                                event: EventKind::InputAnswered { question: asked },
                            });
                            // A next dialog drawn while the answer was confirmed was seen
                            // while the last one still waited (a redraw cannot end a wait),
                            // and a still screen raises no change: look again once it is
                            // recorded (OpenCode's "Always allow" step, Codex's next approval).
                            addr.do_send(OutputChanged);
                        }
                        Ok(_) => {}
                        Err(SessionError::Plugin(PluginError::AnotherQuestion)) => {
                            // The human is asked the question that waits now.
                            addr.do_send(QuestionMoved);
                        }
                        Err(ref e) => {
                            tracing::warn!(session = %rec.id, error = %e, "message not typed")
                        }
                    }
                    r
                });
                let (delivered, pending) = match tokio::time::timeout(deadline, typing).await {
                    Ok(Ok(Err(SessionError::Plugin(PluginError::AnotherQuestion)))) => {
                        return Err(SessionError::Rejected(format!(
                            "the agent of session {id} now asks another question; nothing was \
                             typed"
                        )))
                    }
                    Ok(Ok(r)) => (r?, false),
                    Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Ok(Err(_)) => return Err(SessionError::NotLoaded),
                    Err(_) => (false, true),
                };
                Ok(SendReport {
                    session: id.to_string(),
                    delivered,
                    restored: false,
                    pending,
                })
            })
            .into_actor(self),
        )
    }
}

/// Types stored instruction `queued` into the session's runtime (with every instruction still
/// open before it) and journals the send. Returns whether the runtime confirmed it.
async fn type_message(
    fleet: &Fleet,
    input: &deliver::InputLock,
    journal: &crate::actors::journal::Journal,
    rec: &crate::store::SessionRecord,
    queued: i64,
    text: &str,
) -> Result<bool, SessionError> {
    let done = {
        let _g = input.lock().await;
        deliver::deliver_open(fleet, rec, Some(queued)).await?
    };
    let delivered = match done.into_iter().find(|d| d.id == queued) {
        Some(d) => d.result?,
        // Delivered by another run (e.g. the start-up one) meanwhile.
        None => fleet.store.load_instruction(queued).await?.state == InstructionState::Delivered,
    };
    journal
        .append(&NewEvent {
            session_id: Some(rec.id.clone()),
            kind: "agent.message_sent".into(),
            data: serde_json::json!({"chars": text.chars().count(), "delivered": delivered}),
            at: Utc::now(),
        })
        .await?;
    Ok(delivered)
}
