//! `/api/v1/sessions…`: list, spawn, get, send, kill, restore, merge, events, output.

use std::str::FromStr;

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use super::AppState;
use crate::actors::session::messages::StepReport;
use crate::actors::supervisor::messages::{
    KillSession, MergeSession, RestoreSession, SendToSession, Spawn, SpawnRequest,
};
use crate::actors::supervisor::request::SpawnOrder;
use crate::store::{
    Activity, EventRecord, PrRef, ReactionTracker, SessionFilter, SessionId, SessionRecord,
    SessionSnapshot, SessionState, TimerRecord,
};

/// A session as the API shows it (no runtime internals).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    /// `{prefix}-{N}`.
    pub id: String,
    /// Project.
    pub project: String,
    /// State.
    pub state: SessionState,
    /// Why it is in this state.
    pub reason: Option<String>,
    /// Agent name.
    pub agent: String,
    /// Runtime plugin.
    pub runtime: String,
    /// Branch.
    pub branch: Option<String>,
    /// Workspace path.
    pub workspace: Option<String>,
    /// The PR, or null.
    pub pr: Option<PrRef>,
    /// Tracker issue.
    pub issue: Option<String>,
    /// Task prompt.
    pub prompt: Option<String>,
    /// Last observed activity.
    pub activity: Activity,
    /// When it was observed.
    pub activity_at: Option<DateTime<Utc>>,
    /// Actor restarts after errors.
    pub restart_count: i64,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Role, token usage, last self-report…
    pub meta: serde_json::Value,
    /// What the agent waits for, in words, while the session is `needs_input` ("approve Bash:
    /// git push"); null otherwise.
    pub waiting_for: Option<String>,
    /// The remote host (under `hosts:`) the agent runs on; null on this machine.
    pub host: Option<String>,
    /// The node that owns (drives) the session when several share one PostgreSQL
    /// (`cluster.node_id`); null on a single node.
    pub node: Option<String>,
}

impl SessionView {
    /// The view with its owning node filled in from the leases (one read per session).
    async fn owned(mut self, state: &AppState) -> Self {
        match state.reads.session_node(&self.id).await {
            Ok(node) => self.node = node,
            Err(e) => {
                tracing::warn!(session = %self.id, error = %e, "could not read the session's owner")
            }
        }
        self
    }
}

impl From<SessionRecord> for SessionView {
    fn from(s: SessionRecord) -> Self {
        let waiting_for = (s.state == SessionState::NeedsInput).then(|| {
            s.meta["question"]
                .as_str()
                .unwrap_or("an answer (the agent did not say to what)")
                .to_string()
        });
        SessionView {
            waiting_for,
            host: crate::plugins::hosts::host_of(&s.runtime).map(str::to_string),
            node: None,
            id: s.id.0,
            project: s.project,
            state: s.state,
            reason: s.reason,
            agent: s.agent,
            runtime: s.runtime,
            branch: s.branch,
            workspace: s.workspace,
            pr: s.pr,
            issue: s.issue,
            prompt: s.prompt,
            activity: s.activity,
            activity_at: s.activity_at,
            restart_count: s.restart_count,
            created_at: s.created_at,
            updated_at: s.updated_at,
            meta: s.meta,
        }
    }
}

/// One session with its reaction trackers and armed timers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionDetail {
    /// The session.
    #[serde(flatten)]
    pub session: SessionView,
    /// Reaction trackers.
    pub trackers: Vec<ReactionTracker>,
    /// Armed timers with their deadlines.
    pub timers: Vec<TimerRecord>,
}

impl From<SessionSnapshot> for SessionDetail {
    fn from(s: SessionSnapshot) -> Self {
        SessionDetail {
            session: s.session.into(),
            trackers: s.trackers.into_values().collect(),
            timers: s.timers.into_values().collect(),
        }
    }
}

/// The list answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionList {
    /// Sessions, oldest first.
    pub sessions: Vec<SessionView>,
}

/// What a kill or restore did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ActionResult {
    /// The session afterwards.
    pub session: SessionDetail,
    /// Whether anything changed (false: e.g. already killed).
    pub changed: bool,
    /// Why nothing changed.
    pub message: Option<String>,
}

impl From<StepReport> for ActionResult {
    fn from(r: StepReport) -> Self {
        ActionResult {
            session: r.session.into(),
            changed: r.changed,
            message: r.message,
        }
    }
}

/// Filters for the list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this project.
    pub project: Option<String>,
    /// Comma-separated states.
    pub state: Option<String>,
}

/// A message for the agent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    /// Text to deliver.
    pub message: String,
    /// The question this answers, as the session's `waiting_for` showed it. When given and
    /// the session no longer waits on that question (it asks another, or none), nothing is
    /// typed and the answer is 409 naming what it waits on now: an answer never goes to a
    /// question its sender has not read. A dead session is then not restored.
    #[serde(default)]
    pub question: Option<String>,
}

/// The send answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SendResult {
    /// Session id.
    pub session: String,
    /// Whether delivery was confirmed (`false` too for an answer that names none of the
    /// options of the menu on screen: nothing was typed).
    pub delivered: bool,
    /// Whether the session was dead and restored first.
    #[serde(default)]
    pub restored: bool,
    /// Stored and still being typed when this answer was due (a slow runtime, e.g. an ssh
    /// host under load): it will be typed once; do not send it again.
    #[serde(default)]
    pub pending: bool,
}

/// Paging of events.
#[derive(Debug, Deserialize, IntoParams)]
pub struct EventsQuery {
    /// Events after this id.
    pub after: Option<i64>,
    /// At most this many (default 500, max 5000).
    pub limit: Option<i64>,
}

/// Events answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    /// Events, oldest first.
    pub events: Vec<EventRecord>,
}

/// Output query.
#[derive(Debug, Deserialize, IntoParams)]
pub struct OutputQuery {
    /// Lines from the end (default `lifecycle.output_lines`, max 10000).
    pub lines: Option<usize>,
}

/// Output answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Output {
    /// The text.
    pub output: String,
}

fn sid(id: String) -> SessionId {
    SessionId(id)
}

/// Lists sessions, filtered by project and state.
///
/// # Errors
/// 422 for an unknown state name.
#[utoipa::path(get, path = "/api/v1/sessions", params(ListQuery),
    responses((status = 200, body = SessionList), (status = 401), (status = 422)))]
pub async fn list(
    state: web::Data<AppState>,
    q: web::Query<ListQuery>,
) -> Result<web::Json<SessionList>, ApiError> {
    let q = q.into_inner();
    let states = match q.state.as_deref() {
        None | Some("") => Vec::new(),
        Some(s) => s
            .split(',')
            .map(|p| {
                SessionState::from_str(p.trim()).map_err(|e| ApiError::Invalid {
                    field: "state".into(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let rows = state
        .reads
        .sessions(&SessionFilter {
            project: q.project,
            states,
            active_only: false,
        })
        .await?;
    // One read of the leases for the whole list, not one per session.
    let mut nodes = state.reads.session_nodes().await?;
    let sessions = rows
        .into_iter()
        .map(|row| {
            let mut v = SessionView::from(row);
            v.node = nodes.remove(&v.id);
            v
        })
        .collect();
    Ok(web::Json(SessionList { sessions }))
}

/// Spawns a session: reserves its id and starts its actor; the agent starts asynchronously.
///
/// # Errors
/// 422 naming the field (unknown project or agent, an agent that cannot start — its CLI not
/// on its `PATH`, claude's first-run set-up not done —, bad branch: one git would refuse, the
/// default branch or one a live session already works on —, an issue the tracker does not
/// know or reports closed); 413 for a huge body.
#[utoipa::path(post, path = "/api/v1/sessions", request_body = SpawnRequest,
    responses((status = 201, body = SessionDetail), (status = 401), (status = 413), (status = 422, description = "A field is invalid; also a branch that is the default branch or that a live session already works on")))]
pub async fn spawn(
    state: web::Data<AppState>,
    body: web::Json<SpawnRequest>,
) -> Result<HttpResponse, ApiError> {
    let order = SpawnOrder::try_from(body.into_inner())?;
    let snap = state.supervisor.send(Spawn { order }).await??;
    let mut detail = SessionDetail::from(snap);
    detail.session = detail.session.owned(&state).await;
    Ok(HttpResponse::Created().json(detail))
}

/// One session with its trackers and timers.
///
/// # Errors
/// 404 for an unknown id.
#[utoipa::path(get, path = "/api/v1/sessions/{id}", params(("id" = String, Path)),
    responses((status = 200, body = SessionDetail), (status = 404)))]
pub async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<web::Json<SessionDetail>, ApiError> {
    let snap = state.reads.session(&sid(id.into_inner())).await?;
    let mut detail = SessionDetail::from(snap);
    detail.session = detail.session.owned(&state).await;
    Ok(web::Json(detail))
}

/// Types a message into the agent and reports whether delivery was confirmed. While the
/// session needs input, the message answers the question on screen: a menu gets the key of
/// the option it names (`1`, `yes`, `no`, an option's words; `no, <what to do instead>`
/// where the No asks for an instruction or a Reject ends the turn, the words then being the
/// agent's next prompt; `yes`/`no` to a review submit or cancel it), a line
/// prompt the text and Enter; words that name no option are not typed onto a menu
/// (`delivered: false`). A session waiting because the model API failed gets the text as the
/// agent's next prompt. With `question`, it answers only that question: 409 when the session
/// now waits on another one or none.
///
/// # Errors
/// 404 unknown; 409 when the session has no running agent, or no longer waits on `question`.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/send", params(("id" = String, Path)),
    request_body = SendBody,
    responses((status = 200, body = SendResult), (status = 404), (status = 409), (status = 422)))]
pub async fn send(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<SendBody>,
) -> Result<web::Json<SendResult>, ApiError> {
    let body = body.into_inner();
    if body.message.trim().is_empty() {
        return Err(ApiError::Invalid {
            field: "message".into(),
            reason: "must not be empty".into(),
        });
    }
    if body
        .question
        .as_deref()
        .is_some_and(|q| q.trim().is_empty())
    {
        return Err(ApiError::Invalid {
            field: "question".into(),
            reason: "must not be empty when given".into(),
        });
    }
    let r = state
        .supervisor
        .send(SendToSession {
            id: sid(id.into_inner()),
            text: body.message,
            allow_restore: body.question.is_none(),
            question: body.question,
        })
        .await??;
    Ok(web::Json(SendResult {
        session: r.session,
        delivered: r.delivered,
        restored: r.restored,
        pending: r.pending,
    }))
}

/// Kills the session (runtime destroyed, state `killed`). Idempotent: killing a killed
/// session answers 200 with `changed: false` and says so.
///
/// # Errors
/// 404 unknown.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/kill", params(("id" = String, Path)),
    responses((status = 200, body = ActionResult), (status = 404)))]
pub async fn kill(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<web::Json<ActionResult>, ApiError> {
    let r = state
        .supervisor
        .send(KillSession {
            id: sid(id.into_inner()),
        })
        .await??;
    let mut result = ActionResult::from(r);
    result.session.session = result.session.session.owned(&state).await;
    Ok(web::Json(result))
}

/// Restores a killed, errored, done, terminated or stuck session.
///
/// # Errors
/// 404 unknown; 409 when the session is live.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/restore", params(("id" = String, Path)),
    responses((status = 200, body = ActionResult), (status = 404), (status = 409)))]
pub async fn restore(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<web::Json<ActionResult>, ApiError> {
    let r = state
        .supervisor
        .send(RestoreSession {
            id: sid(id.into_inner()),
        })
        .await??;
    let mut result = ActionResult::from(r);
    result.session.session = result.session.session.owned(&state).await;
    Ok(web::Json(result))
}

/// Merges the session's PR.
///
/// # Errors
/// 404 unknown; 409 while no SCM plugin is configured.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/merge", params(("id" = String, Path)),
    responses((status = 200, body = ActionResult), (status = 404), (status = 409)))]
pub async fn merge(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<web::Json<ActionResult>, ApiError> {
    let r = state
        .supervisor
        .send(MergeSession {
            id: sid(id.into_inner()),
        })
        .await??;
    let mut result = ActionResult::from(r);
    result.session.session = result.session.session.owned(&state).await;
    Ok(web::Json(result))
}

/// The session's events, oldest first.
///
/// # Errors
/// 404 unknown.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/events", params(("id" = String, Path), EventsQuery),
    responses((status = 200, body = EventList), (status = 404)))]
pub async fn events(
    state: web::Data<AppState>,
    id: web::Path<String>,
    q: web::Query<EventsQuery>,
) -> Result<web::Json<EventList>, ApiError> {
    let events = state
        .reads
        .events(
            Some(&sid(id.into_inner())),
            q.after.unwrap_or(0).max(0),
            q.limit.unwrap_or(500).clamp(1, 5000),
        )
        .await?;
    Ok(web::Json(EventList { events }))
}

/// The last lines of the agent's output.
///
/// # Errors
/// 404 unknown.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/output", params(("id" = String, Path), OutputQuery),
    responses((status = 200, body = Output), (status = 404)))]
pub async fn output(
    state: web::Data<AppState>,
    id: web::Path<String>,
    q: web::Query<OutputQuery>,
) -> Result<web::Json<Output>, ApiError> {
    let output = state
        .reads
        .output(
            &sid(id.into_inner()),
            q.lines.unwrap_or(state.output_lines).clamp(1, 10_000),
        )
        .await?;
    Ok(web::Json(Output { output }))
}
