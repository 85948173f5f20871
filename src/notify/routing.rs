//! Routing: which notifiers hear about a step's `Effect::Notify`, as outbox rows.
//!
//! Pure: no I/O, no clock (the time comes in), no actix. For each notify effect of a step, the
//! [`Router`] looks up the project's route for the effect's priority (the project's own
//! `routing`, else the global `routing`, else `defaults.notifiers`) and writes one
//! [`NotificationRecord`] per notifier. Each carries its dedupe group as `dedupe_key`
//! (notifier, session, event, reaction, priority) and the end of its window as
//! `dedupe_until`; the store skips a row whose group still has a live row in its window.
//!
//! Ids are random UUIDs: they are the receivers' dedupe key, so they must be unique, and they
//! are fixed once written, so a redelivery after a crash carries the same one.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::config::{self, Settings};
use crate::domain::keys::ReactionKey;
use crate::domain::machine::Effect;
use crate::domain::policy::Priority;
use crate::store::{NotificationRecord, NotificationStatus, SessionRecord};

/// The event of a notification telling that a reaction gave up (ao's `reaction.escalated`).
pub const ESCALATION_EVENT: &str = "reaction.escalated";

/// Notifier names per priority, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    /// For `urgent`.
    pub urgent: Vec<String>,
    /// For `action`.
    pub action: Vec<String>,
    /// For `warning`.
    pub warning: Vec<String>,
    /// For `info`.
    pub info: Vec<String>,
}

impl Routes {
    /// The notifiers of `priority`.
    pub fn for_priority(&self, priority: Priority) -> &[String] {
        match priority {
            Priority::Urgent => &self.urgent,
            Priority::Action => &self.action,
            Priority::Warning => &self.warning,
            Priority::Info => &self.info,
        }
    }
}

/// Resolved routes of every project and the dedupe window. The default routes nothing (no
/// notifier configured).
#[derive(Debug, Clone, Default)]
pub struct Router {
    /// Routes of each configured project.
    projects: BTreeMap<String, Routes>,
    /// Routes for a session of a project no longer configured.
    global: Routes,
    /// Same group within this window is one notification; zero turns deduplication off.
    dedupe_window: chrono::Duration,
}

fn config_priority(p: Priority) -> config::Priority {
    match p {
        Priority::Urgent => config::Priority::Urgent,
        Priority::Action => config::Priority::Action,
        Priority::Warning => config::Priority::Warning,
        Priority::Info => config::Priority::Info,
    }
}

/// The lowercase name of a priority, as stored and sent.
pub fn priority_name(p: Priority) -> &'static str {
    config_priority(p).as_str()
}

impl Router {
    /// Resolves every project's routes from validated settings.
    pub fn from_settings(settings: &Settings) -> Self {
        let resolve = |project: Option<&str>| {
            let names = |p: Priority| match project {
                Some(name) => settings
                    .project_notifiers_for(name, config_priority(p))
                    .to_vec(),
                None => settings.notifiers_for(config_priority(p)).to_vec(),
            };
            Routes {
                urgent: names(Priority::Urgent),
                action: names(Priority::Action),
                warning: names(Priority::Warning),
                info: names(Priority::Info),
            }
        };
        Router {
            projects: settings
                .projects
                .keys()
                .map(|name| (name.clone(), resolve(Some(name))))
                .collect(),
            global: resolve(None),
            dedupe_window: chrono::Duration::from_std(settings.notifications.dedupe_window.get())
                .unwrap_or(chrono::Duration::MAX),
        }
    }

    /// A router with explicit routes (tests and benches).
    pub fn new(
        projects: BTreeMap<String, Routes>,
        global: Routes,
        dedupe_window: chrono::Duration,
    ) -> Self {
        Router {
            projects,
            global,
            dedupe_window,
        }
    }

    /// The routes of `project`.
    pub fn routes(&self, project: &str) -> &Routes {
        self.projects.get(project).unwrap_or(&self.global)
    }

    /// The outbox rows for every `Effect::Notify` of a step caused by event `cause` (the
    /// machine's event name, e.g. `agent.exited`), for `session` as it is after the step.
    pub fn route_step(
        &self,
        session: &SessionRecord,
        cause: &str,
        effects: &[Effect],
        at: DateTime<Utc>,
    ) -> Vec<NotificationRecord> {
        effects
            .iter()
            .flat_map(|e| self.route(session, cause, e, at))
            .collect()
    }

    /// The outbox rows for one effect: one per routed notifier for an `Effect::Notify`,
    /// none for any other effect.
    pub fn route(
        &self,
        session: &SessionRecord,
        cause: &str,
        effect: &Effect,
        at: DateTime<Utc>,
    ) -> Vec<NotificationRecord> {
        let Effect::Notify {
            reaction,
            priority,
            message,
            escalation,
        } = effect
        else {
            return Vec::new();
        };
        let event = if *escalation { ESCALATION_EVENT } else { cause };
        let prio = priority_name(*priority);
        let group = match reaction {
            Some(r @ ReactionKey::AgentNeedsInput) if !*escalation => {
                Some(format!("{}@{}", r.as_str(), question_group(session)))
            }
            // PR news told to a human the agent waits on (the machine's only notification of
            // these events without a reaction): one group per failure told.
            None if !*escalation && WAITING_NEWS.contains(&cause) => Some(format!(
                "waiting@{}",
                digest(&session.meta[crate::domain::machine::TOLD_WHILE_WAITING])
            )),
            _ => reaction.map(|r| r.as_str().to_string()),
        };
        let until = at.checked_add_signed(self.dedupe_window).unwrap_or(at);
        let mut context = json!({
            "project": session.project,
            "reaction": reaction,
            "escalation": escalation,
            "pr_url": session.pr.as_ref().map(|p| p.url.as_str()),
            "branch": session.branch,
            "state": session.state,
        });
        if *reaction == Some(ReactionKey::AgentNeedsInput) {
            // What a reply to it answers (`actors::chat::answers`).
            context["question"] = session.meta["question"].clone();
        }
        self.routes(&session.project)
            .for_priority(*priority)
            .iter()
            .map(|notifier| NotificationRecord {
                id: uuid::Uuid::new_v4().to_string(),
                notifier: notifier.clone(),
                priority: prio.to_string(),
                event: event.to_string(),
                session_id: Some(session.id.clone()),
                message: message.clone(),
                dedupe_key: dedupe_key(
                    notifier,
                    session.id.as_str(),
                    event,
                    group.as_deref(),
                    prio,
                ),
                dedupe_until: until,
                status: NotificationStatus::Pending,
                attempts: 0,
                next_attempt_at: at,
                created_at: at,
                last_error: None,
                context: context.clone(),
                digest_id: None,
            })
            .collect()
    }
}

/// Which wait for a human a needs-input notification is about, for its dedupe group: the
/// question asked, the last answer recorded and when the wait began. A new question, or the
/// same one asked again after a human answered it (through Flotilla, or at the terminal and
/// the agent worked on), is a new group: one answered is no reason to keep quiet about the
/// next, asked seconds later. A session flapping between waiting and working on one
/// question, unanswered, stays one group (one page per window; the machine keeps the wait's
/// start, `machine::WAITING_SINCE`). A digest of them, so that a long question does not make
/// a long key.
fn question_group(session: &SessionRecord) -> String {
    digest(&json!([
        session.meta["question"],
        session.meta["answered"]["at"],
        session.meta[crate::domain::machine::WAITING_SINCE]
    ]))
}

/// The events whose news a waiting human is told of (`machine::tell_the_waiting_human`).
const WAITING_NEWS: [&str; 2] = ["ci.failed", "review.changes_requested"];

/// A short digest of a value, so that a long one does not make a long key.
fn digest(v: &serde_json::Value) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(v.to_string().as_bytes())[..8])
}

/// The dedupe group: the same notifier, session, event, reaction (for a wait for a human, the
/// same question, see [`question_group`]) and priority.
pub fn dedupe_key(
    notifier: &str,
    session: &str,
    event: &str,
    reaction: Option<&str>,
    priority: &str,
) -> String {
    format!(
        "{notifier}|{session}|{event}|{}|{priority}",
        reaction.unwrap_or("-")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::keys::ReactionKey;
    use crate::store::{Activity, PrRef, SessionId, SessionState};

    fn session(project: &str) -> SessionRecord {
        let at = DateTime::parse_from_rfc3339("2025-01-01T12:00:00Z")
            .expect("date")
            .with_timezone(&Utc);
        SessionRecord {
            id: SessionId("demo-3".into()),
            project: project.into(),
            state: SessionState::Errored,
            reason: Some("agent_exited_3".into()),
            agent: "scripted".into(),
            runtime: "process".into(),
            workspace_kind: "worktree".into(),
            branch: Some("flotilla/demo-3".into()),
            workspace: None,
            pr: Some(PrRef {
                number: 7,
                url: "https://github.com/acme/w/pull/7".into(),
            }),
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

    fn routes(urgent: &[&str], info: &[&str]) -> Routes {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        Routes {
            urgent: v(urgent),
            action: v(&["ops"]),
            warning: v(&["ops"]),
            info: v(info),
        }
    }

    fn notify(priority: Priority, escalation: bool) -> Effect {
        Effect::Notify {
            reaction: Some(ReactionKey::AgentExited),
            priority,
            message: "The agent exited with status 3.".into(),
            escalation,
        }
    }

    fn router() -> Router {
        Router::new(
            BTreeMap::from([("demo".to_string(), routes(&["pager", "slack"], &["log"]))]),
            routes(&["ops"], &["ops"]),
            chrono::Duration::seconds(60),
        )
    }

    #[test]
    fn a_notify_effect_becomes_one_row_per_routed_notifier() {
        let s = session("demo");
        let at = s.created_at;
        let rows = router().route(&s, "agent.exited", &notify(Priority::Urgent, false), at);
        let names: Vec<&str> = rows.iter().map(|r| r.notifier.as_str()).collect();
        assert_eq!(names, ["pager", "slack"]);
        let r = &rows[0];
        assert_eq!(r.priority, "urgent");
        assert_eq!(r.event, "agent.exited");
        assert_eq!(r.session_id, Some(SessionId("demo-3".into())));
        assert_eq!(r.message, "The agent exited with status 3.");
        assert_eq!(
            r.dedupe_key,
            "pager|demo-3|agent.exited|agent-exited|urgent"
        );
        assert_eq!(r.dedupe_until, at + chrono::Duration::seconds(60));
        assert_eq!((r.created_at, r.next_attempt_at), (at, at));
        assert_eq!(r.status, NotificationStatus::Pending);
        assert_eq!(r.context["pr_url"], "https://github.com/acme/w/pull/7");
        assert_eq!(r.context["reaction"], "agent-exited");
        assert_eq!(r.context["state"], "errored");
        assert_ne!(rows[0].id, rows[1].id, "ids are unique");
    }

    /// Each failure told to a human the agent waits on is its own notification.
    #[test]
    fn each_failure_told_to_a_waiting_human_is_its_own_dedupe_group() {
        let mut s = session("demo");
        let at = s.created_at;
        let news = Effect::Notify {
            reaction: None,
            priority: Priority::Action,
            message: "While the agent waits for your answer: CI failed on the PR.".into(),
            escalation: false,
        };
        let key = |s: &SessionRecord, cause: &str| {
            router().route(s, cause, &news, at)[0].dedupe_key.clone()
        };
        s.meta = json!({"told_while_waiting": {"ci-failed": "abc:unit"}});
        let first = key(&s, "ci.failed");
        assert_eq!(first, key(&s, "ci.failed"), "the same failure");
        assert!(first.contains("|ci.failed|waiting@"), "{first}");
        s.meta["told_while_waiting"]["ci-failed"] = json!("def:lint");
        assert_ne!(first, key(&s, "ci.failed"), "another failure");
        // Another event's notification without a reaction keeps one group.
        assert!(key(&s, "agent.exited").contains("|agent.exited|-|"));
    }

    /// Two questions are two notifications, however close, and so is one asked again after
    /// it was answered; one question reported again, unanswered, is one.
    #[test]
    fn each_question_for_a_human_is_its_own_dedupe_group() {
        let mut s = session("demo");
        let at = s.created_at;
        let asks = Effect::Notify {
            reaction: Some(ReactionKey::AgentNeedsInput),
            priority: Priority::Urgent,
            message: "The agent is waiting for input: approve Bash: git push".into(),
            escalation: false,
        };
        let key = |s: &SessionRecord| {
            router().route(s, "agent.reported", &asks, at)[0]
                .dedupe_key
                .clone()
        };
        s.meta = json!({"question": "approve Bash: git commit -m round-1"});
        let first = key(&s);
        s.activity_at = Some(at + chrono::Duration::seconds(5));
        assert_eq!(first, key(&s), "the same question, unanswered (a flap)");
        s.meta = json!({"question": "approve Bash: git commit -m round-2"});
        let second = key(&s);
        assert_ne!(first, second, "the next question");
        s.meta["answered"] = json!({"question": "approve Bash: git commit -m round-2", "at": at});
        let answered = key(&s);
        assert_ne!(
            second, answered,
            "the same question asked again after an answer"
        );
        s.meta[crate::domain::machine::WAITING_SINCE] = json!(at + chrono::Duration::seconds(60));
        assert_ne!(
            answered,
            key(&s),
            "the same question asked again after the agent worked on (answered at the terminal)"
        );
        assert!(
            first.starts_with("pager|demo-3|agent.reported|agent-needs-input@"),
            "{first}"
        );
        // Other reactions keep one group for the window (a flapping check pages once).
        let exited = |s: &SessionRecord| {
            router().route(s, "agent.exited", &notify(Priority::Urgent, false), at)[0]
                .dedupe_key
                .clone()
        };
        let before = exited(&s);
        s.meta = json!({"question": "approve Bash: git push"});
        assert_eq!(before, exited(&s));
    }

    #[test]
    fn priorities_pick_their_route_and_unknown_projects_the_global_one() {
        let s = session("demo");
        let at = s.created_at;
        let info = router().route(&s, "x", &notify(Priority::Info, false), at);
        assert_eq!(info[0].notifier, "log");
        let other = router().route(&session("gone"), "x", &notify(Priority::Urgent, false), at);
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].notifier, "ops");
    }

    #[test]
    fn escalations_have_their_own_event_and_other_effects_route_nothing() {
        let s = session("demo");
        let at = s.created_at;
        let effects = vec![
            Effect::DestroyRuntime,
            notify(Priority::Urgent, true),
            Effect::Log {
                message: "x".into(),
            },
        ];
        let rows = router().route_step(&s, "timer.fired", &effects, at);
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.event == ESCALATION_EVENT));
        assert!(rows[0].dedupe_key.contains("|reaction.escalated|"));
        assert!(Router::default()
            .route_step(&s, "agent.exited", &[notify(Priority::Urgent, false)], at)
            .is_empty());
    }

    #[test]
    fn a_zero_window_ends_at_creation() {
        let s = session("demo");
        let r = Router::new(
            BTreeMap::new(),
            routes(&["ops"], &[]),
            chrono::Duration::zero(),
        );
        let rows = r.route(&s, "x", &notify(Priority::Urgent, false), s.created_at);
        assert_eq!(rows[0].dedupe_until, s.created_at);
    }
}
