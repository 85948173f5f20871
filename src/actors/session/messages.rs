//! Messages a `SessionActor` handles. Senders: the `FleetSupervisor` (forwarding HTTP and CLI
//! requests), the actor itself (timers, runtime watcher, effect results).

use actix::prelude::*;
use serde::Serialize;

use super::SessionError;
use crate::domain::machine::EventKind;
use crate::store::SessionSnapshot;

/// What a request did to the session.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// The session after the request.
    pub session: SessionSnapshot,
    /// Whether anything changed.
    pub changed: bool,
    /// Why nothing changed, when it did not (e.g. "session demo-1 is already killed").
    pub message: Option<String>,
}

/// Result of delivering a message to the agent.
#[derive(Debug, Clone, Serialize)]
pub struct SendReport {
    /// Session id.
    pub session: String,
    /// Whether the runtime confirmed the agent took the message.
    pub delivered: bool,
    /// Whether the session was dead and restored first.
    #[serde(default)]
    pub restored: bool,
    /// Stored, and still being typed when the answer was due (a slow runtime): it is typed
    /// once, so the sender must not send it again.
    #[serde(default)]
    pub pending: bool,
}

/// Applies one event through the machine. Sent by the supervisor (observations from webhooks
/// and pollers) and by the actor itself (effect results, timers).
#[derive(Debug, Message)]
#[rtype(result = "Result<StepReport, SessionError>")]
pub struct Apply {
    /// The event.
    pub event: EventKind,
}

/// Sent by the supervisor when a user kills the session. Idempotent.
#[derive(Debug, Message)]
#[rtype(result = "Result<StepReport, SessionError>")]
pub struct Kill {
    /// Why (`manually_killed`, …).
    pub reason: String,
}

/// Sent by the supervisor when a user restores a live-but-stuck session.
#[derive(Debug, Message)]
#[rtype(result = "Result<StepReport, SessionError>")]
pub struct Restore;

/// Sent by the supervisor when another node took the session's lease over: stop driving it
/// (timers and the exit watch end; the agent keeps running for its new owner) and stop.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Relinquish;

/// Sent by the supervisor to type a user's message into the agent.
#[derive(Debug, Message)]
#[rtype(result = "Result<SendReport, SessionError>")]
pub struct SendMessage {
    /// The text.
    pub text: String,
    /// The question the text answers, when the sender saw one (see `SendToSession`).
    pub question: Option<String>,
}

/// Sent by the supervisor to read the in-memory snapshot.
#[derive(Debug, Message)]
#[rtype(result = "Result<SessionSnapshot, SessionError>")]
pub struct GetSnapshot;

/// Sent by the runtime watcher when the agent it watched ended. Ignored if the session has
/// moved on to another runtime handle since (e.g. after a restore).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RuntimeEnded {
    /// The handle that was watched.
    pub handle: crate::plugins::RuntimeHandle,
    /// Exit status, if known.
    pub code: Option<i32>,
    /// The agent's last output lines when it failed.
    pub output: Option<String>,
    /// Why a run that exited 0 failed, when the agent's output says so.
    pub failure: Option<String>,
}

/// Sent by the supervisor on every reconcile tick: a cheap check (no subprocess) that the
/// runtime is still there, catching anything the event-driven watch missed. Answers when the
/// check is done.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Reconcile;

/// Look at the session's PR now. `status` is what the poller already fetched (batched);
/// without it the actor asks the SCM itself.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ScmCheck {
    /// A fresh observation of the session's PR, if the sender has one.
    pub status: Option<crate::plugins::PrStatus>,
}

/// A GitHub webhook about `repo`: the actor checks its PR if the hint is about it.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ScmHint {
    /// `owner/name`.
    pub repo: String,
    /// The PRs the event names.
    pub prs: Vec<i64>,
    /// The head branches the event names.
    pub branches: Vec<String>,
}

/// Merge the session's PR now (a human asked, through the API).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<StepReport, SessionError>")]
pub struct MergeNow {
    /// How to merge; the project's configured method when `None`.
    pub method: Option<crate::plugins::MergeMethod>,
}
