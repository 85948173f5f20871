//! The `all-complete` reaction: when every session of a project is terminal, a human hears it
//! once, and again only after a session of that project became active (was created or
//! restored) since (ao §2, scenario 15).
//!
//! It keeps no flag of its own; the event log is the record. The newest activation event of
//! the project is the *epoch*. The reaction is due when every session is terminal and no
//! `summary.all_complete` event is newer than the epoch. Its notifications carry a dedupe key
//! made from the epoch that never expires, and they are written before the event. A crash
//! between the two re-runs the check at start-up: the rows are deduplicated and the event is
//! written, so the notification is sent exactly once. When its priority is routed to no
//! notifier it does nothing at all (that is how a user turns it off).

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};

use super::fleet::Fleet;
use crate::domain::keys::ReactionKey;
use crate::domain::machine::Effect;
use crate::domain::policy::{Priority, ReactionAction};
use crate::store::{NewEvent, SessionFilter, SessionRecord, StoreResult};

/// The event that records a fired all-complete (on the project's most recently updated
/// session, so a project's events find it).
pub const EVENT: &str = "summary.all_complete";
/// The reaction's name in the config.
pub const REACTION: ReactionKey = ReactionKey::AllComplete;
/// Events that make a session of the project active.
const ACTIVATIONS: [&str; 2] = ["session.created", "session.restore_requested"];
/// Sessions listed in a summary before it says "and N more".
const SUMMARY_LINES: usize = 50;

/// Whether all-complete is due for a project whose sessions are `sessions`: the epoch to fire
/// for, or `None`. `activation` is the newest activation event's id, `fired` the newest
/// all-complete event's id.
pub fn due(sessions: &[SessionRecord], activation: Option<i64>, fired: Option<i64>) -> Option<i64> {
    if sessions.is_empty() || sessions.iter().any(|s| !s.state.is_terminal()) {
        return None;
    }
    let epoch = activation?;
    match fired {
        Some(f) if f > epoch => None,
        _ => Some(epoch),
    }
}

/// How many sessions ended in each state.
fn state_counts(sessions: &[SessionRecord]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for s in sessions {
        *counts.entry(s.state.as_str()).or_default() += 1;
    }
    counts
}

/// The notification text: counts by final state and, with `detail`, one line per session.
pub fn summary(project: &str, sessions: &[SessionRecord], detail: bool) -> String {
    let counts: Vec<String> = state_counts(sessions)
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    let n = sessions.len();
    let head = if n == 1 {
        format!("1 session of {project} is complete")
    } else {
        format!("All {n} sessions of {project} are complete")
    };
    let mut out = format!("{head}: {}.", counts.join(", "));
    if detail {
        let mut sorted: Vec<&SessionRecord> = sessions.iter().collect();
        sorted.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        for s in sorted.iter().take(SUMMARY_LINES) {
            out.push_str(&format!("\n- {} {}", s.id.as_str(), s.state.as_str()));
            if let Some(r) = &s.reason {
                out.push_str(&format!(" ({r})"));
            }
            if let Some(pr) = &s.pr {
                out.push_str(&format!(" {}", pr.url));
            }
        }
        if n > SUMMARY_LINES {
            out.push_str(&format!("\n… and {} more", n - SUMMARY_LINES));
        }
    }
    out
}

/// One check at a time, so two sessions ending together record one event.
static CHECKING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Fires all-complete for `project` if it is due; `true` when it fired.
///
/// # Errors
/// A store error; the next check (the next session end, or start-up) tries again.
pub async fn check(fleet: &Fleet, project: &str) -> StoreResult<bool> {
    let Some(rp) = fleet
        .project(project)
        .and_then(|p| p.policy.reaction(REACTION).cloned())
    else {
        return Ok(false);
    };
    if rp.action != ReactionAction::Notify {
        return Ok(false); // the only action that means anything for a finished fleet
    }
    let _one = CHECKING.lock().await;
    let store = &fleet.store;
    let sessions = store
        .list_sessions(&SessionFilter {
            project: Some(project.to_string()),
            ..Default::default()
        })
        .await?;
    let mut activation = None;
    for kind in ACTIVATIONS {
        activation = activation.max(store.last_project_event_id(project, kind).await?);
    }
    let fired = store.last_project_event_id(project, EVENT).await?;
    let Some(epoch) = due(&sessions, activation, fired) else {
        return Ok(false);
    };
    let Some(last) = sessions
        .iter()
        .max_by_key(|s| (s.updated_at, s.id.as_str()))
    else {
        return Ok(false);
    };
    let now = Utc::now();
    let effect = Effect::Notify {
        reaction: Some(REACTION),
        priority: rp.priority.unwrap_or(Priority::Info),
        message: summary(project, &sessions, rp.include_summary),
        escalation: false,
    };
    let forever = Utc
        .with_ymd_and_hms(9999, 12, 31, 0, 0, 0)
        .single()
        .unwrap_or(now);
    let rows = fleet.notifications.route_step(last, EVENT, &[effect], now);
    if rows.is_empty() {
        return Ok(false); // nobody to tell (info routed nowhere): the reaction is off
    }
    for mut row in rows {
        row.dedupe_key = format!("{}|{project}|{EVENT}|{epoch}", row.notifier);
        row.dedupe_until = forever;
        store.enqueue_notification(&row).await?;
    }
    let counts = state_counts(&sessions);
    fleet
        .journal
        .append(&NewEvent {
            session_id: Some(last.id.clone()),
            kind: EVENT.into(),
            data: serde_json::json!({"project": project, "epoch": epoch, "sessions": sessions.len(), "states": counts}),
            at: now,
        })
        .await?;
    fleet.notifications.wake();
    tracing::info!(%project, sessions = sessions.len(), "all sessions complete");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Activity, PrRef, SessionId, SessionState};

    fn session(n: u32, state: SessionState) -> SessionRecord {
        let at = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("date");
        SessionRecord {
            id: SessionId(format!("demo-{n}")),
            project: "demo".into(),
            state,
            reason: None,
            agent: "claude".into(),
            runtime: "tmux".into(),
            workspace_kind: "worktree".into(),
            branch: None,
            workspace: None,
            pr: None,
            issue: None,
            prompt: None,
            runtime_handle: None,
            activity: Activity::Exited,
            activity_at: None,
            restart_count: 0,
            created_at: at,
            updated_at: at,
            meta: serde_json::json!({}),
        }
    }

    #[test]
    fn it_is_due_once_every_session_is_terminal() {
        let done = [
            session(1, SessionState::Done),
            session(2, SessionState::Killed),
        ];
        assert_eq!(due(&done, Some(7), None), Some(7));
        let mut one_live = done.to_vec();
        one_live.push(session(3, SessionState::Working));
        assert_eq!(due(&one_live, Some(9), None), None);
        assert_eq!(
            due(&[], None, None),
            None,
            "an empty project is not complete"
        );
    }

    #[test]
    fn it_fires_again_only_after_a_session_became_active() {
        let done = [session(1, SessionState::Done)];
        assert_eq!(due(&done, Some(7), Some(8)), None, "fired after the epoch");
        assert_eq!(
            due(&done, Some(12), Some(8)),
            Some(12),
            "a newer activation"
        );
    }

    #[test]
    fn the_summary_counts_states_and_lists_sessions_with_their_prs() {
        let mut a = session(2, SessionState::Merged);
        a.pr = Some(PrRef {
            number: 4,
            url: "https://github.com/o/r/pull/4".into(),
        });
        let mut b = session(1, SessionState::Errored);
        b.reason = Some("agent_exited_3".into());
        let text = summary("demo", &[a.clone(), b.clone()], true);
        assert_eq!(
            text,
            "All 2 sessions of demo are complete: 1 errored, 1 merged.\n\
             - demo-1 errored (agent_exited_3)\n\
             - demo-2 merged https://github.com/o/r/pull/4"
        );
        assert_eq!(
            summary("demo", &[a], false),
            "1 session of demo is complete: 1 merged."
        );
    }
}
