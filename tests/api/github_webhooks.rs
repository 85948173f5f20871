//! `POST /webhooks/github`: signatures, persistence before the 2xx, replays, ping, bad input,
//! and the fake GitHub's signed deliveries reaching a real app.

use chrono::Utc;
use flotilla::plugins::github::events::sign;
use flotilla::store::WebhookDelivery;
use serde_json::{json, Value};

use crate::fake_github::FakeGithub;
use crate::helpers::{require_tool, spawn_app_with_env, Backend, TestApp, ECHO_AGENT};

const SECRET: &str = "It's a Secret to Everybody";

async fn app(secret: Option<&str>) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let agents = format!("  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n");
    let env: Vec<(&str, &str)> = secret
        .map(|s| vec![("FLOTILLA__GITHUB__WEBHOOK_SECRET", s)])
        .unwrap_or_default();
    spawn_app_with_env(Backend::Sqlite, &agents, "", dir, &env)
        .await
        .expect("app")
}

async fn deliver(
    app: &TestApp,
    id: &str,
    event: &str,
    body: &str,
    sig: Option<String>,
) -> (u16, Value) {
    let mut r = app
        .client
        .post(format!("{}/webhooks/github", app.address))
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", id)
        .body(body.to_string());
    if let Some(s) = sig {
        r = r.header("x-hub-signature-256", s);
    }
    let r = r.send().await.expect("post");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Whether the app stored delivery `id` (recording it again is then not new).
async fn stored(app: &TestApp, id: &str) -> bool {
    let d = WebhookDelivery {
        platform: "github".into(),
        delivery_id: id.into(),
        event: "probe".into(),
        payload: "{}".into(),
        received_at: Utc::now(),
    };
    !app.store.record_webhook_delivery(&d).await.expect("store")
}

fn pr_body() -> String {
    json!({"action": "opened", "number": 4,
        "pull_request": {"number": 4, "head": {"ref": "feat/x", "sha": "abc"}},
        "repository": {"full_name": "acme/widgets"}, "sender": {"login": "octo"}})
    .to_string()
}

#[actix_web::test]
async fn github_webhook_with_forged_or_missing_signature_is_401_and_stores_nothing() {
    let app = app(Some(SECRET)).await;
    let body = pr_body();
    let forged = sign(b"wrong secret", body.as_bytes());
    let (s, v) = deliver(&app, "forged-1", "pull_request", &body, Some(forged)).await;
    assert_eq!(s, 401, "{v}");
    assert_eq!(v["error"]["code"], "bad_signature");
    let (s, _) = deliver(&app, "unsigned-1", "pull_request", &body, None).await;
    assert_eq!(s, 401);
    // Signed for another body: the signature covers the raw bytes.
    let other = sign(SECRET.as_bytes(), b"{}");
    let (s, _) = deliver(&app, "other-1", "pull_request", &body, Some(other)).await;
    assert_eq!(s, 401);
    assert!(!stored(&app, "forged-1").await);
    assert!(!stored(&app, "unsigned-1").await);
    assert!(!stored(&app, "other-1").await);
}

#[actix_web::test]
async fn github_webhook_without_a_configured_secret_refuses_everything() {
    let app = app(None).await;
    let body = pr_body();
    let sig = sign(SECRET.as_bytes(), body.as_bytes());
    let (s, _) = deliver(&app, "nosecret-1", "pull_request", &body, Some(sig)).await;
    assert_eq!(s, 401);
    assert!(!stored(&app, "nosecret-1").await);
}

#[actix_web::test]
async fn github_webhook_valid_is_recorded_and_a_replay_is_a_duplicate() {
    let app = app(Some(SECRET)).await;
    let body = pr_body();
    let sig = sign(SECRET.as_bytes(), body.as_bytes());
    let (s, v) = deliver(&app, "good-1", "pull_request", &body, Some(sig.clone())).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["duplicate"], false);
    assert_eq!(v["event"], "pull_request");
    let (s, v) = deliver(&app, "good-1", "pull_request", &body, Some(sig)).await;
    assert_eq!(s, 200);
    assert_eq!(v, json!({"duplicate": true}));
    assert!(stored(&app, "good-1").await);
}

#[actix_web::test]
async fn github_webhook_ping_malformed_and_oversized() {
    let app = app(Some(SECRET)).await;
    let ping = json!({"zen": "Design for failure.", "hook_id": 1, "hook": {}}).to_string();
    let (s, v) = deliver(
        &app,
        "ping-1",
        "ping",
        &ping,
        Some(sign(SECRET.as_bytes(), ping.as_bytes())),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["pong"], true);

    let bad = "{not json";
    let (s, v) = deliver(
        &app,
        "bad-1",
        "pull_request",
        bad,
        Some(sign(SECRET.as_bytes(), bad.as_bytes())),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "bad_request");
    assert!(!stored(&app, "bad-1").await);

    // The test config limits bodies to 64 KiB.
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(70_000));
    let (s, _) = deliver(
        &app,
        "big-1",
        "pull_request",
        &big,
        Some(sign(SECRET.as_bytes(), big.as_bytes())),
    )
    .await;
    assert_eq!(s, 413);
    assert!(!stored(&app, "big-1").await);

    let (s, _) = deliver(
        &app,
        "",
        "pull_request",
        &ping,
        Some(sign(SECRET.as_bytes(), ping.as_bytes())),
    )
    .await;
    assert_eq!(s, 400, "a missing delivery id is refused");
}

#[actix_web::test]
async fn github_fake_signed_webhooks_reach_a_real_app_and_redelivery_is_deduplicated() {
    if !require_tool("git") {
        return;
    }
    let app = app(Some(SECRET)).await;
    let gh = FakeGithub::start("tok").await;
    gh.create_repo("acme/widgets");
    gh.set_webhook(&format!("{}/webhooks/github", app.address), SECRET);
    let p = gh.ping().await;
    assert_eq!(p.status, 200);
    gh.push("acme/widgets", "feat/x", "main", &[("x.txt", "x\n")], "x")
        .await;
    let n = gh.open_pr("acme/widgets", "feat/x", "main", "X").await;
    gh.add_check_run(
        "acme/widgets",
        "feat/x",
        "test",
        Some("failure"),
        Some("boom\n"),
    )
    .await;
    gh.add_review(
        "acme/widgets",
        n,
        "rev",
        "CHANGES_REQUESTED",
        "please",
        &[("x.txt", 1, "why?")],
    )
    .await;
    gh.add_comment("acme/widgets", n, "rev", "also this").await;
    gh.add_status("acme/widgets", "feat/x", "lint", "error")
        .await;
    let ds = gh.deliveries();
    let events: Vec<&str> = ds.iter().map(|d| d.event.as_str()).collect();
    for e in [
        "ping",
        "pull_request",
        "check_run",
        "check_suite",
        "pull_request_review",
        "pull_request_review_comment",
        "issue_comment",
        "status",
    ] {
        assert!(events.contains(&e), "{e} missing from {events:?}");
    }
    assert!(
        ds.iter().all(|d| d.status == 200),
        "{:?}",
        ds.iter().map(|d| (&d.event, d.status)).collect::<Vec<_>>()
    );
    for d in &ds {
        assert!(stored(&app, &d.id).await, "{} not stored", d.event);
    }
    let again = gh.redeliver(&ds[1].id).await;
    assert_eq!(again.status, 200);
    // The handler counted each new non-ping event once; the redelivery was not counted.
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("flotilla_github_webhooks_total{event=\"check_run\"}"),
        "{metrics}"
    );
}

/// `application/x-www-form-urlencoded`, the body as `payload=<url-encoded JSON>`.
fn form(json: &str) -> String {
    let enc: String = json
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("payload={enc}")
}

/// A hook created with content type `application/x-www-form-urlencoded` sends the JSON "as
/// a form parameter called `payload`" and signs the raw form body (GitHub's "Webhook events
/// and payloads" and "Validating webhook deliveries"): such a delivery is read like a JSON
/// one, and its signature is still checked over the bytes sent.
#[actix_web::test]
async fn github_webhook_form_encoded_delivery_is_read_from_its_payload_field() {
    let app = app(Some(SECRET)).await;
    let post = |id: &'static str, body: String, sig: String| {
        let r = app
            .client
            .post(format!("{}/webhooks/github", app.address))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-github-event", "pull_request")
            .header("x-github-delivery", id)
            .header("x-hub-signature-256", sig)
            .body(body);
        async move {
            let r = r.send().await.expect("post");
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let body = form(&pr_body());
    let (s, v) = post(
        "form-1",
        body.clone(),
        sign(SECRET.as_bytes(), body.as_bytes()),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["event"], "pull_request", "{v}");
    assert!(stored(&app, "form-1").await);
    // Signed over the JSON instead of the form body: refused, nothing stored.
    let (s, _) = post(
        "form-2",
        body.clone(),
        sign(SECRET.as_bytes(), pr_body().as_bytes()),
    )
    .await;
    assert_eq!(s, 401);
    assert!(!stored(&app, "form-2").await);
    // A form without `payload`.
    let bad = "other=1".to_string();
    let (s, _) = post(
        "form-3",
        bad.clone(),
        sign(SECRET.as_bytes(), bad.as_bytes()),
    )
    .await;
    assert_eq!(s, 400);
}
