//! `POST /webhooks/linear`: Linear's signed deliveries and issue intake
//! ([`crate::plugins::trackers::linear_hook`]).
//!
//! Outside bearer auth; verify (signature, then freshness) → record the delivery (a replay is
//! `{"duplicate": true}`) → intake: an issue labelled `projects.<name>.intake.label` starts one
//! session, at most once per issue (its id is recorded as a delivery of `linear-intake`
//! before the spawn). Forged, stale and replayed deliveries start nothing.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde_json::json;

use super::error::ApiError;
use super::AppState;
use crate::actors::supervisor::messages::Spawn;
use crate::actors::supervisor::request::SpawnOrder;
use crate::plugins::trackers::linear_hook::{self, HookError};
use crate::store::WebhookDelivery;

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn record(
    state: &AppState,
    platform: &str,
    id: &str,
    event: &str,
    payload: String,
) -> Result<bool, ApiError> {
    let delivery = WebhookDelivery {
        platform: platform.into(),
        delivery_id: id.into(),
        event: event.into(),
        payload,
        received_at: Utc::now(),
    };
    Ok(state.reads.record_webhook_delivery(delivery).await?)
}

/// Receives one Linear webhook delivery.
///
/// # Errors
/// 401 for a missing or wrong signature, a stale `webhookTimestamp`, or no configured secret;
/// 400 for a body that is not a JSON object or has no `Linear-Delivery`; 503 when busy.
pub async fn linear(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let Some(hook) = state.linear_hook.clone() else {
        tracing::warn!("linear webhook refused: no linear.webhook_secret");
        return Err(ApiError::BadSignature);
    };
    let now = Utc::now().timestamp_millis();
    let d = match linear_hook::verify(
        hook.secret.expose().as_bytes(),
        &body,
        header(&req, "linear-signature"),
        now,
    ) {
        Ok(d) => d,
        Err(HookError::Malformed) => {
            return Err(ApiError::BadRequest("payload is not a JSON object".into()))
        }
        Err(e) => {
            tracing::warn!(error = %e, "linear webhook refused");
            return Err(ApiError::BadSignature);
        }
    };
    let delivery_id = header(&req, "linear-delivery")
        .filter(|d| !d.is_empty() && d.len() <= 128)
        .ok_or_else(|| ApiError::BadRequest("missing or invalid Linear-Delivery".into()))?
        .to_string();
    let payload = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::BadRequest("payload is not UTF-8".into()))?;
    if !record(&state, "linear", &delivery_id, &d.kind, payload).await? {
        return Ok(HttpResponse::Ok().json(json!({"duplicate": true})));
    }
    let (Some((issue_id, identifier)), Some(project)) = (hook.intake(&d), hook.project.clone())
    else {
        return Ok(HttpResponse::Ok().json(json!({"duplicate": false})));
    };
    if !record(
        &state,
        "linear-intake",
        issue_id,
        "Issue",
        identifier.clone(),
    )
    .await?
    {
        return Ok(
            HttpResponse::Ok().json(json!({"duplicate": false, "intake": "already started"}))
        );
    }
    let order = SpawnOrder {
        project,
        prompt: None,
        issue: Some(identifier.clone()),
        agent: None,
        branch: None,
        host: None,
    };
    match state.supervisor.send(Spawn { order }).await? {
        Ok(snap) => {
            tracing::info!(issue = %identifier, session = %snap.session.id, "linear intake started a session");
            Ok(HttpResponse::Ok().json(json!({"duplicate": false, "session": snap.session.id})))
        }
        Err(e) => {
            // Recorded as taken: a human decides (the issue is not retried on every update).
            tracing::warn!(issue = %identifier, error = %e, "linear intake could not start a session");
            Ok(HttpResponse::Ok()
                .json(json!({"duplicate": false, "intake": "refused", "reason": e.to_string()})))
        }
    }
}
