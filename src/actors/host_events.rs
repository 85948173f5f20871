//! Tells the sessions of a host that it went away or came back: each [`HostEvent`] becomes a
//! `host.unreachable` / `host.reachable` event of every live session placed on that host
//! (their machines mark the reason and notify a human).

use actix::Addr;

use crate::actors::supervisor::{ApplyTo, FleetSupervisor};
use crate::domain::machine::EventKind;
use crate::plugins::hosts::{plugin_name, HostEvent};
use crate::store::{SessionFilter, SharedStore};

/// Forwards host events to the sessions until the hosts' channel closes.
pub async fn forward(
    mut events: tokio::sync::broadcast::Receiver<HostEvent>,
    store: SharedStore,
    supervisor: Addr<FleetSupervisor>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let ev = match events.recv().await {
            Ok(ev) => ev,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "host events missed");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let plugin = plugin_name(&ev.host);
        let filter = SessionFilter {
            active_only: true,
            ..Default::default()
        };
        let live = match store.list_sessions(&filter).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(host = %ev.host, error = %e, "cannot tell a host's sessions about it");
                continue;
            }
        };
        for s in live.into_iter().filter(|s| s.runtime == plugin) {
            let event = if ev.reachable {
                EventKind::HostReachable {
                    host: ev.host.clone(),
                }
            } else {
                EventKind::HostUnreachable {
                    host: ev.host.clone(),
                }
            };
            match supervisor
                .send(ApplyTo {
                    id: s.id.clone(),
                    event,
                })
                .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(session = %s.id, error = %e, "host event not applied"),
                Err(_) => return, // the supervisor stopped
            }
        }
    }
}
