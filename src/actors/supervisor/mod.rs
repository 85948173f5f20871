//! `FleetSupervisor`: owns one `SessionActor` per live session, and only what changes the
//! fleet goes through it.
//!
//! At start it restores every non-terminal session from the store (inside `ctx.wait`, so no
//! request is served before that) and only then reports ready. It creates sessions (one
//! create-and-start path for a spawn, a batch and the orchestrator: [`spawn`]), forwards
//! commands to session actors, and handles the few commands that concern a session without an
//! actor (restore or kill of an ended session) through the same pure machine. It drops an
//! actor's address when its session ends, which stops the actor.
//!
//! Reads (lists, events, output, the board, orphans…) do not come here: they are answered by
//! [`crate::read`] straight from the store, one session's detail too (an actor commits each
//! step before it answers, so its row is what it holds). `CheckReady` stays, since `/readyz`
//! also proves this mailbox answers.
//!
//! | module | holds |
//! |---|---|
//! | this one | the actor: restore at start, readiness, session ends, PR events to sessions |
//! | `create` | `Spawn`, `BatchSpawn`, `EnsureOrchestrator`: plan, then [`spawn`]'s one path |
//! | `commands` | kill, restore, send, merge, `ApplyTo`: by the session's actor or machine |
//! | `cluster` | adopting and releasing sessions; commands for another node's sessions |
//! | `error` | `FleetError` |

mod cluster;
mod commands;
mod create;
mod error;
pub mod messages;
mod replay;
pub mod request;
pub mod spawn;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::prelude::*;

pub use self::cluster::{AdoptSessions, ReleaseSessions};
use self::messages::*;
use crate::actors::fleet::Fleet;
use crate::actors::session::messages::{Reconcile, ScmCheck, ScmHint};
use crate::actors::session::SessionActor;
use crate::domain::policy::Policy;
use crate::store::{SessionFilter, SessionId, StoreError};
use crate::telemetry::METRICS;

pub use self::commands::ApplyTo;
pub use self::error::FleetError;
pub use self::request::MAX_PROMPT_BYTES;

/// The supervisor of every session actor.
pub struct FleetSupervisor {
    fleet: Arc<Fleet>,
    sessions: HashMap<SessionId, Addr<SessionActor>>,
    /// Set once every non-terminal session has been restored; read by `/readyz`.
    ready: Arc<AtomicBool>,
    /// Several nodes on one database: which sessions this node drives (`None`: all of them).
    cluster: Option<Arc<crate::actors::cluster::Cluster>>,
}

impl FleetSupervisor {
    /// A supervisor over `fleet`; `ready` becomes true after the restore.
    pub fn new(fleet: Arc<Fleet>, ready: Arc<AtomicBool>) -> Self {
        FleetSupervisor {
            fleet,
            sessions: HashMap::new(),
            ready,
            cluster: None,
        }
    }

    /// Drives only the sessions whose lease this node holds in `cluster`.
    pub fn with_cluster(mut self, cluster: Option<Arc<crate::actors::cluster::Cluster>>) -> Self {
        self.cluster = cluster;
        self
    }

    fn policy_for(&self, project: &str) -> Arc<Policy> {
        self.fleet
            .project(project)
            .map(|p| p.policy.clone())
            .unwrap_or_else(|| Arc::new(Policy::defaults()))
    }

    /// The one place a session actor is started: a session never has two actors here (each
    /// would watch the same agent and step the session twice). Starting an actor for a
    /// session that has one does nothing; an actor dropped for a lost lease
    /// was told to relinquish first (`ReleaseSessions`).
    fn start_actor(&mut self, id: SessionId, project: &str, ctx: &mut Context<Self>) {
        if self.sessions.contains_key(&id) {
            return;
        }
        let fleet = self.fleet.clone();
        let policy = self.policy_for(project);
        let me = ctx.address().recipient();
        let aid = id.clone();
        let addr = actix::Supervisor::start(move |_| SessionActor::new(aid, fleet, policy, me));
        self.sessions.insert(id, addr);
    }
}

impl Actor for FleetSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let store = self.fleet.store.clone();
        let cluster = self.cluster.clone();
        ctx.wait(
            async move {
                let filter = SessionFilter {
                    active_only: true,
                    ..Default::default()
                };
                let mut live = store.list_sessions(&filter).await?;
                if let Some(c) = cluster {
                    // Other live nodes keep theirs.
                    live = c.claim_at_start(live).await;
                }
                let counts = store.count_by_state().await?;
                Ok::<_, StoreError>((live, counts))
            }
            .into_actor(self)
            .map(|res, act, ctx| match res {
                Ok((live, counts)) => {
                    METRICS.set_counts(&counts);
                    let n = live.len();
                    for s in live {
                        act.start_actor(s.id.clone(), &s.project, ctx);
                    }
                    act.ready.store(true, Ordering::SeqCst);
                    tracing::info!(sessions = n, "fleet restored");
                    let fleet = act.fleet.clone();
                    let me = ctx.address();
                    actix::spawn(async move {
                        replay::unprocessed_webhooks(&fleet, me).await;
                        match fleet.read_model().orphans().await {
                            Ok(orphans) => {
                                for o in orphans {
                                    tracing::warn!(kind = %o.kind, name = %o.name, detail = %o.detail, "orphan found at start-up");
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = ?e, "looking for orphans at start-up failed")
                            }
                        }
                        // Finishes an all-complete that a crash interrupted.
                        for project in fleet.projects.keys() {
                            check_all_complete(&fleet, project).await;
                        }
                    });
                }
                Err(e) => {
                    // Not ready: /readyz keeps saying so and the error is in the log.
                    tracing::error!(error = ?e, "restoring the fleet failed");
                }
            }),
        );
    }
}

/// Fires the project's all-complete reaction if it is due; failures are logged (the next
/// session end or start-up checks again).
async fn check_all_complete(fleet: &Fleet, project: &str) {
    if let Err(e) = crate::actors::all_complete::check(fleet, project).await {
        tracing::warn!(%project, error = ?e, "checking all-complete failed");
    }
}

type Reply<T> = ResponseActFuture<FleetSupervisor, Result<T, FleetError>>;

fn ready<T: 'static>(r: Result<T, FleetError>) -> Reply<T> {
    Box::pin(fut::ready(r))
}

impl Handler<CheckReady> for FleetSupervisor {
    type Result = Reply<()>;
    fn handle(&mut self, _msg: CheckReady, _ctx: &mut Self::Context) -> Self::Result {
        if !self.ready.load(Ordering::SeqCst) {
            return ready(Err(FleetError::NotReady(
                "sessions not restored yet".into(),
            )));
        }
        let store = self.fleet.store.clone();
        Box::pin(
            async move {
                store
                    .ping()
                    .await
                    .map_err(|_| FleetError::NotReady("store unreachable".into()))
            }
            .into_actor(self),
        )
    }
}

impl Handler<SessionEnded> for FleetSupervisor {
    type Result = ();
    fn handle(&mut self, msg: SessionEnded, _ctx: &mut Self::Context) {
        // A successor started meanwhile (lease lost and taken back) is not forgotten.
        if self.sessions.get(&msg.id) != Some(&msg.actor) {
            return;
        }
        self.sessions.remove(&msg.id);
        if msg.lease_lost {
            // Not ended: the lease manager's next renewal tells this node it lost the lease.
            return;
        }
        let fleet = self.fleet.clone();
        let cluster = self.cluster.clone();
        actix::spawn(async move {
            if let Some(c) = cluster {
                c.release(&msg.id).await;
            }
            check_all_complete(&fleet, &msg.project).await
        });
    }
}

impl Handler<ReconcileAll> for FleetSupervisor {
    type Result = ResponseFuture<usize>;
    fn handle(&mut self, _msg: ReconcileAll, _ctx: &mut Self::Context) -> Self::Result {
        let addrs: Vec<_> = self.sessions.values().cloned().collect();
        Box::pin(async move {
            let n = addrs.len();
            futures::future::join_all(addrs.iter().map(|a| a.send(Reconcile))).await;
            n
        })
    }
}

impl Handler<ScmObserved> for FleetSupervisor {
    type Result = ();
    fn handle(&mut self, msg: ScmObserved, _ctx: &mut Self::Context) {
        for (id, status) in msg.checks {
            if let Some(a) = self.sessions.get(&id) {
                a.do_send(ScmCheck { status });
            }
        }
    }
}

impl Handler<GithubEventReceived> for FleetSupervisor {
    type Result = ();
    fn handle(&mut self, msg: GithubEventReceived, _ctx: &mut Self::Context) {
        let e = msg.event;
        METRICS
            .github_webhooks
            .with_label_values(&[e.kind.as_str()])
            .inc();
        tracing::info!(
            delivery = %e.delivery_id,
            kind = e.kind.as_str(),
            action = e.action.as_deref().unwrap_or(""),
            repo = e.repo.as_deref().unwrap_or(""),
            prs = ?e.prs,
            "github event received"
        );
        let Some(repo) = e.repo else {
            return;
        };
        if e.prs.is_empty() && e.head_branches.is_empty() {
            return;
        }
        // Each actor knows its own PR and branch and ignores hints about others: a mailbox
        // message per live session is cheaper than keeping an index in step with every PR.
        let hint = ScmHint {
            repo,
            prs: e.prs,
            branches: e.head_branches,
        };
        for a in self.sessions.values() {
            a.do_send(hint.clone());
        }
    }
}
