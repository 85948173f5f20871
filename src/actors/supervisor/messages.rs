//! Messages the `FleetSupervisor` handles: commands that change the fleet. Senders: the HTTP
//! layer and the chat bridge (requests), session actors (`SessionEnded`), the GitHub poller
//! and webhook (`ScmObserved`, `GithubEventReceived`), and the app (`ReconcileAll` ticks).
//! Reads are not messages: see [`crate::read`].

use actix::prelude::*;
use serde::Deserialize;

use super::request::{BatchOrder, SpawnOrder};
use super::FleetError;
use crate::actors::session::messages::{SendReport, StepReport};
use crate::store::{SessionId, SessionSnapshot};

/// A spawn request as users send it (`POST /api/v1/sessions`); parsed into a
/// [`SpawnOrder`] at the edge.
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
    /// Host override: a name under `hosts:`, or `auto` for the least-loaded host.
    #[serde(default)]
    pub host: Option<String>,
}

/// Sent by the HTTP layer to start a session. Answers once the id is reserved and the actor
/// started (state `spawning`); the agent starts asynchronously.
#[derive(Debug, Message)]
#[rtype(result = "Result<SessionSnapshot, FleetError>")]
pub struct Spawn {
    /// The request, parsed at the edge.
    pub order: SpawnOrder,
}

/// Reads the snapshot a live session actor holds (its row when it has none): for tests and
/// tools that look at the actor itself. The HTTP layer reads sessions from [`crate::read`].
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
    /// The question the sender answers, as the session showed it (`waiting_for`): when the
    /// session no longer waits on it, nothing is typed.
    pub question: Option<String>,
}

/// Sent by the HTTP layer to merge a session's PR.
#[derive(Debug, Message)]
#[rtype(result = "Result<StepReport, FleetError>")]
pub struct MergeSession {
    /// Session id.
    pub id: SessionId,
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
    /// The actor that sends this: the supervisor forgets it only if it is still the one it
    /// holds for the session (a successor started meanwhile stays).
    pub actor: actix::Addr<crate::actors::session::SessionActor>,
    /// The session did not end: another node owns it now (a fenced write was refused).
    pub lease_lost: bool,
}

/// Sent by the app's interval: a cheap safety reconcile of every live session.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct ReconcileAll;

/// A batch spawn request (`POST /api/v1/sessions/batch`); parsed into a [`BatchOrder`] at the
/// edge.
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
    /// Why: `live session`, `duplicate in batch`, `not found in the tracker`, `closed in the
    /// tracker` or `tracker: …` (the tracker's error).
    pub reason: String,
    /// The live session that already works on it.
    pub session: Option<String>,
}

/// Sent by the HTTP layer to spawn one session per issue, skipping issues that already have
/// a live session (and duplicates). Launches are capped by the fleet's spawn permits.
#[derive(Debug, Message)]
#[rtype(result = "Result<(Vec<SessionSnapshot>, Vec<Skipped>), FleetError>")]
pub struct BatchSpawn {
    /// The request, parsed at the edge.
    pub order: BatchOrder,
}

/// Sent by the HTTP layer (`flotilla start`): the project's one orchestrator session, created
/// or restored as needed. Never two: it has a fixed id.
#[derive(Debug, Message)]
#[rtype(result = "Result<(SessionSnapshot, bool), FleetError>")]
pub struct EnsureOrchestrator {
    /// Project name.
    pub project: String,
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
/// Sent by the GitHub poller: look at these sessions' PRs (with what the poller already read,
/// when it has it).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ScmObserved {
    /// Session and its PR's fresh status (`None`: the actor reads it itself).
    pub checks: Vec<(SessionId, Option<crate::plugins::PrStatus>)>,
}
