//! Table tests for `step`: every (state, event) pair has a row, plus targeted tests of the
//! reaction engine's effects.

use std::collections::BTreeMap;

use chrono::{Duration, TimeZone, Utc};

use super::*;
use crate::domain::policy::{MergeMethod, Priority};

// The texts timers are stored under: typed keys must keep writing exactly these.
const TIMER_SPAWN: &str = "spawn_timeout";
const TIMER_STUCK: &str = "stuck_check";
const TIMER_IDLE: &str = "idle_nudge";
const TIMER_MERGE_GRACE: &str = "merge_grace";
const TIMER_ABANDON: &str = "abandon";
use crate::domain::policy::{Policy, ReactionAction};
use crate::domain::session::{
    Activity, PrRef, ReactionTracker, SessionId, SessionRecord, SessionSnapshot,
};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0)
        .single()
        .expect("valid time")
}

/// A hook's report that the agent waits on `q`.
fn hook_asks(q: &str) -> EventKind {
    EventKind::AgentReported {
        state: ReportedState::NeedsInput,
        note: Some(q.into()),
        pr: None,
        hook: true,
    }
}

/// How many pages `effects` send.
fn pages(effects: &[Effect]) -> usize {
    effects
        .iter()
        .filter(|e| matches!(e, Effect::Notify { .. }))
        .count()
}

fn pr(n: i64) -> PrRef {
    PrRef {
        number: n,
        url: format!("https://github.test/acme/w/pull/{n}"),
    }
}

/// A session in `state`, idle for an hour, with every timer overdue and a ci-failed tracker:
/// so each timer row really exercises its branch.
fn base(state: SessionState) -> SessionSnapshot {
    let long_ago = t0() - Duration::hours(1);
    let session = SessionRecord {
        id: SessionId("demo-1".into()),
        project: "demo".into(),
        state,
        reason: None,
        agent: "scripted".into(),
        runtime: "process".into(),
        workspace_kind: "worktree".into(),
        branch: Some("session/demo-1".into()),
        workspace: Some("/tmp/ws".into()),
        pr: (state.has_open_pr() || state == SessionState::Merged).then(|| pr(7)),
        issue: None,
        prompt: Some("do it".into()),
        runtime_handle: None,
        activity: Activity::Idle,
        activity_at: Some(long_ago),
        restart_count: 0,
        created_at: long_ago,
        updated_at: long_ago,
        meta: serde_json::json!({}),
    };
    let mut timers = BTreeMap::new();
    for k in [
        TIMER_SPAWN,
        TIMER_STUCK,
        TIMER_IDLE,
        TIMER_MERGE_GRACE,
        "escalate:ci-failed",
    ] {
        timers.insert(
            k.to_string(),
            TimerRecord {
                kind: k.into(),
                deadline: t0() - Duration::seconds(1),
            },
        );
    }
    let mut trackers = BTreeMap::new();
    trackers.insert(
        "ci-failed".to_string(),
        ReactionTracker {
            reaction: "ci-failed".into(),
            attempts: 1,
            first_triggered_at: long_ago,
            last_triggered_at: long_ago,
            fingerprint: None,
            escalated: false,
        },
    );
    SessionSnapshot {
        session,
        trackers,
        timers,
    }
}

/// The columns of the table, in order.
fn samples() -> Vec<(&'static str, EventKind)> {
    let timer = |k: &str| EventKind::TimerFired { kind: k.into() };
    vec![
        ("spawn", EventKind::SpawnRequested),
        (
            "started",
            EventKind::RuntimeStarted {
                handle: serde_json::json!({"pid": 1}),
                workspace: None,
                branch: None,
            },
        ),
        (
            "spawn_failed",
            EventKind::SpawnFailed {
                reason: "boom".into(),
            },
        ),
        ("active", EventKind::AgentActive),
        (
            "idle",
            EventKind::AgentIdle {
                since: t0() - Duration::minutes(1),
            },
        ),
        ("waiting", EventKind::AgentWaitingInput { question: None }),
        (
            "exit0",
            EventKind::AgentExited {
                code: Some(0),
                output: None,
                failure: None,
            },
        ),
        (
            "exit1",
            EventKind::AgentExited {
                code: Some(1),
                output: None,
                failure: None,
            },
        ),
        (
            "vanished",
            EventKind::AgentExited {
                code: None,
                output: None,
                failure: None,
            },
        ),
        ("pr_opened", EventKind::PrOpened { pr: pr(8) }),
        (
            "ci_failed",
            EventKind::CiFailed {
                summary: "lint".into(),
                fingerprint: "fp1".into(),
            },
        ),
        ("ci_passed", EventKind::CiPassed),
        ("review_pending", EventKind::ReviewPending),
        (
            "changes",
            EventKind::ChangesRequested {
                summary: "a.rs:1".into(),
                fingerprint: "t1".into(),
            },
        ),
        ("approved", EventKind::Approved),
        ("merge_ready", EventKind::MergeReady),
        (
            "conflicts",
            EventKind::MergeConflicts {
                summary: "behind".into(),
                fingerprint: "c1".into(),
            },
        ),
        ("merged", EventKind::PrMerged),
        ("closed", EventKind::PrClosed),
        ("conflicts_cleared", EventKind::ConflictsCleared),
        (
            "bot_comments",
            EventKind::BotComments {
                summary: "lib.rs:4 bug".into(),
                fingerprint: "b1".into(),
            },
        ),
        ("bot_resolved", EventKind::BotCommentsResolved),
        (
            "merge_failed",
            EventKind::MergeFailed {
                reason: "405 not mergeable".into(),
            },
        ),
        (
            "kill",
            EventKind::KillRequested {
                reason: "manually_killed".into(),
            },
        ),
        ("restore", EventKind::RestoreRequested),
        ("t_spawn", timer(TIMER_SPAWN)),
        ("t_stuck", timer(TIMER_STUCK)),
        ("t_idle", timer(TIMER_IDLE)),
        ("t_merge", timer(TIMER_MERGE_GRACE)),
        ("t_escalate", timer("escalate:ci-failed")),
        (
            "gave_up",
            EventKind::ActorGaveUp {
                reason: "too many restarts".into(),
            },
        ),
        (
            "report",
            EventKind::AgentReported {
                state: ReportedState::Working,
                note: None,
                pr: None,
                hook: false,
            },
        ),
        (
            "usage",
            EventKind::UsageObserved {
                usage: Usage {
                    input_tokens: 10,
                    output_tokens: 5,
                    cache_tokens: 0,
                    cost_usd: Some(0.01),
                    cost_source: None,
                },
                project_usd: None,
                unpriced_models: Vec::new(),
            },
        ),
        ("answered", EventKind::InputAnswered { question: None }),
        (
            "api_error",
            EventKind::AgentApiError {
                logged_at: t0(),
                status: Some(500),
                message: "500 Internal server error".into(),
                attempt: Some(1),
                max_retries: Some(10),
            },
        ),
    ]
}

/// Expected state after each column's event: `=` unchanged, `!` rejected (409), else a state.
/// Abbreviations: sp spawning, wk working, po pr_open, cf ci_failed, rp review_pending,
/// cr changes_requested, ap approved, mg mergeable, md merged, ni needs_input, st stuck,
/// er errored, kd killed, dn done, tm terminated.
#[rustfmt::skip]
const TABLE: &[(&str, &str)] = &[
    //                     spawn started fail act idle wait ex0 ex1 van pr ci cip rvp chg apr mrd cfl mrg cls clr bot bres mf kill rest tsp tst tid tmg tesc gave report usage ans api
    ("spawning"            , "= wk er = = ni dn er kd = = = = = = = = md = = = = = kd ! er = = = = er = = = ="),
    ("working"             , "= = = = = ni dn er kd po = = = = = = = md = = = = = kd ! = st = = = er = = = ="),
    ("pr_open"             , "= = = = = ni = = = = cf = rp cr ap mg = md wk = = = = kd ! = st = = = er = = = ="),
    ("ci_failed"           , "= = = = = ni = = = = = po = cr ap mg = md wk = = = = kd ! = = = = = er = = = ="),
    ("review_pending"      , "= = = = = ni = = = = cf = = cr ap mg = md wk = = = = kd ! = = = = = er = = = ="),
    ("changes_requested"   , "= = = = = ni = = = = cf = = = ap mg = md wk = = = = kd ! = = = = = er = = = ="),
    ("approved"            , "= = = = = ni = = = = cf = = cr = mg = md wk = = = = kd ! = = = = = er = = = ="),
    ("mergeable"           , "= = = = = ni = = = = cf = = cr = = = md wk = = = ap kd ! = = = = = er = = = ="),
    ("merged"              , "= = = = = = = = = = = = = = = = = = = = = = = kd ! = = = tm = er ! = = ="),
    ("needs_input"         , "= = = wk wk = dn er kd = = = = = = = = md = = = = = kd ! = = = = = er wk = wk ="),
    ("stuck"               , "= = = wk = ni dn er kd po = = = = = = = md = = = = = kd sp = = = = = er wk = = ="),
    ("errored"             , "= = = = = = = = = = = = = = = = = = = = = = = = sp = = = = = = ! = = ="),
    ("killed"              , "= = = = = = = = = = = = = = = = = = = = = = = = sp = = = = = = ! = = ="),
    ("done"                , "= = = = = = = = = = = = = = = = = = = = = = = = sp = = = = = = ! = = ="),
    ("terminated"          , "= = = = = = = = = = = = = = = = = = = = = = = = sp = = = = = = ! = = ="),
];

fn abbrev(s: &str) -> Option<SessionState> {
    use SessionState::*;
    Some(match s {
        "sp" => Spawning,
        "wk" => Working,
        "po" => PrOpen,
        "cf" => CiFailed,
        "rp" => ReviewPending,
        "cr" => ChangesRequested,
        "ap" => Approved,
        "mg" => Mergeable,
        "md" => Merged,
        "ni" => NeedsInput,
        "st" => Stuck,
        "er" => Errored,
        "kd" => Killed,
        "dn" => Done,
        "tm" => Terminated,
        _ => return None,
    })
}

#[test]
fn every_state_and_event_pair_has_a_row_and_matches() {
    let policy = Policy::defaults();
    let cols = samples();
    assert_eq!(TABLE.len(), SessionState::ALL.len(), "one row per state");
    let mut failures = Vec::new();
    for state in SessionState::ALL {
        let row = TABLE
            .iter()
            .find(|(s, _)| *s == state.as_str())
            .unwrap_or_else(|| panic!("no row for state {state}"));
        let cells: Vec<&str> = row.1.split_whitespace().collect();
        assert_eq!(cells.len(), cols.len(), "row {state} has a cell per event");
        for ((name, kind), cell) in cols.iter().zip(cells) {
            let snap = base(state);
            let ev = Event {
                at: t0(),
                kind: kind.clone(),
            };
            let out = step(&snap, &ev, &policy);
            let got = out.snapshot.session.state;
            let ok = match cell {
                "=" => got == state && !matches!(out.outcome, Outcome::Rejected(_)),
                "!" => got == state && matches!(out.outcome, Outcome::Rejected(_)),
                other => {
                    let want = abbrev(other).unwrap_or_else(|| panic!("bad cell {other}"));
                    got == want && out.outcome == Outcome::Applied
                }
            };
            if !ok {
                failures.push(format!(
                    "{state} + {name}: expected {cell}, got {got} ({:?})",
                    out.outcome
                ));
            }
            // A step that changes nothing must say so (so the actor persists nothing).
            if out.snapshot == snap && out.effects.is_empty() {
                assert_ne!(out.outcome, Outcome::Applied, "{state} + {name}");
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn terminal_states_hold_no_timers() {
    let policy = Policy::defaults();
    for state in SessionState::ALL {
        for (name, kind) in samples() {
            let out = step(&base(state), &Event { at: t0(), kind }, &policy);
            if out.snapshot.session.state.is_terminal() && out.outcome == Outcome::Applied {
                assert!(
                    out.snapshot.timers.is_empty(),
                    "{state} + {name} left timers {:?}",
                    out.snapshot.timers.keys()
                );
            }
        }
    }
}

fn fresh(state: SessionState) -> SessionSnapshot {
    let mut s = base(state);
    s.trackers.clear();
    s.timers.clear();
    s
}

fn at(min: i64) -> DateTime<Utc> {
    t0() + Duration::minutes(min)
}

fn sends(effects: &[Effect]) -> usize {
    effects
        .iter()
        .filter(|e| matches!(e, Effect::SendToAgent { .. }))
        .count()
}

fn escalations(effects: &[Effect]) -> usize {
    effects
        .iter()
        .filter(|e| {
            matches!(
                e,
                Effect::Notify {
                    escalation: true,
                    ..
                }
            )
        })
        .count()
}

#[test]
fn ci_failed_sends_twice_then_escalates_once() {
    let p = Policy::defaults();
    let mut s = fresh(SessionState::PrOpen);
    let mut all = Vec::new();
    for i in 0..5 {
        let out = step(
            &s,
            &Event {
                at: at(i),
                kind: EventKind::CiFailed {
                    summary: "check `lint` failed: https://ci/1".into(),
                    fingerprint: format!("fp{i}"),
                },
            },
            &p,
        );
        all.push(out.effects.clone());
        s = out.snapshot;
        // CI passes in between: the flap must not reset the counter (ao #1531).
        s = step(
            &s,
            &Event {
                at: at(i),
                kind: EventKind::CiPassed,
            },
            &p,
        )
        .snapshot;
    }
    let counts: Vec<(usize, usize)> = all.iter().map(|e| (sends(e), escalations(e))).collect();
    assert_eq!(counts, vec![(1, 0), (1, 0), (0, 1), (0, 0), (0, 0)]);
    assert_eq!(s.trackers["ci-failed"].attempts, 5);
    assert!(s.trackers["ci-failed"].escalated);
    match &all[0][0] {
        Effect::SendToAgent { message, .. } => assert!(message.contains("https://ci/1")),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn same_failure_set_is_sent_once() {
    let p = Policy::defaults();
    let ev = |m| Event {
        at: at(m),
        kind: EventKind::ChangesRequested {
            summary: "a.rs:3 alice: rename".into(),
            fingerprint: "threads-1-2".into(),
        },
    };
    let first = step(&fresh(SessionState::ReviewPending), &ev(0), &p);
    assert_eq!(sends(&first.effects), 1);
    assert!(first
        .snapshot
        .timers
        .contains_key("escalate:changes-requested"));
    let again = step(&first.snapshot, &ev(1), &p);
    assert_eq!(sends(&again.effects), 0);
    assert!(matches!(again.outcome, Outcome::Noop(_)));
}

#[test]
fn duration_escalation_fires_from_its_timer_once() {
    let p = Policy::defaults();
    let s = step(
        &fresh(SessionState::PrOpen),
        &Event {
            at: at(0),
            kind: EventKind::ChangesRequested {
                summary: "x".into(),
                fingerprint: "f".into(),
            },
        },
        &p,
    )
    .snapshot;
    let deadline = s.timers["escalate:changes-requested"].deadline;
    assert_eq!(deadline, at(30));
    let early = step(
        &s,
        &Event {
            at: at(10),
            kind: EventKind::TimerFired {
                kind: "escalate:changes-requested".into(),
            },
        },
        &p,
    );
    assert!(matches!(early.outcome, Outcome::Noop(_)));
    let due = step(
        &s,
        &Event {
            at: at(30),
            kind: EventKind::TimerFired {
                kind: "escalate:changes-requested".into(),
            },
        },
        &p,
    );
    assert_eq!(escalations(&due.effects), 1);
    assert!(!due
        .snapshot
        .timers
        .contains_key("escalate:changes-requested"));
}

#[test]
fn send_to_agent_without_message_uses_builtin_text() {
    let p = Policy::defaults();
    assert!(p.reactions["merge-conflicts"].message.is_none());
    let out = step(
        &fresh(SessionState::PrOpen),
        &Event {
            at: at(0),
            kind: EventKind::MergeConflicts {
                summary: "behind main by 3".into(),
                fingerprint: "e1".into(),
            },
        },
        &p,
    );
    match out.effects.as_slice() {
        [Effect::SendToAgent { message, .. }] => assert!(message.contains("Rebase")),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn auto_false_suppresses_send_but_notifies() {
    let mut p = Policy::defaults();
    if let Some(r) = p.reactions.get_mut("ci-failed") {
        r.auto = false;
    }
    let out = step(
        &fresh(SessionState::PrOpen),
        &Event {
            at: at(0),
            kind: EventKind::CiFailed {
                summary: "x".into(),
                fingerprint: "f".into(),
            },
        },
        &p,
    );
    assert_eq!(sends(&out.effects), 0);
    assert!(matches!(out.effects[0], Effect::Notify { .. }));
}

#[test]
fn approved_and_green_merges_only_when_auto_merge_is_on() {
    let mut p = Policy::defaults();
    let ev = Event {
        at: at(0),
        kind: EventKind::MergeReady,
    };
    let off = step(&fresh(SessionState::Approved), &ev, &p);
    assert!(matches!(
        off.effects.as_slice(),
        [Effect::Notify {
            priority: Priority::Action,
            ..
        }]
    ));
    if let Some(r) = p.reactions.get_mut("approved-and-green") {
        r.auto_merge = true;
        r.merge_method = MergeMethod::Rebase;
    }
    let on = step(&fresh(SessionState::Approved), &ev, &p);
    assert_eq!(
        on.effects,
        vec![Effect::Merge {
            method: MergeMethod::Rebase
        }]
    );
}

#[test]
fn runtime_started_arms_stuck_watch_and_spawn_timer_is_cleared() {
    let p = Policy::defaults();
    let mut s = fresh(SessionState::Spawning);
    s.timers.insert(
        TIMER_SPAWN.into(),
        TimerRecord {
            kind: TIMER_SPAWN.into(),
            deadline: at(5),
        },
    );
    let out = step(
        &s,
        &Event {
            at: at(0),
            kind: EventKind::RuntimeStarted {
                handle: serde_json::json!({"pid": 42}),
                workspace: Some("/w".into()),
                branch: Some("feat/x".into()),
            },
        },
        &p,
    );
    assert_eq!(out.snapshot.session.state, SessionState::Working);
    assert!(!out.snapshot.timers.contains_key(TIMER_SPAWN));
    assert_eq!(out.snapshot.timers[TIMER_STUCK].deadline, at(10));
    assert_eq!(out.snapshot.session.branch.as_deref(), Some("feat/x"));
}

#[test]
fn idle_agent_is_nudged_then_stuck_and_unknown_activity_never_is() {
    let p = Policy::defaults();
    let s = step(
        &fresh(SessionState::Working),
        &Event {
            at: at(0),
            kind: EventKind::AgentIdle { since: at(0) },
        },
        &p,
    )
    .snapshot;
    assert_eq!(s.timers[TIMER_IDLE].deadline, at(5));
    let nudged = step(
        &s,
        &Event {
            at: at(5),
            kind: EventKind::TimerFired {
                kind: TIMER_IDLE.into(),
            },
        },
        &p,
    );
    assert_eq!(sends(&nudged.effects), 1);
    let stuck = step(
        &nudged.snapshot,
        &Event {
            at: at(10),
            kind: EventKind::TimerFired {
                kind: TIMER_STUCK.into(),
            },
        },
        &p,
    );
    assert_eq!(stuck.snapshot.session.state, SessionState::Stuck);

    let mut unknown = fresh(SessionState::Working);
    unknown.session.activity = Activity::Unknown;
    unknown.timers.insert(
        TIMER_STUCK.into(),
        TimerRecord {
            kind: TIMER_STUCK.into(),
            deadline: at(0),
        },
    );
    let out = step(
        &unknown,
        &Event {
            at: at(0),
            kind: EventKind::TimerFired {
                kind: TIMER_STUCK.into(),
            },
        },
        &p,
    );
    assert_eq!(out.snapshot.session.state, SessionState::Working);
    assert!(out.snapshot.timers.contains_key(TIMER_STUCK), "re-armed");
}

#[test]
fn kill_is_idempotent_and_says_so() {
    let p = Policy::defaults();
    let ev = Event {
        at: at(0),
        kind: EventKind::KillRequested {
            reason: "manually_killed".into(),
        },
    };
    let once = step(&fresh(SessionState::Working), &ev, &p);
    assert_eq!(
        once.effects,
        vec![Effect::DestroyRuntime, Effect::CleanupWorkspace]
    );
    assert_eq!(
        once.snapshot.session.reason.as_deref(),
        Some("manually_killed")
    );
    let twice = step(&once.snapshot, &ev, &p);
    match twice.outcome {
        Outcome::Noop(why) => assert!(why.contains("already killed"), "{why}"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(twice.effects.is_empty());
}

#[test]
fn restore_restarts_the_runtime_with_resume_and_a_spawn_deadline() {
    let p = Policy::defaults();
    let out = step(
        &fresh(SessionState::Killed),
        &Event {
            at: at(0),
            kind: EventKind::RestoreRequested,
        },
        &p,
    );
    assert_eq!(out.effects, vec![Effect::StartRuntime { resume: true }]);
    assert_eq!(out.snapshot.timers[TIMER_SPAWN].deadline, at(5));
}

#[test]
fn merged_pr_is_cleaned_up_after_the_grace_period() {
    let p = Policy::defaults();
    let merged = step(
        &fresh(SessionState::Mergeable),
        &Event {
            at: at(0),
            kind: EventKind::PrMerged,
        },
        &p,
    )
    .snapshot;
    assert_eq!(merged.timers[TIMER_MERGE_GRACE].deadline, at(5));
    let done = step(
        &merged,
        &Event {
            at: at(5),
            kind: EventKind::TimerFired {
                kind: TIMER_MERGE_GRACE.into(),
            },
        },
        &p,
    );
    assert_eq!(done.snapshot.session.state, SessionState::Terminated);
    assert_eq!(
        done.effects,
        vec![Effect::DestroyRuntime, Effect::CleanupWorkspace]
    );
}

#[test]
fn notify_reactions_carry_their_priority() {
    let p = Policy::defaults();
    assert_eq!(p.reactions["agent-stuck"].action, ReactionAction::Notify);
    let out = step(
        &fresh(SessionState::Working),
        &Event {
            at: at(0),
            kind: EventKind::AgentWaitingInput { question: None },
        },
        &p,
    );
    assert!(matches!(
        out.effects.as_slice(),
        [Effect::Notify {
            priority: Priority::Urgent,
            ..
        }]
    ));
}

#[test]
fn spawn_requested_arms_the_deadline_and_starts_the_runtime_once() {
    let p = Policy::defaults();
    let ev = Event {
        at: at(0),
        kind: EventKind::SpawnRequested,
    };
    let first = step(&fresh(SessionState::Spawning), &ev, &p);
    assert_eq!(first.effects, vec![Effect::StartRuntime { resume: false }]);
    assert_eq!(first.snapshot.timers[TIMER_SPAWN].deadline, at(5));
    assert_eq!(
        crate::domain::machine::launch_intent(&first.snapshot),
        Some(at(0)),
        "the launch intent is committed with the step that starts the runtime"
    );
    let again = step(&first.snapshot, &ev, &p);
    assert!(again.effects.is_empty());
}

#[test]
fn orchestrators_are_never_stuck_and_do_not_report() {
    let p = Policy::defaults();
    let mut o = base(SessionState::Working);
    o.session.meta = serde_json::json!({"role": "orchestrator"});
    let out = step(
        &o,
        &Event {
            at: t0(),
            kind: EventKind::TimerFired {
                kind: TIMER_STUCK.into(),
            },
        },
        &p,
    );
    assert_eq!(out.snapshot.session.state, SessionState::Working);
    let r = step(
        &o,
        &Event {
            at: t0(),
            kind: EventKind::AgentReported {
                state: ReportedState::NeedsInput,
                note: None,
                pr: None,
                hook: false,
            },
        },
        &p,
    );
    assert!(matches!(r.outcome, Outcome::Rejected(_)));
}

#[test]
fn a_needs_input_report_moves_a_worker_to_needs_input() {
    let p = Policy::defaults();
    let out = step(
        &fresh(SessionState::Working),
        &Event {
            at: at(0),
            kind: EventKind::AgentReported {
                state: ReportedState::NeedsInput,
                note: Some("which db?".into()),
                pr: None,
                hook: false,
            },
        },
        &p,
    );
    assert_eq!(out.snapshot.session.state, SessionState::NeedsInput);
    assert_eq!(
        out.snapshot.session.meta["last_report"]["state"],
        "needs_input"
    );
}

#[test]
fn crossing_the_budget_stops_the_agent_once_or_escalates() {
    use crate::domain::policy::{Budget, BudgetAction};
    let mut p = Policy::defaults();
    p.budget = Some(Budget {
        session_usd: Some(1.0),
        session_tokens: None,
        project_usd: None,
        action: BudgetAction::Stop,
    });
    let usage = |c: f64| Event {
        at: at(0),
        kind: EventKind::UsageObserved {
            usage: Usage {
                input_tokens: 100,
                output_tokens: 100,
                cache_tokens: 0,
                cost_usd: Some(c),
                // As Codex's usage arrives: priced by Flotilla, not reported by the agent.
                cost_source: Some(crate::domain::session::CostSource::PriceTable),
            },
            project_usd: None,
            unpriced_models: Vec::new(),
        },
    };
    let under = step(&fresh(SessionState::Working), &usage(0.5), &p);
    assert_eq!(under.snapshot.session.state, SessionState::Working);
    assert!(under.effects.is_empty());
    let over = step(&under.snapshot, &usage(1.2), &p);
    assert_eq!(over.snapshot.session.state, SessionState::Killed);
    assert_eq!(
        over.snapshot.session.reason.as_deref(),
        Some("budget_exceeded")
    );
    assert!(over.effects.iter().any(|e| matches!(
        e,
        Effect::Notify {
            escalation: true,
            ..
        }
    )));
    p.budget = Some(Budget {
        session_usd: Some(1.0),
        session_tokens: None,
        project_usd: None,
        action: BudgetAction::Escalate,
    });
    let esc = step(&under.snapshot, &usage(1.2), &p);
    assert_eq!(esc.snapshot.session.state, SessionState::Working);
    assert_eq!(escalations(&esc.effects), 1);
    let again = step(&esc.snapshot, &usage(1.5), &p);
    assert_eq!(escalations(&again.effects), 0, "escalates once");
}

#[test]
fn spend_without_a_price_is_told_once_when_a_dollar_budget_cannot_count_it() {
    use crate::domain::policy::{Budget, BudgetAction};
    use crate::domain::session::CostSource;
    let mut p = Policy::defaults();
    p.budget = Some(Budget {
        session_usd: Some(1.0),
        session_tokens: None,
        project_usd: None,
        action: BudgetAction::Stop,
    });
    let unpriced = |tokens: u64| Event {
        at: at(0),
        kind: EventKind::UsageObserved {
            usage: Usage {
                input_tokens: tokens,
                output_tokens: 1,
                cache_tokens: 0,
                cost_usd: None,
                cost_source: Some(CostSource::Unpriced),
            },
            project_usd: None,
            unpriced_models: vec!["my-local-model".into()],
        },
    };
    let first = step(&fresh(SessionState::Working), &unpriced(10), &p);
    assert_eq!(first.snapshot.session.state, SessionState::Working);
    assert_eq!(
        first.snapshot.session.meta["unpriced_models"],
        serde_json::json!(["my-local-model"])
    );
    let told: Vec<_> = first
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Notify { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].contains("my-local-model") && told[0].contains("pricing:"));
    let again = step(&first.snapshot, &unpriced(20), &p);
    assert!(again.effects.is_empty(), "told once: {:?}", again.effects);
}

#[test]
fn a_session_that_ended_keeps_the_cost_it_had() {
    use crate::domain::session::CostSource;
    let p = Policy::defaults();
    let usage = |cost: Option<f64>, source: CostSource| Event {
        at: at(0),
        kind: EventKind::UsageObserved {
            usage: Usage {
                input_tokens: 100,
                output_tokens: 10,
                cache_tokens: 0,
                cost_usd: cost,
                cost_source: Some(source),
            },
            project_usd: None,
            unpriced_models: Vec::new(),
        },
    };
    let priced = step(
        &fresh(SessionState::Working),
        &usage(Some(0.25), CostSource::Config),
        &p,
    );
    let killed = step(
        &priced.snapshot,
        &Event {
            at: at(1),
            kind: EventKind::KillRequested {
                reason: "manually_killed".into(),
            },
        },
        &p,
    );
    assert_eq!(killed.snapshot.session.state, SessionState::Killed);
    assert_eq!(killed.snapshot.session.meta["usage"]["cost_usd"], 0.25);
    // A last reading without a cost does not wipe it; one with the agent's figure replaces it.
    let late = step(&killed.snapshot, &usage(None, CostSource::Unpriced), &p);
    assert_eq!(late.snapshot.session.meta["usage"]["cost_usd"], 0.25);
    assert_eq!(late.snapshot.session.meta["usage"]["cost_source"], "config");
    let own = step(&killed.snapshot, &usage(Some(0.3), CostSource::Agent), &p);
    assert_eq!(own.snapshot.session.meta["usage"]["cost_usd"], 0.3);
    assert_eq!(own.snapshot.session.meta["usage"]["cost_source"], "agent");
}

#[test]
fn stuck_and_waiting_sessions_have_a_timed_exit() {
    let p = Policy::defaults();
    let asked = step(
        &fresh(SessionState::Working),
        &Event {
            at: at(0),
            kind: EventKind::AgentWaitingInput { question: None },
        },
        &p,
    )
    .snapshot;
    assert_eq!(asked.timers[TIMER_ABANDON].deadline, at(24 * 60));
    let gone = step(
        &asked,
        &Event {
            at: at(24 * 60),
            kind: EventKind::TimerFired {
                kind: TIMER_ABANDON.into(),
            },
        },
        &p,
    );
    assert_eq!(gone.snapshot.session.state, SessionState::Errored);
    assert_eq!(gone.snapshot.session.reason.as_deref(), Some("abandoned"));
    let back = step(
        &asked,
        &Event {
            at: at(1),
            kind: EventKind::AgentActive,
        },
        &p,
    );
    assert!(
        !back.snapshot.timers.contains_key(TIMER_ABANDON),
        "leaving disarms it"
    );
}

#[test]
fn a_spent_project_budget_stops_the_next_spending_session() {
    use crate::domain::policy::{Budget, BudgetAction};
    let mut p = Policy::defaults();
    p.budget = Some(Budget {
        session_usd: None,
        session_tokens: None,
        project_usd: Some(10.0),
        action: BudgetAction::Stop,
    });
    let out = step(
        &fresh(SessionState::Working),
        &Event {
            at: at(0),
            kind: EventKind::UsageObserved {
                usage: Usage {
                    input_tokens: 1,
                    output_tokens: 1,
                    cache_tokens: 0,
                    cost_usd: Some(0.5),
                    cost_source: None,
                },
                project_usd: Some(10.2),
                unpriced_models: Vec::new(),
            },
        },
        &p,
    );
    assert_eq!(out.snapshot.session.state, SessionState::Killed);
}

fn merging_policy() -> Policy {
    let mut p = Policy::defaults();
    if let Some(r) = p.reactions.get_mut("approved-and-green") {
        r.auto_merge = true;
    }
    p
}

fn run(
    s: &SessionSnapshot,
    kind: EventKind,
    min: i64,
    p: &Policy,
) -> (SessionSnapshot, Vec<Effect>) {
    let out = step(s, &Event { at: at(min), kind }, p);
    (out.snapshot, out.effects)
}

#[test]
fn a_refused_auto_merge_is_retried_then_handed_to_a_human_once() {
    let p = merging_policy();
    let mut s = fresh(SessionState::Approved);
    s.session.pr = Some(pr(8));
    let failed = || EventKind::MergeFailed {
        reason: "405 Pull Request is not mergeable".into(),
    };
    let mut merges = 0;
    let mut told = Vec::new();
    for round in 0..5 {
        let (next, effects) = run(&s, EventKind::MergeReady, round * 2, &p);
        merges += effects
            .iter()
            .filter(|e| matches!(e, Effect::Merge { .. }))
            .count();
        let (next, effects) = run(&next, failed(), round * 2 + 1, &p);
        assert_eq!(next.session.state, SessionState::Approved, "round {round}");
        told.extend(effects.into_iter().filter_map(|e| match e {
            Effect::Notify {
                message,
                escalation: true,
                ..
            } => Some(message),
            _ => None,
        }));
        s = next;
    }
    assert_eq!(merges, 3, "the first try and two retries");
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].contains("405 Pull Request is not mergeable"),
        "{told:?}"
    );
    // A failure report outside `mergeable` is stale.
    let (_, effects) = run(&fresh(SessionState::Working), failed(), 20, &p);
    assert!(effects.is_empty());
}

#[test]
fn an_escalation_deadline_after_the_condition_cleared_tells_nobody() {
    let p = Policy::defaults();
    let mut s = fresh(SessionState::PrOpen);
    s.session.pr = Some(pr(8));
    let changes = EventKind::ChangesRequested {
        summary: "a.rs:1 fix".into(),
        fingerprint: "t1".into(),
    };
    let (s, effects) = run(&s, changes, 0, &p);
    assert_eq!(sends(&effects), 1);
    let deadline = s
        .timers
        .get("escalate:changes-requested")
        .map(|t| t.deadline)
        .expect("escalation armed");
    // The agent answered and the PR was approved before the deadline.
    let (s, _) = run(&s, EventKind::Approved, 10, &p);
    let fire = Event {
        at: deadline,
        kind: EventKind::TimerFired {
            kind: "escalate:changes-requested".into(),
        },
    };
    let out = step(&s, &fire, &p);
    assert_eq!(escalations(&out.effects), 0, "{:?}", out.effects);

    // Still requesting changes at the deadline: escalated, once.
    let mut s2 = fresh(SessionState::PrOpen);
    s2.session.pr = Some(pr(8));
    let (s2, _) = run(
        &s2,
        EventKind::ChangesRequested {
            summary: "a.rs:1 fix".into(),
            fingerprint: "t1".into(),
        },
        0,
        &p,
    );
    let out = step(&s2, &fire, &p);
    assert_eq!(escalations(&out.effects), 1);
}

#[test]
fn an_answer_ends_only_the_question_it_answered() {
    let policy = Policy::defaults();
    let wait = |q: &str, m: i64, snap: &SessionSnapshot| {
        step(
            snap,
            &Event {
                at: at(m),
                kind: EventKind::AgentWaitingInput {
                    question: Some(q.into()),
                },
            },
            &policy,
        )
    };
    let answered = |q: &str, m: i64, snap: &SessionSnapshot| {
        step(
            snap,
            &Event {
                at: at(m),
                kind: EventKind::InputAnswered {
                    question: Some(q.into()),
                },
            },
            &policy,
        )
    };
    let notifies = |effects: &[Effect]| {
        effects
            .iter()
            .filter(|e| matches!(e, Effect::Notify { .. }))
            .count()
    };
    let a = wait("approve Bash: a", 1, &base(SessionState::Working));
    assert_eq!(a.snapshot.session.state, SessionState::NeedsInput);
    assert_eq!(notifies(&a.effects), 1);
    // The same question again (hook, then screen): nothing new.
    let again = wait("approve Bash: a", 2, &a.snapshot);
    assert!(matches!(again.outcome, Outcome::Noop(_)));
    // The agent asks the next question before the answer to the first is recorded.
    let b = wait("approve Bash: b", 3, &a.snapshot);
    assert_eq!(b.outcome, Outcome::Applied);
    assert_eq!(b.snapshot.session.meta["question"], "approve Bash: b");
    assert_eq!(b.snapshot.session.activity_at, Some(at(3)));
    assert_eq!(notifies(&b.effects), 1, "the new question is told");
    // The late answer to the first question leaves the second waiting (recorded among the
    // earlier answers only)…
    let late = answered("approve Bash: a", 4, &b.snapshot);
    assert_eq!(late.snapshot.session.state, SessionState::NeedsInput);
    assert_eq!(late.snapshot.session.meta["question"], "approve Bash: b");
    assert_eq!(notifies(&late.effects), 0);
    assert_eq!(
        late.snapshot.session.meta["answered"]["earlier"][0]["question"],
        "approve Bash: a"
    );
    // …and its own answer ends the wait.
    let done = answered("approve Bash: b", 5, &b.snapshot);
    assert_eq!(done.snapshot.session.state, SessionState::Working);
    assert_eq!(
        done.snapshot.session.reason.as_deref(),
        Some("input_answered")
    );
    assert_eq!(
        done.snapshot.session.meta["answered"]["question"],
        "approve Bash: b"
    );
    assert_eq!(
        done.snapshot.session.meta["answered"]["at"],
        serde_json::json!(at(5))
    );
}

#[test]
fn a_hooks_late_report_of_the_dialog_just_answered_pages_nobody_again() {
    let policy = Policy::defaults();
    let ev = |at: DateTime<Utc>, kind: EventKind| Event { at, kind };
    let report = |q: &str, hook: bool| EventKind::AgentReported {
        state: ReportedState::NeedsInput,
        note: Some(q.into()),
        pr: None,
        hook,
    };
    let pages = |effects: &[Effect]| {
        effects
            .iter()
            .filter(|e| matches!(e, Effect::Notify { .. }))
            .count()
    };
    let t0 = at(1);
    let seen = step(
        &base(SessionState::Working),
        &ev(
            t0,
            EventKind::AgentWaitingInput {
                question: Some("approve Bash: a".into()),
            },
        ),
        &policy,
    );
    assert_eq!(pages(&seen.effects), 1);
    let t1 = t0 + Duration::seconds(2);
    let answered = step(
        &seen.snapshot,
        &ev(
            t1,
            EventKind::InputAnswered {
                question: Some("approve Bash: a".into()),
            },
        ),
        &policy,
    );
    assert_eq!(answered.snapshot.session.state, SessionState::Working);
    // The hook of that dialog lands after the answer: recorded, no page.
    let late = step(
        &answered.snapshot,
        &ev(t1 + Duration::seconds(3), report("approve Bash: a", true)),
        &policy,
    );
    assert_eq!(late.outcome, Outcome::Applied, "the report is recorded");
    assert_eq!(late.snapshot.session.state, SessionState::Working);
    assert_eq!(pages(&late.effects), 0);
    // The next dialog's hook, however soon, is a new wait.
    let next = step(
        &answered.snapshot,
        &ev(t1 + Duration::seconds(1), report("approve Bash: b", true)),
        &policy,
    );
    assert_eq!(next.snapshot.session.state, SessionState::NeedsInput);
    assert_eq!(pages(&next.effects), 1);
    // An agent reporting a wait itself (not a hook) is believed at once.
    let own = step(
        &answered.snapshot,
        &ev(t1 + Duration::seconds(3), report("approve Bash: a", false)),
        &policy,
    );
    assert_eq!(own.snapshot.session.state, SessionState::NeedsInput);
    // The same question long after the answer is asked again.
    let again = step(
        &answered.snapshot,
        &ev(t1 + Duration::minutes(5), report("approve Bash: a", true)),
        &policy,
    );
    assert_eq!(again.snapshot.session.state, SessionState::NeedsInput);
    assert_eq!(pages(&again.effects), 1);
    // Two dialogs answered in quick succession, both hooks late: neither pages again.
    let answer = |snap: &SessionSnapshot, at: DateTime<Utc>, q: &str| {
        step(
            snap,
            &ev(
                at,
                EventKind::InputAnswered {
                    question: Some(q.into()),
                },
            ),
            &policy,
        )
    };
    let b_answered = answer(&next.snapshot, t1 + Duration::seconds(2), "approve Bash: b");
    assert_eq!(b_answered.snapshot.session.state, SessionState::Working);
    let mut snap = b_answered.snapshot.clone();
    for (secs, q) in [(4, "approve Bash: a"), (5, "approve Bash: b")] {
        let late = step(
            &snap,
            &ev(t1 + Duration::seconds(secs), report(q, true)),
            &policy,
        );
        assert_eq!(late.outcome, Outcome::Applied, "{q}: recorded");
        assert_eq!(late.snapshot.session.state, SessionState::Working, "{q}");
        assert_eq!(pages(&late.effects), 0, "{q} pages nobody again");
        snap = late.snapshot;
    }
    // Still, a third dialog is a new wait; and the first, once its window is over, is asked.
    let third = step(
        &snap,
        &ev(t1 + Duration::seconds(6), report("approve Bash: c", true)),
        &policy,
    );
    assert_eq!(third.snapshot.session.state, SessionState::NeedsInput);
    assert_eq!(pages(&third.effects), 1);
    let a_later = step(
        &snap,
        &ev(t1 + Duration::seconds(17), report("approve Bash: a", true)),
        &policy,
    );
    assert_eq!(a_later.snapshot.session.state, SessionState::NeedsInput);
    // The earlier answers kept are the recent ones, a handful at most, in the session's meta
    // (stored with the session, as the last answer is).
    let mut snap = answered.snapshot.clone();
    for i in 0..8 {
        let q = format!("approve Bash: {i}");
        let at = t1 + Duration::seconds(3 + i);
        let asked = step(&snap, &ev(at, report(&q, false)), &policy);
        snap = answer(&asked.snapshot, at, &q).snapshot;
    }
    let earlier = snap.session.meta["answered"]["earlier"]
        .as_array()
        .expect("earlier answers")
        .clone();
    assert_eq!(earlier.len(), EARLIER_ANSWERED);
    assert_eq!(earlier[0]["question"], "approve Bash: 6", "newest first");
    let after = t1 + Duration::seconds(11);
    let late = step(&snap, &ev(after, report("approve Bash: 3", true)), &policy);
    assert_eq!(pages(&late.effects), 0, "one of the last five");
    let late = step(&snap, &ev(after, report("approve Bash: 2", true)), &policy);
    assert_eq!(pages(&late.effects), 1, "beyond the handful kept");
}

#[test]
fn a_dialog_just_answered_seen_late_does_not_replace_the_next_one_asked() {
    // Under load, the next dialog's hook lands first, then a look at a log or screen that
    // still shows the dialog just answered (a real Claude's log lags its screen), or that
    // dialog's own hook, late. The session stays on the next question, and nobody is paged
    // again.
    let policy = Policy::defaults();
    let ev = |secs: i64, kind: EventKind| Event {
        at: t0() + Duration::seconds(secs),
        kind,
    };
    let seen = |q: &str| EventKind::AgentWaitingInput {
        question: Some(q.into()),
    };
    let hook = hook_asks;
    let asked = step(
        &base(SessionState::Working),
        &ev(1, hook("approve Bash: curl")),
        &policy,
    );
    let answered = step(
        &asked.snapshot,
        &ev(
            2,
            EventKind::InputAnswered {
                question: Some("approve Bash: curl".into()),
            },
        ),
        &policy,
    );
    let next = step(
        &answered.snapshot,
        &ev(3, hook("approve Bash: git rm")),
        &policy,
    );
    assert_eq!(next.snapshot.session.state, SessionState::NeedsInput);
    for late in [seen("approve Bash: curl"), hook("approve Bash: curl")] {
        let out = step(&next.snapshot, &ev(4, late.clone()), &policy);
        assert_eq!(
            out.snapshot.session.meta["question"], "approve Bash: git rm",
            "{late:?}"
        );
        assert_eq!(
            out.snapshot.session.activity_at,
            next.snapshot.session.activity_at
        );
        assert_eq!(pages(&out.effects), 0, "{late:?}");
    }
    // Another question is still the newer one, and so is the answered one once its window
    // is over.
    let other = step(&next.snapshot, &ev(4, seen("approve Bash: ls")), &policy);
    assert_eq!(other.snapshot.session.meta["question"], "approve Bash: ls");
    let later = step(&next.snapshot, &ev(60, seen("approve Bash: curl")), &policy);
    assert_eq!(
        later.snapshot.session.meta["question"],
        "approve Bash: curl"
    );
}

/// A session whose PR is open and whose agent has exited (aider after its answer, claude
/// after "done").
fn exited(state: SessionState) -> SessionSnapshot {
    let mut s = fresh(state);
    s.session.runtime_handle = Some(crate::domain::runtime_handle::RuntimeHandle::from_json(
        &serde_json::json!({"pid": 1}),
    ));
    s.session.activity = Activity::Exited;
    s
}

fn ci_failed(fp: &str) -> EventKind {
    EventKind::CiFailed {
        summary: format!("Failed check: unit-tests ({fp})"),
        fingerprint: fp.into(),
    }
}

fn restarted(prompted: bool) -> EventKind {
    EventKind::AgentRestarted {
        handle: serde_json::json!({"pid": 2}),
        prompted,
    }
}

fn restarts(effects: &[Effect]) -> Vec<Vec<DueInstruction>> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::RestartAgent { due } => Some(due.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn an_instruction_for_an_exited_agent_restarts_it_and_is_counted_once() {
    let p = Policy::defaults();
    let (s, effects) = run(&exited(SessionState::ReviewPending), ci_failed("a"), 0, &p);
    assert_eq!(s.session.state, SessionState::CiFailed);
    assert_eq!(sends(&effects), 0, "nothing typed into a dead terminal");
    let r = restarts(&effects);
    assert_eq!(r.len(), 1, "{effects:?}");
    assert_eq!(r[0][0].reaction, crate::domain::keys::ReactionKey::CiFailed);
    assert!(r[0][0].message.contains("Failed check: unit-tests (a)"));
    // What is due is in the snapshot (committed before the restart runs), with a deadline.
    let pending = pending_restart(&s).expect("pending");
    assert_eq!(pending.launch, r[0]);
    assert_eq!(pending.at, at(0));
    assert_eq!(s.timers[TIMER_SPAWN].deadline, at(0) + p.spawn_timeout);
    assert_eq!(s.trackers["ci-failed"].attempts, 1);

    // The restarted agent took it as its first prompt: recorded once, not typed again.
    let (s, effects) = run(&s, restarted(true), 1, &p);
    assert_eq!(
        effects,
        vec![Effect::SendToAgent {
            reaction: crate::domain::keys::ReactionKey::CiFailed,
            message: r[0][0].message.clone(),
            given_at_launch: true,
        }]
    );
    assert!(pending_restart(&s).is_none());
    assert_eq!(
        s.session.runtime_handle.as_ref().map(|h| h.to_json()),
        Some(serde_json::json!({"pid": 2}))
    );
    assert_eq!(s.session.activity, Activity::Active);
    assert!(!s.timers.contains_key(TIMER_SPAWN));
    assert_eq!(s.trackers["ci-failed"].attempts, 1, "counted once");
    assert_eq!(s.session.state, SessionState::CiFailed);

    // The same start reported again changes nothing.
    let out = step(
        &s,
        &Event {
            at: at(2),
            kind: restarted(true),
        },
        &p,
    );
    assert!(matches!(out.outcome, Outcome::Noop(_)), "{:?}", out.outcome);
}

#[test]
fn an_agent_that_takes_no_prompt_at_launch_gets_the_instruction_typed_in() {
    let p = Policy::defaults();
    let (s, _) = run(&exited(SessionState::PrOpen), ci_failed("a"), 0, &p);
    let (_, effects) = run(&s, restarted(false), 1, &p);
    assert!(matches!(
        effects.as_slice(),
        [Effect::SendToAgent {
            given_at_launch: false,
            ..
        }]
    ));
}

#[test]
fn instructions_due_during_a_restart_join_it_instead_of_restarting_twice() {
    let p = Policy::defaults();
    let (s, _) = run(&exited(SessionState::PrOpen), ci_failed("a"), 0, &p);
    // The same failure again: already handled.
    let (s, effects) = run(&s, ci_failed("a"), 1, &p);
    assert!(effects.is_empty(), "{effects:?}");
    // A review while the agent starts: no second restart; it is typed in once it runs.
    let (s, effects) = run(
        &s,
        EventKind::ChangesRequested {
            summary: "a.rs:1 say why".into(),
            fingerprint: "t1".into(),
        },
        2,
        &p,
    );
    assert!(restarts(&effects).is_empty(), "{effects:?}");
    assert_eq!(sends(&effects), 0);
    assert_eq!(pending_restart(&s).expect("pending").later.len(), 1);
    let (s, effects) = run(&s, restarted(true), 3, &p);
    let got: Vec<(String, bool)> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::SendToAgent {
                reaction,
                given_at_launch,
                ..
            } => Some((reaction.as_str().to_string(), *given_at_launch)),
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("ci-failed".to_string(), true),
            ("changes-requested".to_string(), false)
        ]
    );
    assert_eq!(s.trackers["ci-failed"].attempts, 1);
    assert_eq!(s.trackers["changes-requested"].attempts, 1);
}

#[test]
fn a_live_agent_is_typed_to_and_a_terminal_session_is_never_restarted() {
    let p = Policy::defaults();
    let (_, effects) = run(&fresh(SessionState::PrOpen), ci_failed("a"), 0, &p);
    assert_eq!(sends(&effects), 1);
    assert!(restarts(&effects).is_empty());
    for st in [
        SessionState::Killed,
        SessionState::Errored,
        SessionState::Done,
        SessionState::Terminated,
    ] {
        let (_, effects) = run(&exited(st), ci_failed("a"), 0, &p);
        assert!(effects.is_empty(), "{st}: {effects:?}");
    }
    // Killed by a human while restarting: the pending restart goes, the late agent too.
    let (s, _) = run(&exited(SessionState::PrOpen), ci_failed("a"), 0, &p);
    let (s, _) = run(
        &s,
        EventKind::KillRequested {
            reason: "manually_killed".into(),
        },
        1,
        &p,
    );
    assert!(pending_restart(&s).is_none());
    let (s, effects) = run(&s, restarted(true), 2, &p);
    assert_eq!(effects, vec![Effect::DestroyRuntime]);
    assert_eq!(s.session.state, SessionState::Killed);
}

#[test]
fn a_restart_that_fails_or_never_starts_tells_a_human_once() {
    let p = Policy::defaults();
    let (s, _) = run(&exited(SessionState::PrOpen), ci_failed("a"), 0, &p);
    let (failed, effects) = run(
        &s,
        EventKind::RestartFailed {
            reason: "claude: not found".into(),
        },
        1,
        &p,
    );
    assert!(pending_restart(&failed).is_none());
    assert_eq!(escalations(&effects), 1);
    assert!(format!("{effects:?}").contains("claude: not found"));
    let out = step(
        &failed,
        &Event {
            at: at(2),
            kind: EventKind::RestartFailed {
                reason: "again".into(),
            },
        },
        &p,
    );
    assert!(out.effects.is_empty());
    // No start before the deadline: the same.
    let late = p.spawn_timeout.num_minutes() + 1;
    let (timed_out, effects) = run(
        &s,
        EventKind::TimerFired {
            kind: TIMER_SPAWN.into(),
        },
        late,
        &p,
    );
    assert!(pending_restart(&timed_out).is_none());
    assert_eq!(escalations(&effects), 1);
    assert_eq!(
        timed_out.session.state,
        SessionState::CiFailed,
        "not errored"
    );
}

/// The screen words an MCP tool's dialog cut short (`approve mcp__probe__…`), its hook in full:
/// one question. Whichever comes first pages once, the fuller wording is kept, an answer to
/// either ends the wait, and the hook's late report of it pages nobody.
#[test]
fn a_question_cut_short_and_its_full_wording_are_one_question() {
    let policy = Policy::defaults();
    let ev = |at: DateTime<Utc>, kind: EventKind| Event { at, kind };
    let cut = "approve mcp__probe__…";
    let full = r#"approve mcp__probe__echo: {"text":"hi"}"#;
    let report = |q: &str| EventKind::AgentReported {
        state: ReportedState::NeedsInput,
        note: Some(q.into()),
        pr: None,
        hook: true,
    };
    let waiting = |q: &str| EventKind::AgentWaitingInput {
        question: Some(q.into()),
    };
    let pages = |effects: &[Effect]| {
        effects
            .iter()
            .filter(|e| matches!(e, Effect::Notify { .. }))
            .count()
    };
    let t0 = at(1);
    // The screen first, then the hook: one page, the hook's wording kept.
    let seen = step(&base(SessionState::Working), &ev(t0, waiting(cut)), &policy);
    assert_eq!(pages(&seen.effects), 1);
    let hooked = step(&seen.snapshot, &ev(t0, report(full)), &policy);
    assert_eq!(pages(&hooked.effects), 0);
    assert_eq!(hooked.snapshot.session.state, SessionState::NeedsInput);
    assert_eq!(hooked.snapshot.session.meta["question"], full);
    // The screen again: not newer, and the fuller wording stays.
    let again = step(&hooked.snapshot, &ev(t0, waiting(cut)), &policy);
    assert_eq!(pages(&again.effects), 0);
    assert_eq!(again.snapshot.session.meta["question"], full);
    // Answered as the human saw it (cut short) while the fuller wording is recorded: answered.
    let answered = step(
        &again.snapshot,
        &ev(
            t0 + Duration::seconds(2),
            EventKind::InputAnswered {
                question: Some(cut.into()),
            },
        ),
        &policy,
    );
    assert_eq!(answered.snapshot.session.state, SessionState::Working);
    // Only the screen saw it before the answer; the hook's report lands after: no page.
    let screen_only = step(
        &seen.snapshot,
        &ev(
            t0 + Duration::seconds(2),
            EventKind::InputAnswered {
                question: Some(cut.into()),
            },
        ),
        &policy,
    );
    let late = step(
        &screen_only.snapshot,
        &ev(t0 + Duration::seconds(4), report(full)),
        &policy,
    );
    assert_eq!(late.snapshot.session.state, SessionState::Working);
    assert_eq!(pages(&late.effects), 0);
    // Two calls to the server's tools, the first answered from the screen: the second on
    // screen is a new wait, and the first's late hook report does not reword it.
    let second = step(
        &screen_only.snapshot,
        &ev(t0 + Duration::seconds(3), waiting(cut)),
        &policy,
    );
    assert_eq!(pages(&second.effects), 1);
    let first_late = step(
        &second.snapshot,
        &ev(t0 + Duration::seconds(4), report(full)),
        &policy,
    );
    assert_eq!(pages(&first_late.effects), 0);
    assert_eq!(first_late.snapshot.session.meta["question"], cut);
    // Another server's tool is another question.
    let other = step(
        &seen.snapshot,
        &ev(t0, report(r#"approve mcp__other__echo: {}"#)),
        &policy,
    );
    assert_eq!(pages(&other.effects), 1);
}

/// The screen saw the dialog go (the agent back at work) before the answer's own event: the
/// answer is still recorded, once, and the dialog's late hook report pages nobody.
#[test]
fn an_answer_recorded_after_the_agent_was_seen_at_work_still_quiets_the_late_hook() {
    let policy = Policy::defaults();
    let ev = |at: DateTime<Utc>, kind: EventKind| Event { at, kind };
    let pages = |effects: &[Effect]| {
        effects
            .iter()
            .filter(|e| matches!(e, Effect::Notify { .. }))
            .count()
    };
    let q = "approve mcp__probe__…";
    let t0 = at(1);
    let seen = step(
        &base(SessionState::Working),
        &ev(
            t0,
            EventKind::AgentWaitingInput {
                question: Some(q.into()),
            },
        ),
        &policy,
    );
    assert_eq!(pages(&seen.effects), 1);
    let t1 = t0 + Duration::seconds(1);
    let active = step(&seen.snapshot, &ev(t1, EventKind::AgentActive), &policy);
    assert_eq!(active.snapshot.session.state, SessionState::Working);
    let answered = step(
        &active.snapshot,
        &ev(
            t1 + Duration::milliseconds(200),
            EventKind::InputAnswered {
                question: Some(q.into()),
            },
        ),
        &policy,
    );
    assert_eq!(answered.outcome, Outcome::Applied, "recorded");
    assert_eq!(answered.snapshot.session.state, SessionState::Working);
    assert_eq!(answered.snapshot.session.meta["answered"]["question"], q);
    // Once: the same answer's event again changes nothing.
    let again = step(
        &answered.snapshot,
        &ev(
            t1 + Duration::milliseconds(300),
            EventKind::InputAnswered {
                question: Some(q.into()),
            },
        ),
        &policy,
    );
    assert!(
        matches!(again.outcome, Outcome::Noop(_)),
        "{:?}",
        again.outcome
    );
    // The hook's late report, in its fuller words: recorded, no page.
    let late = step(
        &answered.snapshot,
        &ev(
            t1 + Duration::seconds(2),
            EventKind::AgentReported {
                state: ReportedState::NeedsInput,
                note: Some(r#"approve mcp__probe__echo: {"text":"hi"}"#.into()),
                pr: None,
                hook: true,
            },
        ),
        &policy,
    );
    assert_eq!(late.snapshot.session.state, SessionState::Working);
    assert_eq!(pages(&late.effects), 0);
    // Without the recorded answer, that report would have been a new wait.
    let unrecorded = step(&active.snapshot, &late_event(t1), &policy);
    assert_eq!(unrecorded.snapshot.session.state, SessionState::NeedsInput);

    fn late_event(t1: DateTime<Utc>) -> Event {
        Event {
            at: t1 + Duration::seconds(2),
            kind: EventKind::AgentReported {
                state: ReportedState::NeedsInput,
                note: Some(r#"approve mcp__probe__echo: {"text":"hi"}"#.into()),
                pr: None,
                hook: true,
            },
        }
    }
}

#[test]
fn an_exit_0_after_a_failure_the_agent_could_not_get_past_is_an_error_not_done() {
    let p = Policy::defaults();
    let exit = |failure: Option<&str>| {
        step(
            &base(SessionState::Working),
            &Event {
                at: t0(),
                kind: EventKind::AgentExited {
                    code: Some(0),
                    output: Some("litellm.AuthenticationError: bad key".into()),
                    failure: failure.map(str::to_string),
                },
            },
            &p,
        )
    };
    let failed = exit(Some("litellm.AuthenticationError: bad key"));
    assert_eq!(failed.snapshot.session.state, SessionState::Errored);
    assert_eq!(
        failed.snapshot.session.reason.as_deref(),
        Some("agent_failed: litellm.AuthenticationError: bad key")
    );
    let done = exit(None);
    assert_eq!(done.snapshot.session.state, SessionState::Done);
}

/// An agent killed by a signal (the runtimes' 128 + N) fails like any error exit, and its page
/// names the signal; only an unknown status is a runtime lost.
#[test]
fn an_agent_killed_by_a_signal_is_an_error_whose_page_names_the_signal() {
    let p = Policy::defaults();
    let exit = |code: Option<i32>| {
        step(
            &base(SessionState::NeedsInput),
            &Event {
                at: t0(),
                kind: EventKind::AgentExited {
                    code,
                    output: Some("Gitifying…".into()),
                    failure: None,
                },
            },
            &p,
        )
    };
    let killed = exit(Some(137));
    assert_eq!(killed.snapshot.session.state, SessionState::Errored);
    assert_eq!(
        killed.snapshot.session.reason.as_deref(),
        Some("agent_exited_137: Gitifying…")
    );
    let messages: Vec<&str> = killed
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Notify { message, .. } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m
                .starts_with("The agent exited with status 137, killed by signal 9 (SIGKILL).")),
        "{messages:?}"
    );
    let failed = exit(Some(1));
    assert!(!format!("{:?}", failed.effects).contains("killed by"));
    let lost = exit(None);
    assert_eq!(lost.snapshot.session.state, SessionState::Killed);
    assert_eq!(
        lost.snapshot.session.reason.as_deref(),
        Some("runtime_lost")
    );
}

/// PR news is not acted on while the agent waits for a human (an instruction typed onto its
/// dialog would answer it): back at work with a PR, the session looks at the PR again, from
/// the answer and from the agent going idle alike; without a PR, or back from `stuck` (which
/// acts on PR news), there is nothing to look at again.
#[test]
fn back_from_a_humans_question_with_a_pr_the_pr_is_looked_at_again() {
    let policy = Policy::defaults();
    let waiting = |pr: bool| {
        let mut s = base(SessionState::NeedsInput);
        s.session.pr = pr.then(|| self::pr(7));
        s.session.activity = Activity::WaitingInput;
        s.session.meta = serde_json::json!({"question": "approve Bash: git rm x"});
        s
    };
    let ev = |kind: EventKind| Event { at: t0(), kind };
    let answered = || {
        ev(EventKind::InputAnswered {
            question: Some("approve Bash: git rm x".into()),
        })
    };
    let idle = || ev(EventKind::AgentIdle { since: t0() });
    let looks = |out: &Step| out.effects.contains(&Effect::CheckPr);

    let ci = step(
        &waiting(true),
        &ev(EventKind::CiFailed {
            summary: "unit-tests".into(),
            fingerprint: "abc:unit-tests".into(),
        }),
        &policy,
    );
    assert_eq!(ci.snapshot.session.state, SessionState::NeedsInput);
    assert!(
        !ci.effects
            .iter()
            .any(|e| matches!(e, Effect::SendToAgent { .. })),
        "nothing typed onto the dialog: {:?}",
        ci.effects
    );
    for event in [answered(), idle()] {
        let back = step(&waiting(true), &event, &policy);
        assert_eq!(back.snapshot.session.state, SessionState::PrOpen);
        assert!(looks(&back), "{:?}: {:?}", event.kind, back.effects);
        let no_pr = step(&waiting(false), &event, &policy);
        assert_eq!(no_pr.snapshot.session.state, SessionState::Working);
        assert!(!looks(&no_pr), "{:?}", no_pr.effects);
    }
    let mut stuck = base(SessionState::Stuck);
    stuck.session.pr = Some(pr(7));
    let stuck = step(&stuck, &ev(EventKind::AgentActive), &policy);
    assert_eq!(stuck.snapshot.session.state, SessionState::PrOpen);
    assert!(!looks(&stuck), "{:?}", stuck.effects);
}

/// The human a session waits on is told of PR news that came meanwhile, once per failure, since
/// it may change their answer; the agent gets it only after the answer. A failure the agent
/// was already sent is no news.
#[test]
fn pr_news_during_a_wait_is_told_to_the_human_once_and_not_typed() {
    let policy = Policy::defaults();
    let ev = |kind: EventKind| Event { at: t0(), kind };
    let ci = |fp: &str| {
        ev(EventKind::CiFailed {
            summary: "unit-tests failed".into(),
            fingerprint: fp.into(),
        })
    };
    let asks = || {
        ev(EventKind::AgentWaitingInput {
            question: Some("approve Bash: git push".into()),
        })
    };
    let told = |out: &Step| -> Vec<String> {
        out.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Notify { message, .. } => Some(message.clone()),
                _ => None,
            })
            .collect()
    };
    let typed = |out: &Step| {
        out.effects
            .iter()
            .any(|e| matches!(e, Effect::SendToAgent { .. }))
    };
    let mut open = base(SessionState::PrOpen);
    open.session.pr = Some(pr(7));
    let waiting = step(&open, &asks(), &policy).snapshot;
    assert_eq!(waiting.session.state, SessionState::NeedsInput);

    let first = step(&waiting, &ci("abc:unit"), &policy);
    assert_eq!(first.snapshot.session.state, SessionState::NeedsInput);
    assert!(!typed(&first), "{:?}", first.effects);
    let news = told(&first);
    assert_eq!(news.len(), 1, "{news:?}");
    assert!(
        news[0].contains("(approve Bash: git push)") && news[0].contains("unit-tests failed"),
        "{news:?}"
    );
    // The same failure again is no news; another is.
    let again = step(&first.snapshot, &ci("abc:unit"), &policy);
    assert!(
        told(&again).is_empty() && !typed(&again),
        "{:?}",
        again.effects
    );
    let other = step(&first.snapshot, &ci("def:lint"), &policy);
    assert_eq!(told(&other).len(), 1, "{:?}", other.effects);
    let review = step(
        &first.snapshot,
        &ev(EventKind::ChangesRequested {
            summary: "src/a.rs:3 rename this".into(),
            fingerprint: "r1".into(),
        }),
        &policy,
    );
    assert!(
        told(&review).iter().any(|m| m.contains("rename this")),
        "{:?}",
        review.effects
    );

    // A failure the agent was sent before it asked: no news to the human.
    let failed = step(&open, &ci("abc:unit"), &policy);
    assert!(typed(&failed), "{:?}", failed.effects);
    let waiting = step(&failed.snapshot, &asks(), &policy).snapshot;
    let same = step(&waiting, &ci("abc:unit"), &policy);
    assert!(told(&same).is_empty(), "{:?}", same.effects);
}

#[test]
fn an_agent_exiting_while_it_works_on_or_asks_about_its_pr_leaves_the_pr_lifecycle_going() {
    let policy = Policy::defaults();
    let ev = |code| Event {
        at: t0(),
        kind: EventKind::AgentExited {
            code,
            output: None,
            failure: None,
        },
    };
    for st in [
        SessionState::NeedsInput,
        SessionState::Working,
        SessionState::Stuck,
    ] {
        for code in [Some(0), Some(1), None] {
            let mut s = base(st);
            s.session.pr = Some(pr(7));
            if st == SessionState::NeedsInput {
                s.session.activity = Activity::WaitingInput;
                s.session.meta = serde_json::json!({"question": "approve Bash: rm -rf x"});
            }
            let out = step(&s, &ev(code), &policy);
            let after = &out.snapshot.session;
            assert_eq!(after.state, SessionState::PrOpen, "{st:?} exit {code:?}");
            assert_eq!(after.activity, Activity::Exited);
            assert!(
                !out.effects
                    .iter()
                    .any(|e| matches!(e, Effect::Notify { .. })),
                "{st:?} exit {code:?}: {:?}",
                out.effects
            );
            // PR events were not acted on while the human was asked: look now.
            assert_eq!(
                out.effects.contains(&Effect::CheckPr),
                st == SessionState::NeedsInput,
                "{st:?}: {:?}",
                out.effects
            );
        }
        // Without a PR the session ends as before.
        let ended = step(&base(st), &ev(Some(0)), &policy);
        assert_eq!(ended.snapshot.session.state, SessionState::Done, "{st:?}");
    }
}

/// A question answered at the terminal (the agent is seen back at work, no answer went
/// through Flotilla) and asked again once the agent worked on is a new wait: its start is
/// recorded anew, so its notification is not taken for the first's. Seen again at once (a
/// screen that flickered, the hook's late report), it is the same wait.
#[test]
fn a_question_asked_again_after_the_agent_worked_on_is_a_new_wait() {
    let policy = Policy::defaults();
    let q = "approve Bash: cargo test";
    let secs = |n: i64| at(1) + Duration::seconds(n);
    let waiting = |q: &str| EventKind::AgentWaitingInput {
        question: Some(q.into()),
    };
    let run = |snap: &SessionSnapshot, t: i64, kind: EventKind| {
        step(snap, &Event { at: secs(t), kind }, &policy).snapshot
    };
    let since = |snap: &SessionSnapshot| snap.session.meta[WAITING_SINCE].clone();

    let asked = run(&base(SessionState::Working), 0, waiting(q));
    assert_eq!(since(&asked), serde_json::json!(secs(0)));
    // Answered at the terminal; the screen flickers back to the dialog: the same wait.
    let back = run(&asked, 2, EventKind::AgentActive);
    assert_eq!(back.session.state, SessionState::Working);
    let flicker = run(&back, 5, waiting(q));
    assert_eq!(flicker.session.state, SessionState::NeedsInput);
    assert_eq!(since(&flicker), serde_json::json!(secs(0)));
    // The hook's late report of the dialog answered: the same wait too.
    let back = run(&flicker, 6, EventKind::AgentActive);
    let late = run(
        &back,
        10,
        EventKind::AgentReported {
            state: ReportedState::NeedsInput,
            note: Some(q.into()),
            pr: None,
            hook: true,
        },
    );
    assert_eq!(since(&late), serde_json::json!(secs(0)));
    // The agent worked on, then asks the same again: a new wait.
    let back = run(&late, 12, EventKind::AgentActive);
    let again = run(&back, 40, waiting(q));
    assert_eq!(again.session.state, SessionState::NeedsInput);
    assert_eq!(since(&again), serde_json::json!(secs(40)));
    // Another question is a new wait however soon.
    let back = run(&again, 41, EventKind::AgentActive);
    let other = run(&back, 42, waiting("approve Bash: git push"));
    assert_eq!(since(&other), serde_json::json!(secs(42)));
}

/// A model API failure the agent gave up on, asked about again in the same words seconds
/// after a human's "try again" went (it failed at once), is a new wait: its notification is
/// not taken for the first's. A failure the agent still retries changes nothing.
#[test]
fn a_model_api_failure_again_after_a_try_again_is_a_new_wait() {
    let policy = Policy::defaults();
    let q = "the model API failed (500 Internal server error); answer to try again";
    let secs = |n: i64| at(1) + Duration::seconds(n);
    let run = |snap: &SessionSnapshot, t: i64, kind: EventKind| {
        step(snap, &Event { at: secs(t), kind }, &policy).snapshot
    };
    let failed = |attempt: Option<u32>| EventKind::AgentApiError {
        logged_at: at(1),
        status: Some(500),
        message: "500 Internal server error".into(),
        attempt,
        max_retries: Some(2),
    };
    let waiting = EventKind::AgentWaitingInput {
        question: Some(q.into()),
    };
    let since = |snap: &SessionSnapshot| snap.session.meta[WAITING_SINCE].clone();

    let asked = run(
        &run(&base(SessionState::Working), 0, failed(None)),
        0,
        waiting.clone(),
    );
    assert_eq!(since(&asked), serde_json::json!(secs(0)));
    // The human's "try again" starts the next turn; its retries fail, and it gives up.
    let back = run(&asked, 2, EventKind::AgentActive);
    let retrying = run(&back, 3, failed(Some(1)));
    assert_eq!(retrying.session.state, SessionState::Working);
    let gave_up = run(&run(&retrying, 5, failed(None)), 5, waiting.clone());
    assert_eq!(gave_up.session.state, SessionState::NeedsInput);
    assert_eq!(since(&gave_up), serde_json::json!(secs(5)));
    // Without a failure between, the same words seen at once are that wait still.
    let back = run(&gave_up, 6, EventKind::AgentActive);
    let seen_again = run(&back, 7, waiting);
    assert_eq!(since(&seen_again), serde_json::json!(secs(5)));
}

/// An answer confirmed only once the agent already asks the next question (the bench's pace:
/// an answer, the command, the next dialog within half a second) leaves that next question
/// waiting, and is kept among the earlier answers: the answered dialog's late hook report
/// neither replaces the question waiting nor pages anyone.
#[test]
fn an_answer_confirmed_after_the_next_question_still_quiets_its_late_hook() {
    let policy = Policy::defaults();
    let ev = |secs: i64, kind: EventKind| Event {
        at: t0() + Duration::seconds(secs),
        kind,
    };
    let hook = hook_asks;
    let first = step(
        &base(SessionState::Working),
        &ev(1, hook("approve Bash: round-28")),
        &policy,
    );
    // Answered at the terminal's pace: the agent is at work, then asks the next.
    let back = step(&first.snapshot, &ev(2, EventKind::AgentActive), &policy);
    let next = step(
        &back.snapshot,
        &ev(3, hook("approve Bash: round-29")),
        &policy,
    );
    assert_eq!(next.snapshot.session.state, SessionState::NeedsInput);
    // The answer to the first is confirmed now.
    let confirmed = step(
        &next.snapshot,
        &ev(
            3,
            EventKind::InputAnswered {
                question: Some("approve Bash: round-28".into()),
            },
        ),
        &policy,
    );
    let snap = &confirmed.snapshot;
    assert_eq!(snap.session.state, SessionState::NeedsInput);
    assert_eq!(snap.session.meta["question"], "approve Bash: round-29");
    assert_eq!(pages(&confirmed.effects), 0);
    // The first dialog's hook, late: nothing changes, nobody is paged.
    let late = step(snap, &ev(4, hook("approve Bash: round-28")), &policy);
    assert_eq!(
        late.snapshot.session.meta["question"],
        "approve Bash: round-29"
    );
    assert_eq!(late.snapshot.session.state, SessionState::NeedsInput);
    assert_eq!(pages(&late.effects), 0, "{:?}", late.outcome);
}
