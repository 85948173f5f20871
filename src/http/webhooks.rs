//! `POST /webhooks/github`: GitHub's signed deliveries (wire-formats §1.1).
//!
//! Outside the bearer-auth scope: GitHub authenticates with `X-Hub-Signature-256`, an
//! HMAC-SHA256 of the raw body under `github.webhook_secret`, checked in constant time. With
//! no secret configured every delivery is refused (401): an unauthenticated webhook would let
//! anyone steer the fleet.
//!
//! Order matters: verify → parse → persist (an idempotent append through the read side's
//! delivery log; no actor involved) → answer. A delivery is stored before the 2xx, so a crash after the answer loses nothing,
//! and a redelivery (same `X-GitHub-Delivery`) answers `{"duplicate": true}` and does nothing
//! more. The body size limit is the server's `max_body_bytes`. A hook configured with the
//! form content type sends the JSON in a `payload` field; it is read from there (and stored
//! as JSON) once the signature over the raw form body has been checked.
//!
//! Issue intake: a new `issues` delivery (`opened`, `labeled`, `assigned`, `reopened`) whose
//! issue carries `projects.<name>.intake.label` or is assigned to `intake.assignee` starts one
//! session, at most once per issue ([`crate::actors::intake`]).

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde_json::json;

use super::error::ApiError;
use super::AppState;
use crate::actors::intake::{start_once, IntakeOutcome};
use crate::actors::supervisor::messages::GithubEventReceived;
use crate::plugins::github::events::{verify_signature, GithubEvent, GithubEventKind};
use crate::store::WebhookDelivery;

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The delivery's JSON. A hook's content type is `application/json` (the body is the JSON)
/// or `application/x-www-form-urlencoded`, which sends the JSON "as a form parameter called
/// `payload`" (GitHub's "Webhook events and payloads"). The signature covers the raw body as
/// sent, so this runs after it is checked.
///
/// # Errors
/// 400 for a form without a `payload` field.
fn json_body(req: &HttpRequest, body: web::Bytes) -> Result<web::Bytes, ApiError> {
    let form = header(req, "content-type").is_some_and(|c| {
        c.split(';').next().is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    });
    if !form {
        return Ok(body);
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("payload is not UTF-8".into()))?;
    let fields = web::Query::<std::collections::HashMap<String, String>>::from_query(text)
        .map_err(|_| ApiError::BadRequest("form body is not url-encoded".into()))?;
    fields
        .get("payload")
        .map(|p| web::Bytes::from(p.clone()))
        .ok_or_else(|| ApiError::BadRequest("form body has no `payload` field".into()))
}

/// Receives one GitHub webhook delivery.
///
/// # Errors
/// 401 for a missing or wrong signature (or no configured secret), 400 for missing GitHub
/// headers or a body that is not a JSON object, 413 over the size limit, 500 when the delivery
/// cannot be recorded (GitHub then redelivers).
pub async fn github(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let secret = state
        .github_webhook_secret
        .as_ref()
        .map(|s| s.expose().as_bytes())
        .unwrap_or_default();
    if !verify_signature(secret, &body, header(&req, "x-hub-signature-256")) {
        tracing::warn!("github webhook refused: bad or missing signature");
        return Err(ApiError::BadSignature);
    }
    let event_name = header(&req, "x-github-event")
        .ok_or_else(|| ApiError::BadRequest("missing X-GitHub-Event".into()))?
        .to_string();
    let delivery_id = header(&req, "x-github-delivery")
        .filter(|d| !d.is_empty() && d.len() <= 128)
        .ok_or_else(|| ApiError::BadRequest("missing or invalid X-GitHub-Delivery".into()))?
        .to_string();
    let body = json_body(&req, body)?;
    let event = GithubEvent::parse(&event_name, &delivery_id, &body)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // Chat bridge: a new comment mentioning the bot is stored before the delivery is recorded.
    super::webhooks_chat::github_comment(&state, &event_name, &delivery_id, &body).await?;
    let payload = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::BadRequest("payload is not UTF-8".into()))?;
    let delivery = WebhookDelivery {
        platform: "github".into(),
        delivery_id,
        event: event_name.clone(),
        payload,
        received_at: Utc::now(),
    };
    let delivery_id = delivery.delivery_id.clone();
    let is_new = state.reads.record_webhook_delivery(delivery).await?;
    if !is_new {
        return Ok(HttpResponse::Ok().json(json!({"duplicate": true})));
    }
    if event.kind == GithubEventKind::Ping {
        // "Verified deliveries by event": a ping is one (it goes no further than here).
        crate::telemetry::METRICS
            .github_webhooks
            .with_label_values(&[event.kind.as_str()])
            .inc();
        state
            .reads
            .mark_webhook_processed("github", &delivery_id)
            .await?;
        return Ok(HttpResponse::Ok().json(json!({"duplicate": false, "pong": true})));
    }
    let kind = event.kind.as_str();
    let intake = issue_intake(&state, &event_name, &body).await?;
    // The delivery is already persisted; a lost notification is recovered by polling, so a
    // busy supervisor must not turn into a 5xx (GitHub's redelivery would be a duplicate).
    match state.supervisor.send(GithubEventReceived { event }).await {
        // Handed over: processed. A crash before this line leaves the delivery to start-up.
        Ok(()) => {
            state
                .reads
                .mark_webhook_processed("github", &delivery_id)
                .await?
        }
        Err(e) => tracing::warn!(error = %e, "github event not handed to the supervisor"),
    }
    let mut answer = json!({"duplicate": false, "event": kind});
    if let Some(i) = intake {
        answer["intake"] = i;
    }
    Ok(HttpResponse::Ok().json(answer))
}

/// An `issues` delivery that hands an issue to a project (`projects.<name>.intake`) starts
/// one session for it, once per issue ([`start_once`]); what happened, for the answer.
///
/// # Errors
/// 500 when the issue cannot be recorded (nothing started; GitHub may redeliver).
async fn issue_intake(
    state: &AppState,
    event: &str,
    body: &[u8],
) -> Result<Option<serde_json::Value>, ApiError> {
    if event != "issues" {
        return Ok(None);
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Ok(None);
    };
    let Some(w) = state.intake.github(event, &v) else {
        return Ok(None);
    };
    let outcome = start_once(
        &state.reads,
        &state.supervisor,
        "github",
        &w.project,
        &w.issue,
    )
    .await?;
    Ok(Some(intake_json(&outcome)))
}

/// The answer's `intake` field: `{"session": id}`, `"already started"` or `{"refused": why}`.
pub fn intake_json(o: &IntakeOutcome) -> serde_json::Value {
    match o {
        IntakeOutcome::Started(id) => json!({"session": id}),
        IntakeOutcome::AlreadyTaken => json!("already started"),
        IntakeOutcome::Refused(why) => json!({"refused": why}),
    }
}
