//! Fleet verbs beyond one session: batch spawn, the orchestrator, orphans, terminal attach
//! info, and agents' self-reports (`flotilla report`).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use super::sessions::SessionDetail;
use super::AppState;
use crate::actors::supervisor::messages::{
    BatchSpawn, BatchSpawnRequest, EnsureOrchestrator, Skipped,
};
use crate::actors::supervisor::request::BatchOrder;
use crate::actors::supervisor::ApplyTo;
use crate::domain::machine::{EventKind, ReportedState};
use crate::plugins::AttachInfo;
use crate::read::{Orphan, ReadError};
use crate::store::{PrRef, SessionId};

/// What a batch did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchResult {
    /// Sessions started, in issue order.
    pub spawned: Vec<SessionDetail>,
    /// Issues skipped, with the reason.
    pub skipped: Vec<Skipped>,
}

/// Spawns one session per issue, skipping issues with a live session and duplicates.
///
/// # Errors
/// 422 naming the field.
#[utoipa::path(post, path = "/api/v1/sessions/batch", request_body = BatchSpawnRequest,
    responses((status = 201, body = BatchResult), (status = 422)))]
pub async fn batch(
    state: web::Data<AppState>,
    body: web::Json<BatchSpawnRequest>,
) -> Result<HttpResponse, ApiError> {
    let order = BatchOrder::try_from(body.into_inner())?;
    let (spawned, skipped) = state.supervisor.send(BatchSpawn { order }).await??;
    Ok(HttpResponse::Created().json(BatchResult {
        spawned: spawned.into_iter().map(Into::into).collect(),
        skipped,
    }))
}

/// How to attach to a session's terminal.
///
/// # Errors
/// 404 unknown; 409 ended.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/attach", params(("id" = String, Path)),
    responses((status = 200, body = AttachInfo), (status = 404), (status = 409)))]
pub async fn attach(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<web::Json<AttachInfo>, ApiError> {
    let id = id.into_inner();
    state
        .reads
        .attach(&SessionId(id.clone()))
        .await?
        .map(web::Json)
        .ok_or_else(|| ApiError::Conflict(format!("session {id} has no runtime yet")))
}

/// The orchestrator answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrchestratorResult {
    /// The orchestrator session.
    pub session: SessionDetail,
    /// Whether it was created now (false: it existed and was reused or restored).
    pub created: bool,
}

/// Ensures the project's single orchestrator session runs.
///
/// # Errors
/// 422 unknown project.
#[utoipa::path(post, path = "/api/v1/projects/{project}/orchestrator", params(("project" = String, Path)),
    responses((status = 200, body = OrchestratorResult), (status = 422)))]
pub async fn orchestrator(
    state: web::Data<AppState>,
    project: web::Path<String>,
) -> Result<web::Json<OrchestratorResult>, ApiError> {
    let (snap, created) = state
        .supervisor
        .send(EnsureOrchestrator {
            project: project.into_inner(),
        })
        .await??;
    Ok(web::Json(OrchestratorResult {
        session: snap.into(),
        created,
    }))
}

/// Orphans list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrphanList {
    /// Orphans.
    pub orphans: Vec<Orphan>,
}

/// Runtime instances and workspaces no live session owns.
///
/// # Errors
/// 500 when the sessions cannot be read (never an answer that calls every agent an orphan).
#[utoipa::path(get, path = "/api/v1/orphans",
    responses((status = 200, body = OrphanList), (status = 500)))]
pub async fn orphans(state: web::Data<AppState>) -> Result<web::Json<OrphanList>, ApiError> {
    let orphans = state.reads.orphans().await.map_err(|e| match e {
        ReadError::Store(source) => ApiError::Failed {
            message: "cannot list orphans: the sessions could not be read from the store".into(),
            source: Box::new(source),
        },
        other => other.into(),
    })?;
    Ok(web::Json(OrphanList { orphans }))
}

/// An agent's report about itself.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    /// The state it reports.
    #[schema(value_type = String)]
    pub state: ReportedState,
    /// A note.
    #[serde(default)]
    pub note: Option<String>,
    /// Its PR's URL.
    #[serde(default)]
    pub pr_url: Option<String>,
    /// Its PR's number.
    #[serde(default)]
    pub pr_number: Option<i64>,
    /// Sent by the agent's hook (`flotilla hook`) rather than by the agent itself: the wait
    /// it reports may be one a human just answered.
    #[serde(default)]
    pub hook: bool,
}

/// An agent reports its state, authenticated by its own session token (`$FLOTILLA_REPORT_TOKEN`,
/// not the API token).
///
/// # Errors
/// 401 bad token; 404 unknown; 409 not accepted in the session's state.
#[utoipa::path(post, path = "/agent/v1/sessions/{id}/report", params(("id" = String, Path)),
    request_body = ReportBody,
    responses((status = 200), (status = 401), (status = 409)))]
pub async fn report(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let token = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !(state.check_report_token)(&id, token) {
        return Err(ApiError::Unauthorized);
    }
    // The body is read only after the token: an unauthenticated caller learns nothing (401,
    // never a 422 about the body).
    let b: ReportBody = serde_json::from_slice(&body).map_err(|e| ApiError::Invalid {
        field: "body".into(),
        reason: e.to_string(),
    })?;
    let pr = match (b.pr_number, b.pr_url) {
        (Some(number), Some(url)) => Some(PrRef { number, url }),
        _ => None,
    };
    let r = state
        .supervisor
        .send(ApplyTo {
            id: SessionId(id),
            event: EventKind::AgentReported {
                state: b.state,
                note: b.note,
                pr,
                hook: b.hook,
            },
        })
        .await??;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "session": r.session.session.id,
        "state": r.session.session.state,
    })))
}
