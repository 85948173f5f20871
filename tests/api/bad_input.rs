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
    // A blank question to answer is refused by name, before the session is looked up.
    let (s, v) = app
        .post(
            "/api/v1/sessions/demo-999/send",
            json!({"message": "1", "question": " "}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(v.to_string().contains("question:"), "{v}");
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
async fn a_query_token_opens_the_event_stream_and_nothing_else() {
    let app = spawn_app().await;
    let before = fingerprint(&app).await;
    // Browsers' EventSource cannot send a header: the stream takes the token in the query.
    let r = app
        .client
        .get(format!(
            "{}/api/v1/events?access_token={TOKEN}",
            app.address
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    drop(r);
    // Everywhere else a token in a URL is refused: it leaks into logs and history.
    let r = app
        .client
        .get(format!(
            "{}/api/v1/sessions?access_token={TOKEN}",
            app.address
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    let r = app
        .client
        .post(format!(
            "{}/api/v1/sessions?access_token={TOKEN}",
            app.address
        ))
        .json(&json!({"project": "demo", "prompt": "x"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    assert_eq!(fingerprint(&app).await, before, "the store did not change");
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

/// Writes an executable shell script.
fn script(path: &std::path::Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[actix_web::test]
async fn a_spawn_whose_agent_cannot_start_fails_before_anything_is_made() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A `claude` that is on its agent's PATH but has never been set up for its HOME (a
    // warning, not a refusal: checked last).
    let bin = dir.path().join("bin");
    let fresh_home = dir.path().join("fresh-home");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::fs::create_dir_all(&fresh_home).expect("mkdir");
    script(&bin.join("claude"), "echo 'should never run'; exit 9");
    let agents = format!(
        "  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n  \
         ghost: {{ kind: command, command: [\"flotilla-test-no-such-agent\", \"--go\"] }}\n  \
         gone: {{ kind: command, command: [\"{missing}\"] }}\n  \
         fresh: {{ kind: claude-code, env: {{ PATH: \"{bin}:/usr/bin:/bin\", HOME: \"{home}\" }} }}\n",
        missing = dir.path().join("nope/agent").display(),
        bin = bin.display(),
        home = fresh_home.display(),
    );
    let app = spawn_app_with_agents(Backend::Sqlite, &agents, "", dir)
        .await
        .expect("app");
    let before = fingerprint(&app).await;

    let (s, v) = app
        .post(
            "/api/v1/sessions",
            json!({"project": "demo", "agent": "ghost", "prompt": "x"}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["code"], "invalid");
    assert_eq!(
        v["error"]["message"],
        "agent: ghost: flotilla-test-no-such-agent not found on PATH"
    );

    let (s, v) = app
        .post(
            "/api/v1/sessions",
            json!({"project": "demo", "agent": "gone"}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    let m = v["error"]["message"].as_str().unwrap_or("");
    assert!(
        m.contains("nope/agent is missing or not an executable file"),
        "{v}"
    );

    // Batch spawns are refused the same way, before any issue is looked at.
    let (s, v) = app
        .post(
            "/api/v1/sessions/batch",
            json!({"project": "demo", "issues": ["1", "2"], "agent": "ghost"}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("flotilla-test-no-such-agent not found on PATH"),
        "{v}"
    );

    assert_eq!(fingerprint(&app).await, before, "no session, no event");
    let worktrees = app.home.join("worktrees");
    let made: Vec<_> = std::fs::read_dir(&worktrees)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(made.is_empty(), "no worktree: {made:?}");
    let branches = git(&app.repo, &["branch", "--list", "session/*"]);
    assert!(branches.trim().is_empty(), "no branch: {branches}");

    // A claude whose first-run set-up is not done starts anyway (its set-up screen is a
    // question for a human, or its own error): the preflight's warning stays with the session.
    let (s, v) = app
        .post(
            "/api/v1/sessions",
            json!({"project": "demo", "agent": "fresh"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let w = v["meta"]["preflight_warnings"][0].as_str().unwrap_or("");
    assert!(
        w.starts_with("fresh: claude has not completed its first-run set-up for HOME=")
            && w.contains("run `claude` once in a terminal"),
        "{v}"
    );
    // Once the set-up is done, no warning (the check reads the file each time).
    std::fs::write(
        fresh_home.join(".claude.json"),
        "{\"hasCompletedOnboarding\": true}",
    )
    .expect("write");
    let (s, v) = app
        .post(
            "/api/v1/sessions",
            json!({"project": "demo", "agent": "fresh"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert!(v["meta"]["preflight_warnings"].is_null(), "{v}");
}

/// Sends a request head announcing a 100-byte body and one byte of it, then reads until the
/// server closes the connection; returns what it answered.
async fn stalled_body(address: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = address.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(host).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    conn.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        conn.read_to_end(&mut answer),
    )
    .await
    .expect("the server never closed a connection whose body stalled")
    .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

#[actix_web::test]
async fn a_body_that_never_arrives_gets_408_and_its_connection_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agents = format!("  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n");
    let app = spawn_app_with_env(
        Backend::Sqlite,
        &agents,
        "",
        dir,
        &[("FLOTILLA__SERVER__BODY_TIMEOUT", "1s")],
    )
    .await
    .expect("app");
    let before = fingerprint(&app).await;
    // Many at once, as a slow-loris client would: each is answered and closed, none is held.
    let stalled: Vec<_> = (0..40)
        .map(|i| {
            let path = if i % 2 == 0 {
                "/webhooks/github"
            } else {
                "/api/v1/sessions"
            };
            stalled_body(&app.address, path)
        })
        .collect();
    for answer in futures::future::join_all(stalled).await {
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("request_timeout"), "{answer}");
    }
    let (s, _) = app.get("/api/v1/sessions").await;
    assert_eq!(s, 200, "the API still answers");
    assert_eq!(fingerprint(&app).await, before, "the store did not change");
}

#[actix_web::test]
async fn two_thousand_slow_webhook_clients_do_not_starve_the_api() {
    let app = spawn_app().await;
    // Each client sends a whole head and one byte of its body, then stalls.
    let mut conns = Vec::new();
    for _ in 0..2000 {
        use tokio::io::AsyncWriteExt;
        let host = app.address.trim_start_matches("http://");
        let Ok(mut c) = tokio::net::TcpStream::connect(host).await else {
            break;
        };
        let head = format!(
            "POST /webhooks/github HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             X-GitHub-Event: ping\r\nContent-Length: 100\r\n\r\n{{"
        );
        if c.write_all(head.as_bytes()).await.is_err() {
            break;
        }
        conns.push(c);
    }
    assert_eq!(conns.len(), 2000, "every slow client connected");
    // The process runs both ends here: the server must still take new connections and
    // answer them promptly (a deadline, not a measurement).
    let within = std::time::Duration::from_secs(5);
    let health = tokio::time::timeout(
        within,
        app.client.get(format!("{}/healthz", app.address)).send(),
    )
    .await
    .expect("/healthz answered in time")
    .expect("healthz");
    assert_eq!(health.status(), 200);
    let (s, _) = tokio::time::timeout(within, app.get("/api/v1/sessions"))
        .await
        .expect("the API answered in time");
    assert_eq!(s, 200);
    // Past `server.max_webhooks_in_flight` (256) a webhook is turned away at once.
    let mut last = conns.pop().expect("a connection");
    let mut answer = Vec::new();
    tokio::time::timeout(within, {
        use tokio::io::AsyncReadExt;
        last.read_to_end(&mut answer)
    })
    .await
    .expect("the webhook over the cap was answered and closed")
    .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    drop(conns);
}
