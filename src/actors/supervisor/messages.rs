//! Messages the `FleetSupervisor` handles. Senders: the HTTP layer (requests), session actors
//! (`SessionEnded`), and the app (`Reconcile` ticks).

use std::sync::Arc;

use actix::prelude::*;
use serde::Deserialize;
use tokio::sync::broadcast;

use super::FleetError;
use crate::actors::session::messages::{SendReport, StepReport};
use crate::store::{EventRecord, SessionId, SessionRecord, SessionSnapshot, SessionState};

/// A spawn request as users send it (`POST /api/v1/sessions`).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpawnRequest {
    /// Project name from config.
    pub project: String,
    /// Task text.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Tracker issue id.
    #[serde(default)]
    pub issue: Option<String>,
    /// Agent override.
    #[serde(default)]
    pub agent: Option<String>,
    /// Branch override.
    #[serde(default)]
    pub branch: Option<String>,
}

/// Sent by the HTTP layer to start a session. Answers once the id is reserved and the actor
/// started (state `spawning`); the agent starts asynchronously.
#[derive(Debug, Message)]
#[rtype(result = "Result<SessionSnapshot, FleetError>")]
pub struct Spawn {
    /// The request.
    pub request: SpawnRequest,
}

/// Sent by the HTTP layer to list sessions.
#[derive(Debug, Message, Default)]
#[rtype(result = "Result<Vec<SessionRecord>, FleetError>")]
pub struct ListSessions {
    /// Only this project.
    pub project: Option<String>,
    /// Only these states.
    pub states: Vec<SessionState>,
}

/// Sent by the HTTP layer to read one session with its trackers and timers.
#[derive(Debug, Message)]
#[rtype(result = "Result<SessionSnapshot, FleetError>")]
pub struct GetSession {
    /// Session id.
    pub id: SessionId,
}

/// Sent by the HTTP layer to kill a session. Idempotent.
#[derive(Debug, Message)]
#[rtype(result = "Result<StepReport, FleetError>")]
pub struct KillSession {
    /// Session id.
    pub id: SessionId,
}

/// Sent by the HTTP layer to restore a dead or stuck session.
#[derive(Debug, Message)]
#[rtype(result = "Result<StepReport, FleetError>")]
pub struct RestoreSession {
    /// Session id.
    pub id: SessionId,
}

/// Sent by the HTTP layer to type a message into a session's agent.
#[derive(Debug, Message)]
#[rtype(result = "Result<SendReport, FleetError>")]
pub struct SendToSession {
    /// Session id.
    pub id: SessionId,
    /// Text.
    pub text: String,
    /// Restore a dead session first (once).
    pub allow_restore: bool,
}

/// Sent by the HTTP layer to merge a session's PR.
#[derive(Debug, Message)]
#[rtype(result = "Result<StepReport, FleetError>")]
pub struct MergeSession {
    /// Session id.
    pub id: SessionId,
}

/// Sent by the HTTP layer to read events.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<EventRecord>, FleetError>")]
pub struct GetEvents {
    /// Only this session's events.
    pub session: Option<SessionId>,
    /// Events with id greater than this.
    pub after: i64,
    /// At most this many.
    pub limit: i64,
}

/// Sent by the HTTP layer to read a session's recent output.
#[derive(Debug, Message)]
#[rtype(result = "Result<String, FleetError>")]
pub struct GetOutput {
    /// Session id.
    pub id: SessionId,
    /// Lines from the end.
    pub lines: usize,
}

/// A live event feed: the backlog after the requested id, then live events.
pub struct Feed {
    /// Stored events after the resume point, oldest first.
    pub backlog: Vec<EventRecord>,
    /// Live events (subscribed before the backlog was read; may repeat backlog ids).
    pub live: broadcast::Receiver<Arc<EventRecord>>,
}

/// Sent by the SSE and WebSocket handlers to open a feed resuming after `after`.
#[derive(Debug, Message)]
#[rtype(result = "Result<Feed, FleetError>")]
pub struct OpenFeed {
    /// Resume point (the `Last-Event-ID`); 0 for everything.
    pub after: i64,
    /// At most this many backlog events.
    pub limit: i64,
}

/// Sent by `/readyz`.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), FleetError>")]
pub struct CheckReady;

/// Sent by a session actor when its session reached a terminal state (or vanished): the
/// supervisor drops its address so the actor stops.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SessionEnded {
    /// Session id.
    pub id: SessionId,
    /// Its project (whose all-complete may now be due).
    pub project: String,
}

/// Sent by the app's interval: a cheap safety reconcile of every live session.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct ReconcileAll;

/// Sent by the HTTP layer to list chat conversations. (Answered from the store until the
/// chat bridge's `ChatSupervisor` owns conversations.)
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<crate::store::ConversationRecord>, FleetError>")]
pub struct ListConversations;

/// A batch spawn request (`POST /api/v1/sessions/batch`).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchSpawnRequest {
    /// Project name.
    pub project: String,
    /// Issue ids, one session each.
    pub issues: Vec<String>,
    /// Agent override.
    #[serde(default)]
    pub agent: Option<String>,
    /// Extra task text for every session.
    #[serde(default)]
    pub prompt: Option<String>,
}

/// An issue a batch did not spawn, and why.
#[derive(Debug, Clone, serde::Serialize, Deserialize, utoipa::ToSchema)]
pub struct Skipped {
    /// The issue.
    pub issue: String,
    /// Why: `live session` or `duplicate in batch`.
    pub reason: String,
    /// The live session that already works on it.
    pub session: Option<String>,
}

/// Sent by the HTTP layer to spawn one session per issue, skipping issues that already have
/// a live session (and duplicates). Launches are capped by the fleet's spawn permits.
#[derive(Debug, Message)]
#[rtype(result = "Result<(Vec<SessionSnapshot>, Vec<Skipped>), FleetError>")]
pub struct BatchSpawn {
    /// The request.
    pub request: BatchSpawnRequest,
}

/// Sent by the HTTP layer to learn how a human attaches to a session's terminal.
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<crate::plugins::AttachInfo>, FleetError>")]
pub struct GetAttach {
    /// Session id.
    pub id: SessionId,
}

/// Sent by the HTTP layer (`flotilla start`): the project's one orchestrator session, created
/// or restored as needed. Never two: it has a fixed id.
#[derive(Debug, Message)]
#[rtype(result = "Result<(SessionSnapshot, bool), FleetError>")]
pub struct EnsureOrchestrator {
    /// Project name.
    pub project: String,
}

/// Something found at start-up that Flotilla did not start or no longer tracks.
#[derive(Debug, Clone, serde::Serialize, Deserialize, utoipa::ToSchema)]
pub struct Orphan {
    /// `runtime` or `workspace`.
    pub kind: String,
    /// Its name (runtime instance or path).
    pub name: String,
    /// Why it is an orphan.
    pub detail: String,
}

/// Sent by the HTTP layer (`flotilla status --orphans`).
#[derive(Debug, Message)]
#[rtype(result = "Vec<Orphan>")]
pub struct GetOrphans;

/// Sent by the webhook endpoints (`/webhooks/*`) to persist a verified delivery before they
/// answer 2xx. Answers whether it is new: `false` means a redelivery (same platform and
/// delivery id), which the endpoint acknowledges and otherwise ignores.
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, FleetError>")]
pub struct RecordWebhookDelivery {
    /// The delivery, raw body included.
    pub delivery: crate::store::WebhookDelivery,
}

/// Sent by `POST /webhooks/github` after a new, verified delivery was persisted.
///
/// For now the supervisor only logs and counts it; routing it to the session that owns the
/// PR or branch (and triggering an immediate SCM check) is the lifecycle's part 2.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct GithubEventReceived {
    /// The parsed event.
    pub event: crate::plugins::github::GithubEvent,
}
/// What the dashboard's board loads once: every session with its trackers and newest event,
/// the configured projects and agents, and the event cursor to follow the stream from.
#[derive(Debug, Clone)]
pub struct Board {
    /// The newest event id when the read began. Events after it may already show in the
    /// rows; replaying them is harmless, since events carry absolute state.
    pub cursor: i64,
    /// Every session, oldest first.
    pub sessions: Vec<SessionRecord>,
    /// Every reaction tracker, by session.
    pub trackers: Vec<(SessionId, crate::store::ReactionTracker)>,
    /// The newest event of each session.
    pub latest_events: Vec<EventRecord>,
    /// Project names from config, with each project's default agent.
    pub projects: Vec<(String, String)>,
    /// Agent names from config.
    pub agents: Vec<String>,
}

/// Sent by the dashboard (`GET /api/v1/board`) once per page load; live changes then come
/// from the event stream, never from re-reading this.
#[derive(Debug, Message)]
#[rtype(result = "Result<Board, FleetError>")]
pub struct GetBoard;

/// Sent by the GitHub poller: look at these sessions' PRs (with what the poller already read,
/// when it has it).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ScmObserved {
    /// Session and its PR's fresh status (`None`: the actor reads it itself).
    pub checks: Vec<(SessionId, Option<crate::plugins::PrStatus>)>,
}
