use chrono::{TimeZone, Utc};

use super::*;
use crate::actors::session::machine::{self, Effect, Event};
use crate::actors::session::policy::Policy;
use crate::plugins::{CheckInfo, FailedCheck, ReviewComment};
use crate::store::{Activity, SessionId, SessionRecord};

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
        review: "none".into(),
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
            }],
        },
        ReviewThread {
            path: "src/b.rs".into(),
            line: Some(9),
            resolved: false,
            comments: vec![ReviewComment {
                author: "rev".into(),
                body: "handle the error".into(),
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
