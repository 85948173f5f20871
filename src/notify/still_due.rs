//! Whether an outbox row is still worth sending when its notifier can take it.
//!
//! A page that asks a human a session's question (its context names the `question`) has
//! nobody to ask once the session no longer waits on it: answered from the dashboard, a chat
//! reply or the terminal, or the agent moved on to another question. Such a page held back by
//! the rate limit (a burst of spawns that all ask at once), or waiting for a retry, would wake
//! someone a minute later for nothing: it is not sent (`superseded`). Every other row is due.
//! The outbox asks only of rows that could not go at once (a fresh page asks what the session
//! asks, and a quick answer must not race its page).

use crate::store::{NotificationRecord, Store, StoreError};

/// Why a superseded row was not sent (its `last_error`).
pub const SUPERSEDED: &str = "not sent: the session no longer waits on this question";

/// Whether `r` is still to be sent. A row whose session cannot be read for another reason
/// than its absence is sent (at least once beats never).
pub async fn still_due(store: &dyn Store, r: &NotificationRecord) -> bool {
    let (Some(question), Some(session)) = (r.context["question"].as_str(), &r.session_id) else {
        return true;
    };
    match store.load_session(session).await {
        Ok(s) => crate::domain::question::still_asks(&s, question).is_ok(),
        Err(StoreError::NotFound { .. }) => false,
        Err(e) => {
            tracing::warn!(error = ?e, id = %r.id, "reading a page's session failed; sending it");
            true
        }
    }
}
