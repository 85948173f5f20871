//! A Jira conversation gets its repository from its issue (`jira.repositories`): by
//! component, label, project key, a URL in the description, then the default; with none,
//! the reply (valid ADF on the fake Jira) says how to set one.

use std::path::Path;

use serde_json::{json, Value};

use crate::fake_jira::{self, FakeJira};
use crate::helpers::{eventually, spawn_app_with_env, Backend, TestApp, ECHO_AGENT};

const SECRET: &str = "jira-hook-secret";
const BOT: &str = "bot-account";

/// A Flotilla answering `u1`'s Jira mentions, with `repositories` (YAML under
/// `jira.repositories`) and its chat workspace at `workspace`.
async fn jira_app(jr: &FakeJira, repositories: &str, workspace: &Path) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let agents = format!("  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n");
    let extra = format!(
        "chat:\n  workspace: {}\n  allow:\n    jira: [\"u1\"]\njira:\n  repositories:\n{repositories}",
        workspace.display()
    );
    spawn_app_with_env(
        Backend::Sqlite,
        &agents,
        &extra,
        dir,
        &[
            ("FLOTILLA__JIRA__BASE_URL", jr.url.as_str()),
            ("FLOTILLA__JIRA__EMAIL", "bot@acme.io"),
            ("FLOTILLA__JIRA__API_TOKEN", "jira-token"),
            ("FLOTILLA__JIRA__WEBHOOK_SECRET", SECRET),
            ("FLOTILLA__JIRA__BOT_ACCOUNT_ID", BOT),
        ],
    )
    .await
    .expect("app")
}

/// An empty repository at `root/acme/<name>`; its `file://` URL.
async fn remote(root: &Path, name: &str) -> String {
    let dir = root.join("acme").join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let out = tokio::process::Command::new("git")
        .args(["init", "-q"])
        .arg(&dir)
        .output()
        .await
        .expect("git init");
    assert!(out.status.success(), "git init failed");
    format!("file://{}", dir.display())
}

/// `u1` mentions the bot with `text` on `key`, whose issue has `fields` added.
async fn comment(app: &TestApp, key: &str, id: &str, text: &str, fields: Value) {
    let mut hook = fake_jira::comment_created(key, id, "u1", &format!("[~accountid:{BOT}] {text}"));
    if let (Some(f), Some(extra)) = (hook["issue"]["fields"].as_object_mut(), fields.as_object()) {
        for (k, v) in extra {
            f.insert(k.clone(), v.clone());
        }
    }
    let status =
        fake_jira::post_signed(&format!("{}/webhooks/jira", app.address), SECRET, &hook).await;
    assert_eq!(status, 200);
}

/// The text of every comment on `key` so far, each a valid ADF document.
fn texts(jr: &FakeJira, key: &str) -> Vec<String> {
    jr.comments()
        .into_iter()
        .filter(|c| c.issue == key)
        .map(|c| {
            assert_eq!(
                fake_jira::adf_problem(&c.body),
                None,
                "invalid ADF: {}",
                c.body
            );
            flotilla::plugins::chat::adf::adf_to_text(&c.body)
        })
        .collect()
}

/// The `/status` reply on `key` (after the mapping's own reply).
async fn status_of(jr: &FakeJira, key: &str) -> Vec<String> {
    eventually(30, "a /status reply", || async {
        let t = texts(jr, key);
        t.iter().any(|s| s.contains("Codebase:")).then_some(t)
    })
    .await
}

#[actix_web::test]
async fn chat_jira_each_strategy_picks_its_repository_in_order() {
    let remotes = tempfile::tempdir().expect("tempdir");
    let (by_component, by_label, by_project, by_default) = (
        remote(remotes.path(), "by-component").await,
        remote(remotes.path(), "by-label").await,
        remote(remotes.path(), "by-project").await,
        remote(remotes.path(), "by-default").await,
    );
    let workspace = tempfile::tempdir().expect("tempdir");
    // The description's repository is already in the workspace (no network here).
    std::fs::create_dir_all(workspace.path().join("acme/from-description")).expect("mkdir");
    let keys = ["ABC-1", "ABC-2", "ABC-3", "XYZ-4", "QQQ-5"];
    let jr = FakeJira::start("bot@acme.io", "jira-token", &keys).await;
    let repositories = format!(
        "    components: {{ Backend: \"{by_component}\" }}\n    labels: {{ web: \"{by_label}\" }}\n    projects: {{ ABC: \"{by_project}\" }}\n    description_hosts: [github.com]\n    default: \"{by_default}\"\n"
    );
    let app = jira_app(&jr, &repositories, workspace.path()).await;
    let desc = "Lives in https://github.com/acme/from-description/tree/main (see https://example.com/x/y).";
    let cases = [
        // Every strategy applies: the component wins.
        (
            "ABC-1",
            json!({"components": [{"name": "backend"}], "labels": ["web"],
            "description": "https://github.com/acme/from-description"}),
            "acme/by-component",
            "component",
        ),
        (
            "ABC-2",
            json!({"components": [{"name": "Docs"}], "labels": ["ops", "web"]}),
            "acme/by-label",
            "label",
        ),
        (
            "ABC-3",
            json!({"labels": ["ops"], "description": desc}),
            "acme/by-project",
            "project",
        ),
        (
            "XYZ-4",
            json!({"description": desc}),
            "acme/from-description",
            "description",
        ),
        (
            "QQQ-5",
            json!({"description": "https://example.com/acme/other"}),
            "acme/by-default",
            "default",
        ),
    ];
    for (i, (key, fields, _, _)) in cases.iter().enumerate() {
        comment(&app, key, &format!("1000{i}"), "/status", fields.clone()).await;
    }
    for (key, _, codebase, why) in cases {
        let replies = status_of(&jr, key).await;
        let all = replies.join("\n---\n");
        assert!(
            all.contains(&format!("Working in {codebase}, from")) && all.contains(why),
            "{key}: {all}"
        );
        assert!(
            all.contains(&format!("Codebase: {codebase}")),
            "{key}: {all}"
        );
    }
    assert!(workspace.path().join("acme/by-component/.git").exists());
}

#[actix_web::test]
async fn chat_jira_without_a_mapping_the_reply_says_how_to_set_one() {
    let workspace = tempfile::tempdir().expect("tempdir");
    let jr = FakeJira::start("bot@acme.io", "jira-token", &["ABC-7"]).await;
    let app = jira_app(
        &jr,
        "    projects: {}\n    description_hosts: []\n",
        workspace.path(),
    )
    .await;
    comment(
        &app,
        "ABC-7",
        "20001",
        "please fix the login bug",
        json!({"description": "see https://github.com/acme/app"}),
    )
    .await;
    let reply = eventually(30, "the no-repository reply", || async {
        texts(&jr, "ABC-7").into_iter().next()
    })
    .await;
    for needle in [
        "No repository for ABC-7",
        "/clone",
        "jira.repositories.projects.ABC",
    ] {
        assert!(reply.contains(needle), "{needle:?} missing in {reply}");
    }
    // `/clone` still works where no mapping applies.
    let remotes = tempfile::tempdir().expect("tempdir");
    let url = remote(remotes.path(), "picked").await;
    comment(&app, "ABC-7", "20002", &format!("/clone {url}"), json!({})).await;
    eventually(30, "the clone reply", || async {
        texts(&jr, "ABC-7")
            .into_iter()
            .find(|t| t.contains("Cloned acme/picked"))
    })
    .await;
}
