//! Middleware: bearer-token auth on `/api/v1/*`, and one span plus request metrics per request.
//!
//! The span and metrics use the route *pattern* (`/api/v1/sessions/{id}`), never the raw path
//! or query: label sets stay bounded and tokens passed in a query never reach a log.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error, ResponseError};
use subtle::ConstantTimeEq;
use tracing::Instrument;

use super::error::ApiError;
use super::AppState;
use crate::telemetry::METRICS;

/// Checks `Authorization: Bearer <token>` (or `?access_token=` for browser EventSource and
/// WebSocket clients, which cannot set headers), in constant time.
///
/// # Errors
/// Answers 401 itself; passes other errors through.
pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::EitherBody<impl MessageBody>>, Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let expected = state.as_ref().and_then(|s| s.token.clone());
    if let Some(expected) = expected {
        let header = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        let query =
            web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
                .ok()
                .and_then(|q| q.get("access_token").cloned());
        let given = header.or(query).unwrap_or_default();
        let extra = state
            .as_ref()
            .map(|s| s.extra_tokens.as_slice())
            .unwrap_or_default();
        let ok = std::iter::once(&expected)
            .chain(extra)
            .fold(false, |acc, t| {
                acc | bool::from(given.as_bytes().ct_eq(t.as_bytes()))
            });
        if !ok {
            let res = ApiError::Unauthorized.error_response();
            return Ok(req.into_response(res).map_into_right_body());
        }
    }
    next.call(req).await.map(|r| r.map_into_left_body())
}

/// Records `flotilla_http_requests_total` and `flotilla_http_request_duration_seconds` and
/// runs the request inside an `http` span.
///
/// # Errors
/// Passes the inner service's errors through.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().to_string();
    let span = tracing::info_span!("http", %method, %route, status = tracing::field::Empty);
    let start = std::time::Instant::now();
    let res = next.call(req).instrument(span.clone()).await;
    let status = match &res {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.as_response_error().status_code().as_u16(),
    };
    span.record("status", status);
    METRICS
        .http_requests
        .with_label_values(&[route.as_str(), &status.to_string()])
        .inc();
    METRICS
        .http_duration
        .with_label_values(&[route.as_str()])
        .observe(start.elapsed().as_secs_f64());
    tracing::debug!(parent: &span, "request done");
    res
}
