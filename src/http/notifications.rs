//! `GET /api/v1/notifications`: the notification outbox, newest first — pending, delivered,
//! digested and dead-lettered (`?status=failed`) rows. Answered by the outbox actor.

use actix_web::web;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use super::AppState;
use crate::notify::messages::ListNotifications;
use crate::store::{NotificationRecord, NotificationStatus};

/// Rows answered when no `limit` is given.
const DEFAULT_LIMIT: i64 = 100;
/// Most rows one request may ask for.
const MAX_LIMIT: i64 = 1000;

/// Query of the list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct NotificationQuery {
    /// `pending`, `delivered`, `failed` (dead letters), `digested` or `superseded` (a question's page
    /// not sent: the question no longer waited).
    pub status: Option<String>,
    /// At most this many (1–1000, default 100).
    pub limit: Option<i64>,
}

/// One notification as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NotificationView {
    /// Id; receivers dedupe on it.
    pub id: String,
    /// Notifier name.
    pub notifier: String,
    /// `urgent`, `action`, `warning`, `info`.
    pub priority: String,
    /// What caused it (`agent.exited`, `reaction.escalated`, `notifications.digest`…).
    pub event: String,
    /// Session, if any.
    pub session: Option<String>,
    /// Text.
    pub message: String,
    /// `pending`, `delivered`, `failed` (dead-lettered), `digested` or `superseded`.
    pub status: String,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// Next attempt (pending), or the last one.
    pub next_attempt_at: String,
    /// Creation time.
    pub created_at: String,
    /// Last delivery error.
    pub last_error: Option<String>,
    /// The digest that carried it (status `digested`).
    pub digest_id: Option<String>,
    /// Its dedupe group.
    pub dedupe_key: String,
    /// Project, reaction, PR, and a digest's items.
    #[schema(value_type = Object)]
    pub context: serde_json::Value,
}

impl From<NotificationRecord> for NotificationView {
    fn from(n: NotificationRecord) -> Self {
        NotificationView {
            id: n.id,
            notifier: n.notifier,
            priority: n.priority,
            event: n.event,
            session: n.session_id.map(|s| s.0),
            message: n.message,
            status: n.status.as_str().to_string(),
            attempts: n.attempts,
            next_attempt_at: n.next_attempt_at.to_rfc3339(),
            created_at: n.created_at.to_rfc3339(),
            last_error: n.last_error,
            digest_id: n.digest_id,
            dedupe_key: n.dedupe_key,
            context: n.context,
        }
    }
}

/// The list answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NotificationList {
    /// Newest first.
    pub notifications: Vec<NotificationView>,
}

/// Lists the outbox.
///
/// # Errors
/// 422 for an unknown status or a limit out of range; 503 when the outbox is busy.
#[utoipa::path(get, path = "/api/v1/notifications", params(NotificationQuery),
    responses((status = 200, body = NotificationList), (status = 401), (status = 422)))]
pub async fn list(
    state: web::Data<AppState>,
    q: web::Query<NotificationQuery>,
) -> Result<web::Json<NotificationList>, ApiError> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<NotificationStatus>()
                .map_err(|reason| ApiError::Invalid {
                    field: "status".into(),
                    reason,
                })?,
        ),
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::Invalid {
            field: "limit".into(),
            reason: format!("must be between 1 and {MAX_LIMIT}"),
        });
    }
    let rows = state
        .outbox
        .send(ListNotifications { status, limit })
        .await?
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    Ok(web::Json(NotificationList {
        notifications: rows.into_iter().map(NotificationView::from).collect(),
    }))
}
