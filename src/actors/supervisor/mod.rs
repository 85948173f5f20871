//! `FleetSupervisor`: owns one `SessionActor` per live session.
//!
//! At start it restores every non-terminal session from the store (inside `ctx.wait`, so no
//! request is served before that) and only then reports ready. It answers reads from the
//! store, forwards commands to session actors, and handles the few commands that concern a
//! session without an actor (restore or kill of an ended session) through the same pure
//! machine. It drops an actor's address when its session ends, which stops the actor.

pub mod messages;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use chrono::Utc;

use self::messages::*;
use crate::actors::fleet::Fleet;
use crate::actors::session::machine::{self, Event, EventKind, Outcome};
use crate::actors::session::messages::{
    Apply, GetSnapshot, Kill, Reconcile, Restore, SendMessage, StepReport,
};
use crate::actors::session::policy::Policy;
use crate::actors::session::{SessionActor, SessionError};
use crate::plugins::worktree::check_branch_name;
use crate::plugins::PluginError;
use crate::store::{
    NewEvent, NewSession, SessionFilter, SessionId, SessionSnapshot, StoreError, TransitionCommit,
};
use crate::telemetry::METRICS;

/// Longest prompt accepted in a spawn request, in bytes.
pub const MAX_PROMPT_BYTES: usize = 256 * 1024;

/// What went wrong with a fleet request, in terms the HTTP layer maps to a status once.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// No session with that id (404).
    #[error("session {id} not found")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// A request field is not acceptable (422).
    #[error("{field}: {reason}")]
    Invalid {
        /// Field name.
        field: String,
        /// Why.
        reason: String,
    },
    /// Not allowed in the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The actor did not answer in time (503).
    #[error("the session is busy; try again")]
    Busy,
    /// Not ready yet (503).
    #[error("not ready: {0}")]
    NotReady(String),
    /// Store failure (500).
    #[error("store error")]
    Store(#[source] StoreError),
    /// Plugin failure (502).
    #[error("plugin error: {0}")]
    Plugin(#[source] PluginError),
}

impl From<StoreError> for FleetError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { what } => FleetError::NotFound {
                id: what.trim_start_matches("session ").to_string(),
            },
            other => FleetError::Store(other),
        }
    }
}

impl From<SessionError> for FleetError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Rejected(m) => FleetError::Conflict(m),
            SessionError::NotLoaded => FleetError::Busy,
            SessionError::Store(s) => s.into(),
            SessionError::Plugin(PluginError::NotFound(m)) => FleetError::Conflict(m),
            SessionError::Plugin(p) => FleetError::Plugin(p),
        }
    }
}

impl From<MailboxError> for FleetError {
    fn from(_: MailboxError) -> Self {
        FleetError::Busy
    }
}

/// The supervisor of every session actor.
pub struct FleetSupervisor {
    fleet: Arc<Fleet>,
    sessions: HashMap<SessionId, Addr<SessionActor>>,
    /// Set once every non-terminal session has been restored; read by `/readyz`.
    ready: Arc<AtomicBool>,
}

impl FleetSupervisor {
    /// A supervisor over `fleet`; `ready` becomes true after the restore.
    pub fn new(fleet: Arc<Fleet>, ready: Arc<AtomicBool>) -> Self {
        FleetSupervisor {
            fleet,
            sessions: HashMap::new(),
            ready,
        }
    }

    fn policy_for(&self, project: &str) -> Arc<Policy> {
        self.fleet
            .project(project)
            .map(|p| p.policy.clone())
            .unwrap_or_else(|| Arc::new(Policy::defaults()))
    }

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

    fn validate(&self, r: &SpawnRequest) -> Result<NewSession, FleetError> {
        let invalid = |field: &str, reason: String| FleetError::Invalid {
            field: field.into(),
            reason,
        };
        let project = self
            .fleet
            .project(&r.project)
            .ok_or_else(|| invalid("project", format!("unknown project `{}`", r.project)))?;
        let agent = r.agent.clone().unwrap_or_else(|| project.agent.clone());
        self.fleet
            .plugins
            .agent(&agent)
            .map_err(|_| invalid("agent", format!("unknown agent `{agent}`")))?;
        self.fleet
            .plugins
            .runtime(&project.runtime)
            .map_err(|e| invalid("project", e.to_string()))?;
        self.fleet
            .plugins
            .workspace(&project.workspace)
            .map_err(|e| invalid("project", e.to_string()))?;
        if let Some(b) = &r.branch {
            check_branch_name(b).map_err(|e| invalid("branch", e.to_string()))?;
        }
        if r.prompt
            .as_ref()
            .is_some_and(|p| p.len() > MAX_PROMPT_BYTES)
        {
            return Err(invalid(
                "prompt",
                format!("longer than {MAX_PROMPT_BYTES} bytes"),
            ));
        }
        Ok(NewSession {
            project: project.name.clone(),
            prefix: project.prefix.clone(),
            agent,
            runtime: project.runtime.clone(),
            workspace_kind: project.workspace.clone(),
            branch: r
                .branch
                .clone()
                .or_else(|| r.issue.as_ref().map(|i| format!("feat/{i}")))
                .filter(|b| check_branch_name(b).is_ok()),
            issue: r.issue.clone(),
            prompt: r.prompt.clone(),
            skip_numbers: Vec::new(),
            at: Utc::now(),
        })
    }
}

impl Actor for FleetSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let store = self.fleet.store.clone();
        ctx.wait(
            async move {
                let filter = SessionFilter {
                    active_only: true,
                    ..Default::default()
                };
                let live = store.list_sessions(&filter).await?;
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
                }
                Err(e) => {
                    // Not ready: /readyz keeps saying so and the error is in the log.
                    tracing::error!(error = ?e, "restoring the fleet failed");
                }
            }),
        );
    }
}

type Reply<T> = ResponseActFuture<FleetSupervisor, Result<T, FleetError>>;

fn ready<T: 'static>(r: Result<T, FleetError>) -> Reply<T> {
    Box::pin(fut::ready(r))
}

impl Handler<Spawn> for FleetSupervisor {
    type Result = Reply<SessionSnapshot>;
    fn handle(&mut self, msg: Spawn, _ctx: &mut Self::Context) -> Self::Result {
        let new = match self.validate(&msg.request) {
            Ok(n) => n,
            Err(e) => return ready(Err(e)),
        };
        let journal = self.fleet.journal.clone();
        Box::pin(
            async move { journal.create_session(&new).await }
                .into_actor(self)
                .map(|res, act, ctx| {
                    let rec = res?;
                    METRICS
                        .sessions
                        .with_label_values(&[rec.state.as_str()])
                        .inc();
                    act.start_actor(rec.id.clone(), &rec.project, ctx);
                    Ok(SessionSnapshot {
                        session: rec,
                        trackers: Default::default(),
                        timers: Default::default(),
                    })
                }),
        )
    }
}

impl Handler<ListSessions> for FleetSupervisor {
    type Result = Reply<Vec<crate::store::SessionRecord>>;
    fn handle(&mut self, msg: ListSessions, _ctx: &mut Self::Context) -> Self::Result {
        let store = self.fleet.store.clone();
        let filter = SessionFilter {
            project: msg.project,
            states: msg.states,
            active_only: false,
        };
        Box::pin(async move { Ok(store.list_sessions(&filter).await?) }.into_actor(self))
    }
}

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

impl Handler<KillSession> for FleetSupervisor {
    type Result = Reply<StepReport>;
    fn handle(&mut self, msg: KillSession, _ctx: &mut Self::Context) -> Self::Result {
        let timeout = self.fleet.actor_timeout;
        if let Some(a) = self.sessions.get(&msg.id).cloned() {
            return Box::pin(
                async move {
                    Ok(a.send(Kill {
                        reason: "manually_killed".into(),
                    })
                    .timeout(timeout)
                    .await??)
                }
                .into_actor(self),
            );
        }
        // No actor: the session already ended. The machine says so (idempotent kill).
        let store = self.fleet.store.clone();
        let policy = self.policy_for("");
        Box::pin(
            async move {
                let snap = store.load_snapshot(&msg.id).await?;
                let ev = Event {
                    at: machine::micros(Utc::now()),
                    kind: EventKind::KillRequested {
                        reason: "manually_killed".into(),
                    },
                };
                match machine::step(&snap, &ev, &policy).outcome {
                    Outcome::Noop(m) => Ok(StepReport {
                        session: snap,
                        changed: false,
                        message: Some(m),
                    }),
                    Outcome::Rejected(m) => Err(FleetError::Conflict(m)),
                    Outcome::Applied => Err(FleetError::Conflict(format!(
                        "session {} is {} but has no actor; restart the service",
                        snap.session.id, snap.session.state
                    ))),
                }
            }
            .into_actor(self),
        )
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
        AtomicResponse::new(Box::pin(
            async move {
                let snap = store.load_snapshot(&msg.id).await?;
                let policy = fleet
                    .project(&snap.session.project)
                    .map(|p| p.policy.clone())
                    .unwrap_or_else(|| Arc::new(Policy::defaults()));
                let ev = Event {
                    at: machine::micros(Utc::now()),
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
                    })
                    .await?;
                METRICS.transition(from, step.snapshot.session.state);
                Ok(StepReport {
                    session: step.snapshot,
                    changed: true,
                    message: None,
                })
            }
            .into_actor(self)
            .map(|res: Result<StepReport, FleetError>, act, ctx| {
                let rep = res?;
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
    fn handle(&mut self, msg: SendToSession, _ctx: &mut Self::Context) -> Self::Result {
        let timeout = self.fleet.actor_timeout;
        let addr = self.sessions.get(&msg.id).cloned();
        let store = self.fleet.store.clone();
        Box::pin(
            async move {
                match addr {
                    Some(a) => Ok(a
                        .send(SendMessage { text: msg.text })
                        .timeout(timeout)
                        .await??),
                    None => {
                        let s = store.load_session(&msg.id).await?;
                        Err(FleetError::Conflict(format!(
                            "session {} is {}; restore it first",
                            s.id, s.state
                        )))
                    }
                }
            }
            .into_actor(self),
        )
    }
}

impl Handler<MergeSession> for FleetSupervisor {
    type Result = Reply<StepReport>;
    fn handle(&mut self, msg: MergeSession, _ctx: &mut Self::Context) -> Self::Result {
        let store = self.fleet.store.clone();
        Box::pin(
            async move {
                let s = store.load_session(&msg.id).await?;
                Err(FleetError::Conflict(format!(
                    "merge is not available for session {}: no SCM plugin is configured",
                    s.id
                )))
            }
            .into_actor(self),
        )
    }
}

impl Handler<GetEvents> for FleetSupervisor {
    type Result = Reply<Vec<crate::store::EventRecord>>;
    fn handle(&mut self, msg: GetEvents, _ctx: &mut Self::Context) -> Self::Result {
        let store = self.fleet.store.clone();
        Box::pin(
            async move {
                Ok(match &msg.session {
                    Some(id) => {
                        store.load_session(id).await?;
                        store.session_events(id, msg.after, msg.limit).await?
                    }
                    None => store.events_after(msg.after, msg.limit).await?,
                })
            }
            .into_actor(self),
        )
    }
}

impl Handler<GetOutput> for FleetSupervisor {
    type Result = Reply<String>;
    fn handle(&mut self, msg: GetOutput, _ctx: &mut Self::Context) -> Self::Result {
        let store = self.fleet.store.clone();
        let fleet = self.fleet.clone();
        Box::pin(
            async move {
                let s = store.load_session(&msg.id).await?;
                let Some(h) = s.runtime_handle else {
                    return Ok(String::new());
                };
                let rt = fleet
                    .plugins
                    .runtime(&s.runtime)
                    .map_err(FleetError::Plugin)?;
                match rt.output(&h, msg.lines).await {
                    Ok(o) => Ok(o),
                    Err(PluginError::NotFound(_)) => Ok(String::new()),
                    Err(e) => Err(FleetError::Plugin(e)),
                }
            }
            .into_actor(self),
        )
    }
}

impl Handler<OpenFeed> for FleetSupervisor {
    type Result = Reply<Feed>;
    fn handle(&mut self, msg: OpenFeed, _ctx: &mut Self::Context) -> Self::Result {
        // Subscribe before reading the backlog so nothing falls between the two; the reader
        // drops live events it already got from the backlog.
        let live = self.fleet.journal.subscribe();
        let store = self.fleet.store.clone();
        Box::pin(
            async move {
                let backlog = store.events_after(msg.after, msg.limit).await?;
                Ok(Feed { backlog, live })
            }
            .into_actor(self),
        )
    }
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
        self.sessions.remove(&msg.id);
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

impl Handler<ListConversations> for FleetSupervisor {
    type Result = Reply<Vec<crate::store::ConversationRecord>>;
    fn handle(&mut self, _msg: ListConversations, _ctx: &mut Self::Context) -> Self::Result {
        let store = self.fleet.store.clone();
        Box::pin(async move { Ok(store.list_conversations().await?) }.into_actor(self))
    }
}
