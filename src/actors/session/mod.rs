//! `SessionActor`: one per live session, a thin shell around the pure machine.
//!
//! Every change goes: event → [`machine::step`] → persist snapshot + event row in one
//! transaction (through the journal) → only then run the effects. Handlers that change state
//! return `AtomicResponse`, so the mailbox waits for the commit and no event is ever stepped
//! from a stale snapshot.
//!
//! Restarts: `started()` runs on the first start and after every restart (actix throws away
//! all timers then), so it reloads the snapshot from the store inside `ctx.wait` and re-arms
//! timers from their stored deadlines. A handler that cannot go on (the store failed) calls
//! `ctx.stop()`; the actix `Supervisor` restarts the actor, which reloads what was committed.
//! A session that ends tells the supervisor, which drops the last address so the actor stops
//! for good.
//!
//! Its parts: `observe` looks at the agent (log, screen, spend) and turns what changed into
//! events; `effects` runs what a committed step asks for; `send` takes a human's message;
//! `deliver` types instructions exactly once; `launch` starts and restarts the agent; `scm` reads
//! and merges its PR; `writeback` writes to its tracker issue; `settle` paces its looks.

pub mod deliver;
mod effects;
pub mod launch;
pub mod messages;
mod observe;
mod sandboxed;
mod scm;
mod send;
mod settle;
mod writeback;

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use tracing::Instrument;

pub use self::effects::cleanup_workspace;
use self::effects::run_effect;
use self::messages::*;
use self::observe::{exit_output, final_usage, observe};
use crate::actors::fleet::Fleet;
use crate::actors::supervisor::messages::SessionEnded;
use crate::actors::watch::OutputChanged;
use crate::domain::keys::TimerKey;
use crate::domain::machine::{self, Effect, Event, EventKind, Outcome};
use crate::domain::policy::Policy;
use crate::plugins::{PluginError, RuntimeHandle};
use crate::store::{
    InstructionKind, NewEvent, NewInstruction, SessionId, SessionSnapshot, SessionState,
    StoreError, TransitionCommit,
};
use crate::telemetry::METRICS;

/// What went wrong handling a session request.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The request is not allowed in the session's state (HTTP 409).
    #[error("{0}")]
    Rejected(String),
    /// The outside system refused the request as unprocessable (GitHub's 422 on a merge):
    /// HTTP 422 on `merge`.
    #[error("{0}")]
    Unprocessable(String),
    /// The actor has not loaded its state (it is restarting).
    #[error("session is restarting; try again")]
    NotLoaded,
    /// The store failed; the actor restarts and reloads.
    #[error("store error")]
    Store(#[from] StoreError),
    /// A plugin failed.
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// The actor of one live session.
pub struct SessionActor {
    id: SessionId,
    fleet: Arc<Fleet>,
    supervisor: Recipient<SessionEnded>,
    /// Last committed state; `None` until `started()` has loaded it.
    snapshot: Option<SessionSnapshot>,
    policy: Arc<Policy>,
    /// Armed timers by kind, with the deadline they were armed for.
    timers: HashMap<String, (DateTime<Utc>, SpawnHandle)>,
    /// The future waiting for the agent to exit.
    watcher: Option<SpawnHandle>,
    /// When a reconcile first found the runtime gone while `watcher` still ran (see
    /// [`EXIT_GRACE`]).
    gone_since: Option<DateTime<Utc>>,
    /// Restarts after errors so far; past `fleet.max_restarts` the session is errored.
    restarts: u32,
    /// The output log registered with the fleet's output watch.
    watched_log: Option<std::path::PathBuf>,
    /// A probe is scheduled (output changes within the debounce window share it).
    probe_pending: bool,
    /// The next look at an active agent that went quiet (see [`settle`]).
    settle: settle::Settle,
    /// An SCM check is running; checks asked for meanwhile fold into one more afterwards.
    scm: scm::CheckState,
    /// Another node owns the session now: this actor drives nothing, even after a restart.
    released: bool,
    /// Held while typing into the agent: instructions never share its input line.
    input: deliver::InputLock,
    /// The time of the hook report whose dialog a look has seen drawn on the screen (see
    /// [`observe`]): from then on the screen can end that wait.
    drawn: Option<DateTime<Utc>>,
    span: tracing::Span,
}

impl SessionActor {
    /// An actor for session `id` of a project with `policy`.
    pub fn new(
        id: SessionId,
        fleet: Arc<Fleet>,
        policy: Arc<Policy>,
        supervisor: Recipient<SessionEnded>,
    ) -> Self {
        let span = tracing::info_span!("session", session_id = %id, state = tracing::field::Empty);
        SessionActor {
            id,
            fleet,
            supervisor,
            snapshot: None,
            policy,
            timers: HashMap::new(),
            watcher: None,
            gone_since: None,
            restarts: 0,
            watched_log: None,
            probe_pending: false,
            settle: settle::Settle::default(),
            scm: scm::CheckState::default(),
            released: false,
            input: deliver::InputLock::default(),
            drawn: None,
            span,
        }
    }

    /// Stops driving the session for good: another node (or a newer actor) drives it now.
    /// Timers and the exit watch end and the supervisor forgets this actor, so it can never
    /// step the session a second time beside its successor.
    fn relinquish(&mut self, ctx: &mut Context<Self>) {
        if self.released {
            return;
        }
        self.released = true;
        self.snapshot = None;
        for (_, (_, h)) in self.timers.drain() {
            ctx.cancel_future(h);
        }
        if let Some(w) = self.watcher.take() {
            ctx.cancel_future(w);
        }
        if let Some(h) = self.settle.handle.take() {
            ctx.cancel_future(h);
        }
        self.unwatch_output();
        self.supervisor.do_send(SessionEnded {
            id: self.id.clone(),
            project: String::new(),
            actor: ctx.address(),
            lease_lost: true,
        });
        ctx.stop();
    }

    /// Runs after the snapshot is loaded: re-arms timers, re-attaches to the runtime, or
    /// continues an interrupted spawn.
    fn resume(&mut self, ctx: &mut Context<Self>) {
        let Some(s) = self.snapshot.clone() else {
            return;
        };
        self.span.record("state", s.session.state.as_str());
        // A write-back a restart interrupted before it was claimed is done now.
        self.write_back(None, &s);
        if s.session.state.is_terminal() {
            self.end(ctx);
            return;
        }
        if self.restarts > self.fleet.max_restarts {
            let reason = format!("actor restarted {} times", self.restarts);
            ctx.notify(Apply {
                event: EventKind::ActorGaveUp { reason },
            });
            return;
        }
        self.sync_timers(ctx);
        if let Some(p) = machine::pending_restart(&s) {
            // Flotilla stopped while restarting the agent for instructions.
            self.recover_restart(ctx, &s, p);
            return;
        }
        match (&s.session.runtime_handle, s.session.state) {
            (None, SessionState::Spawning) => {
                if s.has_timer(TimerKey::Spawn) {
                    // A spawn that was under way (or a restore): adopt the agent it started,
                    // or start the runtime again.
                    let resume = s.session.reason.as_deref() == Some("restored");
                    self.adopt_or_start(ctx, &s, resume);
                } else {
                    ctx.notify(Apply {
                        event: EventKind::SpawnRequested,
                    });
                }
            }
            (Some(h), _) => {
                self.watch(ctx, h.clone());
                // Instructions a crash interrupted are finished before any new one is typed:
                // the lock is taken now, before any message is handled.
                self.deliver_open();
                // An adopted sandboxed agent needs its egress proxy again.
                let fleet = self.fleet.clone();
                let id = self.id.to_string();
                let runtime = s.session.runtime.clone();
                actix::spawn(async move {
                    if let Err(e) = sandboxed::readopt(&fleet, &id, &runtime).await {
                        tracing::warn!(session = %id, error = %e, "restarting the sandbox proxy failed");
                    }
                });
            }
            (None, _) => {}
        }
    }

    /// Continues a spawn that a crash interrupted: an agent the runtime started for this
    /// session since the launch intent is adopted (nothing is started twice); without one, the
    /// runtime is started.
    fn adopt_or_start(&mut self, ctx: &mut Context<Self>, s: &SessionSnapshot, resume: bool) {
        let Ok(rt) = self.fleet.plugins.runtime(&s.session.runtime) else {
            self.run_effects(ctx, vec![Effect::StartRuntime { resume }]);
            return;
        };
        let since = machine::launch_intent(s).unwrap_or(s.session.updated_at);
        let (workspace, branch) = launch::place(&self.fleet, &s.session);
        let id = self.id.to_string();
        let fut = async move { rt.find(&id, since).await }
            .into_actor(self)
            .map(move |found, act, ctx| match found {
                Ok(Some(handle)) => {
                    tracing::info!(parent: &act.span, "adopting the agent started before the crash");
                    ctx.notify(Apply {
                        event: EventKind::RuntimeStarted {
                            handle: handle.to_json(),
                            workspace: Some(workspace.to_string_lossy().into_owned()),
                            branch: Some(branch),
                        },
                    });
                }
                Ok(None) => act.run_effects(ctx, vec![Effect::StartRuntime { resume }]),
                Err(e) => ctx.notify(Apply {
                    // Not knowing whether it started, it is not started again.
                    event: EventKind::SpawnFailed {
                        reason: format!("could not tell whether the agent started: {e}"),
                    },
                }),
            });
        ctx.spawn(fut);
    }

    /// Delivers the session's open instructions (those a crash interrupted, or queued while the
    /// agent changed) on a detached task holding the input lock, taken here so that nothing
    /// typed later can come first.
    fn deliver_open(&mut self) {
        let Some(s) = self.snapshot.clone() else {
            return;
        };
        let Ok(guard) = self.input.clone().try_lock_owned() else {
            // A delivery runs: it reads the open instructions when it gets to them.
            let (fleet, lock) = (self.fleet.clone(), self.input.clone());
            tokio::spawn(
                async move {
                    let _g = lock.lock().await;
                    if let Err(e) = deliver::deliver_open(&fleet, &s.session, None).await {
                        tracing::warn!(error = ?e, "delivering open instructions failed");
                    }
                }
                .instrument(self.span.clone()),
            );
            return;
        };
        let fleet = self.fleet.clone();
        tokio::spawn(
            async move {
                let _g = guard;
                if let Err(e) = deliver::deliver_open(&fleet, &s.session, None).await {
                    tracing::warn!(error = ?e, "delivering open instructions failed");
                }
            }
            .instrument(self.span.clone()),
        );
    }

    /// Finishes a restart for instructions that a crash interrupted: a runtime started since
    /// the decision is that restart (adopted, nothing launched or delivered twice); without
    /// one, the restart runs again.
    fn recover_restart(
        &mut self,
        ctx: &mut Context<Self>,
        s: &SessionSnapshot,
        p: machine::PendingRestart,
    ) {
        let (Ok(rt), Ok(agent)) = (
            self.fleet.plugins.runtime(&s.session.runtime),
            self.fleet.plugins.agent(&s.session.agent),
        ) else {
            self.run_effects(ctx, vec![Effect::RestartAgent { due: p.launch }]);
            return;
        };
        let id = self.id.to_string();
        let fut = async move { rt.find(&id, p.at).await }
            .into_actor(self)
            .map(move |found, act, ctx| match found {
                Ok(Some(handle)) => {
                    tracing::info!(parent: &act.span, "adopting the agent restarted before the crash");
                    ctx.notify(Apply {
                        event: EventKind::AgentRestarted {
                            handle: handle.to_json(),
                            prompted: launch::restart_message(agent.as_ref(), &p.launch)
                                .is_some(),
                        },
                    });
                }
                Ok(None) => act.run_effects(ctx, vec![Effect::RestartAgent { due: p.launch }]),
                Err(e) => {
                    // Not knowing whether it started, it is not started again (nothing twice).
                    ctx.notify(Apply {
                        event: EventKind::RestartFailed {
                            reason: format!("could not tell whether the agent restarted: {e}"),
                        },
                    });
                }
            });
        ctx.spawn(fut);
    }

    /// Tells the supervisor the session ended; it drops the last address and the actor stops.
    fn end(&mut self, ctx: &mut Context<Self>) {
        self.watcher = None;
        self.unwatch_output();
        self.fleet.sandbox.stop(self.id.as_str());
        self.supervisor.do_send(SessionEnded {
            id: self.id.clone(),
            actor: ctx.address(),
            lease_lost: false,
            project: self
                .snapshot
                .as_ref()
                .map(|s| s.session.project.clone())
                .unwrap_or_default(),
        });
    }

    /// Watches the runtime for the agent's exit, without polling.
    fn watch(&mut self, ctx: &mut Context<Self>, handle: RuntimeHandle) {
        if let Some(w) = self.watcher.take() {
            ctx.cancel_future(w);
        }
        // Output changes wake the activity probe; both runtimes keep a `log` file.
        self.unwatch_output();
        let typed = handle.clone();
        if let Some(log) = typed.log().map(std::path::Path::to_path_buf) {
            self.fleet
                .output_watch
                .watch(&log, ctx.address().recipient());
            self.watched_log = Some(log);
            // What the agent wrote before the watch existed (a fast agent asks its question
            // while the start is being recorded; an adopted one) raises no change: look once.
            if !self.probe_pending {
                self.probe_pending = true;
                ctx.run_later(PROBE_DEBOUNCE, |act, ctx| act.probe(ctx));
            }
        }
        let addr = ctx.address();
        let Ok(runtime) = self.fleet.plugins.runtime(
            &self
                .snapshot
                .as_ref()
                .map(|s| s.session.runtime.clone())
                .unwrap_or_default(),
        ) else {
            return;
        };
        // The agent's own cost figure may only be written as it exits (Claude Code's
        // cost-state): read its usage once more then.
        let snapshot = self.snapshot.clone();
        let fleet = self.fleet.clone();
        let fut = async move {
            // wait_exit answers at once (with the status when it is ours) if already gone.
            let code = runtime.wait_exit(&typed).await.unwrap_or(None);
            if let Some(s) = &snapshot {
                if let Some(event) = final_usage(&fleet, s).await {
                    let _ = addr.send(Apply { event }).await;
                }
            }
            // A failed agent's last words name the cause ("not logged in", "ENOTFOUND"); an
            // agent that recognizes them (Claude's first-run set-up) says it in words, last.
            // One that exited 0 may have failed all the same (aider, after the model API
            // refused it): its agent reads its last words for that. Other clean exits take no
            // capture (one that finds the screen empty tries for a second).
            let agent = snapshot
                .as_ref()
                .and_then(|s| fleet.plugins.agent(&s.session.agent).ok());
            let reads = code != Some(0) || agent.as_ref().is_some_and(|a| a.reads_clean_exit());
            let output = match reads {
                true => exit_output(runtime.as_ref(), &typed).await,
                false => None,
            };
            let (output, failure) = match code {
                Some(0) => {
                    let failure = agent
                        .as_ref()
                        .zip(output.as_deref())
                        .and_then(|(a, o)| a.failed_run(o));
                    (output.filter(|_| failure.is_some()), failure)
                }
                _ => {
                    let cause = agent
                        .as_ref()
                        .zip(output.as_deref())
                        .and_then(|(a, o)| a.exit_cause(o));
                    let output = match (output, cause) {
                        (Some(o), Some(c)) => Some(format!("{o}\n{c}")),
                        (o, _) => o,
                    };
                    (output, None)
                }
            };
            (handle, code, output, failure)
        }
        .into_actor(self)
        .map(|(handle, code, output, failure), _act, ctx| {
            ctx.notify(RuntimeEnded {
                handle,
                code,
                output,
                failure,
            });
        });
        self.watcher = Some(ctx.spawn(fut));
        self.gone_since = None;
    }

    /// Arms actix timers for the snapshot's timers and cancels those no longer there.
    fn sync_timers(&mut self, ctx: &mut Context<Self>) {
        let wanted = self
            .snapshot
            .as_ref()
            .map(|s| s.timers.clone())
            .unwrap_or_default();
        let stale: Vec<String> = self
            .timers
            .iter()
            .filter(|(k, (d, _))| wanted.get(*k).map(|t| t.deadline) != Some(*d))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some((_, h)) = self.timers.remove(&k) {
                ctx.cancel_future(h);
            }
        }
        for (kind, t) in wanted {
            if self.timers.contains_key(&kind) {
                continue;
            }
            // On the fleet's clock; a deadline that passed while Flotilla was down fires at once.
            let k = kind.clone();
            let due = self.fleet.clock.sleep_until(t.deadline).into_actor(self);
            let h = ctx.spawn(due.map(move |(), act, ctx| {
                act.timers.remove(&k);
                act.fire_timer(ctx, k);
            }));
            self.timers.insert(kind, (t.deadline, h));
        }
    }

    /// A timer fired. Activity timers first ask the runtime when the agent last wrote output
    /// (a file stat, no subprocess), so the machine decides on fresh evidence.
    fn fire_timer(&mut self, ctx: &mut Context<Self>, kind: String) {
        let probe = matches!(kind.parse(), Ok(TimerKey::Stuck | TimerKey::Idle));
        let Some(s) = self.snapshot.clone() else {
            return;
        };
        let addr = ctx.address();
        let fleet = self.fleet.clone();
        let drawn = self.drawn;
        let fut = async move {
            let mut seen = None;
            if probe {
                let look = observe(&fleet, &s, false, drawn).await;
                seen = look.drawn;
                for event in look.events {
                    let _ = addr.send(Apply { event }).await;
                }
            }
            let _ = addr
                .send(Apply {
                    event: EventKind::TimerFired { kind },
                })
                .await;
            seen
        }
        .instrument(self.span.clone());
        ctx.spawn(fut.into_actor(self).map(|seen, act, _| act.saw_drawn(seen)));
    }

    /// Looks at the agent now (its log, its screen, its spend) and applies what changed.
    fn probe(&mut self, ctx: &mut Context<Self>) {
        self.look(ctx, false);
    }

    /// [`Self::probe`]; `moved_on` as in [`observe`].
    fn look(&mut self, ctx: &mut Context<Self>, moved_on: bool) {
        self.probe_pending = false;
        if let Some(h) = self.settle.handle.take() {
            ctx.cancel_future(h);
        }
        let Some(s) = self.snapshot.clone() else {
            return;
        };
        if s.session.state.is_terminal() {
            return;
        }
        let addr = ctx.address();
        let fleet = self.fleet.clone();
        let drawn = self.drawn;
        let fut = async move {
            let basis = (s.session.activity, s.session.activity_at);
            let look = observe(&fleet, &s, moved_on, drawn).await;
            for event in look.events {
                let _ = match event {
                    EventKind::AgentActive
                    | EventKind::AgentIdle { .. }
                    | EventKind::AgentWaitingInput { .. } => {
                        addr.send(Observed { event, basis }).await
                    }
                    event => addr.send(Apply { event }).await,
                };
            }
            look.drawn
        }
        .instrument(self.span.clone());
        ctx.spawn(fut.into_actor(self).map(|seen, act, ctx| {
            act.saw_drawn(seen);
            act.settle_later(ctx)
        }));
    }

    /// A look saw the dialog of the hook report made at `seen` drawn on the screen.
    fn saw_drawn(&mut self, seen: Option<DateTime<Utc>>) {
        if seen.is_some() {
            self.drawn = seen;
        }
    }

    /// A probe after the debounce, unless one is already due.
    fn probe_soon(&mut self, ctx: &mut Context<Self>) {
        if !self.probe_pending {
            self.probe_pending = true;
            ctx.run_later(PROBE_DEBOUNCE, |act, ctx| act.probe(ctx));
        }
    }

    /// After a probe: another look later while the session is recorded active (its log may
    /// lag its screen, see [`settle`]), unless output already woke a probe.
    fn settle_later(&mut self, ctx: &mut Context<Self>) {
        let active = self.snapshot.as_ref().is_some_and(|s| {
            !s.session.state.is_terminal() && s.session.activity == crate::store::Activity::Active
        });
        let Some(delay) = self.settle.after_probe(active) else {
            return;
        };
        if self.probe_pending || self.released {
            return;
        }
        if let Some(h) = self.settle.handle.take() {
            ctx.cancel_future(h);
        }
        self.settle.handle = Some(ctx.run_later(delay, |act, ctx| {
            act.settle.handle = None;
            if !act.probe_pending {
                act.probe(ctx);
            }
        }));
    }

    fn unwatch_output(&mut self) {
        if let Some(p) = self.watched_log.take() {
            self.fleet.output_watch.unwatch(&p);
        }
    }

    /// Steps the machine, persists, then runs effects. See the module docs.
    fn apply(
        &mut self,
        kind: EventKind,
    ) -> ResponseActFuture<Self, Result<StepReport, SessionError>> {
        let Some(snap) = self.snapshot.clone() else {
            return Box::pin(fut::ready(Err(SessionError::NotLoaded)));
        };
        let event = Event {
            at: machine::micros(self.fleet.clock.now()),
            kind,
        };
        let step = machine::step(&snap, &event, &self.policy);
        match step.outcome {
            Outcome::Noop(m) => {
                tracing::debug!(parent: &self.span, event = event.kind.name(), reason = %m, "event changed nothing");
                return Box::pin(fut::ready(Ok(StepReport {
                    session: snap,
                    changed: false,
                    message: Some(m),
                })));
            }
            Outcome::Rejected(m) => return Box::pin(fut::ready(Err(SessionError::Rejected(m)))),
            Outcome::Applied => {}
        }
        let from = snap.session.state;
        // The step's notifications go into the outbox in the step's own transaction.
        let notifications = self.fleet.notifications.route_step(
            &step.snapshot.session,
            event.kind.name(),
            &step.effects,
            event.at,
        );
        let notify = !notifications.is_empty();
        // A reaction's message is stored in the step's own transaction, before it is typed.
        let instructions = step
            .effects
            .iter()
            .filter_map(|e| match e {
                Effect::SendToAgent {
                    reaction,
                    message,
                    given_at_launch: false,
                } => Some(NewInstruction {
                    session_id: self.id.clone(),
                    kind: InstructionKind::Reaction,
                    reaction: Some(reaction.as_str().to_string()),
                    body: message.clone(),
                    at: event.at,
                }),
                _ => None,
            })
            .collect();
        let commit = TransitionCommit {
            snapshot: step.snapshot.clone(),
            event: NewEvent {
                session_id: Some(self.id.clone()),
                kind: event.kind.name().to_string(),
                data: step.event_data(from, &event),
                at: event.at,
            },
            notifications,
            instructions,
        };
        let journal = self.fleet.journal.clone();
        let span = self.span.clone();
        Box::pin(
            async move { journal.commit(&commit).await }
                .instrument(span)
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(_) => {
                        if notify {
                            act.fleet.notifications.wake();
                        }
                        act.after_commit(ctx, &snap, step.snapshot.clone(), step.effects);
                        Ok(StepReport {
                            session: step.snapshot,
                            changed: true,
                            message: None,
                        })
                    }
                    Err(e @ StoreError::Fenced { .. }) => {
                        tracing::warn!(parent: &act.span, error = ?e, "another node owns the session now; letting go");
                        act.relinquish(ctx);
                        Err(SessionError::Store(e))
                    }
                    Err(e) => {
                        tracing::error!(parent: &act.span, error = ?e, "persisting a step failed; restarting to reload");
                        ctx.stop();
                        Err(SessionError::Store(e))
                    }
                }),
        )
    }

    fn after_commit(
        &mut self,
        ctx: &mut Context<Self>,
        old: &SessionSnapshot,
        new: SessionSnapshot,
        effects: Vec<Effect>,
    ) {
        let (from, to) = (old.session.state, new.session.state);
        for e in &effects {
            match e {
                Effect::SendToAgent { reaction, .. } => METRICS.reaction(reaction.as_str(), "send"),
                Effect::Notify {
                    reaction: Some(reaction),
                    escalation,
                    ..
                } => {
                    if *escalation {
                        METRICS.reaction(reaction.as_str(), "escalate");
                        METRICS.escalation(reaction.as_str());
                    } else {
                        METRICS.reaction(reaction.as_str(), "notify");
                    }
                }
                _ => {}
            }
        }
        if from != to {
            METRICS.transition(from, to);
            self.span.record("state", to.as_str());
            tracing::info!(parent: &self.span, %from, %to, reason = ?new.session.reason, "session transition");
        }
        record_usage(old, &new);
        self.write_back(Some(old), &new);
        let handle_changed = new.session.runtime_handle != old.session.runtime_handle;
        let new_handle = new.session.runtime_handle.clone();
        self.snapshot = Some(new);
        self.sync_timers(ctx);
        if effects.iter().any(|e| matches!(e, Effect::DestroyRuntime)) || to.is_terminal() {
            if let Some(w) = self.watcher.take() {
                ctx.cancel_future(w);
            }
        }
        if handle_changed && !to.is_terminal() {
            if let Some(h) = new_handle {
                self.watch(ctx, h);
                self.deliver_open();
            }
        }
        if effects.contains(&Effect::CheckPr) {
            self.scm_check(ctx, None);
        }
        self.run_effects(ctx, effects);
        if to.is_terminal() {
            self.end(ctx);
        }
    }

    /// Tells the session's tracker issue about its PR when `new` opened or merged it (a task
    /// of its own: a slow tracker never holds the session up).
    fn write_back(&self, old: Option<&SessionSnapshot>, new: &SessionSnapshot) {
        let stages = writeback::due(old, new);
        if stages.is_empty() {
            return;
        }
        let fut = writeback::run(self.fleet.clone(), new.clone(), stages);
        tokio::spawn(fut.instrument(self.span.clone()));
    }

    /// Runs a step's effects in order on a detached task: they must complete even if the actor
    /// stops meanwhile (a killed session still has its runtime destroyed). Results come back
    /// as events through a weak address.
    fn run_effects(&mut self, ctx: &mut Context<Self>, effects: Vec<Effect>) {
        if effects.is_empty() {
            return;
        }
        let Some(s) = self.snapshot.clone() else {
            return;
        };
        let fleet = self.fleet.clone();
        let addr = ctx.address().downgrade();
        let id = self.id.clone();
        let ordered = effects.iter().any(Effect::is_lifecycle);
        let order = fleet.clone();
        let input = self.input.clone();
        let fut = async move {
            for effect in effects {
                let follow = run_effect(&fleet, &s, effect, &input).await;
                if let (Some(event), Some(a)) = (follow, addr.upgrade()) {
                    let _ = a.send(Apply { event }).await;
                }
            }
        }
        .instrument(tracing::info_span!("effects", session_id = %id));
        if ordered {
            order.lifecycle_order.run_after_previous(id.as_str(), fut);
        } else {
            tokio::spawn(fut);
        }
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        METRICS.session_actors.inc();
        // A restart dropped every context item: forget the old handles.
        self.timers.clear();
        self.watcher = None;
        if self.released {
            // Restarted only because an address was still held somewhere: stay idle (every
            // message is answered `NotLoaded`) until the last one is dropped.
            return;
        }
        let store = self.fleet.store.clone();
        let id = self.id.clone();
        ctx.wait(
            async move { store.load_snapshot(&id).await }
                .into_actor(self)
                .map(|res, act, ctx| match res {
                    Ok(s) => {
                        act.snapshot = Some(s);
                        act.resume(ctx);
                    }
                    Err(StoreError::NotFound { .. }) => {
                        tracing::error!(parent: &act.span, "session vanished from the store");
                        act.end(ctx);
                    }
                    Err(e) => {
                        tracing::error!(parent: &act.span, error = ?e, "loading the session failed");
                        if act.restarts > act.fleet.max_restarts {
                            act.end(ctx);
                        } else {
                            ctx.stop();
                        }
                    }
                }),
        );
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        METRICS.session_actors.dec();
        self.unwatch_output();
    }
}

impl Supervised for SessionActor {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.restarts += 1;
        self.snapshot = None;
        METRICS.actor_restarts.inc();
        tracing::warn!(parent: &self.span, restarts = self.restarts, "session actor restarting");
    }
}

impl Handler<Relinquish> for SessionActor {
    type Result = ();
    fn handle(&mut self, _msg: Relinquish, ctx: &mut Self::Context) {
        self.relinquish(ctx);
    }
}

impl Handler<Apply> for SessionActor {
    type Result = AtomicResponse<Self, Result<StepReport, SessionError>>;
    fn handle(&mut self, msg: Apply, _ctx: &mut Self::Context) -> Self::Result {
        AtomicResponse::new(self.apply(msg.event))
    }
}

/// An answer found the agent asking another question than the one recorded: look at it now,
/// and take the question on screen as the one that waits.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct QuestionMoved;

impl Handler<QuestionMoved> for SessionActor {
    type Result = ();
    fn handle(&mut self, _msg: QuestionMoved, ctx: &mut Self::Context) {
        self.look(ctx, true);
    }
}

/// What a probe made of the agent's activity, judged against the session's activity as it was
/// when the probe began (`basis`: activity and since when).
#[derive(Debug, Message)]
#[rtype(result = "Result<StepReport, SessionError>")]
struct Observed {
    event: EventKind,
    basis: (crate::store::Activity, Option<DateTime<Utc>>),
}

impl Handler<Observed> for SessionActor {
    type Result = AtomicResponse<Self, Result<StepReport, SessionError>>;
    /// Applied only while the session's activity is still the one the probe judged against.
    /// A probe takes a moment (tmux, the log); meanwhile a hook may report the next dialog or
    /// a human answer: the log moving on past the wait the probe saw is no evidence against
    /// the wait that began since (acting on it ended a fresh wait, and a failed check's
    /// instruction was then typed onto the dialog being drawn). Such a reading is dropped and
    /// the agent looked at again.
    fn handle(&mut self, msg: Observed, ctx: &mut Self::Context) -> Self::Result {
        let Some(snap) = self.snapshot.clone() else {
            return AtomicResponse::new(Box::pin(fut::ready(Err(SessionError::NotLoaded))));
        };
        if (snap.session.activity, snap.session.activity_at) != msg.basis {
            self.probe_soon(ctx);
            return AtomicResponse::new(Box::pin(fut::ready(Ok(StepReport {
                session: snap,
                changed: false,
                message: Some("the activity changed while the probe looked".into()),
            }))));
        }
        AtomicResponse::new(self.apply(msg.event))
    }
}

/// Longest a kill waits to read the agent's usage one last time.
const FINAL_USAGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

impl Handler<Kill> for SessionActor {
    type Result = AtomicResponse<Self, Result<StepReport, SessionError>>;
    /// Reads the agent's usage once more before the kill (a killed session stops watching
    /// and keeps the cost it had at that moment), then kills.
    fn handle(&mut self, msg: Kill, _ctx: &mut Self::Context) -> Self::Result {
        let fleet = self.fleet.clone();
        let snapshot = self.snapshot.clone();
        let read = async move {
            let s = snapshot.filter(|s| !s.session.state.is_terminal())?;
            tokio::time::timeout(FINAL_USAGE_TIMEOUT, final_usage(&fleet, &s))
                .await
                .ok()
                .flatten()
        };
        let reason = msg.reason;
        AtomicResponse::new(Box::pin(read.into_actor(self).then(
            move |usage, act, _ctx| -> ResponseActFuture<Self, Result<StepReport, SessionError>> {
                let kill = EventKind::KillRequested { reason };
                match usage {
                    Some(event) => {
                        Box::pin(act.apply(event).then(move |_, act, _ctx| act.apply(kill)))
                    }
                    None => act.apply(kill),
                }
            },
        )))
    }
}

impl Handler<Restore> for SessionActor {
    type Result = AtomicResponse<Self, Result<StepReport, SessionError>>;
    fn handle(&mut self, _msg: Restore, _ctx: &mut Self::Context) -> Self::Result {
        AtomicResponse::new(self.apply(EventKind::RestoreRequested))
    }
}

impl Handler<GetSnapshot> for SessionActor {
    type Result = Result<SessionSnapshot, SessionError>;
    fn handle(&mut self, _msg: GetSnapshot, _ctx: &mut Self::Context) -> Self::Result {
        self.snapshot.clone().ok_or(SessionError::NotLoaded)
    }
}

impl Handler<RuntimeEnded> for SessionActor {
    type Result = ();
    fn handle(&mut self, msg: RuntimeEnded, ctx: &mut Self::Context) {
        let current = self
            .snapshot
            .as_ref()
            .and_then(|s| s.session.runtime_handle.clone());
        if current.as_ref() != Some(&msg.handle) {
            return; // an old runtime, replaced by a restore
        }
        self.watcher = None;
        ctx.notify(Apply {
            event: EventKind::AgentExited {
                code: msg.code,
                output: msg.output,
                failure: msg.failure,
            },
        });
    }
}

/// Adds the spend a step recorded to the per-project counters (deltas of cumulative usage).
fn record_usage(old: &SessionSnapshot, new: &SessionSnapshot) {
    let get = |s: &SessionSnapshot| -> machine::Usage {
        serde_json::from_value(s.session.meta["usage"].clone()).unwrap_or_default()
    };
    let (a, b) = (get(old), get(new));
    let tokens = |u: &machine::Usage| u.input_tokens + u.output_tokens + u.cache_tokens;
    let project = new.session.project.as_str();
    if let Some(d) = tokens(&b).checked_sub(tokens(&a)).filter(|d| *d > 0) {
        METRICS.agent_tokens.with_label_values(&[project]).inc_by(d);
    }
    let cost = b.cost_usd.unwrap_or(0.0) - a.cost_usd.unwrap_or(0.0);
    if cost > 0.0 {
        METRICS
            .agent_cost
            .with_label_values(&[project])
            .inc_by(cost);
    }
}

/// How long a reconcile that finds the runtime gone leaves the exit watcher to report it (with
/// its status) before it ends the session without one (a watcher that never reports).
const EXIT_GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// How long output changes are coalesced before the agent is looked at.
const PROBE_DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(500);

impl Handler<OutputChanged> for SessionActor {
    type Result = ();
    fn handle(&mut self, _msg: OutputChanged, ctx: &mut Self::Context) {
        self.settle.output_changed();
        self.probe_soon(ctx);
    }
}

impl Handler<Reconcile> for SessionActor {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, _msg: Reconcile, _ctx: &mut Self::Context) -> Self::Result {
        let Some(s) = &self.snapshot else {
            return Box::pin(fut::ready(()));
        };
        let (Some(h), Ok(rt)) = (
            s.session.runtime_handle.clone(),
            self.fleet.plugins.runtime(&s.session.runtime),
        ) else {
            return Box::pin(fut::ready(()));
        };
        if s.session.activity == crate::store::Activity::Exited {
            return Box::pin(fut::ready(()));
        }
        Box::pin(
            async move { (rt.is_alive(&h).await, h) }
                .into_actor(self)
                .map(|(alive, h), act, ctx| {
                    if !matches!(alive, Ok(false)) {
                        act.gone_since = None;
                        return;
                    }
                    // The exit watcher reads the status after the process is gone (tmux
                    // records a killed pane's a moment later; a host's comes over ssh): ending
                    // the session now would report a known exit as a lost runtime.
                    let now = act.fleet.clock.now();
                    let since = *act.gone_since.get_or_insert(now);
                    if act.watcher.is_some() && now - since < EXIT_GRACE {
                        return;
                    }
                    ctx.notify(RuntimeEnded {
                        handle: h,
                        code: None,
                        output: None,
                        failure: None,
                    });
                }),
        )
    }
}
