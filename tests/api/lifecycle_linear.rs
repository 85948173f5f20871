//! `POST /webhooks/linear` (issue 15): Linear's signature and freshness are checked, a replay
//! is a duplicate, and an issue labelled for Flotilla starts one session, at most once.

use serde_json::{json, Value};

use crate::fake_trackers::FakeTrackers;
use crate::helpers::{eventually, require_tool, spawn_app_with_env, Backend, TestApp, ECHO_AGENT};
use flotilla::plugins::trackers::linear_hook::sign;

const SECRET: &str = "lin_wh_secret";

/// Linear's `Issue` delivery for ENG-7 with `labels`, stamped `at` (epoch ms).
fn issue(action: &str, labels: &[&str], at: i64) -> Vec<u8> {
    json!({"action": action, "type": "Issue", "createdAt": "2026-01-01T00:00:00.000Z",
        "organizationId": "org-1", "webhookId": "wh-1", "webhookTimestamp": at,
        "url": "https://linear.app/acme/issue/eng-7",
        "data": {"id": "9cfb482a-81e3-4154-b5b9-2c805e70a02d", "identifier": "ENG-7",
                 "title": "Flaky webhook retries", "number": 7, "teamId": "team-1",
                 "labelIds": labels.iter().map(|l| format!("id-{l}")).collect::<Vec<_>>(),
                 "labels": labels.iter().map(|l| json!({"id": format!("id-{l}"), "name": l, "color": "#fff"})).collect::<Vec<_>>()}})
    .to_string()
    .into_bytes()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn deliver(app: &TestApp, id: &str, body: &[u8], signature: &str) -> (u16, Value) {
    let r = app
        .client
        .post(format!("{}/webhooks/linear", app.address))
        .header("content-type", "application/json")
        .header("linear-delivery", id)
        .header("linear-event", "Issue")
        .header("linear-signature", signature)
        .body(body.to_vec())
        .send()
        .await
        .expect("delivered");
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

async fn sessions(app: &TestApp) -> Vec<Value> {
    let (_, v) = app.get("/api/v1/sessions").await;
    v["sessions"].as_array().cloned().unwrap_or_default()
}

#[actix_web::test]
async fn lifecycle_linear_webhooks_are_verified_and_a_labelled_issue_starts_one_session() {
    if !require_tool("git") {
        return;
    }
    let t = FakeTrackers::start("lin_api_key", "dev@acme.test", "jira-token").await;
    t.add_linear(
        "ENG-7",
        "Flaky webhook retries",
        "Retries give up too early.",
        "dev/eng-7-flaky",
        &["flotilla"],
    );
    let url = format!("{}/graphql", t.url);
    let dir = tempfile::tempdir().expect("tempdir");
    let agents = format!("  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n");
    let Some(app) = spawn_app_with_env(
        Backend::Sqlite,
        &agents,
        "    tracker: linear\n    intake: { label: Flotilla }\n",
        dir,
        &[
            ("FLOTILLA__LINEAR__API_URL", url.as_str()),
            ("FLOTILLA__LINEAR__API_KEY", "lin_api_key"),
            ("FLOTILLA__LINEAR__WEBHOOK_SECRET", SECRET),
        ],
    )
    .await
    else {
        return;
    };
    let labelled = issue("update", &["flotilla"], now_ms());
    // Forged: signed with another secret, or not at all.
    let (st, _) = deliver(&app, "d-forged", &labelled, &sign(b"guess", &labelled)).await;
    assert_eq!(st, 401);
    let (st, _) = deliver(&app, "d-unsigned", &labelled, "").await;
    assert_eq!(st, 401);
    // Stale: correctly signed, but captured five minutes ago.
    let old = issue("update", &["flotilla"], now_ms() - 5 * 60_000);
    let (st, _) = deliver(&app, "d-stale", &old, &sign(SECRET.as_bytes(), &old)).await;
    assert_eq!(st, 401);
    assert!(sessions(&app).await.is_empty(), "nothing started");

    // Genuine: one session for ENG-7, with the issue as its task.
    let (st, v) = deliver(&app, "d-1", &labelled, &sign(SECRET.as_bytes(), &labelled)).await;
    assert_eq!(st, 200, "{v}");
    let id = v["session"].as_str().expect("a session").to_string();
    let out = app.wait_output(&id, "READY").await;
    assert!(out.contains("Issue ENG-7: Flaky webhook retries"), "{out}");
    // Replayed: the same delivery again is a duplicate and starts nothing.
    let (st, v) = deliver(&app, "d-1", &labelled, &sign(SECRET.as_bytes(), &labelled)).await;
    assert_eq!((st, v["duplicate"].clone()), (200, json!(true)), "{v}");
    // The label removed, then added again: still the one session.
    let bare = issue("update", &[], now_ms());
    let (st, _) = deliver(&app, "d-2", &bare, &sign(SECRET.as_bytes(), &bare)).await;
    assert_eq!(st, 200);
    let again = issue("update", &["flotilla"], now_ms());
    let (st, v) = deliver(&app, "d-3", &again, &sign(SECRET.as_bytes(), &again)).await;
    assert_eq!(st, 200, "{v}");
    assert!(v["session"].is_null(), "{v}");
    let list = eventually(10, "the sessions listed", || async {
        let s = sessions(&app).await;
        (!s.is_empty()).then_some(s)
    })
    .await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["issue"], "ENG-7", "{list:?}");
}
