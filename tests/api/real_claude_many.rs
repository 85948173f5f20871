//! Several real `claude` CLIs at once, as a fleet runs them: spawned together on one
//! repository (one agent home, one `~/.claude.json` that Flotilla and every CLI write), each
//! asks its human to approve a command, and each answer reaches its own CLI only.
//!
//! Runs under `CI=true` (a missing CLI fails it), or wherever the CLI is found, else skips.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::fake_anthropic::Step;
use crate::real_claude_fleet::{notifications_with, setup_notifying, wait_session};

/// How many CLIs run at once (each a Node process of some 200 MB on a 2-core machine).
const FLEET: usize = 8;

#[actix_web::test]
async fn a_fleet_of_real_claudes_spawned_at_once_each_asks_and_takes_only_its_own_answer() {
    // Every CLI's first request gets the command; the scripted answers carry no session, so
    // each command writes what names its own session ($FLOTILLA_SESSION_ID).
    let script = (0..FLEET)
        .map(|_| {
            Step::tool(
                "Bash",
                json!({"command": "printf \"$FLOTILLA_SESSION_ID\" > who.txt",
                    "description": "Say who I am"}),
            )
        })
        .collect();
    let Some(r) = setup_notifying(script, "auto-edit", "[]", "", &[], "", "").await else {
        return;
    };
    let spawns = (0..FLEET).map(|i| {
        r.app
            .spawn(json!({"project": "demo", "prompt": format!("Task {i}: say who you are.")}))
    });
    let mut ids = futures::future::join_all(spawns).await;
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), FLEET, "distinct sessions: {ids:?}");

    // Each asks about its own command (no trust or API-key dialog on any: Flotilla's writes
    // to the shared `.claude.json` survive the CLIs' own).
    let mut waiting = Vec::new();
    for id in &ids {
        let s = wait_session(&r.app, id, 180, "its question", |s| {
            s["state"] == "needs_input" && s["waiting_for"].is_string()
        })
        .await;
        assert_eq!(
            s["waiting_for"], "approve Bash: printf \"$FLOTILLA_SESSION_ID\" > who.txt",
            "{s}"
        );
        waiting.push(s);
    }
    // Answered one by one, in reverse: each answer runs its own session's command only.
    for (id, s) in ids.iter().zip(&waiting).rev() {
        let v = r.app.answer(s, "yes").await;
        assert_eq!(v["delivered"], true, "{v}");
        let ws = PathBuf::from(s["workspace"].as_str().expect("workspace"));
        crate::helpers::eventually(60, "its command run", || {
            let got = std::fs::read_to_string(ws.join("who.txt")).ok();
            async move { got.filter(|who| who == id) }
        })
        .await;
        for other in ids.iter().zip(&waiting).filter(|(o, _)| *o != id) {
            let st: Value = r.app.get(&format!("/api/v1/sessions/{}", other.0)).await.1;
            let answered = other.0 > id;
            assert_eq!(
                st["state"] == "needs_input",
                !answered,
                "{id}'s answer reached {}: {st}",
                other.0
            );
        }
    }
    // What went out while the questions waited; nothing may go out from here on.
    let while_waiting = notifications_with(&r.hooks, "").len();
    for id in &ids {
        wait_session(&r.app, id, 90, "the turn's end", |s| {
            s["state"] == "working" && s["activity"] == "idle"
        })
        .await;
    }
    // The pages: at most `rate_limit.max` (5) messages in the window, sent as the questions
    // came; when more were due than slots were left, the surplus was folded into a digest
    // (how many go alone depends on how the questions spread over time). The rest were held
    // back for the window, and by the time it let them go each question was answered: they
    // are not sent (superseded), neither alone nor in a digest.
    crate::helpers::eventually_advancing(
        &r.app.clock,
        std::time::Duration::from_secs(5),
        60,
        "no page left to send",
        || async {
            let (_, v) = r.app.get("/api/v1/notifications?status=pending").await;
            v["notifications"]
                .as_array()
                .is_some_and(|p| p.is_empty())
                .then_some(())
        },
    )
    .await;
    let sent: Vec<Value> = notifications_with(&r.hooks, "");
    let (_, all) = r.app.get("/api/v1/notifications?limit=100").await;
    let rows: Vec<String> = all["notifications"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            format!(
                "{} {} {} attempts={} created={}",
                n["session"], n["status"], n["event"], n["attempts"], n["created_at"]
            )
        })
        .collect();
    assert_eq!(
        sent.len(),
        while_waiting,
        "a page sent after its question was answered: {rows:#?}\n{sent:#?}"
    );
    assert!(sent.len() <= 5, "over the rate limit: {rows:#?}\n{sent:#?}");
    let superseded: Vec<&Value> = all["notifications"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["status"] == "superseded")
        .collect();
    for id in &ids {
        let alone = sent.iter().filter(|p| p["session"] == id.as_str()).count();
        let in_digest = sent
            .iter()
            .flat_map(|p| p["items"].as_array().into_iter().flatten())
            .filter(|i| i["session"] == id.as_str())
            .count();
        let held = superseded
            .iter()
            .filter(|p| p["session"] == id.as_str())
            .count();
        if alone + in_digest + held != 1 {
            let (_, events) = r.app.get(&format!("/api/v1/sessions/{id}/events")).await;
            let events: Vec<String> = events["events"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| format!("{} {} {}", e["at"], e["kind"], e["data"]))
                .collect();
            panic!(
                "{id}: one page, sent alone, in a digest, or not at all: {rows:#?}\n{sent:#?}\n\
                 {id}'s events: {events:#?}"
            );
        }
    }
}
