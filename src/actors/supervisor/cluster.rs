//! The supervisor's side of several nodes on one database (`src/actors/cluster/`): adopting the
//! sessions this node took over, and letting go of those it lost.

use std::sync::Arc;

use actix::prelude::*;

use super::FleetError;
use super::FleetSupervisor;
use crate::actors::cluster::bus::ClusterCommand;
use crate::actors::cluster::Cluster;
use crate::actors::session::messages::Relinquish;
use crate::actors::session::messages::StepReport;
use crate::store::{SessionId, SharedStore};

/// Runs a kill, restore or merge on the session's owner when another node holds its lease,
/// and answers with the session as that left it; `None` when this node runs it.
pub(super) async fn forward_step(
    cluster: Option<Arc<Cluster>>,
    store: SharedStore,
    id: &SessionId,
    command: ClusterCommand,
) -> Option<Result<StepReport, FleetError>> {
    let answer = cluster?.forward(id, &command).await?;
    Some(
        async {
            let (changed, message) = answer?.into_step(id)?;
            Ok(StepReport {
                session: store.load_snapshot(id).await?,
                changed,
                message,
            })
        }
        .await,
    )
}

/// Sent by the lease manager: this node took over these sessions' leases; start their actors
/// (each re-adopts its running agent as after a restart). Answers how many of them have an actor now.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct AdoptSessions {
    /// The sessions taken over.
    pub ids: Vec<SessionId>,
}

/// Sent by the lease manager: another node owns these sessions now; drop their actors
/// (their agents keep running for the new owner; this node's writes are fenced anyway).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ReleaseSessions {
    /// The sessions lost.
    pub ids: Vec<SessionId>,
}

impl Handler<AdoptSessions> for FleetSupervisor {
    type Result = ResponseActFuture<Self, usize>;
    fn handle(&mut self, msg: AdoptSessions, _ctx: &mut Self::Context) -> Self::Result {
        let store = self.fleet.store.clone();
        Box::pin(
            async move {
                let mut rows = Vec::new();
                for id in msg.ids {
                    match store.load_session(&id).await {
                        Ok(s) if !s.state.is_terminal() => rows.push(s),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(%id, error = ?e, "loading a taken-over session failed")
                        }
                    }
                }
                rows
            }
            .into_actor(self)
            .map(|rows, act, ctx| {
                // Counts actors running afterwards, whoever started them (start_actor keeps
                // one per session).
                let mut running = 0;
                for s in rows {
                    act.start_actor(s.id.clone(), &s.project, ctx);
                    running += 1;
                }
                running
            }),
        )
    }
}

impl Handler<ReleaseSessions> for FleetSupervisor {
    type Result = ();
    fn handle(&mut self, msg: ReleaseSessions, _ctx: &mut Self::Context) {
        for id in msg.ids {
            // Dropping the address alone would leave the actor running on its timers and
            // exit watch: taken back later, the session would have two actors here.
            if let Some(a) = self.sessions.remove(&id) {
                a.do_send(Relinquish);
            }
        }
    }
}
