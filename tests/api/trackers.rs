//! Trackers feed the prompt and the branch: GitHub issues (fake GitHub), Linear (GraphQL) and
//! Jira (REST v3, ADF) against their fakes; an unknown issue refuses the spawn cleanly.

use serde_json::json;

use crate::fake_github::FakeGithub;
use crate::fake_trackers::FakeTrackers;
use crate::helpers::{require_tool, spawn_app_with_env, Backend, TestApp, ECHO_AGENT};

async fn app(tracker: &str, env: &[(&str, &str)]) -> Option<TestApp> {
    let dir = tempfile::tempdir().expect("tempdir");
    let agents = format!("  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n");
    let extra = format!("    tracker: {tracker}\n    github_repo: acme/tracked\n");
    spawn_app_with_env(Backend::Sqlite, &agents, &extra, dir, env).await
}

#[actix_web::test]
async fn a_github_issue_becomes_the_task() {
    if !require_tool("git") {
        return;
    }
    let gh = FakeGithub::start("ghp_t").await;
    gh.create_repo("acme/tracked");
    let n = gh.create_issue(
        "acme/tracked",
        "Counter overflows at 256",
        "Steps: add 256 widgets.\nExpected: 256.",
    );
    let graphql = format!("{}/graphql", gh.url);
    let Some(app) = app(
        "github",
        &[
            ("FLOTILLA__GITHUB__API_URL", gh.url.as_str()),
            ("FLOTILLA__GITHUB__GRAPHQL_URL", graphql.as_str()),
            ("FLOTILLA__GITHUB__TOKEN", "ghp_t"),
            ("FLOTILLA__GITHUB__POLL_INTERVAL", "0s"),
        ],
    )
    .await
    else {
        return;
    };
    let id = app
        .spawn(json!({"project": "demo", "issue": n.to_string()}))
        .await;
    let out = app.wait_output(&id, "READY").await;
    assert!(
        out.contains(&format!("Issue {n}: Counter overflows at 256")),
        "{out}"
    );
    assert!(out.contains("Steps: add 256 widgets."), "{out}");
    let (_, s) = app.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(s["branch"], format!("feat/{n}"));
    // An issue the tracker does not have: 422 naming the field, no session.
    let (st, v) = app
        .post(
            "/api/v1/sessions",
            json!({"project": "demo", "issue": "999"}),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap_or("").contains("999"),
        "{v}"
    );
    let (_, list) = app.get("/api/v1/sessions").await;
    assert_eq!(list["sessions"].as_array().map(Vec::len), Some(1), "{list}");
}

#[actix_web::test]
async fn a_linear_issue_gives_its_title_body_labels_and_branch() {
    if !require_tool("git") {
        return;
    }
    let t = FakeTrackers::start("lin_api_key", "dev@acme.test", "jira-token").await;
    t.add_linear(
        "ENG-42",
        "Retry webhooks on 502",
        "GitHub sometimes answers 502.",
        "dev/eng-42-retry-webhooks",
        &["bug", "backend"],
    );
    let url = format!("{}/graphql", t.url);
    let Some(app) = app(
        "linear",
        &[
            ("FLOTILLA__LINEAR__API_URL", url.as_str()),
            ("FLOTILLA__LINEAR__API_KEY", "lin_api_key"),
        ],
    )
    .await
    else {
        return;
    };
    let id = app
        .spawn(json!({"project": "demo", "issue": "ENG-42"}))
        .await;
    let out = app.wait_output(&id, "READY").await;
    assert!(out.contains("Issue ENG-42: Retry webhooks on 502"), "{out}");
    assert!(out.contains("Labels: bug, backend"), "{out}");
    assert!(out.contains("GitHub sometimes answers 502."), "{out}");
    let (_, s) = app.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(
        s["branch"], "dev/eng-42-retry-webhooks",
        "the tracker's branch wins"
    );
    let (st, _) = app
        .post(
            "/api/v1/sessions",
            json!({"project": "demo", "issue": "ENG-404"}),
        )
        .await;
    assert_eq!(st, 422);
}

#[actix_web::test]
async fn a_jira_issue_description_in_adf_becomes_text_and_bad_credentials_fail_the_spawn() {
    if !require_tool("git") {
        return;
    }
    let t = FakeTrackers::start("k", "dev@acme.test", "jira-token").await;
    t.add_jira(
        "OPS-7",
        "Rotate the signing key",
        json!({"type": "doc", "version": 1, "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": "Rotate it before "}, {"type": "text", "text": "Friday", "marks": [{"type": "strong"}]}]},
            {"type": "bulletList", "content": [{"type": "listItem", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "update the vault"}]}]}]}
        ]}),
        &["security"],
    );
    let Some(app) = app(
        "jira",
        &[
            ("FLOTILLA__JIRA__BASE_URL", t.url.as_str()),
            ("FLOTILLA__JIRA__EMAIL", "dev@acme.test"),
            ("FLOTILLA__JIRA__API_TOKEN", "jira-token"),
        ],
    )
    .await
    else {
        return;
    };
    let id = app
        .spawn(json!({"project": "demo", "issue": "OPS-7"}))
        .await;
    let out = app.wait_output(&id, "READY").await;
    assert!(out.contains("Issue OPS-7: Rotate the signing key"), "{out}");
    assert!(out.contains("Rotate it before Friday"), "{out}");
    assert!(out.contains("- update the vault"), "{out}");

    let Some(bad) = app_with_wrong_jira_token(&t).await else {
        return;
    };
    let (st, v) = bad
        .post(
            "/api/v1/sessions",
            json!({"project": "demo", "issue": "OPS-7"}),
        )
        .await;
    assert!(st >= 500, "{st} {v}");
    assert!(!v.to_string().contains("wrong-token"), "{v}");
}

async fn app_with_wrong_jira_token(t: &FakeTrackers) -> Option<TestApp> {
    app(
        "jira",
        &[
            ("FLOTILLA__JIRA__BASE_URL", t.url.as_str()),
            ("FLOTILLA__JIRA__EMAIL", "dev@acme.test"),
            ("FLOTILLA__JIRA__API_TOKEN", "wrong-token"),
        ],
    )
    .await
}

/// `batch-spawn` gives each session its issue as `spawn` does (title and body in the prompt,
/// the tracker's branch); an issue the tracker does not have is skipped, not the batch.
#[actix_web::test]
async fn a_batch_spawn_reads_each_issue_from_the_tracker() {
    if !require_tool("git") {
        return;
    }
    let t = FakeTrackers::start("lin_api_key", "dev@acme.test", "jira-token").await;
    t.add_linear(
        "ENG-1",
        "Cache the config",
        "Reading it per request is slow.",
        "dev/eng-1-cache",
        &["perf"],
    );
    t.add_linear(
        "ENG-2",
        "Log the request id",
        "Every line should carry it.",
        "dev/eng-2-request-id",
        &[],
    );
    let url = format!("{}/graphql", t.url);
    let Some(app) = app(
        "linear",
        &[
            ("FLOTILLA__LINEAR__API_URL", url.as_str()),
            ("FLOTILLA__LINEAR__API_KEY", "lin_api_key"),
        ],
    )
    .await
    else {
        return;
    };
    let (s, v) = app
        .post(
            "/api/v1/sessions/batch",
            json!({"project": "demo", "issues": ["ENG-1", "ENG-404", "ENG-2"]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let branches: Vec<&str> = v["spawned"]
        .as_array()
        .expect("spawned")
        .iter()
        .filter_map(|s| s["branch"].as_str())
        .collect();
    assert_eq!(branches, ["dev/eng-1-cache", "dev/eng-2-request-id"], "{v}");
    assert_eq!(v["skipped"][0]["issue"], "ENG-404", "{v}");
    assert_eq!(v["skipped"][0]["reason"], "not found in the tracker", "{v}");
    let ids: Vec<String> = v["spawned"]
        .as_array()
        .expect("spawned")
        .iter()
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect();
    let out = app.wait_output(&ids[0], "READY").await;
    assert!(out.contains("Issue ENG-1: Cache the config"), "{out}");
    assert!(out.contains("Reading it per request is slow."), "{out}");
    let out = app.wait_output(&ids[1], "READY").await;
    assert!(out.contains("Issue ENG-2: Log the request id"), "{out}");
}
