//! Bad input gets a clear error and changes nothing in the store.

use serde_json::json;

use crate::helpers::*;

async fn fingerprint(app: &TestApp) -> (i64, usize) {
    let last = app.store.last_event_id().await.expect("last id");
    let n = app
        .store
        .list_sessions(&Default::default())
        .await
        .expect("list")
        .len();
    (last, n)
}

#[actix_web::test]
async fn bad_requests_get_their_status_and_change_nothing() {
    let app = spawn_app().await;
    let id = app
        .spawn(json!({"project": "demo", "agent": "quick"}))
        .await;
    app.wait_state(&id, "done").await;
    let before = fingerprint(&app).await;
    let url = |p: &str| format!("{}{p}", app.address);

    // No token, wrong token → 401 with the error shape.
    let r = app
        .client
        .get(url("/api/v1/sessions"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "unauthorized");
    let r = app
        .client
        .post(url("/api/v1/sessions"))
        .bearer_auth("wrong")
        .json(&json!({"project": "demo"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);

    // Malformed JSON → 422.
    let r = app
        .req(reqwest::Method::POST, "/api/v1/sessions")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 422);
    // A missing field is named.
    let (s, v) = app.post("/api/v1/sessions", json!({"prompt": "x"})).await;
    assert_eq!(s, 422);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("project:"),
        "{v}"
    );
    // A wrong type is named.
    let (s, v) = app.post("/api/v1/sessions", json!({"project": 5})).await;
    assert_eq!(s, 422, "{v}");
    // Unknown field.
    let (s, v) = app
        .post("/api/v1/sessions", json!({"project": "demo", "colour": 1}))
        .await;
    assert_eq!(s, 422);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("colour:"),
        "{v}"
    );
    // Unknown project, unknown agent, bad branch → 422 naming the field.
    for (body, field) in [
        (json!({"project": "nope"}), "project"),
        (json!({"project": "demo", "agent": "ghost"}), "agent"),
        (json!({"project": "demo", "branch": "a..b"}), "branch"),
        (json!({"project": "demo", "branch": "has space"}), "branch"),
    ] {
        let (s, v) = app.post("/api/v1/sessions", body.clone()).await;
        assert_eq!(s, 422, "{body}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .starts_with(&format!("{field}:")),
            "{body}: {v}"
        );
    }
    // Unknown session → 404 on every verb.
    for (m, p) in [
        ("GET", "/api/v1/sessions/demo-999"),
        ("POST", "/api/v1/sessions/demo-999/kill"),
        ("POST", "/api/v1/sessions/demo-999/restore"),
        ("POST", "/api/v1/sessions/demo-999/merge"),
        ("GET", "/api/v1/sessions/demo-999/events"),
        ("GET", "/api/v1/sessions/demo-999/output"),
    ] {
        let method = reqwest::Method::from_bytes(m.as_bytes()).expect("method");
        let mut r = app.req(method, p);
        if m == "POST" {
            r = r.json(&json!({}));
        }
        let r = r.send().await.expect("send");
        assert_eq!(r.status(), 404, "{m} {p}");
    }
    let (s, _) = app
        .post("/api/v1/sessions/demo-999/send", json!({"message": "hi"}))
        .await;
    assert_eq!(s, 404);
    // Oversized body → 413 (limit 64 KiB in the test config).
    let big = "x".repeat(70 * 1024);
    let (s, v) = app
        .post(
            "/api/v1/sessions",
            json!({"project": "demo", "prompt": big}),
        )
        .await;
    assert_eq!(s, 413, "{v}");
    // Unknown route → 404 in the same shape.
    let (s, v) = app.get("/api/v1/nothing-here").await;
    assert_eq!(s, 404);
    assert_eq!(v["error"]["code"], "not_found");

    assert_eq!(fingerprint(&app).await, before, "the store did not change");
}

#[actix_web::test]
async fn the_token_may_come_as_a_query_parameter_for_browsers() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(format!(
            "{}/api/v1/sessions?access_token={TOKEN}",
            app.address
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
}

#[actix_web::test]
async fn health_and_openapi_are_served() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let (s, v) = app.get("/api/v1/openapi.json").await;
    assert_eq!(s, 200);
    let paths = v["paths"].as_object().expect("paths");
    for p in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/sessions",
        "/api/v1/sessions/{id}",
        "/api/v1/sessions/{id}/send",
        "/api/v1/sessions/{id}/kill",
        "/api/v1/sessions/{id}/restore",
        "/api/v1/sessions/{id}/merge",
        "/api/v1/sessions/{id}/events",
        "/api/v1/sessions/{id}/output",
        "/api/v1/conversations",
        "/api/v1/conversations/{id}",
        "/api/v1/events",
        "/api/v1/ws",
        "/api/v1/openapi.json",
    ] {
        assert!(paths.contains_key(p), "openapi lacks {p}");
    }
}
