//! Start-up work of intent before effect that is not a session's own: GitHub webhook
//! deliveries recorded (and answered 2xx) but never handed over, because a crash came between,
//! are processed now. Without polling (`github.poll_interval: 0s`) nothing else would look.

use actix::prelude::*;
use chrono::Utc;

use super::messages::GithubEventReceived;
use super::FleetSupervisor;
use crate::actors::fleet::Fleet;
use crate::plugins::github::events::{GithubEvent, GithubEventKind};

/// The webhook platform whose deliveries drive sessions.
const GITHUB: &str = "github";
/// Deliveries read per round at start-up.
const BATCH: i64 = 500;

/// Hands every unprocessed GitHub delivery to the supervisor, oldest first, marking each
/// processed after the hand-over. Failures are logged (the next start-up tries again).
pub(super) async fn unprocessed_webhooks(fleet: &Fleet, me: Addr<FleetSupervisor>) {
    loop {
        let pending = match fleet
            .store
            .unprocessed_webhook_deliveries(GITHUB, BATCH)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = ?e, "reading unprocessed webhook deliveries failed");
                return;
            }
        };
        let full = pending.len() as i64 == BATCH;
        for d in pending {
            match GithubEvent::parse(&d.event, &d.delivery_id, d.payload.as_bytes()) {
                Ok(event) if event.kind != GithubEventKind::Ping => {
                    if me.send(GithubEventReceived { event }).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(delivery = %d.delivery_id, error = %e, "a stored webhook delivery does not parse; skipped")
                }
            }
            if let Err(e) = fleet
                .store
                .mark_webhook_processed(GITHUB, &d.delivery_id, Utc::now())
                .await
            {
                tracing::warn!(error = ?e, "marking a webhook delivery processed failed");
                return;
            }
            tracing::info!(delivery = %d.delivery_id, "processed a webhook delivery a crash had left");
        }
        if !full {
            return;
        }
    }
}
