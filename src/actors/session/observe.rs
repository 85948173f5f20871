//! Looking at a session's agent: what its log, screen and spend say now, as events for the
//! machine, and what is read when it exits (its last output, its final usage).

use chrono::{DateTime, Utc};

use crate::actors::fleet::Fleet;
use crate::domain::machine::{self, EventKind};
use crate::plugins::RuntimeHandle;
use crate::store::SessionSnapshot;

/// An agent seen active is re-recorded as active at most this often (the event log is not a
/// heartbeat).
const ACTIVE_REFRESH_SECS: i64 = 60;

/// How many lines of a failed agent's output are kept with its exit.
const EXIT_OUTPUT_LINES: usize = 12;

/// A failed agent's last output. Its final lines may still be on their way to the runtime's
/// log (tmux's pipe-pane copies them asynchronously), so an empty read is retried briefly.
pub(super) async fn exit_output(
    runtime: &dyn crate::plugins::Runtime,
    handle: &RuntimeHandle,
) -> Option<String> {
    const TRIES: u32 = 10;
    for i in 0..TRIES {
        let text = runtime
            .output(handle, EXIT_OUTPUT_LINES)
            .await
            .ok()
            .map(|o| last_output(&o))
            .filter(|o| !o.is_empty());
        if text.is_some() || i + 1 == TRIES {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    None
}

/// The non-blank lines of `text`, trimmed and with secrets masked, at most 2,000 characters
/// from the end.
fn last_output(text: &str) -> String {
    let lines: Vec<String> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .map(crate::plugins::activity::mask_secrets)
        .collect();
    let joined = lines.join("\n");
    let n = joined.chars().count();
    joined.chars().skip(n.saturating_sub(2000)).collect()
}

/// The project's spend with this session's newest figure: the sum over its sessions' recorded
/// usage (only computed when this session's spend changed).
async fn project_spend(
    fleet: &Fleet,
    rec: &crate::store::SessionRecord,
    mine: Option<f64>,
) -> Option<f64> {
    let sessions = fleet
        .store
        .list_sessions(&crate::store::SessionFilter {
            project: Some(rec.project.clone()),
            ..Default::default()
        })
        .await
        .ok()?;
    let others: f64 = sessions
        .iter()
        .filter(|s| s.id != rec.id)
        .filter_map(|s| s.meta["usage"]["cost_usd"].as_f64())
        .sum();
    Some(others + mine.unwrap_or(0.0))
}

/// How long a new wait seen on the screen is given to finish drawing before it is read again.
const REDRAW_SETTLE: std::time::Duration = std::time::Duration::from_millis(50);

/// What one look at the agent found.
#[derive(Default)]
pub(super) struct Look {
    /// What changed, for the machine.
    pub(super) events: Vec<EventKind>,
    /// The time of the hook report whose dialog this look saw drawn on the screen.
    pub(super) drawn: Option<DateTime<Utc>>,
}

/// What the agent's log, screen and spend say now, as events for the machine. Only changes
/// become events (the machine would also ignore repeats, but each one would be a row).
/// Looks at the agent: its activity, its question, its spend. `moved_on`: an answer just found
/// the agent asking another question than the one recorded (seen on a settled screen, so not a
/// redraw): the question on screen is then a new wait, as a log's would be. `drawn`: the time
/// of the hook report whose dialog an earlier look saw on the screen.
pub(super) async fn observe(
    fleet: &Fleet,
    s: &SessionSnapshot,
    moved_on: bool,
    drawn: Option<DateTime<Utc>>,
) -> Look {
    use crate::plugins::activity::ActivityProbe;
    use crate::store::Activity;
    let rec = &s.session;
    let (Some(h), Ok(rt), Ok(agent)) = (
        rec.runtime_handle.clone(),
        fleet.plugins.runtime(&rec.runtime),
        fleet.plugins.agent(&rec.agent),
    ) else {
        return Look::default();
    };
    let Some(ws) = rec.workspace.as_ref().map(std::path::PathBuf::from) else {
        return Look::default();
    };
    let now = fleet.clock.now();
    let probe = ActivityProbe {
        workspace: ws.clone(),
        terminal: rt.output(&h, 20).await.ok(),
        last_output_at: rt.last_output_at(&h).await.ok().flatten(),
        now,
    };
    let mut out = Vec::new();
    let mut seen_drawn = None;
    // An exited agent does nothing more until it is started again, whatever its log says.
    let exited = rec.activity == Activity::Exited;
    if let Some(sig) = agent
        .activity(&probe)
        .await
        .ok()
        .flatten()
        .filter(|_| !exited)
    {
        let at = machine::micros(sig.at);
        // A wait ends on evidence newer than it (the agent's log moved on, or the screen no
        // longer shows a question); a tool call logged before the dialog is not such evidence,
        // so a blocked agent never counts as active.
        let waiting_since = (rec.activity == Activity::WaitingInput)
            .then_some(rec.activity_at)
            .flatten();
        // A wait a hook reported is the agent's own word that a dialog is coming, drawn a
        // moment later: until then its screen still shows the work before it (Claude's
        // spinner), and on a first turn its log may not be written yet, so the screen is all
        // a look has. Until the screen shows the dialog it cannot end that wait; the agent's
        // log, an answer or a later report can. Once it has shown it, the screen moving on is
        // the dialog answered at the terminal, as for a wait the screen found itself (the
        // only evidence when the agent's log cannot be found).
        let report = &rec.meta["last_report"];
        let reported_at = report["at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let hook_wait = report["hook"] == true
            && report["state"] == "needs_input"
            && waiting_since.is_some_and(|w| reported_at.is_some_and(|r| r >= w));
        if hook_wait
            && sig.activity == Activity::WaitingInput
            && sig.source == crate::plugins::activity::ActivitySource::Terminal
        {
            seen_drawn = reported_at;
        }
        let hook_wait = hook_wait && drawn.is_none_or(|d| Some(d) != reported_at);
        let stale = |at: chrono::DateTime<Utc>| match sig.source {
            crate::plugins::activity::ActivitySource::Native => {
                waiting_since.is_some_and(|w| at <= w)
            }
            crate::plugins::activity::ActivitySource::Terminal => hook_wait,
        };
        let new_api_error = sig
            .api_failure
            .as_ref()
            .and_then(|f| api_error_event(rec, f));
        let fresh_api_error = new_api_error.is_some();
        out.extend(new_api_error);
        let api_now = sig.api_failure.as_ref().filter(|f| f.is_current(&sig));
        let ev = match sig.activity {
            // A model API failure the agent retries: recorded above, but not a sign of life
            // (a server that keeps failing or hanging must let the stuck timer fire).
            Activity::Active if api_now.is_some() => None,
            // The turn ended on a model API failure: a human decides whether to try again,
            // asked once per failure (an answer ends that wait before the log moves on).
            Activity::WaitingInput if api_now.is_some() && !fresh_api_error => None,
            Activity::WaitingInput => {
                // A new wait, or a new question while one waits (the last was answered).
                let question = match api_now {
                    Some(f) => Some(f.question()),
                    None => agent.question(&probe).await,
                };
                // A new wait seen on the screen is worded from a second capture a moment
                // later: a capture caught mid-redraw can show a dialog half drawn, and the
                // wording a wait starts with stays its question (a redraw cannot change it).
                let question = if api_now.is_none()
                    && sig.source == crate::plugins::activity::ActivitySource::Terminal
                    && rec.activity != Activity::WaitingInput
                {
                    tokio::time::sleep(REDRAW_SETTLE).await;
                    let again = ActivityProbe {
                        terminal: rt.output(&h, 20).await.ok(),
                        ..probe.clone()
                    };
                    match agent.question(&again).await {
                        Some(later) => Some(later),
                        None => question,
                    }
                } else {
                    question
                };
                let asked = rec.meta["question"].as_str();
                // The question just answered, on output unchanged since the answer (a log's
                // tail the agent wrote nothing more to): not asked again.
                let answered = rec.meta["answered"]["question"].as_str().zip(
                    rec.meta["answered"]["at"]
                        .as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.with_timezone(&Utc)),
                );
                let stale_screen = sig.source == crate::plugins::activity::ActivitySource::Terminal
                    && rec.activity != Activity::WaitingInput
                    && crate::plugins::activity::answered_still_shown(
                        answered,
                        question.as_deref(),
                        probe.last_output_at,
                    );
                // The agent's own log can show it moved on to another question. A redraw of
                // the screen cannot, but a screen that stays on a question its agent's plugin
                // tells from the one recorded can (answered at the terminal, the next dialog
                // drawn before the session saw any work between).
                let other =
                    |q: &str| !asked.is_some_and(|a| crate::domain::question::same_question(a, q));
                let moved_on = moved_on
                    || (sig.source == crate::plugins::activity::ActivitySource::Native
                        && rec.activity_at.is_none_or(|w| at > w))
                    || (api_now.is_none()
                        && sig.source == crate::plugins::activity::ActivitySource::Terminal
                        && rec.activity == Activity::WaitingInput
                        && question.as_deref().is_some_and(other)
                        && shows_settled_other(rt.as_ref(), &h, agent.as_ref(), &probe, asked)
                            .await);
                (!stale_screen
                    && (rec.activity != Activity::WaitingInput
                        || (moved_on && question.as_deref().is_some_and(other))))
                .then_some(EventKind::AgentWaitingInput { question })
            }
            Activity::Active | Activity::Idle if stale(at) => None,
            Activity::Active
                if rec.activity != Activity::Active
                    || rec
                        .activity_at
                        .is_none_or(|t| (now - t).num_seconds() > ACTIVE_REFRESH_SECS) =>
            {
                Some(EventKind::AgentActive)
            }
            Activity::Idle if rec.activity != Activity::Idle || rec.activity_at != Some(at) => {
                Some(EventKind::AgentIdle { since: at })
            }
            _ => None,
        };
        out.extend(ev);
    }
    out.extend(usage_event(fleet, rec, agent.as_ref(), &ws).await);
    Look {
        events: out,
        drawn: seen_drawn,
    }
}

/// Whether the screen `probe` captured shows a question other than `asked`, as the agent's
/// plugin tells them apart (`Agent::shows_other_question`, what an answer is refused on), and
/// still shows the same a moment later: a settled screen, not a dialog caught mid-redraw.
async fn shows_settled_other(
    rt: &dyn crate::plugins::Runtime,
    h: &RuntimeHandle,
    agent: &dyn crate::plugins::Agent,
    probe: &crate::plugins::activity::ActivityProbe,
    asked: Option<&str>,
) -> bool {
    let (Some(screen), Some(asked)) = (probe.terminal.as_deref(), asked) else {
        return false;
    };
    let ws = tokio::fs::canonicalize(&probe.workspace)
        .await
        .unwrap_or_else(|_| probe.workspace.clone());
    // The plugin first (no capture, no wait): most readings it cannot tell apart.
    if !agent.shows_other_question(screen, asked, &ws) {
        return false;
    }
    tokio::time::sleep(REDRAW_SETTLE).await;
    rt.output(h, 20).await.ok().as_deref() == Some(screen)
}

/// `AgentApiError` for a model API failure the session has not recorded yet (one per logged
/// entry: the session keeps the last one's time in `meta.api_error.logged_at`).
fn api_error_event(
    rec: &crate::store::SessionRecord,
    f: &crate::plugins::activity::ApiFailure,
) -> Option<EventKind> {
    let at = machine::micros(f.logged_at);
    let known = rec.meta["api_error"]["logged_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    (known != Some(at)).then(|| EventKind::AgentApiError {
        logged_at: at,
        status: f.status,
        message: f.said(),
        attempt: f.attempt,
        max_retries: f.max_retries,
    })
}

/// `UsageObserved` when the agent's log shows other usage than the session records.
async fn usage_event(
    fleet: &Fleet,
    rec: &crate::store::SessionRecord,
    agent: &dyn crate::plugins::Agent,
    ws: &std::path::Path,
) -> Option<EventKind> {
    let u = agent.usage(ws).await.ok()??;
    let usage = machine::Usage {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        cache_tokens: u.cache_tokens,
        cost_usd: u.cost_usd,
        cost_source: u.cost_source,
    };
    let known: Option<machine::Usage> = serde_json::from_value(rec.meta["usage"].clone()).ok();
    let known_unpriced: Vec<String> =
        serde_json::from_value(rec.meta["unpriced_models"].clone()).unwrap_or_default();
    if known == Some(usage) && known_unpriced == u.unpriced_models {
        return None;
    }
    Some(EventKind::UsageObserved {
        usage,
        project_usd: project_spend(fleet, rec, usage.cost_usd).await,
        unpriced_models: u.unpriced_models,
    })
}

/// The usage the agent's log shows as it exits, when it changed since last recorded.
pub(super) async fn final_usage(fleet: &Fleet, s: &SessionSnapshot) -> Option<EventKind> {
    let rec = &s.session;
    let agent = fleet.plugins.agent(&rec.agent).ok()?;
    let ws = std::path::Path::new(rec.workspace.as_deref()?);
    usage_event(fleet, rec, agent.as_ref(), ws).await
}
