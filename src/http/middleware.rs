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

/// Checks `Authorization: Bearer <token>` in constant time; `?access_token=` only where
/// [`query_token_allowed`].
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
        let query = query_token_allowed(req.method(), req.path())
            .then(|| {
                web::Query::<std::collections::HashMap<String, String>>::from_query(
                    req.query_string(),
                )
                .ok()
                .and_then(|q| q.get("access_token").cloned())
            })
            .flatten();
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

/// Gives a request's body `deadline` from when its head arrived: past it, reading the body
/// fails (408) and the connection is closed, so a client that announces a body and sends a
/// byte at a time cannot hold a connection and its file descriptor. actix's own
/// `client_request_timeout` covers only the head. `GET`/`HEAD` are left alone: their
/// "payload" is a WebSocket's frames after an upgrade.
///
/// # Errors
/// Passes the inner service's errors through.
pub async fn body_deadline(
    deadline: std::time::Duration,
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::EitherBody<impl MessageBody>>, Error> {
    use actix_web::http::Method;
    use actix_web::HttpMessage as _;
    let expired = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let inner = req.take_payload();
        let stream: std::pin::Pin<
            Box<dyn futures::Stream<Item = Result<bytes::Bytes, actix_web::error::PayloadError>>>,
        > = Box::pin(DeadlineBody {
            inner,
            sleep: Box::pin(tokio::time::sleep(deadline)),
            expired: expired.clone(),
        });
        req.set_payload(actix_web::dev::Payload::from(stream));
    }
    let res = next.call(req).await?;
    if !expired.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(res.map_into_left_body());
    }
    // Whatever the handler made of its broken body, the answer is 408, and the connection
    // (whose unread body bytes may still be on the way) is not reused.
    let mut timeout = ApiError::BodyTimeout(deadline).error_response();
    timeout
        .head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Close);
    Ok(ServiceResponse::new(res.request().clone(), timeout).map_into_right_body())
}

/// Admits at most `gate`'s permits of webhook requests (`/webhooks/…`) at once and answers
/// the rest 503 at once, closing their connection. Webhooks are unauthenticated until their
/// whole body is read and its signature checked, so a flood of them must not take every
/// connection; the platforms retry a 503.
///
/// # Errors
/// Passes the inner service's errors through.
pub async fn webhook_gate(
    gate: std::sync::Arc<tokio::sync::Semaphore>,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::EitherBody<impl MessageBody>>, Error> {
    if !req.path().starts_with("/webhooks/") {
        return next.call(req).await.map(|r| r.map_into_left_body());
    }
    let Ok(_permit) = gate.try_acquire_owned() else {
        // Built here, not from `ApiError`: a flood must not write an error line per request.
        let busy = actix_web::HttpResponse::ServiceUnavailable()
            .insert_header((actix_web::http::header::RETRY_AFTER, "1"))
            .force_close()
            .json(serde_json::json!({"error": {
                "code": "unavailable",
                "message": "too many webhook requests in flight; retry"
            }}));
        return Ok(req.into_response(busy).map_into_right_body());
    };
    next.call(req).await.map(|r| r.map_into_left_body())
}

/// A body stream that ends in an error once its deadline passes.
struct DeadlineBody {
    inner: actix_web::dev::Payload,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    expired: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl futures::Stream for DeadlineBody {
    type Item = Result<bytes::Bytes, actix_web::error::PayloadError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::future::Future as _;
        use std::task::Poll;
        if self.expired.load(std::sync::atomic::Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = std::pin::Pin::new(&mut self.inner).poll_next(cx) {
            return Poll::Ready(item);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.expired
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Poll::Ready(Some(Err(actix_web::error::PayloadError::Io(
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the request body was not received in time",
                ),
            ))));
        }
        Poll::Pending
    }
}

/// A token in the query is accepted only where browsers cannot send a header: opening the
/// event stream (EventSource), the WebSocket and a terminal (WebSocket), all `GET`. Elsewhere
/// a URL with a token is one that leaks into proxies' logs and browser history, and must not
/// be able to spawn or kill.
pub fn query_token_allowed(method: &actix_web::http::Method, path: &str) -> bool {
    if method != actix_web::http::Method::GET {
        return false;
    }
    match path.strip_prefix("/api/v1/") {
        Some("events" | "ws") => true,
        Some(rest) => rest
            .strip_prefix("sessions/")
            .and_then(|r| r.strip_suffix("/terminal"))
            .is_some_and(|id| !id.is_empty() && !id.contains('/')),
        None => false,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::Method;

    #[test]
    fn a_query_token_opens_only_streams() {
        for p in [
            "/api/v1/events",
            "/api/v1/ws",
            "/api/v1/sessions/demo-1/terminal",
        ] {
            assert!(query_token_allowed(&Method::GET, p), "{p}");
            assert!(!query_token_allowed(&Method::POST, p), "{p}");
        }
        for p in [
            "/api/v1/sessions",
            "/api/v1/sessions/demo-1",
            "/api/v1/sessions/demo-1/kill",
            "/api/v1/sessions//terminal",
            "/api/v1/sessions/a/b/terminal",
            "/api/v1/events/x",
        ] {
            assert!(!query_token_allowed(&Method::GET, p), "{p}");
        }
    }
}
