//! The session's side of the lifecycle: look at its PR through the SCM plugin, turn what is
//! seen into machine events ([`super::pr_events`]), and merge.
//!
//! Checks are coalesced: a burst of webhooks about one PR runs one check, plus one more if
//! anything arrived while it ran, so the SCM sees at most two requests per burst. An
//! observation that is not an answer yet (mergeability or CI still computing,
//! [`recheck::unsettled`]) schedules another look of this PR alone, with backoff.

mod conversation;
mod recheck;

use actix::prelude::*;
use tracing::Instrument;

use super::messages::{Apply, MergeNow, ScmCheck, ScmHint, StepReport};
use super::{SessionActor, SessionError};
use crate::actors::fleet::Fleet;
use crate::domain::machine::EventKind;
use crate::domain::pr_events::{self, PrDetails};
use crate::plugins::{MergeMethod, PluginError, PrStatus, Scm};
use crate::store::SessionSnapshot;

/// Whether a check runs, and what to do after it.
#[derive(Debug, Default)]
pub(super) struct CheckState {
    running: bool,
    /// Another check was asked for while one ran (with the newest observation, if any).
    again: Option<Option<PrStatus>>,
    /// Waits between re-checks of an unsettled PR.
    backoff: recheck::Backoff,
    /// The scheduled re-check, if any (one at a time).
    recheck: Option<SpawnHandle>,
}

/// The SCM and repository of a session's project, if it has both.
fn scm_of(fleet: &Fleet, s: &SessionSnapshot) -> Option<(std::sync::Arc<dyn Scm>, String)> {
    let scm = fleet.plugins.scm.clone()?;
    let repo = fleet.project(&s.session.project)?.github_repo.clone()?;
    Some((scm, repo))
}

/// What one look at the session's PR found.
struct Observed {
    events: Vec<EventKind>,
    /// GitHub had not finished computing (look again later).
    unsettled: bool,
}

/// Observes the session's PR and returns the events it implies.
async fn observe(
    scm: &dyn Scm,
    repo: &str,
    s: &SessionSnapshot,
    status: Option<PrStatus>,
) -> Result<Observed, PluginError> {
    let none = Observed {
        events: vec![],
        unsettled: false,
    };
    let status = match (status, &s.session.pr, &s.session.branch) {
        (Some(st), _, _) => st,
        (None, Some(pr), _) => scm.pr_status(repo, pr.number).await?,
        (None, None, Some(branch)) => match scm.find_pr(repo, branch).await? {
            Some(st) => st,
            None => return Ok(none),
        },
        (None, None, None) => return Ok(none),
    };
    let needs = pr_events::needs(s, &status);
    let mut details = PrDetails::default();
    if needs.ci {
        details.ci = Some(scm.ci(repo, &status.head_sha).await?);
    }
    if needs.feedback {
        details.feedback = Some(scm.review_feedback(repo, status.number).await?);
    }
    let mut events = pr_events::events(s, &status, &details);
    if pr_events::owns(s, &status) {
        events.extend(conversation::event(s, &status));
    }
    Ok(Observed {
        events,
        unsettled: pr_events::owns(s, &status) && recheck::unsettled(&status),
    })
}

impl SessionActor {
    /// Looks at the session's PR (or applies `status`, an observation already made).
    pub(super) fn scm_check(&mut self, ctx: &mut Context<Self>, status: Option<PrStatus>) {
        let Some(s) = self.snapshot.clone() else {
            return;
        };
        if s.session.state.is_terminal() {
            return;
        }
        let Some((scm, repo)) = scm_of(&self.fleet, &s) else {
            return;
        };
        if self.scm.running {
            // Keep the newest observation; a bare request never discards one.
            let keep = status.or_else(|| self.scm.again.take().flatten());
            self.scm.again = Some(keep);
            return;
        }
        self.scm.running = true;
        let addr = ctx.address();
        let fut = async move {
            match observe(scm.as_ref(), &repo, &s, status).await {
                Ok(seen) => {
                    for event in seen.events {
                        let _ = addr.send(Apply { event }).await;
                    }
                    seen.unsettled
                }
                Err(e) => {
                    tracing::warn!(error = %e, "checking the PR failed; the poller retries");
                    false
                }
            }
        }
        .instrument(self.span.clone())
        .into_actor(self)
        .map(|unsettled, act, ctx| {
            act.scm.running = false;
            if let Some(next) = act.scm.again.take() {
                act.scm_check(ctx, next);
            } else if unsettled {
                act.schedule_recheck(ctx);
            } else {
                act.scm.backoff.reset();
            }
        });
        ctx.spawn(fut);
    }

    /// Looks at the PR again after the next backoff wait (one re-check pending at a time).
    fn schedule_recheck(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.scm.recheck.take() {
            ctx.cancel_future(h);
        }
        let wait = self.scm.backoff.next_wait();
        tracing::debug!(?wait, "GitHub is still computing the PR; looking again");
        let due = self.fleet.clock.sleep(wait).into_actor(self);
        self.scm.recheck = Some(ctx.spawn(due.map(|(), act, ctx| {
            act.scm.recheck = None;
            act.scm_check(ctx, None);
        })));
    }

    /// Whether a webhook hint is about this session's PR.
    fn hinted(&self, h: &ScmHint) -> bool {
        let Some(s) = &self.snapshot else {
            return false;
        };
        let ours = self
            .fleet
            .project(&s.session.project)
            .and_then(|p| p.github_repo.as_deref())
            == Some(h.repo.as_str());
        let pr = s
            .session
            .pr
            .as_ref()
            .is_some_and(|p| h.prs.contains(&p.number));
        let branch = s
            .session
            .branch
            .as_ref()
            .is_some_and(|b| h.branches.contains(b));
        ours && (pr || branch)
    }
}

impl Handler<ScmCheck> for SessionActor {
    type Result = ();
    fn handle(&mut self, msg: ScmCheck, ctx: &mut Self::Context) {
        self.scm_check(ctx, msg.status);
    }
}

impl Handler<ScmHint> for SessionActor {
    type Result = ();
    fn handle(&mut self, msg: ScmHint, ctx: &mut Self::Context) {
        if self.hinted(&msg) {
            self.scm_check(ctx, None);
        }
    }
}

/// Merges the session's PR with `method`, refusing if its head moved since it was seen.
///
/// # Errors
/// `Unavailable` without an SCM or PR; the plugin's error otherwise.
pub(super) async fn merge(
    fleet: &Fleet,
    s: &SessionSnapshot,
    method: MergeMethod,
) -> Result<(), PluginError> {
    let (scm, repo) = scm_of(fleet, s).ok_or(PluginError::Unavailable {
        slot: "scm",
        name: format!("project {}", s.session.project),
    })?;
    let pr = s
        .session
        .pr
        .as_ref()
        .ok_or_else(|| PluginError::NotFound(format!("session {} has no PR", s.session.id)))?;
    let status = scm.pr_status(&repo, pr.number).await?;
    let sha = scm
        .merge(&repo, pr.number, method, Some(&status.head_sha))
        .await?;
    tracing::info!(pr = pr.number, %sha, method = method.as_str(), "PR merged");
    Ok(())
}

/// GitHub's reason when it refused a merge (405 not mergeable or blocked by a rule, 409 the
/// head moved, 422 not allowed), as `GitHub refused the merge (STATUS): REASON`.
pub(super) fn refusal(e: &PluginError) -> Option<String> {
    let (status, reason) = match e {
        PluginError::NotMergeable(m) => (405, m.as_str()),
        PluginError::Conflict(m) => (409, m.as_str()),
        PluginError::Api { status, message } if matches!(status, 405 | 409 | 422) => {
            (*status, message.as_str())
        }
        _ => return None,
    };
    Some(format!("GitHub refused the merge ({status}): {reason}"))
}

impl Handler<MergeNow> for SessionActor {
    type Result = ResponseActFuture<Self, Result<StepReport, SessionError>>;
    fn handle(&mut self, msg: MergeNow, ctx: &mut Self::Context) -> Self::Result {
        let Some(s) = self.snapshot.clone() else {
            return Box::pin(fut::ready(Err(SessionError::NotLoaded)));
        };
        if !s.session.state.has_open_pr() {
            return Box::pin(fut::ready(Err(SessionError::Rejected(format!(
                "session {} is {}: there is no open PR to merge",
                s.session.id, s.session.state
            )))));
        }
        let method = msg.method.unwrap_or_else(|| {
            self.policy
                .reactions
                .get("approved-and-green")
                .map(|r| r.merge_method)
                .unwrap_or(MergeMethod::Squash)
        });
        let fleet = self.fleet.clone();
        let addr = ctx.address();
        Box::pin(
            async move {
                let merged = merge(&fleet, &s, method).await;
                if let Err(e) = &merged {
                    if let Some(reason) = refusal(e) {
                        // A refusal is an answer, not an outage: recorded on the session
                        // (`merge.failed`) and told to the caller as a conflict (422 when
                        // GitHub said the merge is unprocessable).
                        let _ = addr
                            .send(Apply {
                                event: EventKind::MergeFailed {
                                    reason: reason.clone(),
                                },
                            })
                            .await;
                        return Err(match e {
                            PluginError::Api { status: 422, .. } => {
                                SessionError::Unprocessable(reason)
                            }
                            _ => SessionError::Rejected(reason),
                        });
                    }
                }
                merged.map_err(|e| match e {
                    PluginError::Unavailable { .. } => SessionError::Rejected(format!(
                        "merge is not available for session {}: its project has no `scm: github` with a `github_repo`",
                        s.session.id
                    )),
                    other => SessionError::Plugin(other),
                })?;
                addr.send(Apply {
                    event: EventKind::PrMerged,
                })
                .await
                .map_err(|_| SessionError::NotLoaded)?
            }
            .into_actor(self),
        )
    }
}
