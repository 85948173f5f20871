//! Messages the [`OutboxActor`](super::outbox::OutboxActor) handles.

use actix::prelude::*;

use crate::store::{NotificationRecord, NotificationStatus, StoreError};

/// Sent by a session actor right after it committed a step that wrote notifications: look
/// for due notifications now rather than at the next poll. Losing one is harmless (the poll
/// finds them), so it is sent with `do_send`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct WakeOutbox;

/// Sent by the HTTP layer (`GET /api/v1/notifications`) to read the outbox.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<NotificationRecord>, StoreError>")]
pub struct ListNotifications {
    /// Only this status (`failed` lists the dead letters).
    pub status: Option<NotificationStatus>,
    /// At most this many, newest first.
    pub limit: i64,
}
