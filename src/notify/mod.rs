//! Notifications: humans hear from Flotilla when judgment is needed, exactly once.
//!
//! - [`routing`]: pure — a step's `Effect::Notify` → outbox rows, one per routed notifier,
//!   with dedupe groups. The session actor writes them in the step's own transaction.
//! - [`outbox`]: the [`outbox::OutboxActor`] — delivers due rows through the notifier plugins
//!   (`plugins::notifiers`) with retries, backoff, `Retry-After`, dead letters, a per-notifier
//!   rate limit and digests.
//! - [`still_due`]: whether a row is still worth sending (a question's page is not once the
//!   question no longer waits).
//! - [`messages`]: what the outbox actor handles.
//!
//! [`Notifications`] is what the session actors hold (through `Fleet`): the router, and the
//! outbox to wake after a commit. This module never touches SQL; the store does.

pub mod messages;
pub mod outbox;
pub mod routing;
pub mod still_due;

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::Recipient;
use chrono::{DateTime, Utc};

use self::messages::WakeOutbox;
use self::routing::Router;
use crate::config::Settings;
use crate::domain::machine::Effect;
use crate::plugins::{notifiers, Notifier, PluginError};
use crate::store::{NotificationRecord, SessionRecord};

/// What went wrong setting notifications up.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A configured notifier could not be built.
    #[error("notifiers.{name}: {source}")]
    Build {
        /// The notifier's name.
        name: String,
        /// Why.
        #[source]
        source: PluginError,
    },
}

/// The session actors' side of notifications: routing, and waking the outbox. The default
/// routes nothing and wakes nobody (tests and benches that do not care).
#[derive(Clone, Default)]
pub struct Notifications {
    router: Arc<Router>,
    outbox: Option<Recipient<WakeOutbox>>,
}

impl Notifications {
    /// Notifications routed by `router` and delivered by `outbox`.
    pub fn new(router: Router, outbox: Option<Recipient<WakeOutbox>>) -> Self {
        Notifications {
            router: Arc::new(router),
            outbox,
        }
    }

    /// The outbox rows of a step (see [`Router::route_step`]).
    pub fn route_step(
        &self,
        session: &SessionRecord,
        cause: &str,
        effects: &[Effect],
        at: DateTime<Utc>,
    ) -> Vec<NotificationRecord> {
        self.router.route_step(session, cause, effects, at)
    }

    /// Tells the outbox new rows were committed. Harmless to lose: the outbox polls.
    pub fn wake(&self) {
        if let Some(o) = &self.outbox {
            o.do_send(WakeOutbox);
        }
    }
}

/// Builds every configured notifier, by name. Telegram notifiers follow chat moves through
/// `telegram_moves` (shared with the chat adapter).
///
/// # Errors
/// `Build` naming the first notifier that cannot be built.
pub fn build_notifiers(
    settings: &Settings,
    telegram_moves: &crate::plugins::chat::telegram_api::MovedChats,
) -> Result<BTreeMap<String, Arc<dyn Notifier>>, NotifyError> {
    let timeout = settings.notifications.timeout.get();
    settings
        .notifiers
        .iter()
        .map(|(name, n)| {
            notifiers::build(name, n, settings, timeout, telegram_moves)
                .map(|built| (name.clone(), built))
                .map_err(|source| NotifyError::Build {
                    name: name.clone(),
                    source,
                })
        })
        .collect()
}
