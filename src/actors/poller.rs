//! `GithubPoller`: the safety net under webhooks, within quota.
//!
//! Every `github.poll_interval`, per watched repository:
//! 1. one conditional request ([`Scm::repo_changed`], ETag): a 304 costs no quota;
//! 2. only if it changed — or on every `reconcile_every`-th poll, since check runs do not bump
//!    a PR and a webhook may be lost — the live sessions' PRs are read in batches
//!    ([`Scm::batch_status`], 50 PRs per GraphQL query) and handed to their actors;
//!    sessions without a PR yet look theirs up by branch.
//!
//! Level-triggered: actors turn the observed state into events (duplicates are no-ops), so a
//! lost webhook is caught on the next poll that reads the PR. A rate limit stops the cycle
//! and no request is sent before the wait the server asked for has passed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};

use crate::actors::fleet::Fleet;
use crate::actors::supervisor::messages::ScmObserved;
use crate::actors::supervisor::FleetSupervisor;
use crate::plugins::{PluginError, Scm};
use crate::store::{SessionFilter, SessionId, SessionRecord};

/// Polls GitHub for the fleet's PRs.
pub struct GithubPoller {
    fleet: Arc<Fleet>,
    scm: Arc<dyn Scm>,
    supervisor: Recipient<ScmObserved>,
    interval: Duration,
    reconcile_every: u32,
    cycle: u64,
    running: bool,
    /// No request before this time on the fleet's clock (a rate limit's wait).
    backoff_until: Option<DateTime<Utc>>,
}

/// What one poll cycle did (for logs and tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CycleReport {
    /// Repositories that changed (or were reconciled).
    pub read: usize,
    /// Sessions handed an observation.
    pub checks: usize,
    /// The server asked us to wait this long.
    pub backoff: Option<Duration>,
}

impl GithubPoller {
    /// A poller over `fleet`'s projects that have a `github_repo`.
    pub fn new(
        fleet: Arc<Fleet>,
        scm: Arc<dyn Scm>,
        supervisor: Addr<FleetSupervisor>,
        interval: Duration,
        reconcile_every: u32,
    ) -> Self {
        GithubPoller {
            fleet,
            scm,
            supervisor: supervisor.recipient(),
            interval,
            reconcile_every: reconcile_every.max(1),
            cycle: 0,
            running: false,
            backoff_until: None,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = self.fleet.clock.now();
        if self.running || self.backoff_until.is_some_and(|t| now < t) {
            return;
        }
        self.running = true;
        // The first poll reconciles: it catches up on whatever happened while we were down.
        let reconcile = self.cycle.is_multiple_of(u64::from(self.reconcile_every));
        self.cycle += 1;
        let (fleet, scm, sup) = (
            self.fleet.clone(),
            self.scm.clone(),
            self.supervisor.clone(),
        );
        let fut = async move { poll_once(&fleet, scm.as_ref(), &sup, reconcile).await }
            .into_actor(self)
            .map(|report, act, _ctx| {
                act.running = false;
                if let Some(wait) = report.backoff {
                    tracing::warn!(?wait, "GitHub rate limit: polling paused");
                    let wait = chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
                    act.backoff_until = act.fleet.clock.now().checked_add_signed(wait);
                }
                tracing::debug!(?report, "github poll");
            });
        ctx.spawn(fut);
    }
}

impl GithubPoller {
    /// Ticks every `interval` on the fleet's clock (a test advancing it polls at once).
    fn tick_after_interval(&mut self, ctx: &mut Context<Self>) {
        let wait = self.fleet.clock.sleep(self.interval);
        ctx.spawn(wait.into_actor(self).map(|(), act, ctx| {
            act.tick(ctx);
            act.tick_after_interval(ctx);
        }));
    }
}

impl Actor for GithubPoller {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.tick(ctx);
        self.tick_after_interval(ctx);
    }
}

/// The watched repositories and their live sessions.
async fn watched(fleet: &Fleet) -> BTreeMap<String, Vec<SessionRecord>> {
    let mut by_repo: BTreeMap<String, Vec<SessionRecord>> = BTreeMap::new();
    let projects: BTreeSet<(&str, &str)> = fleet
        .projects
        .values()
        .filter_map(|p| Some((p.name.as_str(), p.github_repo.as_deref()?)))
        .collect();
    for (project, repo) in projects {
        let filter = SessionFilter {
            project: Some(project.to_string()),
            states: vec![],
            active_only: true,
        };
        match fleet.store.list_sessions(&filter).await {
            Ok(list) => by_repo.entry(repo.to_string()).or_default().extend(list),
            Err(e) => tracing::warn!(error = %e, project, "listing sessions to poll failed"),
        }
    }
    by_repo
}

/// The wait a rate limit asks for. `GithubScm` already turns every rate-limit answer
/// (primary, secondary, 403 or 429) into `RateLimited`; other errors (a 403 for missing
/// permissions) must not pause polling of every repo.
fn backoff_of(e: &PluginError) -> Option<Duration> {
    match e {
        PluginError::RateLimited { retry_after, .. } => Some(*retry_after),
        _ => None,
    }
}

/// One poll over every watched repository.
pub async fn poll_once(
    fleet: &Fleet,
    scm: &dyn Scm,
    supervisor: &Recipient<ScmObserved>,
    reconcile: bool,
) -> CycleReport {
    let mut report = CycleReport::default();
    for (repo, sessions) in watched(fleet).await {
        let changed = match scm.repo_changed(&repo).await {
            Ok(c) => c,
            Err(e) => {
                report.backoff = backoff_of(&e);
                tracing::warn!(error = %e, %repo, "polling the repository failed");
                if report.backoff.is_some() {
                    return report;
                }
                continue;
            }
        };
        if !(changed || reconcile) || sessions.is_empty() {
            continue;
        }
        report.read += 1;
        let numbers: Vec<i64> = sessions
            .iter()
            .filter_map(|s| s.pr.as_ref().map(|p| p.number))
            .collect();
        let statuses = if numbers.is_empty() {
            vec![]
        } else {
            match scm.batch_status(&repo, &numbers).await {
                Ok(v) => v,
                Err(e) => {
                    report.backoff = backoff_of(&e);
                    tracing::warn!(error = %e, %repo, "reading the PRs failed");
                    if report.backoff.is_some() {
                        return report;
                    }
                    continue;
                }
            }
        };
        let mut by_number: BTreeMap<i64, _> = statuses.into_iter().map(|s| (s.number, s)).collect();
        let checks: Vec<(SessionId, Option<_>)> = sessions
            .into_iter()
            .filter_map(|s| match &s.pr {
                // A PR the batch did not return is read by the actor itself (`None`).
                Some(p) => Some((s.id, by_number.remove(&p.number))),
                // No PR yet: only worth a lookup by branch when the repo's PRs changed.
                None if changed && s.branch.is_some() => Some((s.id, None)),
                None => None,
            })
            .collect();
        report.checks += checks.len();
        supervisor.do_send(ScmObserved { checks });
    }
    report
}
