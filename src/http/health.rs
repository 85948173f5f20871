//! `/healthz` (process up), `/readyz` (store reachable and sessions restored), `/metrics`.

use actix_web::{web, HttpResponse};

use super::error::ApiError;
use super::AppState;
use crate::actors::supervisor::messages::CheckReady;
use crate::telemetry::METRICS;

/// The process is up.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "process up")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Ready once every non-terminal session was restored and the store answers.
///
/// # Errors
/// 503 until then.
#[utoipa::path(get, path = "/readyz", responses((status = 200), (status = 503)))]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.supervisor.send(CheckReady).await??;
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready"})))
}

/// Prometheus text format 0.0.4.
#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "text/plain")))]
pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(METRICS.render())
}
