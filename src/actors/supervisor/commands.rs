//! Commands on one session: kill, restore, send, merge and an event applied to it. A session
//! with a live actor gets the command through that actor; one without (ended, or driven by
//! another node) through the same pure machine here, or on the node that drives it.

use std::sync::Arc;

use actix::prelude::*;

use super::cluster::{forward_step, AdoptSessions};
use super::messages::*;
use super::{ready, FleetError, FleetSupervisor, Reply};
use crate::actors::cluster::bus::ClusterCommand;
use crate::actors::session::messages::{
    Apply, GetSnapshot, Kill, MergeNow, Restore, SendMessage, StepReport,
};
use crate::domain::machine::{self, Event, EventKind, Outcome};
use crate::domain::policy::Policy;
use crate::store::{NewEvent, SessionId, SessionSnapshot, TransitionCommit};
use crate::telemetry::METRICS;

impl Handler<GetSession> for FleetSupervisor {
    type Result = Reply<SessionSnapshot>;
    fn handle(&mut self, msg: GetSession, _ctx: &mut Self::Context) -> Self::Result {
        let store = self.fleet.store.clone();
        let addr = self.sessions.get(&msg.id).cloned();
        let timeout = self.fleet.actor_timeout;
        Box::pin(
            async move {
                if let Some(a) = addr {
                    if let Ok(Ok(s)) = a.send(GetSnapshot).timeout(timeout).await {
                        return Ok(s);
                    }
                }
                Ok(store.load_snapshot(&msg.id).await?)
            }
            .into_actor(self),
        )
    }
}

/// Commands on a session without an actor (kill, restore) are atomic on the supervisor's
/// mailbox: a restore and a kill of one session at the same moment run one after the other,
/// each seeing what the other committed (a kill then goes to the restored session's actor).
impl Handler<KillSession> for FleetSupervisor {
    type Result = AtomicResponse<Self, Result<StepReport, FleetError>>;
    fn handle(&mut self, msg: KillSession, _ctx: &mut Self::Context) -> Self::Result {
        let timeout = self.fleet.actor_timeout;
        if let Some(a) = self.sessions.get(&msg.id).cloned() {
            return AtomicResponse::new(Box::pin(
                async move {
                    Ok(a.send(Kill {
                        reason: "manually_killed".into(),
                    })
                    .timeout(timeout)
                    .await??)
                }
                .into_actor(self),
            ));
        }
        // No actor: the session already ended. The machine says so (idempotent kill); a
        // workspace still on disk (e.g. of a done session) is removed, and the answer says so
        // (ao #1524 reported clean-ups it had skipped).
        let store = self.fleet.store.clone();
        let policy = self.policy_for("");
        let fleet = self.fleet.clone();
        let cluster = self.cluster.clone();
        AtomicResponse::new(Box::pin(
            async move {
                // Another node drives it: the kill runs there.
                if let Some(r) =
                    forward_step(cluster, store.clone(), &msg.id, ClusterCommand::Kill).await
                {
                    return r;
                }
                let snap = store.load_snapshot(&msg.id).await?;
                let ev = Event {
                    at: machine::micros(fleet.clock.now()),
                    kind: EventKind::KillRequested {
                        reason: "manually_killed".into(),
                    },
                };
                match machine::step(&snap, &ev, &policy).outcome {
                    Outcome::Noop(mut m) => {
                        let on_disk = match (
                            &snap.session.workspace,
                            fleet.plugins.workspace(&snap.session.workspace_kind),
                        ) {
                            (Some(p), Ok(ws)) => ws.exists(std::path::Path::new(p)).await,
                            _ => false,
                        };
                        if on_disk {
                            match crate::actors::session::cleanup_workspace(
                                &fleet,
                                &snap.session,
                                false,
                            )
                            .await
                            {
                                Ok(_) => m.push_str("; its leftover workspace was removed"),
                                Err(e) => {
                                    m.push_str(&format!("; removing its workspace failed: {e}"))
                                }
                            }
                        }
                        Ok(StepReport {
                            session: snap,
                            changed: false,
                            message: Some(m),
                        })
                    }
                    Outcome::Rejected(m) => Err(FleetError::Conflict(m)),
                    Outcome::Applied => Err(FleetError::Conflict(format!(
                        "session {} is {} but has no actor; restart the service",
                        snap.session.id, snap.session.state
                    ))),
                }
            }
            .into_actor(self),
        ))
    }
}

impl Handler<RestoreSession> for FleetSupervisor {
    type Result = AtomicResponse<Self, Result<StepReport, FleetError>>;
    fn handle(&mut self, msg: RestoreSession, _ctx: &mut Self::Context) -> Self::Result {
        let timeout = self.fleet.actor_timeout;
        if let Some(a) = self.sessions.get(&msg.id).cloned() {
            return AtomicResponse::new(Box::pin(
                async move { Ok(a.send(Restore).timeout(timeout).await??) }.into_actor(self),
            ));
        }
        let store = self.fleet.store.clone();
        let journal = self.fleet.journal.clone();
        let fleet = self.fleet.clone();
        let cluster = self.cluster.clone();
        AtomicResponse::new(Box::pin(
            async move {
                // Another node drives it: the restore runs (and its actor starts) there.
                if let Some(r) =
                    forward_step(cluster, store.clone(), &msg.id, ClusterCommand::Restore).await
                {
                    return r.map(|rep| (rep, false));
                }
                let snap = store.load_snapshot(&msg.id).await?;
                let policy = fleet
                    .project(&snap.session.project)
                    .map(|p| p.policy.clone())
                    .unwrap_or_else(|| Arc::new(Policy::defaults()));
                let ev = Event {
                    at: machine::micros(fleet.clock.now()),
                    kind: EventKind::RestoreRequested,
                };
                let step = machine::step(&snap, &ev, &policy);
                match step.outcome {
                    Outcome::Rejected(m) => return Err(FleetError::Conflict(m)),
                    Outcome::Noop(m) => return Err(FleetError::Conflict(m)),
                    Outcome::Applied => {}
                }
                let from = snap.session.state;
                journal
                    .commit(&TransitionCommit {
                        snapshot: step.snapshot.clone(),
                        event: NewEvent {
                            session_id: Some(msg.id.clone()),
                            kind: ev.kind.name().into(),
                            data: step.event_data(from, &ev),
                            at: ev.at,
                        },
                        // Restoring never notifies anyone.
                        notifications: Vec::new(),
                        instructions: Vec::new(),
                    })
                    .await?;
                METRICS.transition(from, step.snapshot.session.state);
                Ok((
                    StepReport {
                        session: step.snapshot,
                        changed: true,
                        message: None,
                    },
                    true,
                ))
            }
            .into_actor(self)
            .map(|res: Result<(StepReport, bool), FleetError>, act, ctx| {
                let (rep, here) = res?;
                if !here {
                    return Ok(rep);
                }
                // The new actor sees `spawning` with an armed spawn deadline and starts the
                // runtime (resuming the agent).
                act.start_actor(
                    rep.session.session.id.clone(),
                    &rep.session.session.project,
                    ctx,
                );
                Ok(rep)
            }),
        ))
    }
}

impl Handler<SendToSession> for FleetSupervisor {
    type Result = Reply<crate::actors::session::messages::SendReport>;
    fn handle(&mut self, msg: SendToSession, ctx: &mut Self::Context) -> Self::Result {
        let timeout = self.fleet.actor_timeout;
        let addr = self.sessions.get(&msg.id).cloned();
        let me = ctx.address();
        // Subscribed before a restore, so the agent's start cannot slip past unseen.
        let mut events = self.fleet.journal.subscribe();
        // The session's own spawn deadline bounds the wait; its project is not known until
        // the row is loaded, so the longest of the projects' deadlines is used.
        let wait = self
            .fleet
            .projects
            .values()
            .map(|p| p.policy.spawn_timeout)
            .max()
            .unwrap_or_else(|| chrono::Duration::minutes(5))
            .to_std()
            .unwrap_or(std::time::Duration::from_secs(300));
        let cluster = self.cluster.clone();
        Box::pin(
            async move {
                if let Some(a) = addr {
                    return Ok(a
                        .send(SendMessage {
                            text: msg.text,
                            question: msg.question,
                        })
                        .timeout(timeout)
                        .await??);
                }
                if let Some(c) = cluster {
                    if let Some(r) = c
                        .forward_send(
                            &msg.id,
                            &msg.text,
                            msg.allow_restore,
                            msg.question.as_deref(),
                        )
                        .await
                    {
                        return r;
                    }
                    // Taken over a moment ago: its actor is being started.
                    if c.holds(&msg.id)
                        && me
                            .send(AdoptSessions {
                                ids: vec![msg.id.clone()],
                            })
                            .await?
                            > 0
                    {
                        return me.send(msg).await?;
                    }
                }
                if !msg.allow_restore {
                    return Err(FleetError::Conflict(format!(
                        "session {} has no running agent",
                        msg.id
                    )));
                }
                // A dead session is restored first (ao's send does the same), then the message
                // goes to the new agent once it runs.
                me.send(RestoreSession { id: msg.id.clone() }).await??;
                let started = tokio::time::timeout(wait, async {
                    loop {
                        match events.recv().await {
                            Ok(e) if e.session_id.as_ref() == Some(&msg.id) => {
                                match e.kind.as_str() {
                                    "runtime.started" => return Ok(()),
                                    "runtime.spawn_failed" => {
                                        return Err(FleetError::Conflict(format!(
                                            "session {} could not be restored: {}",
                                            msg.id, e.data["reason"]
                                        )))
                                    }
                                    _ => {}
                                }
                            }
                            Ok(_) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                            Err(_) => return Err(FleetError::Busy),
                        }
                    }
                })
                .await
                .map_err(|_| {
                    FleetError::Conflict(format!("session {} did not restart in time", msg.id))
                })?;
                started?;
                let mut r = me
                    .send(SendToSession {
                        id: msg.id,
                        text: msg.text,
                        allow_restore: false,
                        question: msg.question,
                    })
                    .await??;
                r.restored = true;
                Ok(r)
            }
            .into_actor(self),
        )
    }
}

impl Handler<MergeSession> for FleetSupervisor {
    type Result = Reply<StepReport>;
    fn handle(&mut self, msg: MergeSession, _ctx: &mut Self::Context) -> Self::Result {
        // The SCM call may take the plugin's whole timeout, and more under a rate limit.
        let timeout = self.fleet.actor_timeout * 4;
        if let Some(a) = self.sessions.get(&msg.id).cloned() {
            return Box::pin(
                async move { Ok(a.send(MergeNow { method: None }).timeout(timeout).await??) }
                    .into_actor(self),
            );
        }
        let store = self.fleet.store.clone();
        let cluster = self.cluster.clone();
        Box::pin(
            async move {
                // Another node drives it: the merge runs there.
                if let Some(r) =
                    forward_step(cluster, store.clone(), &msg.id, ClusterCommand::Merge).await
                {
                    return r;
                }
                let s = store.load_session(&msg.id).await?;
                Err(FleetError::Conflict(format!(
                    "session {} is {}: there is no open PR to merge",
                    s.id, s.state
                )))
            }
            .into_actor(self),
        )
    }
}

/// Sent by tests and benches to feed an observation to a live session.
impl Handler<ApplyTo> for FleetSupervisor {
    type Result = Reply<StepReport>;
    fn handle(&mut self, msg: ApplyTo, _ctx: &mut Self::Context) -> Self::Result {
        let timeout = self.fleet.actor_timeout;
        let Some(a) = self.sessions.get(&msg.id).cloned() else {
            return ready(Err(FleetError::Conflict(format!(
                "session {} has no live actor",
                msg.id
            ))));
        };
        Box::pin(
            async move {
                Ok(a.send(Apply { event: msg.event })
                    .timeout(timeout)
                    .await??)
            }
            .into_actor(self),
        )
    }
}

/// Feeds one event to a live session's machine (what webhooks and pollers will send).
#[derive(Debug, Message)]
#[rtype(result = "Result<StepReport, FleetError>")]
pub struct ApplyTo {
    /// Session id.
    pub id: SessionId,
    /// Event.
    pub event: EventKind,
}
