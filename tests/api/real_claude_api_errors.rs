//! The "bad input": a model server that answers 500, 429 with `retry-after`, or
//! hangs, under the real `claude` CLI (interactive, tmux). The CLI's own retries run (kept
//! short with its documented `CLAUDE_CODE_MAX_RETRIES` and `API_TIMEOUT_MS`); Flotilla records
//! each failure it logs as an `agent.api_error` event, never counts one as activity, and when
//! the CLI gives up asks a human once (`needs_input`); the answer reaches the model once.

use serde_json::{json, Value};

use crate::fake_anthropic::Step;
use crate::helpers::{eventually, TestApp};
use crate::real_claude_fleet::{notifications_with, send, setup_notifying, wait_session};

async fn api_errors(app: &TestApp, id: &str) -> Vec<Value> {
    let (_, ev) = app.get(&format!("/api/v1/sessions/{id}/events")).await;
    ev["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.to_string().contains("agent.api_error"))
        .collect()
}

/// Main-turn requests (failed ones included) whose text carries `needle`.
fn requests_with(r: &crate::real_claude_fleet::Real, needle: &str) -> usize {
    r.model
        .requests()
        .iter()
        .filter(|q| crate::fake_anthropic::request_text(q).contains(needle))
        .count()
}

/// A real Claude Code with `env` (its retries), on `script`, its session spawned and (the
/// script's first turn failing) waiting for a human, who was told once: the app, the
/// session and the session as it waits. `None` where the real CLI cannot run.
async fn failed_turn(
    script: Vec<Step>,
    env: &str,
) -> Option<(crate::real_claude_fleet::Real, String, Value)> {
    let r = setup_notifying(script, "auto-edit", "[]", "", &[], "", env).await?;
    let id = r
        .app
        .spawn(json!({"project": "demo", "prompt": "Say hello."}))
        .await;
    let s = wait_session(&r.app, &id, 90, "needs_input after the failures", |s| {
        s["state"] == "needs_input"
    })
    .await;
    let notes = eventually(30, "the notification", || {
        let n = notifications_with(&r.hooks, "model API failed");
        async move { (!n.is_empty()).then_some(n) }
    })
    .await;
    assert_eq!(notes.len(), 1, "one notification: {notes:?}");
    Some((r, id, s))
}

#[actix_web::test]
async fn a_model_api_that_keeps_failing_is_recorded_then_asks_a_human_once() {
    // The first request and both retries fail; the human's "try again" is then answered.
    let script = vec![
        Step::error(500, "api_error"),
        Step::error(500, "api_error"),
        Step::error(500, "api_error"),
        Step::text("Recovered."),
    ];
    let Some((r, id, s)) = failed_turn(script, "CLAUDE_CODE_MAX_RETRIES: \"2\", ").await else {
        return;
    };
    let asked = s["waiting_for"].as_str().unwrap_or_default().to_string();
    assert!(
        asked.contains("model API failed") && asked.contains("500"),
        "{s}"
    );
    assert_eq!(s["meta"]["api_error"]["status"], 500, "{s}");
    let errors = api_errors(&r.app, &id).await;
    // Each failure Flotilla looks at is an event (retries quicker than a look fold into
    // the newest), the last one the CLI gave up on included.
    assert!(!errors.is_empty(), "{errors:?}");
    assert!(
        errors.iter().all(|e| e["data"]["event"]["status"] == 500),
        "{errors:?}"
    );

    send(&r.app, &id, "try again").await;
    wait_session(&r.app, &id, 60, "back to working", |s| {
        s["state"] == "working" && s["waiting_for"].is_null()
    })
    .await;
    eventually(60, "the answer reaches the model", || async {
        (r.model.remaining() == 0).then_some(())
    })
    .await;
    // Let the agent finish its turn, then check nothing was asked or sent twice.
    wait_session(&r.app, &id, 60, "the turn ends", |s| {
        s["activity"] == "idle"
    })
    .await;
    assert_eq!(requests_with(&r, "try again"), 1, "the answer went once");
    assert_eq!(notifications_with(&r.hooks, "model API failed").len(), 1);
    assert_eq!(
        r.app.get(&format!("/api/v1/sessions/{id}")).await.1["state"],
        "working"
    );
}

/// A human's "try again" that fails again at once (the CLI gives up within seconds, with the
/// same words) is a new wait, and the human is told again: not taken for the first wait's
/// flicker and dropped as its duplicate.
#[actix_web::test]
async fn a_try_again_that_fails_again_at_once_tells_the_human_again() {
    let script = vec![
        Step::error(500, "api_error"),
        Step::error(500, "api_error"),
        Step::error(500, "api_error"),
        Step::error(500, "api_error"),
        Step::text("Recovered."),
    ];
    let Some((r, id, _)) = failed_turn(script, "CLAUDE_CODE_MAX_RETRIES: \"1\", ").await else {
        return;
    };

    send(&r.app, &id, "try again").await;
    eventually(60, "the second failure's notification", || {
        let n = notifications_with(&r.hooks, "model API failed");
        async move { (n.len() == 2).then_some(()) }
    })
    .await;
    let s = r.app.get(&format!("/api/v1/sessions/{id}")).await.1;
    assert_eq!(s["state"], "needs_input", "{s}");

    // The next "try again" is answered, and nobody is told anything more.
    send(&r.app, &id, "try once more").await;
    wait_session(&r.app, &id, 60, "the turn ends", |s| {
        s["state"] == "working" && s["activity"] == "idle"
    })
    .await;
    assert_eq!(
        r.model.remaining(),
        0,
        "every scripted answer was asked for"
    );
    assert_eq!(
        requests_with(&r, "try once more"),
        1,
        "the answer went once"
    );
    assert_eq!(notifications_with(&r.hooks, "model API failed").len(), 2);
}

#[actix_web::test]
async fn a_rate_limit_with_retry_after_is_waited_out_by_the_cli_without_a_false_alarm() {
    let script = vec![Step::rate_limited(1), Step::text("Hello.")];
    let env = "CLAUDE_CODE_MAX_RETRIES: \"2\", ";
    let Some(r) = setup_notifying(script, "auto-edit", "[]", "", &[], "", env).await else {
        return;
    };
    let id = r
        .app
        .spawn(json!({"project": "demo", "prompt": "Say hello."}))
        .await;
    // Claude Code 2.1.328's TUI logs nothing for a 429 its retry recovers from: what
    // Flotilla can show is that the wait is no false alarm and nothing is sent twice.
    let s = wait_session(&r.app, &id, 90, "the retried turn ends", |s| {
        s["activity"] == "idle"
    })
    .await;
    assert_eq!(s["state"], "working", "{s}");
    assert_eq!(r.model.remaining(), 0, "the retry was answered");
    assert_eq!(requests_with(&r, "Say hello."), 2, "one retry, no more");
    assert!(notifications_with(&r.hooks, "model API failed").is_empty());
}

#[actix_web::test]
async fn a_model_api_that_hangs_times_out_in_the_cli_and_asks_a_human() {
    let script = vec![Step::Hang, Step::Hang, Step::text("Recovered.")];
    let env = "CLAUDE_CODE_MAX_RETRIES: \"1\", API_TIMEOUT_MS: \"2000\", ";
    let Some((r, id, s)) = failed_turn(script, env).await else {
        return;
    };
    assert!(
        s["waiting_for"]
            .as_str()
            .is_some_and(|q| q.contains("model API failed")),
        "{s}"
    );
    assert!(!api_errors(&r.app, &id).await.is_empty());
}
