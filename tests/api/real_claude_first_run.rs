//! The real `claude` (2.1.328, interactive, under tmux) whose first-run set-up was never done
//! for its HOME: what Flotilla does with it. Offline (as the suite always runs), the CLI's
//! set-up begins with a connectivity check of the vendor's own endpoints, which
//! `ANTHROPIC_BASE_URL` does not move, prints "Unable to connect to Anthropic services" and
//! exits 1 before any dialog. So the spawn goes ahead with the preflight's warning, and the
//! session errors with that cause in words (and the CLI's last lines in its exit event and
//! notification), never a bare `agent_exited_1`.

use serde_json::json;

use crate::fake_anthropic::{FakeAnthropic, Step};
use crate::fleet_tmux::TmuxGuard;
use crate::helpers::{eventually, require_tool, spawn_app_with_env, Backend};
use crate::real_claude_fleet::{claude_bin, notifications_with, wait_session};
use crate::receivers::Receivers;

const KEY: &str = "sk-ant-test-0123456789abcdefghijklmnop";

#[actix_web::test]
async fn a_real_claude_without_its_first_run_set_up_starts_and_errors_with_the_cause() {
    let Some(claude) = claude_bin() else { return };
    if !require_tool("tmux") || !require_tool("git") {
        return;
    }
    let model = FakeAnthropic::start(vec![Step::text("never asked")]).await;
    let hooks = Receivers::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // A HOME as on a new machine: no ~/.claude.json at all.
    let home = dir.path().join("fresh-home");
    std::fs::create_dir_all(&home).expect("home");
    let agents = format!(
        "  claude:\n    kind: claude-code\n    command: [\"{bin}\"]\n    permission_mode: auto-edit\n    env: {{ HOME: \"{home}\", ANTHROPIC_BASE_URL: \"{url}\", ANTHROPIC_API_KEY: \"{KEY}\", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: \"1\" }}\n",
        bin = claude.display(),
        home = home.display(),
        url = model.url(),
    );
    let project = format!(
        "    runtime: tmux\n    agent: claude\n{services}notifiers:\n  hook: {{ kind: webhook, url: \"{hook}\" }}\nrouting: {{ urgent: [hook], action: [hook], warning: [hook] }}\n",
        services = hooks.service_yaml(),
        hook = hooks.webhook_url(),
    );
    let cli = env!("CARGO_BIN_EXE_flotilla");
    let Some(app) = spawn_app_with_env(
        Backend::Sqlite,
        &agents,
        &project,
        dir,
        &[("FLOTILLA__SERVER__CLI_PATH", cli)],
    )
    .await
    else {
        return;
    };
    let _tmux = TmuxGuard(flotilla::app::tmux_socket(&app.home));

    // The preflight warns; it no longer refuses.
    let (status, v) = app
        .post(
            "/api/v1/sessions",
            json!({"project": "demo", "prompt": "Say hi."}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let warning = v["meta"]["preflight_warnings"][0].as_str().unwrap_or("");
    assert!(
        warning.contains("has not completed its first-run set-up")
            && warning.contains(&home.display().to_string()),
        "{v}"
    );
    let id = v["id"].as_str().expect("id").to_string();

    let s = wait_session(&app, &id, 90, "errored", |s| s["state"] == "errored").await;
    let reason = s["reason"].as_str().unwrap_or("");
    assert!(
        reason.starts_with("agent_exited_1: claude's first-run set-up could not finish: Unable to connect to Anthropic services"),
        "{s}"
    );
    assert!(
        reason.contains("api.anthropic.com"),
        "the CLI's own failure line: {s}"
    );
    // The notification carries the CLI's last lines and the cause.
    let hits = eventually(30, "the exit notification", || {
        let n = notifications_with(&hooks, "first-run set-up could not finish");
        async move { (!n.is_empty()).then_some(n) }
    })
    .await;
    let body = hits[0].to_string();
    assert!(body.contains("Check your internet connection"), "{body}");
    // It never reached the scripted model (the set-up stops before any turn).
    assert!(model.requests().is_empty(), "{:?}", model.requests().len());
}
