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

mod cluster;
pub mod messages;
mod replay;
pub mod request;
pub mod spawn;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use chrono::Utc;

use self::cluster::forward_step;
pub use self::cluster::{AdoptSessions, ReleaseSessions};
use self::messages::*;
use self::request::InvalidField;
use self::spawn::{branch_free, bwrap_on_host, plan_branch, preflight_agent, with_warnings};
use crate::actors::cluster::bus::ClusterCommand;
use crate::actors::fleet::Fleet;
use crate::actors::session::messages::{
    Apply, GetSnapshot, Kill, MergeNow, Reconcile, Restore, ScmCheck, ScmHint, SendMessage,
    StepReport,
};
use crate::actors::session::{SessionActor, SessionError};
use crate::domain::machine::{self, Event, EventKind, Outcome};
use crate::domain::policy::Policy;
use crate::plugins::worktree::remote_heads;
use crate::plugins::PluginError;
use crate::store::{
    NewEvent, NewSession, SessionFilter, SessionId, SessionSnapshot, StoreError, TransitionCommit,
};
use crate::telemetry::METRICS;

pub use self::request::MAX_PROMPT_BYTES;

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
            SessionError::Unprocessable(reason) => FleetError::Invalid {
                field: "merge".into(),
                reason,
            },
            SessionError::NotLoaded => FleetError::Busy,
            SessionError::Store(s) => s.into(),
            SessionError::Plugin(PluginError::NotFound(m)) => FleetError::Conflict(m),
            SessionError::Plugin(p) => FleetError::Plugin(p),
        }
    }
}

impl From<InvalidField> for FleetError {
    fn from(e: InvalidField) -> Self {
        FleetError::Invalid {
            field: e.field.into(),
            reason: e.reason,
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

/// Tracker reads in flight at once for a batch spawn.
const BATCH_TRACKER_READS: usize = 8;

/// What a session takes from its tracker issue: the issue's own branch (unless one was asked
/// for) and the issue itself in its metadata (the prompt is built from it).
fn with_issue(new: &mut NewSession, issue: &crate::plugins::Issue) {
    if new.branch.is_none() {
        new.branch = issue.branch.clone();
    }
    if !new.meta.is_object() {
        new.meta = serde_json::json!({});
    }
    new.meta["issue"] = serde_json::to_value(issue).unwrap_or_default();
}

/// A spawn for a closed issue: refused (422) naming the issue.
fn closed(id: &str) -> FleetError {
    FleetError::Invalid {
        field: "issue".into(),
        reason: format!(
            "issue {id} is closed in the project's tracker; reopen it to start a session"
        ),
    }
}

fn ready<T: 'static>(r: Result<T, FleetError>) -> Reply<T> {
    Box::pin(fut::ready(r))
}

impl Handler<Spawn> for FleetSupervisor {
    type Result = Reply<SessionSnapshot>;
    fn handle(&mut self, msg: Spawn, _ctx: &mut Self::Context) -> Self::Result {
        let mut new = match self.resolve(msg.order) {
            Ok(n) => n,
            Err(e) => return ready(Err(e)),
        };
        let repo = self
            .fleet
            .project(&new.project)
            .map(|p| (p.repo.clone(), p.remote.clone()));
        let tracker = self.fleet.plugins.trackers.get(&new.project).cloned();
        let launch = self.agent_launch(&new.agent);
        let store = self.fleet.store.clone();
        // Counted as the host's load from now, so the next spawn's `host: auto` sees it.
        let placement = crate::plugins::hosts::host_of(&new.runtime)
            .and_then(|h| self.fleet.plugins.hosts.reserve(h));
        let sandbox_key = self.sandbox_key(&new.project, &new.agent);
        let hosts = self.fleet.plugins.hosts.clone();
        let plan = async move {
            // An agent that cannot start fails the spawn before anything is created.
            let warnings = preflight_agent(launch).await?;
            with_warnings(&mut new, &warnings);
            bwrap_on_host(&hosts, &new.runtime, sandbox_key.as_deref())
                .await
                .map_err(|reason| FleetError::Invalid {
                    field: "host".into(),
                    reason,
                })?;
            branch_free(&store, &new.project, new.branch.as_deref()).await?;
            // The issue is read before anything is created: an unknown issue or a tracker
            // outage fails the spawn cleanly.
            if let (Some(t), Some(id)) = (tracker, new.issue.clone()) {
                let issue = t.issue(&id).await.map_err(|e| match e {
                    PluginError::NotFound(_) => FleetError::Invalid {
                        field: "issue".into(),
                        reason: format!("issue {id} was not found in the project's tracker"),
                    },
                    // E.g. a pull request's number given for an issue.
                    PluginError::Invalid(reason) => FleetError::Invalid {
                        field: "issue".into(),
                        reason,
                    },
                    other => FleetError::Plugin(other),
                })?;
                if issue.closed {
                    return Err(closed(&id));
                }
                with_issue(&mut new, &issue);
            }
            if let Some((repo, remote)) = repo {
                let heads = remote_heads(&repo, &remote).await;
                plan_branch(&mut new, &heads);
            }
            if let Some(p) = placement {
                p.keep();
            }
            Ok((vec![new], ()))
        };
        Box::pin(self.create_and_start(plan).map(|res, _act, _ctx| {
            let (mut created, ()) = res?;
            created
                .pop()
                .ok_or_else(|| FleetError::Conflict("the session was not created".into()))
        }))
    }
}

impl Handler<BatchSpawn> for FleetSupervisor {
    type Result = Reply<(Vec<SessionSnapshot>, Vec<Skipped>)>;
    fn handle(&mut self, msg: BatchSpawn, _ctx: &mut Self::Context) -> Self::Result {
        let r = msg.order;
        // Resolved once: every session of the batch differs only by its issue.
        let template = match self.resolve(request::SpawnOrder {
            project: r.project.clone(),
            agent: r.agent.clone(),
            branch: None,
            issue: None,
            prompt: r.prompt.clone(),
            host: None,
        }) {
            Ok(n) => n,
            Err(e) => return ready(Err(e)),
        };
        let store = self.fleet.store.clone();
        let repo = self
            .fleet
            .project(&r.project)
            .map(|p| (p.repo.clone(), p.remote.clone()));
        let launch = self.agent_launch(&template.agent);
        let sandbox_key = self.sandbox_key(&template.project, &template.agent);
        let hosts = self.fleet.plugins.hosts.clone();
        let tracker = self.fleet.plugins.trackers.get(&r.project).cloned();
        // `host: auto`: the batch is spread over the hosts by load, not all on the host the
        // template was placed on.
        let spread = self
            .fleet
            .project(&r.project)
            .is_some_and(|p| p.host.as_deref() == Some(crate::plugins::hosts::AUTO))
            .then(|| self.fleet.plugins.hosts.clone());
        let plan = async move {
            let warnings = preflight_agent(launch).await?;
            let mut template = template;
            with_warnings(&mut template, &warnings);
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
            let (mut news, mut skipped) = (Vec::new(), Vec::new());
            for issue in r.issues {
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
                let mut new = template.clone();
                new.issue = Some(issue);
                new.at = Utc::now();
                news.push(new);
            }
            // Each session gets its issue as `spawn` gives it (title, body, branch), read
            // concurrently; an issue the tracker cannot give is skipped, not the batch.
            if let Some(t) = tracker {
                let reads = news.iter().map(|n| {
                    let t = t.clone();
                    let id = n.issue.clone().unwrap_or_default();
                    async move { t.issue(&id).await }
                });
                use futures::StreamExt as _;
                let issues = futures::stream::iter(reads)
                    .buffered(BATCH_TRACKER_READS)
                    .collect::<Vec<_>>()
                    .await;
                let mut kept = Vec::with_capacity(news.len());
                for (mut new, issue) in news.into_iter().zip(issues) {
                    match issue {
                        Ok(issue) if issue.closed => skipped.push(Skipped {
                            issue: new.issue.unwrap_or_default(),
                            reason: "closed in the tracker".into(),
                            session: None,
                        }),
                        Ok(issue) => {
                            with_issue(&mut new, &issue);
                            kept.push(new);
                        }
                        Err(e) => skipped.push(Skipped {
                            issue: new.issue.unwrap_or_default(),
                            reason: match e {
                                PluginError::NotFound(_) => "not found in the tracker".into(),
                                other => format!("tracker: {other}"),
                            },
                            session: None,
                        }),
                    }
                }
                news = kept;
            }
            for new in &mut news {
                plan_branch(new, &heads);
            }
            if let Some(hosts) = spread {
                let picks = hosts.place_many(news.len());
                let mut placed = Vec::with_capacity(news.len());
                for (mut new, pick) in news.into_iter().zip(picks) {
                    match pick {
                        Some(h) => {
                            new.runtime = crate::plugins::hosts::plugin_name(&h);
                            new.workspace_kind.clone_from(&new.runtime);
                            placed.push(new);
                        }
                        None => skipped.push(Skipped {
                            issue: new.issue.unwrap_or_default(),
                            reason: "every host is full or unreachable".into(),
                            session: None,
                        }),
                    }
                }
                news = placed;
            }
            // A sandboxed batch on hosts: those placed on a host without bubblewrap are
            // skipped (asked once per host).
            let mut refused: std::collections::HashMap<String, Result<(), String>> =
                std::collections::HashMap::new();
            let mut ready = Vec::with_capacity(news.len());
            for new in news {
                if !refused.contains_key(&new.runtime) {
                    let r = bwrap_on_host(&hosts, &new.runtime, sandbox_key.as_deref()).await;
                    refused.insert(new.runtime.clone(), r);
                }
                match refused.get(&new.runtime) {
                    Some(Err(reason)) => skipped.push(Skipped {
                        issue: new.issue.unwrap_or_default(),
                        reason: reason.clone(),
                        session: None,
                    }),
                    _ => ready.push(new),
                }
            }
            // What is placed on a host counts as its load until its pane starts.
            for new in &ready {
                let placed =
                    crate::plugins::hosts::host_of(&new.runtime).and_then(|h| hosts.reserve(h));
                if let Some(p) = placed {
                    p.keep();
                }
            }
            Ok((ready, skipped))
        };
        self.create_and_start(plan)
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
        let existing_id = id.clone();
        // Nothing to create when it exists: a live one is reused, an ended one restored.
        let plan = async move {
            match store.load_snapshot(&id).await {
                Ok(s) if s.session.state.is_terminal() => {
                    let r = me.send(RestoreSession { id }).await??;
                    return Ok((vec![], Some(r.session)));
                }
                Ok(s) => return Ok((vec![], Some(s))),
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let mut new = new;
            with_warnings(&mut new, &preflight_agent(launch).await?);
            Ok((vec![new], None))
        };
        let store = self.fleet.store.clone();
        Box::pin(self.create_and_start(plan).then(move |res, act, _ctx| {
            let answer = match res {
                Ok((_, Some(existing))) => Ok((existing, false)),
                Ok((mut created, None)) => created
                    .pop()
                    .map(|s| (s, true))
                    .ok_or_else(|| FleetError::Conflict("the orchestrator was not created".into())),
                Err(e) => Err(e),
            };
            async move {
                match answer {
                    // A concurrent `start` won the race: attach to its orchestrator.
                    Err(FleetError::Store(StoreError::Conflict(_))) => {
                        Ok((store.load_snapshot(&existing_id).await?, false))
                    }
                    other => other,
                }
            }
            .into_actor(act)
        }))
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
