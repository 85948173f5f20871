//! `LeaseManagerActor`: keeps this node's leases and takes over a dead node's.
//!
//! Every `cluster.renew_interval` it renews all of the node's leases in one query (and, once
//! that committed, touches the node's heartbeat file that chat turn guards watch), tells the
//! supervisor to let go of sessions whose lease was lost (their agents keep running: the new
//! owner adopts them), takes over expired leases of other nodes and has the supervisor adopt
//! those sessions, and runs the commands queued for the sessions it owns. A `NOTIFY` on the
//! command channel runs the commands at once instead of at the next tick.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::future::join_all;

use super::bus::{ClusterCommand, CommandAnswer};
use super::{Cluster, ConversationLeases};
use crate::actors::supervisor::messages::{
    KillSession, MergeSession, RestoreSession, SendToSession,
};
use crate::actors::supervisor::{AdoptSessions, FleetSupervisor, ReleaseSessions};
use crate::store::ClusterCommandRecord;

/// Most expired leases one node takes over per tick: two survivors share a dead node's
/// sessions instead of one taking them all in a single statement.
pub const TAKEOVER_BATCH: i64 = 32;

/// Most queued commands claimed at once.
const COMMAND_BATCH: i64 = 64;

/// How long the supervisor has to run one forwarded command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Keeps leases, takes over expired ones and runs forwarded commands.
pub struct LeaseManagerActor {
    cluster: Arc<Cluster>,
    supervisor: Addr<FleetSupervisor>,
    /// A tick is under way (ticks never overlap).
    ticking: bool,
    /// A command claim is under way.
    claiming: bool,
    /// A wake-up came while a claim ran: claim again after it.
    claim_again: bool,
}

impl LeaseManagerActor {
    /// A manager of `cluster`'s leases, adopting and dropping sessions through `supervisor`.
    pub fn new(cluster: Arc<Cluster>, supervisor: Addr<FleetSupervisor>) -> Self {
        LeaseManagerActor {
            cluster,
            supervisor,
            ticking: false,
            claiming: false,
            claim_again: false,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.ticking {
            return;
        }
        self.ticking = true;
        let cluster = self.cluster.clone();
        let supervisor = self.supervisor.clone();
        let work = async move {
            let store = cluster.raw_store().clone();
            let node = cluster.node().0.clone();
            let ttl = cluster.timing().ttl;
            let round = cluster.begin_round();
            // Before the query: the database stamps the new expiries after this instant, so
            // the heartbeat never claims more than the leases hold.
            let sent = (
                std::time::SystemTime::now(),
                crate::plugins::assistants::guard::boot_clock(),
            );
            match store.renew_leases(&node, ttl).await {
                Ok(leases) => {
                    // Committed: the turn guards may let the assistants run on.
                    if let Some(h) = cluster.heartbeat() {
                        if let Err(e) = h.beat(sent).await {
                            tracing::warn!(error = %e, "cannot write the cluster heartbeat file");
                        }
                    }
                    let (lost, conversations) = cluster.renewed(round, &leases);
                    if !lost.is_empty() {
                        tracing::warn!(sessions = lost.len(), "leases lost to another node");
                        supervisor.do_send(ReleaseSessions { ids: lost });
                    }
                    if !conversations.is_empty() {
                        tracing::warn!(
                            conversations = conversations.len(),
                            "conversation leases lost to another node"
                        );
                        cluster.tell_chat(ConversationLeases {
                            taken: Vec::new(),
                            lost: conversations,
                        });
                    }
                }
                Err(e) => tracing::warn!(error = ?e, "renewing leases failed"),
            }
            match store.take_over_expired(&node, ttl, TAKEOVER_BATCH).await {
                Ok(taken) if !taken.is_empty() => {
                    let (ids, conversations) = cluster.taken(&taken);
                    tracing::info!(
                        sessions = ids.len(),
                        conversations = conversations.len(),
                        "leases taken over from a node whose leases expired"
                    );
                    if !ids.is_empty() {
                        supervisor.do_send(AdoptSessions { ids });
                    }
                    cluster.tell_chat(ConversationLeases {
                        taken: conversations,
                        lost: Vec::new(),
                    });
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = ?e, "taking over expired leases failed"),
            }
        };
        ctx.spawn(tokio_task(work).into_actor(self).map(|_, act, ctx| {
            act.ticking = false;
            act.claim(ctx);
        }));
    }

    /// Claims and runs the commands queued for sessions this node owns.
    fn claim(&mut self, ctx: &mut Context<Self>) {
        if self.claiming {
            self.claim_again = true;
            return;
        }
        self.claiming = true;
        let cluster = self.cluster.clone();
        let supervisor = self.supervisor.clone();
        let work = async move {
            let store = cluster.raw_store().clone();
            let claimed = match store
                .claim_commands(cluster.node().as_str(), COMMAND_BATCH)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = ?e, "claiming cluster commands failed");
                    return;
                }
            };
            join_all(claimed.into_iter().map(|c| run(&cluster, &supervisor, c))).await;
        };
        ctx.spawn(tokio_task(work).into_actor(self).map(|_, act, ctx| {
            act.claiming = false;
            if std::mem::take(&mut act.claim_again) {
                act.claim(ctx);
            }
        }));
    }
}

/// Runs one claimed command through the supervisor and stores the answer.
async fn run(cluster: &Cluster, supervisor: &Addr<FleetSupervisor>, c: ClusterCommandRecord) {
    let answer = match serde_json::from_str::<ClusterCommand>(&c.command) {
        Ok(ClusterCommand::Send {
            text,
            allow_restore,
            question,
        }) => {
            let r = supervisor
                .send(SendToSession {
                    id: c.session_id.clone(),
                    text,
                    allow_restore,
                    question,
                })
                .timeout(COMMAND_TIMEOUT)
                .await;
            CommandAnswer::of(r.map_err(Into::into).and_then(|r| r))
        }
        Ok(ClusterCommand::Kill) => step(
            supervisor
                .send(KillSession {
                    id: c.session_id.clone(),
                })
                .timeout(COMMAND_TIMEOUT)
                .await,
        ),
        Ok(ClusterCommand::Restore) => step(
            supervisor
                .send(RestoreSession {
                    id: c.session_id.clone(),
                })
                .timeout(COMMAND_TIMEOUT)
                .await,
        ),
        Ok(ClusterCommand::Merge) => step(
            supervisor
                .send(MergeSession {
                    id: c.session_id.clone(),
                })
                .timeout(COMMAND_TIMEOUT)
                .await,
        ),
        Err(e) => CommandAnswer::Failed {
            class: "invalid".into(),
            message: format!("unknown command: {e}"),
        },
    };
    let text = serde_json::to_string(&answer).unwrap_or_else(|_| "{}".into());
    if let Err(e) = cluster.raw_store().finish_command(c.id, &text).await {
        tracing::warn!(id = c.id, error = ?e, "storing a command's answer failed");
    }
}

/// The answer for a forwarded kill, restore or merge.
fn step(
    r: Result<
        Result<crate::actors::session::messages::StepReport, crate::actors::supervisor::FleetError>,
        MailboxError,
    >,
) -> CommandAnswer {
    CommandAnswer::of_step(r.map_err(Into::into).and_then(|r| r))
}

/// Runs `work` on its own task, so a store call is never cut short by the actor's context.
async fn tokio_task(work: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = tokio::spawn(work).await;
}

/// Sent by the store's `LISTEN` task: a command was queued somewhere.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct CommandQueued;

impl Actor for LeaseManagerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.tick(ctx);
        ctx.run_interval(self.cluster.timing().renew_every, |act, ctx| act.tick(ctx));
        let store = self.cluster.raw_store().clone();
        let me = ctx.address();
        actix::spawn(async move {
            match store.command_wakeups().await {
                Ok(Some(mut rx)) => {
                    while rx.recv().await.is_some() {
                        if me.try_send(CommandQueued).is_err() && !me.connected() {
                            return;
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = ?e, "cannot listen for cluster commands; they run at each renewal")
                }
            }
        });
    }
}

impl Handler<CommandQueued> for LeaseManagerActor {
    type Result = ();
    fn handle(&mut self, _msg: CommandQueued, ctx: &mut Self::Context) {
        self.claim(ctx);
    }
}
