//! `ApiError`: the one place module errors become HTTP responses.
//!
//! 4xx bodies are `{"error": {"code", "message"}}` (INTERFACE.md); 5xx bodies say nothing
//! internal, and the full cause chain goes to the log once, here.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::actors::supervisor::request::InvalidField;
use crate::actors::supervisor::FleetError;
use crate::read::ReadError;

/// An error answered over HTTP.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: missing or wrong bearer token.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// 401: a webhook whose signature is missing or wrong, or no secret is configured.
    #[error("missing or invalid webhook signature")]
    BadSignature,
    /// 400: a request that cannot be read at all (a webhook body that is not JSON).
    #[error("{0}")]
    BadRequest(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 413.
    #[error("request body is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// 422: names the field.
    #[error("{field}: {reason}")]
    Invalid {
        /// Field (or `body`).
        field: String,
        /// Why.
        reason: String,
    },
    /// 408: the request body did not arrive within `server.body_timeout`.
    #[error("the request body was not received within {0:?}")]
    BodyTimeout(std::time::Duration),
    /// 503.
    #[error("{0}")]
    Unavailable(String),
    /// 502: a plugin (git, runtime, remote API) failed.
    #[error("{0}")]
    BadGateway(String),
    /// 500: details only in the log.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// 500 saying what could not be done (never why: the cause goes to the log only).
    #[error("{message}")]
    Failed {
        /// What failed, safe to show.
        message: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::BadSignature => "bad_signature",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooLarge { .. } => "payload_too_large",
            ApiError::Invalid { .. } => "invalid",
            ApiError::BodyTimeout(_) => "request_timeout",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::BadGateway(_) => "bad_gateway",
            ApiError::Internal(_) | ApiError::Failed { .. } => "internal",
        }
    }
}

impl From<FleetError> for ApiError {
    fn from(e: FleetError) -> Self {
        match e {
            FleetError::NotFound { id } => ApiError::NotFound(format!("session {id} not found")),
            FleetError::Invalid { field, reason } => ApiError::Invalid { field, reason },
            FleetError::Conflict(m) => ApiError::Conflict(m),
            FleetError::Busy => ApiError::Unavailable("the service is busy; try again".into()),
            FleetError::NotReady(m) => ApiError::Unavailable(format!("not ready: {m}")),
            FleetError::Plugin(p) => ApiError::BadGateway(p.to_string()),
            FleetError::Store(s) => ApiError::Internal(Box::new(s)),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::NotFound { id } => ApiError::NotFound(format!("session {id} not found")),
            ReadError::Conflict(m) => ApiError::Conflict(m),
            ReadError::Plugin(p) => ApiError::BadGateway(p.to_string()),
            ReadError::Store(s) => ApiError::Internal(Box::new(s)),
        }
    }
}

impl From<InvalidField> for ApiError {
    fn from(e: InvalidField) -> Self {
        ApiError::Invalid {
            field: e.field.into(),
            reason: e.reason,
        }
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(_: actix::MailboxError) -> Self {
        ApiError::Unavailable("the service is busy; try again".into())
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized | ApiError::BadSignature => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) | ApiError::Failed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let message = if status.is_server_error() {
            tracing::error!(error = %chain(self), "request failed");
            match self {
                ApiError::Internal(_) => "internal error".to_string(),
                other => other.to_string(),
            }
        } else {
            self.to_string()
        };
        let mut b = HttpResponse::build(status);
        if matches!(self, ApiError::Unauthorized) {
            b.insert_header(("WWW-Authenticate", "Bearer"));
        }
        b.json(json!({"error": {"code": self.code(), "message": message}}))
    }
}

/// Maps a JSON body error to 413 or a 422 naming the field serde complained about.
pub fn json_error(err: actix_web::error::JsonPayloadError, limit: usize) -> ApiError {
    use actix_web::error::JsonPayloadError as J;
    match err {
        J::Overflow { .. } | J::OverflowKnownLength { .. } => ApiError::TooLarge { limit },
        J::ContentType => ApiError::Invalid {
            field: "body".into(),
            reason: "expected Content-Type: application/json".into(),
        },
        J::Deserialize(e) => {
            let msg = e.to_string();
            ApiError::Invalid {
                field: field_of(&msg).unwrap_or_else(|| "body".into()),
                reason: msg,
            }
        }
        other => ApiError::Invalid {
            field: "body".into(),
            reason: other.to_string(),
        },
    }
}

/// Pulls the field name out of a serde message (``missing field `project` ``).
fn field_of(msg: &str) -> Option<String> {
    let start = msg.find('`')? + 1;
    let end = start + msg[start..].find('`')?;
    Some(msg[start..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_maps_to_its_status() {
        let cases: Vec<(ApiError, u16)> = vec![
            (ApiError::Unauthorized, 401),
            (ApiError::BadSignature, 401),
            (ApiError::BadRequest("x".into()), 400),
            (ApiError::NotFound("x".into()), 404),
            (ApiError::Conflict("x".into()), 409),
            (ApiError::TooLarge { limit: 1 }, 413),
            (
                ApiError::Invalid {
                    field: "f".into(),
                    reason: "r".into(),
                },
                422,
            ),
            (ApiError::Unavailable("x".into()), 503),
            (ApiError::BadGateway("x".into()), 502),
            (ApiError::Internal("x".into()), 500),
            (
                ApiError::Failed {
                    message: "x".into(),
                    source: "y".into(),
                },
                500,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(e.status_code().as_u16(), code, "{e:?}");
        }
    }

    #[test]
    fn a_failure_says_what_failed_but_not_why() {
        let e = ApiError::Failed {
            message: "cannot list orphans: the sessions could not be read".into(),
            source: "connection refused to 10.0.0.7".into(),
        };
        let body = actix_web::body::to_bytes(e.error_response().into_body());
        let body = futures::executor::block_on(body).expect("body");
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("cannot list orphans"), "{text}");
        assert!(!text.contains("10.0.0.7"), "{text}");
        let missing = ApiError::from(ReadError::NotFound {
            id: "demo-9".into(),
        });
        assert_eq!(missing.to_string(), "session demo-9 not found");
    }

    #[test]
    fn serde_messages_name_the_field() {
        assert_eq!(
            field_of("missing field `project` at line 1 column 2").as_deref(),
            Some("project")
        );
        assert_eq!(field_of("expected value at line 1 column 1"), None);
    }
}
