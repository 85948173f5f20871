//! The real `claude` CLI (interactive, under tmux) runs the whole pull-request loop on the
//! fake GitHub, driven by the scripted Messages API: it writes a file, commits, pushes to the
//! origin and opens the PR (with `curl` against the REST API, from its Bash tool); a failed
//! check comes in by webhook; Flotilla's instruction reaches the CLI and is in its next model
//! request; the scripted fix is pushed; the check passes; a review approves; auto-merge merges.
//! Also `send`, `kill` and `restore`: the restored CLI resumes its conversation, and its next
//! model request carries the earlier turns.
//!
//! Nothing in the product is special-cased: the agent's configuration is what a user writes
//! (`permission_mode: permissionless`, with `IS_SANDBOX=1` since the tests run as root and
//! Claude Code refuses to skip permissions as root otherwise; the model's base URL and a
//! GitHub token in its `env:`). Runs under `CI=true` (a missing CLI fails it), or wherever the
//! CLI is found, else skips.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::fake_anthropic::{request_text, FakeAnthropic, Step};
use crate::fake_github::FakeGithub;
use crate::fleet_tmux::TmuxGuard;
use crate::helpers::{eventually, git, require_tool, spawn_app_with_env, Backend, TestApp};
use crate::real_claude_fleet::claude_bin;

const KEY: &str = "sk-ant-test-0123456789abcdefghijklmnop";
/// The repository on the fake GitHub the PR-loop tests work in.
pub(crate) const REPO: &str = "acme/widgets";
const GH_TOKEN: &str = "ghp_realclaudeloop";
const SECRET: &str = "real-claude-loop-secret";

/// The first session of project `demo` works in `<home>/worktrees/demo/demo-1` (the fleet's
/// layout; the test checks it), so the script can name files by absolute path as Claude's
/// file tools require.
fn first_workspace(dir: &Path) -> PathBuf {
    dir.join("home")
        .join("worktrees")
        .join("demo")
        .join("demo-1")
}

struct Loop {
    _tmux: TmuxGuard,
    app: TestApp,
    model: FakeAnthropic,
    gh: FakeGithub,
}

/// An app whose project lives on the fake GitHub (webhooks on, no polling), with the real
/// `claude` as its agent. `script(workspace)` is the model's script.
async fn setup(script: impl FnOnce(&Path) -> Vec<Step>) -> Option<Loop> {
    setup_in_mode("permissionless", script).await
}

/// As [`setup`], with the agent in permission mode `mode`.
async fn setup_in_mode(mode: &str, script: impl FnOnce(&Path) -> Vec<Step>) -> Option<Loop> {
    let claude = claude_bin()?;
    if !require_tool("tmux") || !require_tool("git") || !require_tool("curl") {
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let model = FakeAnthropic::start(script(&first_workspace(dir.path()))).await;
    model.require_api_key(KEY);
    let gh = FakeGithub::start(GH_TOKEN).await;
    let (bare, github) = github_repo(&gh, GH_TOKEN, SECRET);
    let agent_home = dir.path().join("agent-home");
    std::fs::create_dir_all(&agent_home).expect("home");
    std::fs::write(
        agent_home.join(".claude.json"),
        json!({"hasCompletedOnboarding": true, "theme": "dark"}).to_string(),
    )
    .expect(".claude.json");
    let agents = format!(
        "  claude:\n    kind: claude-code\n    command: [\"{bin}\"]\n    permission_mode: {mode}\n    env: {{ HOME: \"{home}\", IS_SANDBOX: \"1\", ANTHROPIC_BASE_URL: \"{url}\", ANTHROPIC_API_KEY: \"{KEY}\", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: \"1\", GITHUB_API: \"{api}\", GITHUB_TOKEN: \"{GH_TOKEN}\", GIT_AUTHOR_NAME: a, GIT_AUTHOR_EMAIL: a@example.com, GIT_COMMITTER_NAME: a, GIT_COMMITTER_EMAIL: a@example.com }}\n",
        bin = claude.display(),
        home = agent_home.display(),
        url = model.url(),
        api = gh.url,
    );
    let project = format!("    runtime: tmux\n    agent: claude\n{GITHUB_PROJECT}");
    let mut env: Vec<(&str, &str)> = github.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("FLOTILLA__SERVER__CLI_PATH", env!("CARGO_BIN_EXE_flotilla")));
    let app = spawn_app_with_env(Backend::Sqlite, &agents, &project, dir, &env).await?;
    let tmux = TmuxGuard(flotilla::app::tmux_socket(&app.home));
    wire(&app, &gh, &bare, SECRET);
    Some(Loop {
        app,
        model,
        gh,
        _tmux: tmux,
    })
}

/// The project lines of a fleet whose PRs live in [`REPO`] on the fake GitHub, merged (squash)
/// by Flotilla once approved and green.
pub(crate) const GITHUB_PROJECT: &str = "    scm: github\n    github_repo: acme/widgets\n    reactions:\n      approved-and-green: { auto_merge: true, merge_method: squash }\n";

/// [`REPO`] made on `gh` (reviews required, pushes watched): its bare repository, and the
/// settings pointing Flotilla at `gh` (API token `token`, webhooks signed with `secret`, no
/// polling, a 1 s merge grace) as environment overrides.
pub(crate) fn github_repo(
    gh: &FakeGithub,
    token: &str,
    secret: &str,
) -> (PathBuf, Vec<(&'static str, String)>) {
    let bare = gh.create_repo(REPO);
    gh.require_reviews(REPO);
    gh.watch_pushes();
    let env = vec![
        ("FLOTILLA__GITHUB__API_URL", gh.url.clone()),
        (
            "FLOTILLA__GITHUB__GRAPHQL_URL",
            format!("{}/graphql", gh.url),
        ),
        ("FLOTILLA__GITHUB__TOKEN", token.to_string()),
        ("FLOTILLA__GITHUB__WEBHOOK_SECRET", secret.to_string()),
        ("FLOTILLA__GITHUB__POLL_INTERVAL", "0s".to_string()),
        ("FLOTILLA__LIFECYCLE__MERGE_GRACE", "1s".to_string()),
    ];
    (bare, env)
}

/// The app's repository pushes to `bare` (as `origin`), and `gh` sends its webhooks, signed
/// with `secret`, to the app.
pub(crate) fn wire(app: &TestApp, gh: &FakeGithub, bare: &Path, secret: &str) {
    git(
        &app.repo,
        &["remote", "add", "origin", bare.to_str().expect("utf-8")],
    );
    gh.set_webhook(&format!("{}/webhooks/github", app.address), secret);
}

/// Waits (deadline `secs`) until `pred` holds for the session; panics with it, its screen and its events.
async fn wait_session(
    app: &TestApp,
    id: &str,
    secs: u64,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let s = app.get(&format!("/api/v1/sessions/{id}")).await.1;
        if pred(&s) {
            return s;
        }
        if tokio::time::Instant::now() > deadline {
            let (_, o) = app
                .get(&format!("/api/v1/sessions/{id}/output?lines=60"))
                .await;
            let (_, events) = app.get(&format!("/api/v1/sessions/{id}/events")).await;
            panic!(
                "timed out waiting for {what}; session: {s}\nscreen:\n{}\nevents: {events:#}",
                o["output"].as_str().unwrap_or("")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the first main request whose text holds `needle`; returns its index.
async fn wait_request_with(model: &FakeAnthropic, needle: &str, secs: u64) -> usize {
    eventually(secs, &format!("a model request with {needle:?}"), || {
        let found = model
            .requests()
            .iter()
            .position(|b| request_text(b).contains(needle));
        async move { found }
    })
    .await
}

/// The script's first steps: write the counter in workspace `ws`, commit and push it, open the
/// PR.
fn opening(ws: &Path) -> Vec<Step> {
    vec![
        Step::tool(
            "Write",
            json!({"file_path": ws.join("counter.txt"), "content": "widgets = 2\n"}),
        ),
        Step::tool(
            "Bash",
            bash(
                "git add counter.txt && git commit -q -m 'Add the widget counter' && git push -q origin HEAD",
                "Commit and push",
            ),
        ),
        Step::tool("Bash", bash(OPEN_PR, "Open the pull request")),
    ]
}

/// The fix the script answers the failed check's instruction with.
fn fix() -> Vec<Step> {
    vec![
        Step::tool(
            "Bash",
            bash(
                "printf 'widgets = 3\\n' > counter.txt && git commit -q -am 'Count three widgets' && git push -q origin HEAD",
                "Fix the count and push",
            ),
        ),
        Step::text("Fixed the count and pushed."),
    ]
}

/// How many user messages of the last main request carry `needle` (an instruction typed
/// once is in one).
fn carrying(model: &FakeAnthropic, needle: &str) -> usize {
    let last = model.requests().last().cloned().unwrap_or_default();
    last["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "user")
        .filter(|m| request_text(&json!({"messages": [m]})).contains(needle))
        .count()
}

/// The Bash tool input the CLI's schema asks for.
fn bash(command: &str, description: &str) -> Value {
    json!({"command": command, "description": description})
}

/// Opens the PR for the current branch on `$GITHUB_API` (what `gh pr create` does).
const OPEN_PR: &str = r#"curl -sS -f -X POST "$GITHUB_API/repos/acme/widgets/pulls" -H "Authorization: Bearer $GITHUB_TOKEN" -H 'Accept: application/vnd.github+json' -d "{\"title\":\"Add the widget counter\",\"head\":\"$(git branch --show-current)\",\"base\":\"main\",\"body\":\"Counts widgets.\"}""#;

#[actix_web::test]
async fn a_real_claude_runs_the_pr_loop_from_first_push_to_merge() {
    let Some(l) = setup(|ws| {
        let mut steps = opening(ws);
        steps.extend([
            Step::text("Opened the pull request."),
            // After the failed-check instruction:
            Step::tool(
                "Bash",
                bash(
                    "printf 'widgets = 3\\n' > counter.txt && git commit -q -am 'Count three widgets' && git push -q origin HEAD",
                    "Fix the count and push",
                ),
            ),
            Step::text("Fixed the count and pushed."),
        ]);
        steps
    })
    .await
    else {
        return;
    };
    let id = l
        .app
        .spawn(json!({"project": "demo", "prompt": "Add a widget counter in counter.txt."}))
        .await;
    // The CLI writes, commits, pushes and opens the PR; the webhook tells Flotilla.
    let s = wait_session(&l.app, &id, 120, "the PR found", |s| {
        s["state"] == "review_pending"
    })
    .await;
    assert_eq!(
        s["workspace"].as_str().map(PathBuf::from),
        Some(first_workspace(l.app.home.parent().expect("dir"))),
        "the script's paths: {s}"
    );
    let pr = s["pr"]["number"].as_i64().expect("pr number");
    let branch = s["branch"].as_str().expect("branch").to_string();
    let first_head = l.gh.branch_sha(REPO, &branch).expect("pushed");
    assert_eq!(
        l.gh.git(REPO, &["show", &format!("{first_head}:counter.txt")]),
        "widgets = 2"
    );
    // The CLI saw each tool succeed (the PR's JSON came back to it).
    l.model.wait_for_requests(4, Duration::from_secs(60)).await;
    let opened = request_text(&l.model.requests()[3]);
    assert!(
        opened.contains(&format!("\"number\": {pr}"))
            || opened.contains(&format!("\"number\":{pr}")),
        "the PR's JSON in the tool result: {opened}"
    );
    let before = l.model.requests().len();

    // A check fails on the pushed head: Flotilla's instruction is the CLI's next request.
    l.gh.add_check_run(
        REPO,
        &first_head,
        "unit-tests",
        Some("failure"),
        Some("running 12 tests\nassertion failed: widgets == 3\nerror: test failed"),
    )
    .await;
    wait_session(&l.app, &id, 60, "ci_failed", |s| s["state"] == "ci_failed").await;
    let at = wait_request_with(&l.model, "Failed check: unit-tests", 90).await;
    assert_eq!(
        at, before,
        "the instruction is the next request, nothing before it"
    );
    let told = request_text(&l.model.requests()[at]);
    assert!(told.contains("assertion failed: widgets == 3"), "{told}");
    assert!(told.contains(&format!("PR #{pr}")), "{told}");
    // The earlier conversation is still there: one conversation, not a new one.
    assert!(
        told.contains("Add a widget counter in counter.txt."),
        "{told}"
    );

    // The scripted fix is pushed; the check passes on it.
    let fixed = eventually(90, "the fix pushed", || async {
        l.gh.branch_sha(REPO, &branch).filter(|h| *h != first_head)
    })
    .await;
    l.gh.add_check_run(REPO, &fixed, "unit-tests", Some("success"), None)
        .await;
    wait_session(&l.app, &id, 60, "green, waiting for review", |s| {
        s["state"] == "review_pending"
    })
    .await;

    // Approved: auto-merge merges into the origin for real.
    l.gh.add_review(REPO, pr, "alice", "APPROVED", "Ship it.", &[])
        .await;
    let merged = wait_session(&l.app, &id, 60, "merged", |s| {
        s["state"] == "merged" || s["reason"] == "pr_merged"
    })
    .await;
    assert_eq!(merged["pr"]["number"], pr, "{merged}");
    let log = l.gh.git(REPO, &["log", "--format=%s", "-1", "main"]);
    assert!(
        log.contains(&format!("(#{pr})")),
        "squash commit on main: {log}"
    );
    assert_eq!(
        l.gh.git(REPO, &["show", "main:counter.txt"]),
        "widgets = 3",
        "the fix is what was merged"
    );
    // The instruction was typed once: one user message in the conversation carries it.
    assert_eq!(
        carrying(&l.model, "Failed check: unit-tests"),
        1,
        "the instruction was sent once"
    );
}

/// A check fails while the CLI is still busy with its turn (a Bash command running): the
/// instruction typed meanwhile is not lost; Claude Code puts it in its conversation once and
/// the scripted fix is pushed.
#[actix_web::test]
async fn a_real_claude_busy_when_its_check_fails_gets_the_instruction_once() {
    let Some(l) = setup(|ws| {
        let mut steps = opening(ws);
        steps.extend([
            // Runs while the check fails.
            Step::tool("Bash", bash("sleep 8 && echo SLEPT", "Run the slow tests")),
        ]);
        steps
    })
    .await
    else {
        return;
    };
    l.model.when_told("Failed check: unit-tests", fix());
    let id = l
        .app
        .spawn(json!({"project": "demo", "prompt": "Add a widget counter in counter.txt."}))
        .await;
    let s = wait_session(&l.app, &id, 120, "the PR found", |s| {
        s["state"] == "review_pending"
    })
    .await;
    let branch = s["branch"].as_str().expect("branch").to_string();
    let first = l.gh.branch_sha(REPO, &branch).expect("pushed");
    // The fourth main request was answered with the slow command: it runs now.
    l.model.wait_for_requests(4, Duration::from_secs(60)).await;
    l.gh.add_check_run(
        REPO,
        &first,
        "unit-tests",
        Some("failure"),
        Some("assertion failed: widgets == 3"),
    )
    .await;
    wait_session(&l.app, &id, 60, "ci_failed", |s| s["state"] == "ci_failed").await;
    let sent = l.app.event_data(&id, "reaction.sent", 60).await;
    assert_eq!(sent["delivered"], true, "{sent}");
    assert_eq!(
        l.model.requests().len(),
        4,
        "typed while the command ran (it sleeps 8 s)"
    );
    wait_request_with(&l.model, "Failed check: unit-tests", 90).await;
    let fixed = eventually(90, "the fix pushed", || async {
        l.gh.branch_sha(REPO, &branch).filter(|h| *h != first)
    })
    .await;
    assert_eq!(
        l.gh.git(REPO, &["show", &format!("{fixed}:counter.txt")]),
        "widgets = 3"
    );
    wait_session(&l.app, &id, 60, "the turn's end", |s| {
        s["activity"] == "idle"
    })
    .await;
    assert_eq!(
        carrying(&l.model, "Failed check: unit-tests"),
        1,
        "the instruction was sent once"
    );
}

/// Waits until Claude Code's conversation log under `agent_home` holds `needle`.
async fn wait_logged(agent_home: &Path, needle: &str) {
    let projects = agent_home.join(".claude").join("projects");
    eventually(60, &format!("{needle:?} in the CLI's log"), || {
        let found = std::fs::read_dir(&projects)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
            .filter(|f| f.path().extension().is_some_and(|e| e == "jsonl"))
            .any(|f| std::fs::read_to_string(f.path()).is_ok_and(|t| t.contains(needle)));
        async move { found.then_some(()) }
    })
    .await;
}

#[actix_web::test]
async fn a_real_claude_takes_messages_and_resumes_its_conversation_after_kill_and_restore() {
    let Some(l) = setup(|_| {
        vec![
            Step::text("Noted the word."),
            Step::text("The word is PAPAYA-17."),
            Step::text("Still PAPAYA-17."),
        ]
    })
    .await
    else {
        return;
    };
    let id = l
        .app
        .spawn(json!({"project": "demo", "prompt": "Remember the word PAPAYA-17."}))
        .await;
    l.model.wait_for_requests(1, Duration::from_secs(90)).await;
    let agent_home = l.app.home.parent().expect("dir").join("agent-home");
    wait_logged(&agent_home, "Noted the word.").await;

    // `send`: the message is the next request, after the first turn.
    let (code, v) = l
        .app
        .post(
            &format!("/api/v1/sessions/{id}/send"),
            json!({"message": "Which word was it? (message two)"}),
        )
        .await;
    assert!(code < 300 && v["delivered"] == true, "{code} {v}");
    let second = wait_request_with(&l.model, "message two", 60).await;
    assert_eq!(second, 1);
    let text = request_text(&l.model.requests()[1]);
    assert!(text.contains("Remember the word PAPAYA-17."), "{text}");
    assert!(text.contains("Noted the word."), "{text}");
    // The answer is in the CLI's conversation log before the kill (no race with it).
    wait_logged(&agent_home, "The word is PAPAYA-17.").await;

    // `kill`: the agent and its worktree go; the conversation stays in the agent's home.
    let (code, v) = l
        .app
        .post(&format!("/api/v1/sessions/{id}/kill"), json!({}))
        .await;
    assert_eq!(code, 200, "{v}");
    wait_session(&l.app, &id, 30, "killed", |s| s["state"] == "killed").await;

    // `restore`: the CLI starts with `--resume` and makes no request of its own…
    let (code, v) = l
        .app
        .post(&format!("/api/v1/sessions/{id}/restore"), json!({}))
        .await;
    assert_eq!(code, 200, "{v}");
    wait_session(&l.app, &id, 90, "working again", |s| {
        s["state"] == "working"
    })
    .await;
    // …its next request, after a message, carries the whole earlier conversation. The
    // resumed TUI shows the earlier answer once it is ready for input.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (_, o) = l
            .app
            .get(&format!("/api/v1/sessions/{id}/output?lines=60"))
            .await;
        let screen = o["output"].as_str().unwrap_or("").to_string();
        if screen.contains("The word is PAPAYA-17.") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the resumed conversation never showed; screen:\n{screen}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, v) = l
        .app
        .post(
            &format!("/api/v1/sessions/{id}/send"),
            json!({"message": "And now? (message three)"}),
        )
        .await;
    assert!(code < 300 && v["delivered"] == true, "{code} {v}");
    let third = wait_request_with(&l.model, "message three", 90).await;
    assert_eq!(third, 2, "{v}");
    let text = request_text(&l.model.requests()[2]);
    for earlier in [
        "Remember the word PAPAYA-17.",
        "Noted the word.",
        "Which word was it? (message two)",
        "The word is PAPAYA-17.",
    ] {
        assert!(text.contains(earlier), "resumed with {earlier:?}: {text}");
    }
}

/// A check fails while the real Claude Code asks its human to approve a command: Flotilla's
/// instruction must not be typed onto the dialog (its Enter would approve the command), and
/// reaches the CLI once the human has answered.
#[actix_web::test]
async fn a_failed_checks_instruction_is_not_typed_onto_a_real_claudes_permission_dialog() {
    let Some(l) = setup_in_mode("auto-edit", |ws| {
        let mut steps = opening(ws);
        steps.extend([
            Step::tool(
                "Bash",
                bash(
                    "git rm -q counter.txt && git commit -q -m 'Drop the counter' && git push -q origin HEAD",
                    "Drop the counter",
                ),
            ),
        ]);
        steps
    })
    .await
    else {
        return;
    };
    let id = l
        .app
        .spawn(json!({"project": "demo", "prompt": "Add a widget counter in counter.txt."}))
        .await;
    for what in ["git add counter.txt", "curl"] {
        let s = wait_session(&l.app, &id, 120, what, |s| {
            s["state"] == "needs_input"
                && s["waiting_for"].as_str().is_some_and(|q| q.contains(what))
        })
        .await;
        l.app.answer(&s, "yes").await;
    }
    let s = wait_session(&l.app, &id, 120, "the third question, with the PR", |s| {
        s["state"] == "needs_input"
            && !s["pr"].is_null()
            && s["waiting_for"]
                .as_str()
                .is_some_and(|q| q.contains("git rm"))
    })
    .await;
    let branch = s["branch"].as_str().expect("branch").to_string();
    let first = l.gh.branch_sha(REPO, &branch).expect("pushed");
    l.gh.add_check_run(
        REPO,
        &first,
        "unit-tests",
        Some("failure"),
        Some("running 12 tests\nassertion failed: widgets == 3"),
    )
    .await;
    // The session read the failed check (its log was fetched) while the dialog waited.
    eventually(60, "the failed check's log fetched", || async {
        l.gh.count("GET /_logs/{job_id}").gt(&0).then_some(())
    })
    .await;
    // Claude Code runs its permission hook (Flotilla's report) before it draws the dialog: on
    // a loaded machine the check can be read first. Whatever the order, the dialog shows and
    // stays until its human answers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, o) = l
            .app
            .get(&format!("/api/v1/sessions/{id}/output?lines=30"))
            .await;
        let screen = o["output"].as_str().unwrap_or_default();
        if screen.contains("Do you want to proceed?") && screen.contains("git rm") {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let (_, events) = l.app.get(&format!("/api/v1/sessions/{id}/events")).await;
            let asked: Vec<String> = l.model.requests().iter().map(request_text).collect();
            panic!(
                "the dialog never showed: {screen}\n{events:#}\nthe model was asked {} times, last:\n{}",
                asked.len(),
                asked.last().map_or("", |t| {
                    &t[t.char_indices().rev().nth(3000).map_or(0, |(i, _)| i)..]
                })
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, events) = l.app.get(&format!("/api/v1/sessions/{id}/events")).await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        !kinds.contains(&"reaction.sent"),
        "typed onto the dialog: {kinds:?}"
    );
    assert_eq!(l.model.requests().len(), 4, "nothing reached the CLI");

    // The human refuses the command: the instruction follows, and the fix is pushed on the
    // commit the refused command would have dropped.
    l.model.when_told("Failed check: unit-tests", fix());
    // The session still says it waits on the dialog the screen shows.
    let s = wait_session(&l.app, &id, 30, "the dialog's question", |s| {
        s["state"] == "needs_input"
            && s["waiting_for"]
                .as_str()
                .is_some_and(|q| q.contains("git rm"))
    })
    .await;
    let (code, v) = l
        .app
        .post(
            &format!("/api/v1/sessions/{id}/send"),
            json!({"message": "no", "question": s["waiting_for"]}),
        )
        .await;
    if code != 200 || v["delivered"] != true {
        let (_, now) = l.app.get(&format!("/api/v1/sessions/{id}")).await;
        let (_, o) = l
            .app
            .get(&format!("/api/v1/sessions/{id}/output?lines=40"))
            .await;
        let (_, events) = l.app.get(&format!("/api/v1/sessions/{id}/events")).await;
        panic!(
            "the refusal: {code} {v}\nsession: {now}\nscreen:\n{}\nevents: {events:#}",
            o["output"].as_str().unwrap_or("")
        );
    }
    wait_session(&l.app, &id, 60, "ci_failed", |s| s["state"] == "ci_failed").await;
    // The model got the instruction (its fix is the script's answer to it) and the CLI asks
    // to run the fix.
    let s = wait_session(&l.app, &id, 90, "the fix's question", |s| {
        s["state"] == "needs_input"
            && s["waiting_for"]
                .as_str()
                .is_some_and(|q| q.contains("Count three widgets"))
    })
    .await;
    l.app.answer(&s, "yes").await;
    let fixed = eventually(90, "the fix pushed", || async {
        l.gh.branch_sha(REPO, &branch).filter(|h| *h != first)
    })
    .await;
    assert_eq!(
        l.gh.git(REPO, &["show", &format!("{fixed}:counter.txt")]),
        "widgets = 3"
    );
    assert_eq!(
        l.gh.git(REPO, &["rev-parse", &format!("{fixed}^")]),
        first,
        "the refused command never ran"
    );
}
