use chrono::{TimeZone, Utc};

use super::*;
use crate::domain::machine::{self, Effect, Event};
use crate::domain::policy::Policy;
use crate::domain::pr::{CheckInfo, FailedCheck, ReviewComment};
use crate::domain::session::{Activity, SessionId, SessionRecord};

fn session(state: S, pr: Option<i64>) -> SessionSnapshot {
    let t = Utc
        .with_ymd_and_hms(2026, 1, 1, 12, 0, 0)
        .single()
        .expect("time");
    SessionSnapshot {
        session: SessionRecord {
            id: SessionId("demo-1".into()),
            project: "demo".into(),
            state,
            reason: None,
            agent: "scripted".into(),
            runtime: "process".into(),
            workspace_kind: "worktree".into(),
            branch: Some("feat/x".into()),
            workspace: Some("/tmp/ws".into()),
            pr: pr.map(|n| PrRef {
                number: n,
                url: format!("https://github.test/o/r/pull/{n}"),
            }),
            issue: None,
            prompt: Some("do it".into()),
            runtime_handle: None,
            activity: Activity::Active,
            activity_at: Some(t),
            restart_count: 0,
            created_at: t,
            updated_at: t,
            meta: serde_json::json!({}),
        },
        trackers: Default::default(),
        timers: Default::default(),
    }
}

fn status(head: &str) -> PrStatus {
    PrStatus {
        number: 5,
        url: "https://github.test/o/r/pull/5".into(),
        state: "open".into(),
        ci: "passing".into(),
        review: "pending".into(),
        mergeable: Some(true),
        draft: false,
        head_branch: "feat/x".into(),
        head_sha: head.into(),
        base_branch: "main".into(),
        merge_state: "clean".into(),
        conflicts: false,
        behind: false,
        checks: vec![],
        unresolved_threads: vec![],
        remarks: vec![],
    }
}

fn failing(head: &str) -> PrStatus {
    let mut p = status(head);
    p.ci = "failing".into();
    p.checks = vec![CheckInfo {
        name: "test".into(),
        status: "completed".into(),
        conclusion: Some("failure".into()),
        url: Some("https://ci.test/1".into()),
    }];
    p
}

fn threads() -> Vec<ReviewThread> {
    vec![
        ReviewThread {
            path: "src/a.rs".into(),
            line: Some(3),
            resolved: false,
            comments: vec![ReviewComment {
                author: "rev".into(),
                body: "rename this".into(),
                bot: false,
            }],
        },
        ReviewThread {
            path: "src/b.rs".into(),
            line: Some(9),
            resolved: false,
            comments: vec![ReviewComment {
                author: "rev".into(),
                body: "handle the error".into(),
                bot: false,
            }],
        },
    ]
}

/// Applies an observation through the real machine; returns the new snapshot and the effects.
fn apply(s: &SessionSnapshot, pr: &PrStatus, d: &PrDetails) -> (SessionSnapshot, Vec<Effect>) {
    let policy = Policy::defaults();
    let mut s = s.clone();
    let mut effects = vec![];
    for (i, kind) in events(&s, pr, d).into_iter().enumerate() {
        let at = machine::micros(Utc::now()) + chrono::Duration::microseconds(i as i64);
        let step = machine::step(&s, &Event { at, kind }, &policy);
        s = step.snapshot;
        effects.extend(step.effects);
    }
    (s, effects)
}

fn sends(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::SendToAgent { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_new_pr_on_the_branch_opens_and_waits_for_review_then_goes_quiet() {
    let s = session(S::Working, None);
    let (s, _) = apply(&s, &status("a1"), &PrDetails::default());
    assert_eq!(s.session.state, S::ReviewPending);
    assert_eq!(s.session.pr.as_ref().map(|p| p.number), Some(5));
    assert!(events(&s, &status("a1"), &PrDetails::default()).is_empty());
}

#[test]
fn a_pr_from_another_branch_is_not_ours() {
    let s = session(S::Working, None);
    let mut p = status("a1");
    p.head_branch = "other".into();
    assert!(events(&s, &p, &PrDetails::default()).is_empty());
    assert!(!owns(&s, &p));
}

#[test]
fn ci_failure_sends_names_urls_and_log_once_per_head() {
    let s = session(S::PrOpen, Some(5));
    let pr = failing("a1");
    assert_eq!(
        needs(&s, &pr),
        Needs {
            ci: true,
            feedback: false
        }
    );
    let details = PrDetails {
        ci: Some(CiSummary {
            state: "failing".into(),
            checks: pr.checks.clone(),
            failed: vec![FailedCheck {
                name: "test".into(),
                url: Some("https://ci.test/1".into()),
                log_excerpt: Some("assertion failed: left == right".into()),
            }],
        }),
        feedback: None,
    };
    let (s, effects) = apply(&s, &pr, &details);
    assert_eq!(s.session.state, S::CiFailed);
    let sent = sends(&effects);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].contains("Failed check: test"));
    assert!(sent[0].contains("https://ci.test/1"));
    assert!(sent[0].contains("assertion failed"));
    // Seen again (poll after webhook): nothing, and no details needed.
    assert!(events(&s, &pr, &details).is_empty());
    assert_eq!(needs(&s, &pr), Needs::default());
    // A new push that fails again is a second attempt.
    let (s, effects) = apply(&s, &failing("b2"), &details);
    assert_eq!(sends(&effects).len(), 1);
    assert_eq!(s.trackers["ci-failed"].attempts, 2);
    // Green again.
    let (s, _) = apply(&s, &status("c3"), &PrDetails::default());
    assert_eq!(s.session.state, S::ReviewPending);
}

#[test]
fn pending_ci_says_nothing() {
    let s = session(S::PrOpen, Some(5));
    let mut p = status("a1");
    p.ci = "pending".into();
    assert!(events(&s, &p, &PrDetails::default()).is_empty());
}

#[test]
fn changes_requested_sends_every_thread_once() {
    let s = session(S::ReviewPending, Some(5));
    let mut p = status("a1");
    p.review = "changes_requested".into();
    p.unresolved_threads = threads();
    assert!(needs(&s, &p).feedback);
    let (s, effects) = apply(&s, &p, &PrDetails::default());
    assert_eq!(s.session.state, S::ChangesRequested);
    let sent = sends(&effects);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].contains("src/a.rs:3"));
    assert!(sent[0].contains("@rev: rename this"));
    assert!(sent[0].contains("src/b.rs:9"));
    assert!(sent[0].contains("handle the error"));
    assert!(events(&s, &p, &PrDetails::default()).is_empty());
}

#[test]
fn approved_and_green_is_merge_ready_approved_and_red_is_not() {
    let s = session(S::ReviewPending, Some(5));
    let mut p = status("a1");
    p.review = "approved".into();
    let (m, effects) = apply(&s, &p, &PrDetails::default());
    assert_eq!(m.session.state, S::Mergeable);
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::Notify { .. } | Effect::Merge { .. })));
    assert!(events(&m, &p, &PrDetails::default()).is_empty());
    p.mergeable = None;
    let (a, _) = apply(&s, &p, &PrDetails::default());
    assert_eq!(a.session.state, S::Approved);
}

#[test]
fn conflicts_send_rebase_instructions_once_per_head() {
    let s = session(S::PrOpen, Some(5));
    let mut p = status("a1");
    p.conflicts = true;
    p.mergeable = Some(false);
    let (s, effects) = apply(&s, &p, &PrDetails::default());
    let sent = sends(&effects);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].contains("git rebase origin/main"));
    let (_, effects) = apply(&s, &p, &PrDetails::default());
    assert!(sends(&effects).is_empty());
}

#[test]
fn merged_and_closed() {
    let s = session(S::Mergeable, Some(5));
    let mut p = status("a1");
    p.state = "merged".into();
    let (m, _) = apply(&s, &p, &PrDetails::default());
    assert_eq!(m.session.state, S::Merged);
    assert!(events(&m, &p, &PrDetails::default()).is_empty());
    p.state = "closed".into();
    let (c, _) = apply(&s, &p, &PrDetails::default());
    assert_eq!(c.session.state, S::Working);
    assert!(c.session.pr.is_none());
}

#[test]
fn log_excerpts_keep_the_tail() {
    let long = format!("{}END", "x".repeat(10_000));
    assert!(tail(&long, 10).ends_with("END"));
    assert_eq!(tail(&long, 10).chars().count(), 10);
    assert_eq!(tail("ünï", 10), "ünï");
}

// ---- agent-orchestrator's lifecycle scenarios (reference §11), on the pure functions -----

fn notifies(effects: &[Effect]) -> Vec<(Option<String>, bool)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Notify {
                reaction,
                escalation,
                ..
            } => Some((reaction.map(|r| r.as_str().to_string()), *escalation)),
            _ => None,
        })
        .collect()
}

#[test]
fn ao_7_ci_failure_is_sent_once_per_failure_and_escalates_after_two_retries() {
    let mut s = session(S::PrOpen, Some(5));
    let mut escalated = vec![];
    for (i, head) in ["a1", "b2", "c3"].iter().enumerate() {
        let (next, effects) = apply(&s, &failing(head), &PrDetails::default());
        // Seen again while still failing: nothing.
        let (again, repeat) = apply(&next, &failing(head), &PrDetails::default());
        assert!(repeat.is_empty(), "poll {i} repeated {repeat:?}");
        s = again;
        if i < 2 {
            assert_eq!(sends(&effects).len(), 1, "attempt {i}");
        } else {
            escalated = notifies(&effects);
            assert!(sends(&effects).is_empty());
        }
    }
    assert_eq!(escalated, vec![(Some("ci-failed".to_string()), true)]);
}

#[test]
fn ao_8_auto_false_turns_a_send_into_a_notification() {
    let mut policy = Policy::defaults();
    if let Some(r) = policy.reactions.get_mut("ci-failed") {
        r.auto = false;
    }
    let s = session(S::PrOpen, Some(5));
    let mut effects = vec![];
    let mut snap = s.clone();
    for kind in events(&s, &failing("a1"), &PrDetails::default()) {
        let step = machine::step(
            &snap,
            &Event {
                at: Utc::now(),
                kind,
            },
            &policy,
        );
        snap = step.snapshot;
        effects.extend(step.effects);
    }
    assert!(sends(&effects).is_empty());
    assert_eq!(
        notifies(&effects),
        vec![(Some("ci-failed".to_string()), false)]
    );
}

#[test]
fn ao_9_a_handled_transition_sends_no_extra_generic_notification() {
    let s = session(S::PrOpen, Some(5));
    let (_, effects) = apply(&s, &failing("a1"), &PrDetails::default());
    assert_eq!(sends(&effects).len(), 1);
    assert!(notifies(&effects).is_empty(), "{effects:?}");
}

#[test]
fn ao_10_unresolved_comments_are_sent_without_a_decision_change_and_once() {
    let s = session(S::ReviewPending, Some(5));
    let mut p = status("a1");
    p.review = "pending".into();
    p.unresolved_threads = threads();
    let (s, effects) = apply(&s, &p, &PrDetails::default());
    assert_eq!(sends(&effects).len(), 1);
    // A push that does not resolve them: not sent again.
    p.head_sha = "b2".into();
    let (_, effects) = apply(&s, &p, &PrDetails::default());
    assert!(sends(&effects).is_empty());
}

#[test]
fn ao_11_conflicts_once_again_on_a_new_episode_and_cleared_by_the_merge() {
    let s = session(S::PrOpen, Some(5));
    let mut p = status("a1");
    p.conflicts = true;
    p.mergeable = Some(false);
    let (s, e1) = apply(&s, &p, &PrDetails::default());
    let (s, e2) = apply(&s, &p, &PrDetails::default());
    assert_eq!((sends(&e1).len(), sends(&e2).len()), (1, 0));
    // Rebased (new head), base moved again: a new episode.
    p.head_sha = "b2".into();
    let (s, e3) = apply(&s, &p, &PrDetails::default());
    assert_eq!(sends(&e3).len(), 1);
    p.state = "merged".into();
    let (s, _) = apply(&s, &p, &PrDetails::default());
    assert!(s.trackers.is_empty());
}

#[test]
fn ao_12_approved_or_no_review_needed_and_green_and_mergeable_is_mergeable() {
    for review in ["approved", "none"] {
        let s = session(S::PrOpen, Some(5));
        let mut p = status("a1");
        p.review = review.into();
        let (s, _) = apply(&s, &p, &PrDetails::default());
        assert_eq!(s.session.state, S::Mergeable, "{review}");
    }
    // Review required: waits.
    let s = session(S::PrOpen, Some(5));
    let (s, _) = apply(&s, &status("a1"), &PrDetails::default());
    assert_eq!(s.session.state, S::ReviewPending);
}

#[test]
fn ao_13_merged_ends_in_merged_then_the_grace_timer_cleans_up() {
    let s = session(S::Mergeable, Some(5));
    let mut p = status("a1");
    p.state = "merged".into();
    let (s, _) = apply(&s, &p, &PrDetails::default());
    assert_eq!(s.session.state, S::Merged);
    assert!(s.timers.contains_key("merge_grace"));
}

#[test]
fn ao_14_closed_goes_back_to_working_with_the_pr_closed_reaction() {
    let s = session(S::ReviewPending, Some(5));
    let mut p = status("a1");
    p.state = "closed".into();
    let (s, effects) = apply(&s, &p, &PrDetails::default());
    assert_eq!(s.session.state, S::Working);
    assert_eq!(
        notifies(&effects),
        vec![(Some("pr-closed".to_string()), false)]
    );
}

#[test]
fn ao_22_a_batched_observation_needs_no_per_pr_calls_when_nothing_is_due() {
    let s = session(S::ReviewPending, Some(5));
    // Green, waiting: no CI or review details needed.
    assert_eq!(needs(&s, &status("a1")), Needs::default());
    // Failing and already told: none either.
    let (s, _) = apply(
        &session(S::PrOpen, Some(5)),
        &failing("a1"),
        &PrDetails::default(),
    );
    assert_eq!(needs(&s, &failing("a1")), Needs::default());
}

#[test]
fn a_conflict_that_clears_and_comes_back_on_the_same_head_is_a_new_episode() {
    let s = session(S::PrOpen, Some(5));
    let mut conflicting = status("a1");
    conflicting.conflicts = true;
    conflicting.mergeable = Some(false);
    let (s, effects) = apply(&s, &conflicting, &PrDetails::default());
    assert_eq!(sends(&effects).len(), 1);
    // GitHub still computing: not the end of the episode.
    let mut unknown = status("a1");
    unknown.mergeable = None;
    assert!(events(&s, &unknown, &PrDetails::default()).is_empty());
    // Clean again (the base moved back): the episode ends, once.
    let clean = status("a1");
    let (s, _) = apply(&s, &clean, &PrDetails::default());
    assert!(!events(&s, &clean, &PrDetails::default())
        .iter()
        .any(|e| matches!(e, EventKind::ConflictsCleared)));
    // The same head conflicts again: a new episode, a new instruction, attempts kept.
    let (s, effects) = apply(&s, &conflicting, &PrDetails::default());
    assert_eq!(sends(&effects).len(), 1);
    assert_eq!(s.trackers["merge-conflicts"].attempts, 2);
}

fn bot_thread() -> ReviewThread {
    ReviewThread {
        path: "src/lib.rs".into(),
        line: Some(42),
        resolved: false,
        comments: vec![ReviewComment {
            author: "cursor".into(),
            body: "Possible null dereference here.".into(),
            bot: true,
        }],
    }
}

#[test]
fn bot_threads_are_bugbot_comments_not_a_change_request() {
    let s = session(S::ReviewPending, Some(5));
    let mut p = status("a1");
    p.unresolved_threads = vec![bot_thread()];
    let (s, effects) = apply(&s, &p, &PrDetails::default());
    assert_eq!(
        s.session.state,
        S::ReviewPending,
        "no human asked for changes"
    );
    let sent = sends(&effects);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].contains("src/lib.rs:42"), "{}", sent[0]);
    assert!(sent[0].contains("Possible null dereference"), "{}", sent[0]);
    assert_eq!(s.trackers["bugbot-comments"].attempts, 1);
    // Seen again: nothing. Resolved: the episode ends. Back: sent again, attempts kept.
    assert!(sends(&apply(&s, &p, &PrDetails::default()).1).is_empty());
    let (s, _) = apply(&s, &status("a1"), &PrDetails::default());
    let (s, effects) = apply(&s, &p, &PrDetails::default());
    assert_eq!(sends(&effects).len(), 1);
    assert_eq!(s.trackers["bugbot-comments"].attempts, 2);

    // A human thread next to the bot's is a change request; its instruction lists only it.
    let mut both = status("a1");
    both.unresolved_threads = vec![bot_thread(), threads().remove(0)];
    let (s2, effects) = apply(
        &session(S::ReviewPending, Some(5)),
        &both,
        &PrDetails::default(),
    );
    assert_eq!(s2.session.state, S::ChangesRequested);
    let sent = sends(&effects);
    assert_eq!(sent.len(), 2, "{sent:?}");
    let review = sent
        .iter()
        .find(|m| m.contains("requested changes"))
        .expect("review");
    assert!(!review.contains("null dereference"), "{review}");
}
