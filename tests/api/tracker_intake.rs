//! Issue intake both ways in (issue 15 item 5): a GitHub issue labelled (or assigned) for
//! Flotilla starts one session through `issues` webhooks or polling, at most once per issue;
//! a Jira `jira:issue_updated` delivery signed with `X-Hub-Signature` does the same, a forged
//! one is 401 and starts nothing; a closed issue is refused at spawn (422 naming it).

use serde_json::{json, Value};

use crate::fake_github::FakeGithub;
use crate::fake_trackers::FakeTrackers;
use crate::helpers::{eventually, require_tool, spawn_app_with_env, Backend, TestApp, ECHO_AGENT};

const REPO: &str = "acme/intake";
const TOKEN: &str = "ghp_intake";
const GH_SECRET: &str = "gh-intake-secret";
const JIRA_SECRET: &str = "jira-intake-secret";

async fn app(project: &str, env: &[(&str, &str)]) -> Option<TestApp> {
    let dir = tempfile::tempdir().expect("tempdir");
    let agents = format!("  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n");
    spawn_app_with_env(Backend::Sqlite, &agents, project, dir, env).await
}

async fn sessions(app: &TestApp) -> Vec<Value> {
    let (_, v) = app.get("/api/v1/sessions").await;
    v["sessions"].as_array().cloned().unwrap_or_default()
}

/// An app on the fake GitHub with `intake: { label: flotilla }`; `poll` is
/// `github.poll_interval`.
async fn github_app(gh: &FakeGithub, poll: &str) -> Option<TestApp> {
    let graphql = format!("{}/graphql", gh.url);
    app(
        &format!(
            "    tracker: github\n    github_repo: {REPO}\n    intake: {{ label: flotilla }}\n"
        ),
        &[
            ("FLOTILLA__GITHUB__API_URL", gh.url.as_str()),
            ("FLOTILLA__GITHUB__GRAPHQL_URL", graphql.as_str()),
            ("FLOTILLA__GITHUB__TOKEN", TOKEN),
            ("FLOTILLA__GITHUB__WEBHOOK_SECRET", GH_SECRET),
            ("FLOTILLA__GITHUB__POLL_INTERVAL", poll),
        ],
    )
    .await
}

/// Waits until exactly the sessions for `issues` exist (and checks none more came).
async fn wait_sessions(app: &TestApp, issues: &[&str]) -> Vec<Value> {
    let list = eventually(20, "the intake sessions", || async {
        let s = sessions(app).await;
        (s.len() >= issues.len()).then_some(s)
    })
    .await;
    let mut got: Vec<String> = list
        .iter()
        .filter_map(|s| s["issue"].as_str().map(str::to_string))
        .collect();
    got.sort();
    let mut want: Vec<String> = issues.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "{list:?}");
    list
}

#[actix_web::test]
async fn tracker_intake_a_labelled_github_issue_starts_one_session_and_relabelling_starts_none() {
    if !require_tool("git") {
        return;
    }
    let gh = FakeGithub::start(TOKEN).await;
    gh.create_repo(REPO);
    let n = gh.create_issue(
        REPO,
        "Paginate the export",
        "The export stops at 1000 rows.",
    );
    let other = gh.create_issue(REPO, "Unrelated", "Not for the bot.");
    let Some(app) = github_app(&gh, "0s").await else {
        return;
    };
    gh.set_webhook(&format!("{}/webhooks/github", app.address), GH_SECRET);
    // Another label starts nothing; the intake label starts one session for the issue.
    gh.label_issue(REPO, other, "bug").await;
    gh.label_issue(REPO, n, "flotilla").await;
    let list = wait_sessions(&app, &[&n.to_string()]).await;
    let id = list[0]["id"].as_str().expect("id").to_string();
    let out = app.wait_output(&id, "READY").await;
    assert!(
        out.contains(&format!("Issue {n}: Paginate the export")),
        "{out}"
    );
    // Removed and added again, then another label on top: still the one session.
    gh.unlabel_issue(REPO, n, "flotilla").await;
    gh.label_issue(REPO, n, "flotilla").await;
    gh.label_issue(REPO, n, "urgent").await;
    // Each delivery was answered before `label_issue` returned: all five taken (200).
    let issues: Vec<u16> = gh
        .deliveries()
        .iter()
        .filter(|d| d.event == "issues")
        .map(|d| d.status)
        .collect();
    assert_eq!(issues, [200; 5], "{issues:?}");
    assert_eq!(sessions(&app).await.len(), 1);
}

#[actix_web::test]
async fn tracker_intake_polling_starts_one_session_per_labelled_github_issue() {
    if !require_tool("git") {
        return;
    }
    let gh = FakeGithub::start(TOKEN).await;
    gh.create_repo(REPO);
    let a = gh.create_issue(REPO, "First", "One.");
    let b = gh.create_issue(REPO, "Second", "Two.");
    let c = gh.create_issue(REPO, "Third", "Not labelled.");
    // Labelled before Flotilla runs, and no webhook: only the poll can find them.
    gh.label_issue(REPO, a, "flotilla").await;
    gh.label_issue(REPO, b, "Flotilla").await;
    let Some(app) = github_app(&gh, "1s").await else {
        return;
    };
    wait_sessions(&app, &[&a.to_string(), &b.to_string()]).await;
    // Later polls see the same issues and start nothing more.
    let polls = gh.count("GET /repos/{owner}/{repo}/issues");
    eventually(20, "two more polls", || async {
        (gh.count("GET /repos/{owner}/{repo}/issues") >= polls + 2).then_some(())
    })
    .await;
    wait_sessions(&app, &[&a.to_string(), &b.to_string()]).await;
    let unlabelled = c.to_string();
    assert!(!sessions(&app)
        .await
        .iter()
        .any(|s| s["issue"] == unlabelled.as_str()));
}

/// A Jira admin webhook delivery for `key` carrying `labels`.
fn jira_issue_updated(key: &str, labels: &[&str]) -> Value {
    json!({"timestamp": 1_767_225_600_000_i64, "webhookEvent": "jira:issue_updated",
        "issue_event_type_name": "issue_updated",
        "user": {"accountId": "5b10ac8d82e05b22cc7d4ef5", "displayName": "Mia Krystof"},
        "issue": {"id": "10002", "key": key,
            "self": "https://acme.atlassian.net/rest/api/2/issue/10002",
            "fields": {"summary": "Rotate the signing key", "labels": labels,
                "status": {"name": "To Do", "statusCategory": {"key": "new", "name": "To Do"}},
                "assignee": null, "project": {"key": "OPS"}}},
        "changelog": {"id": "10100", "items": [{"field": "labels", "fieldtype": "jira",
            "from": null, "fromString": "", "to": null, "toString": labels.join(" ")}]}})
}

#[actix_web::test]
async fn tracker_intake_a_signed_jira_delivery_starts_one_session_and_a_forged_one_is_refused() {
    if !require_tool("git") {
        return;
    }
    let t = FakeTrackers::start("k", "dev@acme.test", "jira-token").await;
    t.add_jira(
        "OPS-8",
        "Rotate the signing key",
        json!({"type": "doc", "version": 1, "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": "Before Friday."}]}]}),
        &["flotilla"],
    );
    let Some(app) = app(
        "    tracker: jira\n    intake: { label: flotilla }\n",
        &[
            ("FLOTILLA__JIRA__BASE_URL", t.url.as_str()),
            ("FLOTILLA__JIRA__EMAIL", "dev@acme.test"),
            ("FLOTILLA__JIRA__API_TOKEN", "jira-token"),
            ("FLOTILLA__JIRA__WEBHOOK_SECRET", JIRA_SECRET),
        ],
    )
    .await
    else {
        return;
    };
    let url = format!("{}/webhooks/jira", app.address);
    let body = jira_issue_updated("OPS-8", &["flotilla"]);
    // Forged (another secret) and unsigned: 401, nothing started.
    assert_eq!(
        crate::fake_jira::post_signed(&url, "not-the-secret", &body).await,
        401
    );
    let unsigned = app
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(unsigned.status().as_u16(), 401);
    assert!(sessions(&app).await.is_empty());
    // Signed: one session for the issue, with the issue as its task.
    assert_eq!(
        crate::fake_jira::post_signed(&url, JIRA_SECRET, &body).await,
        200
    );
    let list = wait_sessions(&app, &["OPS-8"]).await;
    let id = list[0]["id"].as_str().expect("id").to_string();
    let out = app.wait_output(&id, "READY").await;
    assert!(out.contains("Issue OPS-8: Rotate the signing key"), "{out}");
    // The same issue updated again (label off and on): still the one session.
    let off = jira_issue_updated("OPS-8", &[]);
    assert_eq!(
        crate::fake_jira::post_signed(&url, JIRA_SECRET, &off).await,
        200
    );
    assert_eq!(
        crate::fake_jira::post_signed(&url, JIRA_SECRET, &body).await,
        200
    );
    assert_eq!(sessions(&app).await.len(), 1);
    // An issue without the label starts nothing.
    let other = jira_issue_updated("OPS-9", &["backend"]);
    assert_eq!(
        crate::fake_jira::post_signed(&url, JIRA_SECRET, &other).await,
        200
    );
    assert_eq!(sessions(&app).await.len(), 1);
}

/// A spawn for a closed issue is a 422 naming the issue, on each tracker; nothing starts.
#[actix_web::test]
async fn tracker_intake_a_closed_issue_is_refused_at_spawn() {
    if !require_tool("git") {
        return;
    }
    async fn refused(app: &TestApp, issue: &str) {
        let (st, v) = app
            .post(
                "/api/v1/sessions",
                json!({"project": "demo", "issue": issue}),
            )
            .await;
        assert_eq!(st, 422, "{v}");
        let m = v["error"]["message"].as_str().unwrap_or("");
        assert!(m.contains(issue) && m.contains("closed"), "{v}");
        assert!(sessions(app).await.is_empty());
    }
    // GitHub: state `closed`.
    let gh = FakeGithub::start(TOKEN).await;
    gh.create_repo(REPO);
    let n = gh.create_issue(REPO, "Done already", "Fixed in #1.");
    gh.close_issue(REPO, n).await;
    let Some(gh_app) = github_app(&gh, "0s").await else {
        return;
    };
    refused(&gh_app, &n.to_string()).await;
    // Linear: a state of type `completed` (or `canceled`).
    let t = FakeTrackers::start("lin_api_key", "dev@acme.test", "jira-token").await;
    t.add_linear("ENG-5", "Shipped", "Done.", "dev/eng-5", &[]);
    t.set_linear_state("ENG-5", "Done");
    t.add_linear("ENG-6", "Dropped", "No.", "dev/eng-6", &[]);
    t.set_linear_state("ENG-6", "Canceled");
    let linear = format!("{}/graphql", t.url);
    let Some(lin_app) = app(
        "    tracker: linear\n",
        &[
            ("FLOTILLA__LINEAR__API_URL", linear.as_str()),
            ("FLOTILLA__LINEAR__API_KEY", "lin_api_key"),
        ],
    )
    .await
    else {
        return;
    };
    refused(&lin_app, "ENG-5").await;
    refused(&lin_app, "ENG-6").await;
    // Jira: status category `done`.
    t.add_jira("OPS-1", "Closed", json!(null), &[]);
    t.set_jira_status("OPS-1", "Done");
    let Some(jira_app) = app(
        "    tracker: jira\n",
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
    refused(&jira_app, "OPS-1").await;
    // A batch skips it, naming why, and spawns the open one.
    t.add_jira("OPS-2", "Open", json!(null), &[]);
    let (st, v) = jira_app
        .post(
            "/api/v1/sessions/batch",
            json!({"project": "demo", "issues": ["OPS-1", "OPS-2"]}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["skipped"][0]["issue"], "OPS-1", "{v}");
    assert_eq!(v["skipped"][0]["reason"], "closed in the tracker", "{v}");
    assert_eq!(v["spawned"][0]["issue"], "OPS-2", "{v}");
    // An open issue of the same tracker still spawns on its own.
    t.add_jira("OPS-3", "Open too", json!(null), &[]);
    jira_app
        .spawn(json!({"project": "demo", "issue": "OPS-3"}))
        .await;
}
