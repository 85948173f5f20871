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
    Apply, GetSnapshot, Kill, MergeNow, Reconcile, Restore, ScmCheck, ScmHint, SendMessage,
    StepReport,
};
use crate::actors::session::policy::Policy;
use crate::actors::session::{SessionActor, SessionError};
use crate::plugins::worktree::{check_branch_name, remote_heads, slug};
use crate::plugins::PluginError;
use crate::preflight::{agent_ready, AgentLaunch, HostEnv};
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

/// Decides the branch and skipped id numbers of a new session from the remote's branches:
/// explicit branch > `feat/{issue}` (a slug when the id is not branch-safe) > `session/{id}`
/// (chosen at launch). A derived name already on the remote gets a `-2`, `-3`… suffix, and
/// numbers whose `session/{prefix}-N` branch exists on the remote are not used for ids.
pub fn plan_branch(new: &mut NewSession, remote_heads: &[String]) {
    let session_branch = format!("session/{}-", new.prefix);
    new.skip_numbers.extend(
        remote_heads
            .iter()
            .filter_map(|h| h.strip_prefix(&session_branch))
            .filter_map(|n| n.parse::<i64>().ok()),
    );
    if new.branch.is_some() {
        return;
    }
    if let Some(issue) = &new.issue {
        let candidate = format!("feat/{issue}");
        let base = if check_branch_name(&candidate).is_ok() {
            candidate
        } else {
            format!("feat/{}", slug(issue))
        };
        let mut name = base.clone();
        let mut n = 2;
        while remote_heads.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        new.branch = Some(name);
    }
}

/// The spawn-time preflight: the agent's CLI must resolve on the agent's `PATH` and an
/// interactive `claude` must have done its first-run set-up, or the spawn fails with the cause
/// (422 on `agent`) before any session row or worktree exists. A few `stat`s and one small
/// file read, on the blocking pool (never on the actor's thread).
async fn preflight_agent(launch: Option<AgentLaunch>) -> Result<(), FleetError> {
    let Some(launch) = launch else {
        return Ok(());
    };
    tokio::task::spawn_blocking(move || agent_ready(&launch, &HostEnv::current()))
        .await
        .map_err(|e| FleetError::Plugin(PluginError::Io(std::io::Error::other(e))))?
        .map_err(|e| FleetError::Invalid {
            field: "agent".into(),
            reason: e.to_string(),
        })
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

    /// What the preflight checks for agent `name` (`None`: unknown agent or nothing to check).
    fn agent_launch(&self, name: &str) -> Option<AgentLaunch> {
        self.fleet.plugins.agent(name).ok()?.preflight()
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
            branch: r.branch.clone(),
            issue: r.issue.clone(),
            prompt: r.prompt.clone(),
            skip_numbers: Vec::new(),
            fixed_id: None,
            meta: serde_json::Value::Null,
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
                    let fleet = act.fleet.clone();
                    actix::spawn(async move {
                        for o in find_orphans(&fleet).await {
                            tracing::warn!(kind = %o.kind, name = %o.name, detail = %o.detail, "orphan found at start-up");
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

impl Handler<Spawn> for FleetSupervisor {
    type Result = Reply<SessionSnapshot>;
    fn handle(&mut self, msg: Spawn, _ctx: &mut Self::Context) -> Self::Result {
        let new = match self.validate(&msg.request) {
            Ok(n) => n,
            Err(e) => return ready(Err(e)),
        };
        let journal = self.fleet.journal.clone();
        let repo = self
            .fleet
            .project(&new.project)
            .map(|p| (p.repo.clone(), p.remote.clone()));
        let tracker = self.fleet.plugins.trackers.get(&new.project).cloned();
        let launch = self.agent_launch(&new.agent);
        let mut new = new;
        Box::pin(
            async move {
                // An agent that cannot start fails the spawn before anything is created.
                preflight_agent(launch).await?;
                // The issue is read before anything is created: an unknown issue or a
                // tracker outage fails the spawn cleanly.
                if let (Some(t), Some(id)) = (tracker, new.issue.clone()) {
                    let issue = t.issue(&id).await.map_err(|e| match e {
                        PluginError::NotFound(_) => FleetError::Invalid {
                            field: "issue".into(),
                            reason: format!("issue {id} was not found in the project's tracker"),
                        },
                        other => FleetError::Plugin(other),
                    })?;
                    if new.branch.is_none() {
                        new.branch = issue.branch.clone();
                    }
                    if !new.meta.is_object() {
                        new.meta = serde_json::json!({});
                    }
                    new.meta["issue"] = serde_json::to_value(&issue).unwrap_or_default();
                }
                if let Some((repo, remote)) = repo {
                    let heads = remote_heads(&repo, &remote).await;
                    plan_branch(&mut new, &heads);
                }
                Ok::<_, FleetError>(journal.create_session(&new).await?)
            }
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
        // No actor: the session already ended. The machine says so (idempotent kill); a
        // workspace still on disk (e.g. of a done session) is removed, and the answer says so
        // (ao #1524 reported clean-ups it had skipped).
        let store = self.fleet.store.clone();
        let policy = self.policy_for("");
        let fleet = self.fleet.clone();
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
        Box::pin(
            async move {
                if let Some(a) = addr {
                    return Ok(a
                        .send(SendMessage { text: msg.text })
                        .timeout(timeout)
                        .await??);
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
        Box::pin(
            async move {
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
                match rt
                    .output(&crate::plugins::RuntimeHandle::from_json(&h), msg.lines)
                    .await
                {
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
        let fleet = self.fleet.clone();
        actix::spawn(async move { check_all_complete(&fleet, &msg.project).await });
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

impl Handler<BatchSpawn> for FleetSupervisor {
    type Result = Reply<(Vec<SessionSnapshot>, Vec<Skipped>)>;
    fn handle(&mut self, msg: BatchSpawn, _ctx: &mut Self::Context) -> Self::Result {
        let r = msg.request;
        if r.issues.is_empty() {
            return ready(Err(FleetError::Invalid {
                field: "issues".into(),
                reason: "must not be empty".into(),
            }));
        }
        // Validate once with the first issue: every request differs only by its issue.
        let mut template = match self.validate(&SpawnRequest {
            project: r.project.clone(),
            prompt: r.prompt.clone(),
            issue: None,
            agent: r.agent.clone(),
            branch: None,
        }) {
            Ok(n) => n,
            Err(e) => return ready(Err(e)),
        };
        let store = self.fleet.store.clone();
        let journal = self.fleet.journal.clone();
        let repo = self
            .fleet
            .project(&r.project)
            .map(|p| (p.repo.clone(), p.remote.clone()));
        let launch = self.agent_launch(&template.agent);
        Box::pin(
            async move {
                preflight_agent(launch).await?;
                let live = store
                    .list_sessions(&SessionFilter {
                        project: Some(r.project.clone()),
                        states: vec![],
                        active_only: true,
                    })
                    .await?;
                let heads = match &repo {
                    Some((repo, remote)) => remote_heads(repo, remote).await,
                    None => vec![],
                };
                let mut seen = std::collections::HashSet::new();
                let (mut created, mut skipped) = (Vec::new(), Vec::new());
                for issue in r.issues {
                    let issue = issue.trim().to_string();
                    if issue.is_empty() {
                        continue;
                    }
                    if !seen.insert(issue.clone()) {
                        skipped.push(Skipped {
                            issue,
                            reason: "duplicate in batch".into(),
                            session: None,
                        });
                        continue;
                    }
                    if let Some(s) = live
                        .iter()
                        .find(|s| s.issue.as_deref() == Some(issue.as_str()))
                    {
                        skipped.push(Skipped {
                            issue,
                            reason: "live session".into(),
                            session: Some(s.id.to_string()),
                        });
                        continue;
                    }
                    template.issue = Some(issue);
                    template.branch = None;
                    template.at = Utc::now();
                    let mut new = template.clone();
                    plan_branch(&mut new, &heads);
                    created.push(journal.create_session(&new).await?);
                }
                Ok((created, skipped))
            }
            .into_actor(self)
            .map(
                |res: Result<(Vec<crate::store::SessionRecord>, Vec<Skipped>), FleetError>,
                 act,
                 ctx| {
                    let (created, skipped) = res?;
                    let mut out = Vec::new();
                    for rec in created {
                        METRICS
                            .sessions
                            .with_label_values(&[rec.state.as_str()])
                            .inc();
                        act.start_actor(rec.id.clone(), &rec.project, ctx);
                        out.push(SessionSnapshot {
                            session: rec,
                            trackers: Default::default(),
                            timers: Default::default(),
                        });
                    }
                    Ok((out, skipped))
                },
            ),
        )
    }
}

impl Handler<GetBoard> for FleetSupervisor {
    type Result = Reply<Board>;
    fn handle(&mut self, _msg: GetBoard, _ctx: &mut Self::Context) -> Self::Result {
        let store = self.fleet.store.clone();
        let projects = self
            .fleet
            .projects
            .values()
            .map(|p| (p.name.clone(), p.agent.clone()))
            .collect();
        let mut agents: Vec<String> = self.fleet.plugins.agents.keys().cloned().collect();
        agents.sort();
        Box::pin(
            async move {
                // The cursor is read first: whatever commits after it is both (maybe) in the
                // rows and in the stream, never in neither.
                let cursor = store.last_event_id().await?;
                let sessions = store.list_sessions(&SessionFilter::default()).await?;
                let trackers = store.list_trackers().await?;
                let latest_events = store.latest_session_events().await?;
                Ok(Board {
                    cursor,
                    sessions,
                    trackers,
                    latest_events,
                    projects,
                    agents,
                })
            }
            .into_actor(self),
        )
    }
}

impl Handler<GetAttach> for FleetSupervisor {
    type Result = Reply<Option<crate::plugins::AttachInfo>>;
    fn handle(&mut self, msg: GetAttach, _ctx: &mut Self::Context) -> Self::Result {
        let store = self.fleet.store.clone();
        let fleet = self.fleet.clone();
        Box::pin(
            async move {
                let s = store.load_session(&msg.id).await?;
                if s.state.is_terminal() {
                    return Err(FleetError::Conflict(format!(
                        "session {} is {}; nothing to attach to",
                        s.id, s.state
                    )));
                }
                let rt = fleet
                    .plugins
                    .runtime(&s.runtime)
                    .map_err(FleetError::Plugin)?;
                Ok(s.runtime_handle
                    .as_ref()
                    .and_then(|h| rt.attach_info(&crate::plugins::RuntimeHandle::from_json(h))))
            }
            .into_actor(self),
        )
    }
}

impl Handler<EnsureOrchestrator> for FleetSupervisor {
    type Result = Reply<(SessionSnapshot, bool)>;
    fn handle(&mut self, msg: EnsureOrchestrator, ctx: &mut Self::Context) -> Self::Result {
        let Some(project) = self.fleet.project(&msg.project).cloned() else {
            return ready(Err(FleetError::Invalid {
                field: "project".into(),
                reason: format!("unknown project `{}`", msg.project),
            }));
        };
        let agent = project
            .orchestrator_agent
            .clone()
            .unwrap_or_else(|| project.agent.clone());
        if let Err(e) = self.fleet.plugins.agent(&agent) {
            return ready(Err(FleetError::Invalid {
                field: "agent".into(),
                reason: e.to_string(),
            }));
        }
        let launch = self.agent_launch(&agent);
        let id = SessionId(format!("{}-orchestrator", project.prefix));
        let store = self.fleet.store.clone();
        let journal = self.fleet.journal.clone();
        let me = ctx.address();
        let new = NewSession {
            project: project.name.clone(),
            prefix: project.prefix.clone(),
            agent,
            runtime: project.runtime.clone(),
            workspace_kind: project.workspace.clone(),
            branch: Some(format!("session/{id}")),
            issue: None,
            prompt: Some(crate::actors::session::launch::orchestrator_prompt(
                &project,
            )),
            skip_numbers: vec![],
            fixed_id: Some(id.0.clone()),
            meta: serde_json::json!({"role": "orchestrator"}),
            at: Utc::now(),
        };
        Box::pin(
            async move {
                match store.load_snapshot(&id).await {
                    Ok(s) if s.session.state.is_terminal() => {
                        let r = me.send(RestoreSession { id }).await??;
                        return Ok((r.session, false, false));
                    }
                    Ok(s) => return Ok((s, false, false)),
                    Err(StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                preflight_agent(launch).await?;
                match journal.create_session(&new).await {
                    Ok(rec) => Ok((
                        SessionSnapshot {
                            session: rec,
                            trackers: Default::default(),
                            timers: Default::default(),
                        },
                        true,
                        true,
                    )),
                    // A concurrent `start` won the race: attach to its orchestrator.
                    Err(StoreError::Conflict(_)) => {
                        Ok((store.load_snapshot(&id).await?, false, false))
                    }
                    Err(e) => Err(e.into()),
                }
            }
            .into_actor(self)
            .map(
                |res: Result<(SessionSnapshot, bool, bool), FleetError>, act, ctx| {
                    let (snap, created, start) = res?;
                    if start {
                        METRICS
                            .sessions
                            .with_label_values(&[snap.session.state.as_str()])
                            .inc();
                        act.start_actor(snap.session.id.clone(), &snap.session.project, ctx);
                    }
                    Ok((snap, created))
                },
            ),
        )
    }
}

impl Handler<GetOrphans> for FleetSupervisor {
    type Result = ResponseFuture<Vec<Orphan>>;
    fn handle(&mut self, _msg: GetOrphans, _ctx: &mut Self::Context) -> Self::Result {
        let fleet = self.fleet.clone();
        Box::pin(async move { find_orphans(&fleet).await })
    }
}

/// What runs or sits on disk without a live session: runtime instances the store does not
/// know (or knows as ended), and workspaces of unknown or killed sessions.
pub async fn find_orphans(fleet: &Fleet) -> Vec<Orphan> {
    let sessions = fleet
        .store
        .list_sessions(&SessionFilter::default())
        .await
        .unwrap_or_default();
    let state_of = |name: &str| {
        sessions
            .iter()
            .find(|s| s.id.as_str() == name)
            .map(|s| s.state)
    };
    let mut out = Vec::new();
    let mut runtimes: Vec<_> = fleet.plugins.runtimes.iter().collect();
    runtimes.sort_by_key(|(n, _)| n.as_str());
    for (rname, rt) in runtimes {
        for name in rt.list_live().await.unwrap_or_default() {
            let detail = match state_of(&name) {
                None => "running, but no such session".to_string(),
                Some(st) if st.is_terminal() => format!("running, but the session is {st}"),
                Some(_) => continue,
            };
            out.push(Orphan {
                kind: "runtime".into(),
                name: format!("{rname}:{name}"),
                detail,
            });
        }
    }
    for project in fleet.projects.keys() {
        let dir = fleet.home.join("worktrees").join(project);
        let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
            continue;
        };
        while let Ok(Some(e)) = entries.next_entry().await {
            let name = e.file_name().to_string_lossy().into_owned();
            let detail = match state_of(&name) {
                None => "workspace of no known session".to_string(),
                Some(
                    st @ (crate::store::SessionState::Killed
                    | crate::store::SessionState::Terminated),
                ) => {
                    format!("workspace of a {st} session")
                }
                Some(_) => continue,
            };
            out.push(Orphan {
                kind: "workspace".into(),
                name: e.path().to_string_lossy().into_owned(),
                detail,
            });
        }
    }
    out
}

impl Handler<RecordWebhookDelivery> for FleetSupervisor {
    type Result = Reply<bool>;
    fn handle(&mut self, msg: RecordWebhookDelivery, _ctx: &mut Self::Context) -> Self::Result {
        let store = self.fleet.store.clone();
        Box::pin(
            crate::actors::detached(async move {
                Ok(store.record_webhook_delivery(&msg.delivery).await?)
            })
            .into_actor(self),
        )
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
            pr = e.pr_number.unwrap_or(0),
            "github event received"
        );
        let Some(repo) = e.repo else {
            return;
        };
        if e.pr_number.is_none() && e.head_branch.is_none() {
            return;
        }
        // Each actor knows its own PR and branch and ignores hints about others: a mailbox
        // message per live session is cheaper than keeping an index in step with every PR.
        let hint = ScmHint {
            repo,
            pr: e.pr_number,
            branch: e.head_branch,
        };
        for a in self.sessions.values() {
            a.do_send(hint.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(branch: Option<&str>, issue: Option<&str>) -> NewSession {
        NewSession {
            project: "demo".into(),
            prefix: "demo".into(),
            agent: "a".into(),
            runtime: "process".into(),
            workspace_kind: "worktree".into(),
            branch: branch.map(Into::into),
            issue: issue.map(Into::into),
            prompt: None,
            skip_numbers: vec![],
            fixed_id: None,
            meta: serde_json::Value::Null,
            at: Utc::now(),
        }
    }

    #[test]
    fn branch_precedence_and_remote_collisions() {
        let heads: Vec<String> = ["feat/42", "feat/42-2", "session/demo-3", "main"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut explicit = new(Some("my/branch"), Some("42"));
        plan_branch(&mut explicit, &heads);
        assert_eq!(explicit.branch.as_deref(), Some("my/branch"));
        let mut issue = new(None, Some("42"));
        plan_branch(&mut issue, &heads);
        assert_eq!(issue.branch.as_deref(), Some("feat/42-3"));
        assert_eq!(issue.skip_numbers, vec![3]);
        let mut odd = new(None, Some("Fix the parser"));
        plan_branch(&mut odd, &heads);
        assert_eq!(odd.branch.as_deref(), Some("feat/fix-the-parser"));
        let mut none = new(None, None);
        plan_branch(&mut none, &heads);
        assert_eq!(none.branch, None, "session/{{id}} is chosen at launch");
    }
}
