//! Issue intake: an issue handed to Flotilla (a labelled or assigned tracker issue, see
//! [`crate::plugins::trackers::intake`]) starts one session, at most once per issue.
//!
//! [`start_once`] records the issue (`webhook_deliveries`, platform `<tracker>-intake`)
//! before asking the supervisor to spawn, so a label removed and added again, a redelivered
//! webhook or the next poll finds it taken and starts nothing. A spawn the supervisor refuses
//! (a closed issue, an agent that cannot start) stays taken: a human decides, the issue is not
//! retried on every update. [`IntakePoller`] lists the labelled open issues of each GitHub
//! project every `github.poll_interval` (the safety net under `issues` webhooks).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use tracing::Instrument;

use crate::actors::supervisor::messages::Spawn;
use crate::actors::supervisor::request::SpawnOrder;
use crate::actors::supervisor::FleetSupervisor;
use crate::plugins::Tracker;
use crate::read::{ReadError, ReadModel};
use crate::store::{SessionId, WebhookDelivery};

/// What intake did with an issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeOutcome {
    /// A session started for it.
    Started(SessionId),
    /// It was taken before: nothing started.
    AlreadyTaken,
    /// The supervisor refused the spawn (the reason); the issue stays taken.
    Refused(String),
}

/// Starts one session in `project` for `issue` of `tracker` (`github`, `jira`, `linear`),
/// unless the issue was taken before.
///
/// # Errors
/// The store's error when the issue cannot be recorded (nothing started; the platform may
/// redeliver).
pub async fn start_once(
    reads: &ReadModel,
    supervisor: &Addr<FleetSupervisor>,
    tracker: &str,
    project: &str,
    issue: &str,
) -> Result<IntakeOutcome, ReadError> {
    let taken = WebhookDelivery {
        platform: format!("{tracker}-intake"),
        delivery_id: format!("{project}/{issue}"),
        event: "intake".into(),
        payload: issue.to_string(),
        received_at: Utc::now(),
    };
    if !reads.record_webhook_delivery(taken).await? {
        return Ok(IntakeOutcome::AlreadyTaken);
    }
    let order = SpawnOrder {
        project: project.to_string(),
        prompt: None,
        issue: Some(issue.to_string()),
        agent: None,
        branch: None,
        host: None,
    };
    let outcome = match supervisor.send(Spawn { order }).await {
        Ok(Ok(snap)) => {
            tracing::info!(%tracker, %issue, session = %snap.session.id, "intake started a session");
            IntakeOutcome::Started(snap.session.id)
        }
        Ok(Err(e)) => {
            tracing::warn!(%tracker, %issue, error = %e, "intake could not start a session");
            IntakeOutcome::Refused(e.to_string())
        }
        Err(e) => {
            tracing::warn!(%tracker, %issue, error = %e, "intake could not reach the supervisor");
            IntakeOutcome::Refused(e.to_string())
        }
    };
    Ok(outcome)
}

/// One project polled for labelled GitHub issues.
#[derive(Clone)]
pub struct PolledProject {
    /// The project.
    pub project: String,
    /// Its intake label.
    pub label: String,
    /// Its tracker.
    pub tracker: Arc<dyn Tracker>,
}

/// Polls GitHub for open issues carrying a project's intake label.
pub struct IntakePoller {
    projects: Vec<PolledProject>,
    reads: Arc<ReadModel>,
    supervisor: Addr<FleetSupervisor>,
    interval: Duration,
    /// A poll is running (a slow one is not overlapped by the next).
    running: bool,
}

impl IntakePoller {
    /// A poller of `projects` every `interval`.
    pub fn new(
        projects: Vec<PolledProject>,
        reads: Arc<ReadModel>,
        supervisor: Addr<FleetSupervisor>,
        interval: Duration,
    ) -> Self {
        IntakePoller {
            projects,
            reads,
            supervisor,
            interval,
            running: false,
        }
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        if self.running {
            return;
        }
        self.running = true;
        let (projects, reads, sup) = (
            self.projects.clone(),
            self.reads.clone(),
            self.supervisor.clone(),
        );
        let fut = async move {
            for p in projects {
                let issues = match p.tracker.labelled(&p.label).await {
                    Ok(i) => i,
                    Err(e) => {
                        tracing::warn!(project = %p.project, error = %e, "intake poll failed");
                        continue;
                    }
                };
                for issue in issues {
                    if let Err(e) = start_once(&reads, &sup, "github", &p.project, &issue).await {
                        tracing::warn!(project = %p.project, %issue, error = %e, "intake not recorded");
                    }
                }
            }
        }
        .instrument(tracing::info_span!("intake_poll"));
        ctx.spawn(
            crate::actors::detached(fut)
                .into_actor(self)
                .map(|(), act, _| act.running = false),
        );
    }
}

impl Actor for IntakePoller {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.poll(ctx);
        ctx.run_interval(self.interval, |act, ctx| act.poll(ctx));
    }
}
