//! The real `claude` CLI (npm `@anthropic-ai/claude-code`, interactive, under tmux) as a fleet
//! agent, talking to the scripted Messages API (`tests/support/fake_anthropic.rs`): what a user
//! meets on a new machine. Runs under `CI=true` (a missing CLI fails it), or wherever the CLI
//! is found (`FLOTILLA_CLAUDE_BIN`, `claude` on PATH, or where `.ci/deps.sh` puts it), else
//! skips.
//!
//! Nothing in the product is special-cased: the agent's configuration is what a user writes
//! (`ANTHROPIC_BASE_URL` in its `env:`), and `server.cli_path` points the hooks at the
//! `flotilla` binary cargo built.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fake_anthropic::{FakeAnthropic, Step};
use crate::fleet_tmux::TmuxGuard;
use crate::helpers::{
    eventually, git, real_cli, require_tool, spawn_app_with_env, Backend, TestApp,
};
use crate::receivers::{Receivers, Target, WEBHOOK_SECRET};

/// A key as a user would configure it (the fake checks it; Flotilla approves its tail).
pub(crate) const KEY: &str = "sk-ant-test-0123456789abcdefghijklmnop";

/// The real `claude` (see [`real_cli`]).
pub fn claude_bin() -> Option<PathBuf> {
    real_cli("claude", "FLOTILLA_CLAUDE_BIN")
}

/// An agent home as a user's would be after Claude Code's first-run set-up, and nothing else:
/// no folder trusted, no API key approved (Flotilla must do both).
pub(crate) fn onboarded_home(dir: &Path) -> PathBuf {
    let home = dir.join("agent-home");
    std::fs::create_dir_all(&home).expect("home");
    std::fs::write(
        home.join(".claude.json"),
        json!({"hasCompletedOnboarding": true, "theme": "dark"}).to_string(),
    )
    .expect(".claude.json");
    home
}

pub(crate) struct Real {
    _tmux: TmuxGuard,
    pub(crate) app: TestApp,
    pub(crate) model: FakeAnthropic,
    pub(crate) hooks: Receivers,
    pub(crate) agent_home: PathBuf,
}

async fn setup(script: Vec<Step>, mode: &str, args: &str) -> Option<Real> {
    setup_with(script, mode, args, "", &[]).await
}

/// [`setup`] with more project lines and Flotilla environment (e.g. a fake GitHub).
async fn setup_with(
    script: Vec<Step>,
    mode: &str,
    args: &str,
    extra_project: &str,
    extra_env: &[(&str, &str)],
) -> Option<Real> {
    setup_notifying(script, mode, args, extra_project, extra_env, "", "").await
}

/// [`setup_with`] with more notifiers (`name: {…}` lines under `notifiers:`), each routed
/// every priority, and more agent environment (`KEY: value, ` pairs).
pub(crate) async fn setup_notifying(
    script: Vec<Step>,
    mode: &str,
    args: &str,
    extra_project: &str,
    extra_env: &[(&str, &str)],
    notifiers: &str,
    agent_env: &str,
) -> Option<Real> {
    let claude = claude_bin()?;
    setup_full(
        script,
        mode,
        args,
        extra_project,
        extra_env,
        notifiers,
        agent_env,
        &claude,
    )
    .await
}

/// [`setup_notifying`] running `command` as the agent (a wrapper around the real CLI).
#[allow(clippy::too_many_arguments)]
async fn setup_full(
    script: Vec<Step>,
    mode: &str,
    args: &str,
    extra_project: &str,
    extra_env: &[(&str, &str)],
    notifiers: &str,
    agent_env: &str,
    claude: &Path,
) -> Option<Real> {
    if !require_tool("tmux") || !require_tool("git") {
        return None;
    }
    let model = FakeAnthropic::start(script).await;
    model.require_api_key(KEY);
    let hooks = Receivers::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let agent_home = onboarded_home(dir.path());
    let agents = claude_agent_yaml(claude, &model, &agent_home, mode, args, agent_env);
    let project = project_yaml(&hooks, "claude", extra_project, notifiers);
    let cli = env!("CARGO_BIN_EXE_flotilla");
    let mut env = vec![("FLOTILLA__SERVER__CLI_PATH", cli)];
    env.extend_from_slice(extra_env);
    let app = spawn_app_with_env(Backend::Sqlite, &agents, &project, dir, &env).await?;
    let tmux = TmuxGuard(flotilla::app::tmux_socket(&app.home));
    Some(Real {
        app,
        model,
        hooks,
        agent_home,
        _tmux: tmux,
    })
}

/// The `claude` agent's lines under `agents:`: `claude` run as a user configures it, talking
/// to `model` with its home at `agent_home`.
pub(crate) fn claude_agent_yaml(
    claude: &Path,
    model: &FakeAnthropic,
    agent_home: &Path,
    mode: &str,
    args: &str,
    agent_env: &str,
) -> String {
    format!(
        "  claude:\n    kind: claude-code\n    command: [\"{bin}\"]\n    permission_mode: {mode}\n    args: {args}\n    env: {{ {agent_env}HOME: \"{home}\", ANTHROPIC_BASE_URL: \"{url}\", ANTHROPIC_API_KEY: \"{KEY}\", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: \"1\", GIT_AUTHOR_NAME: a, GIT_AUTHOR_EMAIL: a@example.com, GIT_COMMITTER_NAME: a, GIT_COMMITTER_EMAIL: a@example.com }}\n",
        bin = claude.display(),
        home = agent_home.display(),
        url = model.url(),
    )
}

/// The project's lines (running `agent` under tmux, `extra_project` added) and what follows
/// them: every page to `hooks`' webhook (signed, as the receiver requires) and to `notifiers`
/// (`name: {…}` lines).
pub(crate) fn project_yaml(
    hooks: &Receivers,
    agent: &str,
    extra_project: &str,
    notifiers: &str,
) -> String {
    let names: String = notifiers
        .lines()
        .filter_map(|l| l.trim().split_once(':').map(|(n, _)| format!(", {n}")))
        .collect();
    let notifiers: String = notifiers
        .lines()
        .map(|l| format!("  {}\n", l.trim()))
        .collect();
    format!(
        "    runtime: tmux\n    agent: {agent}\n{extra_project}{services}notifiers:\n  hook: {{ kind: webhook, url: \"{hook}\", secret: \"{WEBHOOK_SECRET}\" }}\n{notifiers}routing: {{ urgent: [hook{names}], action: [hook{names}], warning: [hook{names}] }}\n",
        services = hooks.service_yaml(),
        hook = hooks.webhook_url(),
    )
}

pub(crate) async fn session(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/api/v1/sessions/{id}")).await.1
}

/// Waits (deadline `secs`) until `pred` holds for the session; panics with it and its screen.
pub(crate) async fn wait_session(
    app: &TestApp,
    id: &str,
    secs: u64,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let s = session(app, id).await;
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

/// Spawns `prompt` in project `demo` and waits until the agent's first turn ends; the id.
pub(crate) async fn spawn_until_idle(app: &TestApp, prompt: &str) -> String {
    let id = app
        .spawn(json!({"project": "demo", "prompt": prompt}))
        .await;
    wait_session(app, &id, 90, "the first turn ends", |s| {
        s["activity"] == "idle"
    })
    .await;
    id
}

/// Sends `text` to session `id` as `flotilla send` does (an answer while it waits).
pub(crate) async fn send(app: &TestApp, id: &str, text: &str) {
    let (code, v) = app
        .post(
            &format!("/api/v1/sessions/{id}/send"),
            json!({ "message": text }),
        )
        .await;
    assert!(code < 300, "{code} {v}");
}

pub(crate) fn notifications_with(hooks: &Receivers, needle: &str) -> Vec<Value> {
    hooks
        .hits(Target::Webhook)
        .into_iter()
        .map(|h| h.body)
        .filter(|b| b.to_string().contains(needle))
        .collect()
}

/// Two permission prompts in a row, the second seconds after the first was answered: each is
/// a question only a human can answer, so each pages, naming its own command. (Before, the
/// second fell in the first's dedupe window, one minute by default, whenever the same
/// detector, here the hook, saw both: the human who had just answered was not told the agent
/// waited again.) The dialogs differ only by a number, as the bench's do. A send naming the
/// question it answers (as the dashboard's does) is typed only while that question waits.
#[actix_web::test]
async fn a_real_claudes_next_prompt_right_after_an_answer_pages_again_and_takes_only_its_own_answer(
) {
    let commit = |k: u32| {
        Step::tool(
            "Bash",
            json!({"command": format!("git commit --allow-empty -q -m round-{k}"), "description": "Commit"}),
        )
    };
    let script = vec![commit(1), commit(2), Step::text("Committed twice.")];
    let Some(r) = setup(script, "auto-edit", "[]").await else {
        return;
    };
    let id = r
        .app
        .spawn(json!({"project": "demo", "prompt": "Commit twice."}))
        .await;
    let mut answered: Option<String> = None;
    for k in 1..=2 {
        let needle = format!("approve Bash: git commit --allow-empty -q -m round-{k}");
        let s = wait_session(&r.app, &id, 90, &needle, |s| {
            s["state"] == "needs_input"
                && s["meta"]["question"]
                    .as_str()
                    .is_some_and(|q| q.contains(&needle))
        })
        .await;
        let shown = s["waiting_for"].as_str().expect("waiting_for").to_string();
        eventually(30, "the page for this prompt", || {
            let n = notifications_with(&r.hooks, &needle);
            async move { (n.len() == 1).then_some(()) }
        })
        .await;
        if let Some(earlier) = &answered {
            // An answer to the question shown before (a dashboard that had not refreshed) is
            // not typed onto this one: 409, naming the question that waits now.
            let (code, v) = r
                .app
                .post(
                    &format!("/api/v1/sessions/{id}/send"),
                    json!({"message": "1", "question": earlier}),
                )
                .await;
            assert_eq!(code, 409, "{v}");
            assert!(v.to_string().contains(&needle), "{v}");
            assert_eq!(r.model.requests().len(), 2, "the second commit did not run");
            assert_eq!(session(&r.app, &id).await["state"], "needs_input");
        }
        // The answer to the question shown is typed.
        let (code, v) = r
            .app
            .post(
                &format!("/api/v1/sessions/{id}/send"),
                json!({"message": "1", "question": shown}),
            )
            .await;
        assert_eq!((code, &v["delivered"]), (200, &json!(true)), "{v}");
        answered = Some(shown);
    }
    r.model.wait_for_requests(3, Duration::from_secs(60)).await;
    assert_one_wait_per_dialog(&r, &id, 2).await;
}

/// Two commands the model asks for in one message (parallel tool use): Claude Code asks about
/// each in turn, and each is its own question: one wait and one page apiece, each naming its
/// own command, each answer typed to its own dialog, and both results go back to the model in
/// the next request.
#[actix_web::test]
async fn a_real_claudes_parallel_tool_calls_each_ask_and_page_on_their_own() {
    let commit = |k: &str| {
        (
            "Bash",
            json!({"command": format!("git commit --allow-empty -q -m {k}"), "description": format!("Commit {k}")}),
        )
    };
    let script = vec![
        Step::tools(&[commit("parallel-one"), commit("parallel-two")]),
        Step::text("Committed twice."),
    ];
    let Some(r) = setup(script, "auto-edit", "[]").await else {
        return;
    };
    let id = r
        .app
        .spawn(json!({"project": "demo", "prompt": "Commit twice."}))
        .await;
    let mut asked: Vec<String> = Vec::new();
    for _ in 0..2 {
        let s = wait_session(&r.app, &id, 90, "a question not asked yet", |s| {
            s["state"] == "needs_input"
                && s["meta"]["question"].as_str().is_some_and(|q| {
                    q.contains("approve Bash: git commit --allow-empty -q -m parallel-")
                        && !asked.iter().any(|a| a == q)
                })
        })
        .await;
        let question = s["meta"]["question"]
            .as_str()
            .expect("question")
            .to_string();
        let command = ["parallel-one", "parallel-two"]
            .into_iter()
            .find(|k| question.contains(k))
            .expect("names its command");
        eventually(30, "the page for this command", || {
            let n = notifications_with(&r.hooks, command);
            async move { (n.len() == 1).then_some(()) }
        })
        .await;
        let (code, v) = r
            .app
            .post(
                &format!("/api/v1/sessions/{id}/send"),
                json!({"message": "1", "question": question}),
            )
            .await;
        assert_eq!((code, &v["delivered"]), (200, &json!(true)), "{v}");
        asked.push(question);
    }
    assert!(
        asked[0].contains("parallel-one") != asked[1].contains("parallel-one"),
        "each command asked once: {asked:?}"
    );
    let requests = r.model.wait_for_requests(2, Duration::from_secs(60)).await;
    let results = requests[1]["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_array())
        .map(|c| {
            c.iter()
                .filter(|b| b["type"] == "tool_result" && b["is_error"] != true)
                .count()
        });
    assert_eq!(results, Some(2), "both results: {:#}", requests[1]);
    let s = wait_session(&r.app, &id, 60, "the turn ends", |s| {
        s["activity"] == "idle"
    })
    .await;
    let ws = PathBuf::from(s["workspace"].as_str().expect("workspace"));
    let log = git(&ws, &["log", "--format=%s", "-2"]);
    assert!(
        log.contains("parallel-one") && log.contains("parallel-two"),
        "{log}"
    );
    assert_one_wait_per_dialog(&r, &id, 2).await;
}

#[actix_web::test]
async fn a_real_claude_permission_prompt_is_needs_input_and_an_answer_resumes_it() {
    let script = vec![
        Step::tool(
            "Bash",
            json!({"command": "printf 'hello\\n' > hello.txt", "description": "Write hello.txt"}),
        ),
        Step::tool(
            "Bash",
            json!({"command": "git add hello.txt && git commit -q -m 'Add hello'", "description": "Commit"}),
        ),
        Step::text("Committed hello.txt."),
    ];
    let Some(r) = setup(script, "auto-edit", "[]").await else {
        return;
    };
    let id = r
        .app
        .spawn(json!({"project": "demo", "prompt": "Add hello.txt and commit it."}))
        .await;
    // No trust or API-key dialog: the CLI reaches the model at once.
    r.model.wait_for_requests(1, Duration::from_secs(90)).await;
    let cfg: Value = serde_json::from_str(
        &std::fs::read_to_string(r.agent_home.join(".claude.json")).expect("read .claude.json"),
    )
    .expect("json");
    let repo = std::fs::canonicalize(&r.app.repo).expect("repo");
    assert_eq!(
        cfg["projects"][repo.to_string_lossy().as_ref()]["hasTrustDialogAccepted"],
        true,
        "{cfg}"
    );
    assert_eq!(
        cfg["hasCompletedOnboarding"], true,
        "other keys kept: {cfg}"
    );

    // The commit asks for approval: the session needs input, saying what for.
    let t0 = Instant::now();
    let s = wait_session(&r.app, &id, 90, "needs_input", |s| {
        s["state"] == "needs_input"
    })
    .await;
    eprintln!(
        "permission prompt -> needs_input: {:?} after the request",
        t0.elapsed()
    );
    let question = s["meta"]["question"].as_str().unwrap_or("").to_string();
    assert!(
        question.contains("approve Bash: git add hello.txt"),
        "question: {question}; session: {s}"
    );
    assert_eq!(s["activity"], "waiting_input", "{s}");
    assert_eq!(s["waiting_for"], s["meta"]["question"], "{s}");
    let hits = eventually(30, "the needs-input notification", || {
        let n = notifications_with(&r.hooks, "approve Bash: git add hello.txt");
        async move { (!n.is_empty()).then_some(n) }
    })
    .await;
    assert_eq!(hits.len(), 1, "one notification: {hits:?}");

    // While it waits it stays waiting (the pending tool call is not activity).
    assert_eq!(r.model.requests().len(), 2);

    // The answer: menu choice 1 (Yes), as a user would type it from `flotilla send`.
    send(&r.app, &id, "1").await;
    r.model.wait_for_requests(3, Duration::from_secs(60)).await;
    let s = wait_session(&r.app, &id, 60, "back to working", |s| {
        s["state"] == "working"
    })
    .await;
    assert_ne!(s["activity"], "waiting_input", "{s}");
    assert_eq!(s["waiting_for"], Value::Null, "{s}");
    let ws = PathBuf::from(s["workspace"].as_str().expect("workspace"));
    let log = git(&ws, &["log", "--format=%s", "-1"]);
    assert_eq!(log.trim(), "Add hello");
    // The command's result went back to the model.
    let third = &r.model.requests()[2];
    let last = third["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or_default();
    assert!(
        last["content"].as_array().is_some_and(|c| c
            .iter()
            .any(|b| b["type"] == "tool_result" && b["is_error"] != true)),
        "the approved command's result: {last}"
    );
    let waits = notifications_with(&r.hooks, "waiting for input");
    if waits.len() != 1 {
        // What led to a second wait: the session's events and the screen.
        let (_, events) = r.app.get(&format!("/api/v1/sessions/{id}/events")).await;
        let (_, output) = r
            .app
            .get(&format!("/api/v1/sessions/{id}/output?lines=60"))
            .await;
        panic!("no second notification: {waits:#?}\nevents: {events:#}\nscreen: {output}");
    }
    // While it runs, the tokens are priced from the table (Claude Code writes its own figure
    // only as it exits; `claude::usage` prefers that one, see its unit test).
    let s = wait_session(&r.app, &id, 60, "usage", |s| {
        s["meta"]["usage"]["input_tokens"].as_u64() >= Some(3600)
    })
    .await;
    assert_eq!(s["meta"]["usage"]["cost_source"], "price_table", "{s}");
    assert!(s["meta"]["usage"]["cost_usd"].as_f64() > Some(0.0), "{s}");
}

/// A stand-in for `server.cli_path` that holds each of Claude's hook events back until
/// `dir/answered` exists, then hands it to the real `flotilla hook` and marks it done: a hook
/// that a loaded machine ran late. A held event whose test ended (its `dir` removed) is
/// dropped, not waited on forever.
fn late_hook(dir: &Path) -> PathBuf {
    let path = dir.join("late-hook.sh");
    let script = format!(
        "#!/bin/sh\nev=$(mktemp \"{d}/event.XXXXXX\")\ncat > \"$ev\"\n(\n  while [ ! -e \"{d}/answered\" ]; do [ -d \"{d}\" ] || exit 0; sleep 0.05; done\n  \"{cli}\" \"$@\" < \"$ev\"\n  touch \"$ev.done\"\n) </dev/null >/dev/null 2>&1 &\nexit 0\n",
        d = dir.display(),
        cli = env!("CARGO_BIN_EXE_flotilla"),
    );
    std::fs::write(&path, script).expect("hook script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[actix_web::test]
async fn a_hook_report_landing_after_the_answer_does_not_ask_again() {
    let script = vec![
        Step::tool(
            "Bash",
            json!({"command": "git commit -q --allow-empty -m 'Empty'", "description": "Commit"}),
        ),
        Step::text("Committed."),
    ];
    let hooks_dir = tempfile::tempdir().expect("tempdir");
    let hook = late_hook(hooks_dir.path());
    let env = [("FLOTILLA__SERVER__CLI_PATH", hook.to_str().expect("path"))];
    let Some(r) = setup_with(script, "auto-edit", "[]", "", &env).await else {
        return;
    };
    let id = r
        .app
        .spawn(json!({"project": "demo", "prompt": "Commit an empty commit."}))
        .await;
    // The dialog is seen on screen while its hook is held back.
    let s = wait_session(&r.app, &id, 90, "needs_input", |s| {
        s["state"] == "needs_input"
    })
    .await;
    // Worded alike from the agent's log or from the screen, whichever was first.
    assert_eq!(
        s["meta"]["question"], "approve Bash: git commit -q --allow-empty -m 'Empty'",
        "{s}"
    );
    send(&r.app, &id, "1").await;
    wait_session(&r.app, &id, 60, "working after the answer", |s| {
        s["state"] == "working"
    })
    .await;
    release_late_hooks_and_assert_quiet(&r, &id, hooks_dir.path(), 1).await;
}

/// Releases the hook events [`late_hook`] held in `dir`, waits until each was reported, and
/// checks that the late reports of the dialogs just answered asked nothing: the session is not
/// waiting again, and one notification per dialog (`dialogs`) was sent in all.
async fn release_late_hooks_and_assert_quiet(r: &Real, id: &str, hooks_dir: &Path, dialogs: usize) {
    // Now the held hook reports the dialog that was answered.
    std::fs::write(hooks_dir.join("answered"), "").expect("release the hook");
    let dir = hooks_dir.to_path_buf();
    eventually(60, "every held hook event reported", || {
        let events: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        let held = events
            .iter()
            .filter(|p| {
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                name.is_some_and(|n| n.starts_with("event.") && !n.ends_with(".done"))
            })
            .count();
        let done = events
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(".done"))
            .count();
        async move { (held > 0 && done == held).then_some(()) }
    })
    .await;
    // The late reports were received (recorded) and asked nothing: still working, and one
    // notification per dialog.
    let (_, events) = r.app.get(&format!("/api/v1/sessions/{id}/events")).await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["kind"].as_str()).collect())
        .unwrap_or_default();
    let answered = kinds.iter().position(|k| *k == "agent.input_answered");
    let reported = kinds.iter().rposition(|k| *k == "agent.reported");
    assert!(
        answered.is_some() && reported > answered,
        "a report after the answer: {events:#}"
    );
    assert_one_wait_per_dialog(r, id, dialogs).await;
}

/// The session no longer waits, and each of its `dialogs` was one wait and one notification,
/// however many sources (hook, log, screen) saw it.
async fn assert_one_wait_per_dialog(r: &Real, id: &str, dialogs: usize) {
    let (_, events) = r.app.get(&format!("/api/v1/sessions/{id}/events")).await;
    let s = session(&r.app, id).await;
    assert_ne!(s["state"], "needs_input", "{s}");
    // Each page is a recorded `notify` effect of the needs-input reaction (from the hook's
    // report, the log or the screen, whichever came first).
    let pages = events["events"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["data"]["effects"].as_array().into_iter().flatten())
        .filter(|f| f["type"] == "notify" && f["reaction"] == "agent-needs-input")
        .count();
    assert_eq!(pages, dialogs, "{events:#}");
    let waits = notifications_with(&r.hooks, "waiting for input");
    assert_eq!(waits.len(), dialogs, "{waits:#?}\nevents: {events:#}");
}

#[actix_web::test]
async fn a_real_claude_that_cannot_start_errors_with_its_own_words() {
    // A flag this version does not know: the CLI says so and exits 1.
    let Some(r) = setup(vec![], "auto-edit", "[\"--no-such-flag\"]").await else {
        return;
    };
    let id = r
        .app
        .spawn(json!({"project": "demo", "prompt": "Say hello."}))
        .await;
    let s = wait_session(&r.app, &id, 90, "errored", |s| s["state"] == "errored").await;
    let reason = s["reason"].as_str().unwrap_or("");
    assert!(reason.starts_with("agent_exited_1: "), "{s}");
    assert!(
        reason.contains("--no-such-flag"),
        "the CLI's own words: {reason}"
    );
    let n = eventually(30, "the exit notification", || {
        let n = notifications_with(&r.hooks, "exited with status 1");
        async move { (!n.is_empty()).then_some(n) }
    })
    .await;
    assert!(
        n[0].to_string().contains("Its last output"),
        "the notification carries the output: {}",
        n[0]
    );
    assert!(
        !n[0].to_string().contains(KEY),
        "no secret in notifications"
    );
}

/// The real Claude killed by a signal it did not ask for (`kill -9`, as the out-of-memory
/// killer sends) while it waits on a question: the session ends `errored`, its reason saying
/// which signal (the shell's 128 + N status), and one urgent page says so; the question no
/// longer waits.
#[actix_web::test]
async fn a_real_claude_killed_by_a_signal_errors_naming_the_signal() {
    let script = vec![commit_step("killed-while-asking"), Step::text("Committed.")];
    let Some(r) = setup(script, "auto-edit", "[]").await else {
        return;
    };
    let id = r
        .app
        .spawn(json!({"project": "demo", "prompt": "Commit."}))
        .await;
    wait_session(&r.app, &id, 90, "needs_input", |s| {
        s["state"] == "needs_input"
    })
    .await;
    let socket = flotilla::app::tmux_socket(&r.app.home);
    let (ok, pid) = crate::fleet_tmux::tmux(
        &socket,
        &["list-panes", "-t", &format!("={id}"), "-F", "#{pane_pid}"],
    );
    assert!(ok, "{pid}");
    let pid: i32 = pid.trim().parse().expect("pane pid");
    // SAFETY: a plain kill(2) of the agent's own process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let s = wait_session(&r.app, &id, 60, "errored", |s| s["state"] == "errored").await;
    assert!(
        s["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("agent_exited_137")),
        "{s}"
    );
    assert_eq!(s["waiting_for"], Value::Null, "{s}");
    eventually(30, "the page naming the signal", || {
        let n = notifications_with(&r.hooks, "killed by signal 9 (SIGKILL)");
        async move { (n.len() == 1).then_some(()) }
    })
    .await;
}

/// The text of a Messages API request: every text and tool input/result of its messages.
fn conversation(request: &Value) -> String {
    crate::fake_anthropic::request_text(request)
}

/// A human refuses Claude's command with what to do instead (`no, …`, as one would reply to
/// the page): Flotilla picks the dialog's No, the command never runs, and the words reach
/// Claude as its next prompt. (They used to be pasted onto the dialog, whose Enter approved
/// the command.)
#[actix_web::test]
async fn a_real_claude_refused_with_an_instruction_runs_nothing_and_gets_the_instruction() {
    let script = vec![
        Step::tool(
            "Bash",
            json!({"command": "git commit --allow-empty -q -m wip", "description": "Commit"}),
        ),
        Step::text("Understood: nothing committed."),
    ];
    let Some(r) = setup(script, "auto-edit", "[]").await else {
        return;
    };
    let id = r
        .app
        .spawn(json!({"project": "demo", "prompt": "Commit your work."}))
        .await;
    let s = wait_session(&r.app, &id, 120, "needs_input", |s| {
        s["state"] == "needs_input"
    })
    .await;
    let ws = PathBuf::from(s["workspace"].as_str().expect("workspace"));
    let head = git(&ws, &["rev-parse", "HEAD"]);
    let before = r.model.requests().len();

    send(&r.app, &id, "no, leave the tree as it is").await;
    let all = r
        .model
        .wait_for_requests(before + 1, Duration::from_secs(60))
        .await;
    let next = conversation(&all[before]);
    assert!(next.contains("leave the tree as it is"), "{next}");
    assert_eq!(
        git(&ws, &["rev-parse", "HEAD"]),
        head,
        "the refused commit ran"
    );
    let last = all[before]["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        last.iter()
            .any(|m| m["content"].as_array().is_some_and(|c| c
                .iter()
                .any(|b| b["type"] == "tool_result" && b["is_error"] == true))),
        "the call came back refused: {last:?}"
    );
    wait_session(&r.app, &id, 60, "back to work", |s| s["state"] == "working").await;
}

#[actix_web::test]
async fn a_real_claude_that_exited_is_resumed_with_the_failed_check_as_its_next_prompt() {
    const REPO: &str = "acme/widgets";
    const GH_TOKEN: &str = "ghp_real_claude";
    const SECRET: &str = "real-claude-secret";
    let gh = crate::fake_github::FakeGithub::start(GH_TOKEN).await;
    let bare = gh.create_repo(REPO);
    gh.watch_pushes();
    let script = vec![
        Step::tool(
            "Bash",
            json!({"command": "printf 'hello\\n' > hello.txt && git add hello.txt && git commit -q -m 'Add hello' && git push -q origin HEAD", "description": "Commit and push"}),
        ),
        Step::text("Pushed hello.txt; the PR can be opened."),
        Step::text("On it: fixing the failing check."),
    ];
    let graphql = format!("{}/graphql", gh.url);
    let project = format!("    scm: github\n    github_repo: {REPO}\n");
    let Some(r) = setup_with(
        script,
        "auto-edit",
        "[\"--allowedTools\", \"Bash\"]",
        &project,
        &[
            ("FLOTILLA__GITHUB__API_URL", gh.url.as_str()),
            ("FLOTILLA__GITHUB__GRAPHQL_URL", graphql.as_str()),
            ("FLOTILLA__GITHUB__TOKEN", GH_TOKEN),
            ("FLOTILLA__GITHUB__WEBHOOK_SECRET", SECRET),
            ("FLOTILLA__GITHUB__POLL_INTERVAL", "0s"),
        ],
    )
    .await
    else {
        return;
    };
    git(
        &r.app.repo,
        &["remote", "add", "origin", bare.to_str().expect("utf-8")],
    );
    gh.set_webhook(&format!("{}/webhooks/github", r.app.address), SECRET);

    let id = r
        .app
        .spawn(json!({"project": "demo", "prompt": "Add hello.txt, commit and push it."}))
        .await;
    // The task runs: a commit pushed, then the answer ends the turn.
    r.model.wait_for_requests(2, Duration::from_secs(90)).await;
    let s = wait_session(&r.app, &id, 60, "the branch", |s| s["branch"].is_string()).await;
    let branch = s["branch"].as_str().expect("branch").to_string();
    let ws = s["workspace"].as_str().expect("workspace").to_string();
    let head = eventually(60, "the push", || {
        let h = gh.branch_sha(REPO, &branch);
        async move { h }
    })
    .await;
    gh.open_pr(REPO, &branch, "main", "Add hello").await;
    wait_session(&r.app, &id, 60, "the PR", |s| s["pr"]["number"].is_i64()).await;

    // The CLI ends its run (a user typing /exit): the session keeps its PR, the agent is gone.
    // It may be gone before the send is confirmed on its screen: its exit is the proof. On a
    // loaded machine Claude Code's command menu can take the first Enter (the screen then shows
    // "/exit" still in its input): a user presses it again, and so does this test.
    let mut exited = false;
    for _ in 0..3 {
        r.app
            .post(
                &format!("/api/v1/sessions/{id}/send"),
                json!({"message": "/exit"}),
            )
            .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < deadline {
            if session(&r.app, &id).await["activity"] == "exited" {
                exited = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if exited {
            break;
        }
    }
    wait_session(&r.app, &id, 10, "the agent exited", |s| {
        s["activity"] == "exited"
    })
    .await;
    let before = r.model.requests().len();

    // A check fails: Flotilla restarts claude in the same worktree, resumed, with the
    // instruction as its first prompt.
    gh.add_check_run(
        REPO,
        &head,
        "unit-tests",
        Some("failure"),
        Some("assertion failed: hello == world"),
    )
    .await;
    let t0 = Instant::now();
    let all = r
        .model
        .wait_for_requests(before + 1, Duration::from_secs(120))
        .await;
    eprintln!(
        "failed check -> resumed claude's request: {:?}",
        t0.elapsed()
    );
    let next = conversation(&all[before]);
    assert!(
        next.contains("Failed check: unit-tests") && next.contains("hello == world"),
        "the instruction: {next}"
    );
    assert!(
        next.contains("Add hello.txt, commit and push it.")
            && next.contains("Pushed hello.txt; the PR can be opened."),
        "the earlier conversation: {next}"
    );
    let s = wait_session(&r.app, &id, 60, "the agent running again", |s| {
        s["activity"] != "exited" && s["meta"]["restart_for"].is_null()
    })
    .await;
    assert_eq!(s["workspace"], ws.as_str(), "{s}");
    let attempts = s["trackers"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["reaction"] == "ci-failed"))
        .map(|t| t["attempts"].clone());
    assert_eq!(attempts, Some(json!(1)), "counted once: {s}");
    let (_, ev) = r.app.get(&format!("/api/v1/sessions/{id}/events")).await;
    let kinds: Vec<&str> = ev["events"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["kind"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        kinds.iter().filter(|k| **k == "agent.restarted").count(),
        1,
        "{kinds:?}"
    );
    // Exactly one user turn carries the instruction (not typed in a second time).
    let turns = eventually(30, "the resumed turn logged", || {
        let n = r
            .model
            .requests()
            .iter()
            .map(|q| {
                q["messages"]
                    .as_array()
                    .map(|m| {
                        m.iter()
                            .filter(|m| {
                                m["role"] == "user"
                                    && m.to_string().contains("Failed check: unit-tests")
                            })
                            .count()
                    })
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        async move { (n > 0).then_some(n) }
    })
    .await;
    assert_eq!(turns, 1, "the instruction reached the model once");
}

/// Plan mode (`permission_mode: suggest`): the model writes its plan to the plan file Claude
/// Code names and calls `ExitPlanMode`; Claude Code asks the human to approve the plan, the
/// session says so (with the plan's first words), and an approval from `flotilla send` lets
/// the agent go on.
#[actix_web::test]
async fn a_real_claude_plan_waiting_for_approval_is_needs_input_and_an_approval_resumes_it() {
    let plan = "# Plan\n1. Write hello.txt.\n2. Commit it.\n";
    let script = vec![
        Step::write_plan(plan),
        Step::tool("ExitPlanMode", json!({})),
        Step::text("Plan approved; starting."),
    ];
    let Some(r) = setup(script, "suggest", "[]").await else {
        return;
    };
    let id = r
        .app
        .spawn(json!({"project": "demo", "prompt": "Plan adding hello.txt."}))
        .await;
    let first = r.model.wait_for_requests(1, Duration::from_secs(90)).await;
    let s = wait_session(&r.app, &id, 90, "needs_input on the plan", |s| {
        s["state"] == "needs_input"
    })
    .await;
    let question = s["meta"]["question"].as_str().unwrap_or("").to_string();
    assert!(
        question.contains("approve the plan") && question.contains("Write hello.txt"),
        "question: {question}; session: {s}"
    );
    assert_eq!(s["activity"], "waiting_input", "{s}");
    assert!(
        first[0].to_string().contains("ExitPlanMode"),
        "plan mode offers ExitPlanMode"
    );
    let hits = eventually(30, "the plan notification", || {
        let n = notifications_with(&r.hooks, "approve the plan");
        async move { (!n.is_empty()).then_some(n) }
    })
    .await;
    assert_eq!(hits.len(), 1, "one notification: {hits:?}");
    assert_eq!(
        r.model.requests().len(),
        2,
        "nothing runs past the plan before the approval"
    );

    // Approve: the menu's first choice.
    send(&r.app, &id, "1").await;
    let reqs = r.model.wait_for_requests(3, Duration::from_secs(60)).await;
    // The last tool result the model gets is ExitPlanMode's, and it is not a refusal.
    let results: Vec<&Value> = reqs[2]["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["content"].as_array().into_iter().flatten())
        .filter(|b| b["type"] == "tool_result")
        .collect();
    let approved = results.last().expect("a tool result");
    assert_ne!(
        approved["is_error"], true,
        "the plan was approved: {approved}"
    );
    assert!(
        reqs[2].to_string().contains("Exited Plan Mode"),
        "the CLI left plan mode"
    );
    let s = wait_session(&r.app, &id, 60, "no longer waiting", |s| {
        s["state"] != "needs_input" && s["activity"] != "waiting_input"
    })
    .await;
    assert_eq!(s["waiting_for"], Value::Null, "{s}");
}

/// `AskUserQuestion` ("Which colour should the button be?", Red or Blue): the session says
/// the question and its choices; `answer` is sent as `flotilla send` sends it. The message
/// that carries the answer back to the model, once the session no longer waits.
async fn answer_the_colour_question(answer: &str) -> Option<Value> {
    let script = vec![
        Step::tool(
            "AskUserQuestion",
            json!({"questions": [{
                "question": "Which colour should the button be?",
                "header": "Colour",
                "multiSelect": false,
                "options": [
                    {"label": "Red", "description": "A red button"},
                    {"label": "Blue", "description": "A blue button"}
                ]
            }]}),
        ),
        Step::text("Noted."),
    ];
    let r = setup(script, "auto-edit", "[]").await?;
    let id = r
        .app
        .spawn(json!({"project": "demo", "prompt": "Add a button."}))
        .await;
    r.model.wait_for_requests(1, Duration::from_secs(90)).await;
    let s = wait_session(&r.app, &id, 90, "needs_input on the question", |s| {
        s["state"] == "needs_input"
    })
    .await;
    let question = s["meta"]["question"].as_str().unwrap_or("").to_string();
    assert!(
        question.contains("Which colour should the button be?")
            && question.contains("Red")
            && question.contains("Blue"),
        "question: {question}; session: {s}"
    );
    eventually(30, "the question's notification", || {
        let n = notifications_with(&r.hooks, "Which colour should the button be?");
        async move { (!n.is_empty()).then_some(n) }
    })
    .await;

    let (code, v) = r
        .app
        .post(
            &format!("/api/v1/sessions/{id}/send"),
            json!({ "message": answer }),
        )
        .await;
    assert!(code < 300, "{code} {v}");
    assert_eq!(v["delivered"], true, "{v}");
    let reqs = r.model.wait_for_requests(2, Duration::from_secs(60)).await;
    wait_session(&r.app, &id, 60, "no longer waiting", |s| {
        s["state"] != "needs_input" && s["activity"] != "waiting_input"
    })
    .await;
    Some(
        reqs[1]["messages"]
            .as_array()
            .and_then(|m| m.last())
            .cloned()
            .unwrap_or_default(),
    )
}

/// The second choice, by its number, reaches the model.
#[actix_web::test]
async fn a_real_claude_question_with_choices_is_needs_input_and_the_choice_reaches_the_model() {
    let Some(last) = answer_the_colour_question("2").await else {
        return;
    };
    assert!(
        last.to_string().contains("Blue"),
        "the chosen answer reaches the model: {last}"
    );
}

/// A hook command that reports nothing: every hook event is lost, so what the session knows of
/// a dialog comes from the agent's log and its screen alone.
fn lost_hook(dir: &Path) -> PathBuf {
    let path = dir.join("lost-hook.sh");
    std::fs::write(&path, "#!/bin/sh\ncat >/dev/null\nexit 0\n").expect("hook script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// Claude asks before creating and before editing a file (its `default` permission mode). With
/// no hook report, the screen alone makes each dialog a wait: the edit's dialog is drawn beside
/// the diff panel Claude opens once a file changed. Each is worded as the hook words it, and a
/// "1" answers it.
#[actix_web::test]
async fn real_claude_file_dialogs_seen_on_screen_are_asked_as_the_hook_asks_them() {
    use crate::fake_anthropic::WORKDIR;
    let script = vec![
        Step::tool(
            "Write",
            json!({"file_path": format!("{WORKDIR}/notes.txt"), "content": "one\ntwo\n"}),
        ),
        Step::tool(
            "Edit",
            json!({"file_path": format!("{WORKDIR}/notes.txt"), "old_string": "two", "new_string": "three"}),
        ),
        Step::text("Wrote notes.txt."),
    ];
    let hooks_dir = tempfile::tempdir().expect("tempdir");
    let hook = lost_hook(hooks_dir.path());
    let env = [("FLOTILLA__SERVER__CLI_PATH", hook.to_str().expect("path"))];
    let args = r#"["--permission-mode", "default"]"#;
    let Some(r) = setup_with(script, "default", args, "", &env).await else {
        return;
    };
    let id = r
        .app
        .spawn(json!({"project": "demo", "prompt": "Write notes.txt, then edit it."}))
        .await;
    let s = wait_session(&r.app, &id, 90, "needs_input on the new file", |s| {
        s["state"] == "needs_input"
    })
    .await;
    let ws = std::fs::canonicalize(s["workspace"].as_str().expect("workspace")).expect("ws");
    let file = ws.join("notes.txt");
    assert_eq!(
        s["meta"]["question"],
        format!("approve Write: {}", file.display()),
        "{s}"
    );
    send(&r.app, &id, "1").await;
    let s = wait_session(&r.app, &id, 90, "needs_input on the edit", |s| {
        s["state"] == "needs_input"
            && s["meta"]["question"]
                .as_str()
                .is_some_and(|q| q.contains("Edit"))
    })
    .await;
    assert_eq!(
        s["meta"]["question"],
        format!("approve Edit: {}", file.display()),
        "{s}"
    );
    send(&r.app, &id, "1").await;
    r.model.wait_for_requests(3, Duration::from_secs(60)).await;
    assert_eq!(
        std::fs::read_to_string(&file).expect("notes.txt"),
        "one\nthree\n"
    );
    wait_session(&r.app, &id, 60, "no longer waiting", |s| {
        s["state"] != "needs_input"
    })
    .await;
}

/// A wrapper that starts the real CLI with Claude Code's settings as a fresh install has them
/// (onboarded, nothing else): the folder not trusted, the API key not approved, whatever
/// Flotilla recorded before the launch.
fn untrusting_wrapper(dir: &Path, claude: &Path) -> PathBuf {
    let path = dir.join("claude-untrusted.sh");
    let script = format!(
        "#!/bin/sh\nprintf '%s' '{{\"hasCompletedOnboarding\":true,\"theme\":\"dark\"}}' > \"$HOME/.claude.json\"\nexec \"{}\" \"$@\"\n",
        claude.display()
    );
    std::fs::write(&path, script).expect("wrapper");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// Claude's trust and API-key dialogs are menus without numbers (a `❯` cursor on "No, exit" /
/// "Yes, I trust this folder"; on "No (recommended)" under "Yes"): each makes the session wait,
/// and a "yes" from the human moves the cursor to Yes and confirms it, after which the agent
/// reaches the model.
#[actix_web::test]
async fn real_claude_trust_and_key_dialogs_are_answered_by_moving_their_cursor() {
    let Some(claude) = claude_bin() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let wrapper = untrusting_wrapper(dir.path(), &claude);
    let script = vec![Step::text("Hello from the model.")];
    let Some(r) = setup_full(script, "auto-edit", "[]", "", &[], "", "", &wrapper).await else {
        return;
    };
    let id = r
        .app
        .spawn(json!({"project": "demo", "prompt": "Say hello."}))
        .await;
    let mut asked: Vec<String> = Vec::new();
    for _ in 0..2 {
        let before = asked.last().cloned();
        let s = wait_session(&r.app, &id, 90, "a dialog to answer", |s| {
            s["state"] == "needs_input" && s["meta"]["question"].as_str() != before.as_deref()
        })
        .await;
        asked.push(s["meta"]["question"].as_str().unwrap_or("").to_string());
        send(&r.app, &id, "yes").await;
    }
    assert!(
        asked.iter().any(|q| q.contains("one you trust?")),
        "the trust dialog: {asked:?}"
    );
    assert!(
        asked
            .iter()
            .any(|q| q.starts_with("Do you want to use this API key? [Yes | No")),
        "the API-key dialog: {asked:?}"
    );
    // Both answered Yes: the agent reached the model, and the CLI recorded both choices.
    r.model.wait_for_requests(1, Duration::from_secs(90)).await;
    let s = wait_session(&r.app, &id, 60, "working", |s| s["state"] != "needs_input").await;
    let cfg: Value = serde_json::from_str(
        &std::fs::read_to_string(r.agent_home.join(".claude.json")).expect("read .claude.json"),
    )
    .expect("json");
    assert_ne!(s["state"], "errored", "{s}");
    // Claude records a worktree's trust on its repository (wiped by the wrapper at launch).
    let repo = std::fs::canonicalize(&r.app.repo).expect("repo");
    assert_eq!(
        cfg["projects"][repo.to_string_lossy().as_ref()]["hasTrustDialogAccepted"],
        true,
        "{cfg}"
    );
    let tail = &KEY[KEY.len() - 20..];
    assert!(
        cfg["customApiKeyResponses"]["approved"]
            .as_array()
            .is_some_and(|a| a.iter().any(|k| k == tail)),
        "{cfg}"
    );
}

/// A fetch dialog (not Bash) seen on screen while its hook is held back, beside the diff panel
/// of a file written just before: asked in the hook's words, answered, and the hook's late
/// report of it asks nothing again.
#[actix_web::test]
async fn a_late_hook_report_of_a_fetch_dialog_answered_from_the_screen_asks_nothing() {
    use crate::fake_anthropic::WORKDIR;
    let url = "https://example.com/docs/page";
    let script = vec![
        Step::tool(
            "Write",
            json!({"file_path": format!("{WORKDIR}/notes.txt"), "content": "one\n"}),
        ),
        Step::tool("WebFetch", json!({"url": url, "prompt": "Summarize it"})),
        Step::text("Fetched."),
    ];
    let hooks_dir = tempfile::tempdir().expect("tempdir");
    let hook = late_hook(hooks_dir.path());
    let env = [("FLOTILLA__SERVER__CLI_PATH", hook.to_str().expect("path"))];
    let Some(r) = setup_with(script, "auto-edit", "[]", "", &env).await else {
        return;
    };
    let id = r
        .app
        .spawn(json!({"project": "demo", "prompt": "Write notes.txt, then fetch the page."}))
        .await;
    let s = wait_session(&r.app, &id, 90, "needs_input on the fetch", |s| {
        s["state"] == "needs_input"
    })
    .await;
    assert_eq!(
        s["meta"]["question"],
        format!("approve WebFetch: {url}"),
        "{s}"
    );
    send(&r.app, &id, "1").await;
    r.model.wait_for_requests(3, Duration::from_secs(60)).await;
    wait_session(&r.app, &id, 60, "working after the answer", |s| {
        s["state"] != "needs_input"
    })
    .await;
    release_late_hooks_and_assert_quiet(&r, &id, hooks_dir.path(), 1).await;
}

/// A wrapper that starts the real CLI with its transcripts where Flotilla does not look
/// (`CLAUDE_CONFIG_DIR` set behind Flotilla's back, Flotilla's `.claude.json` copied there):
/// what Flotilla knows of a dialog then comes from the hook and the screen alone, as while the
/// CLI has not yet written its transcript.
fn hidden_transcript_wrapper(dir: &Path, claude: &Path) -> PathBuf {
    let path = dir.join("claude-hidden-transcript.sh");
    let script = format!(
        "#!/bin/sh\nhidden=\"$HOME/.claude-hidden\"\nmkdir -p \"$hidden\"\ncp \"$HOME/.claude.json\" \"$hidden/.claude.json\"\nexport CLAUDE_CONFIG_DIR=\"$hidden\"\nexec \"{}\" \"$@\"\n",
        claude.display()
    );
    std::fs::write(&path, script).expect("wrapper");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// An MCP configuration for `--mcp-config` naming one stdio server, `probe`
/// (`tests/fixtures/mcp/probe-server.js`, one tool: `echo`), written in `dir`.
fn probe_mcp_config(dir: &Path) -> Option<PathBuf> {
    if !require_tool("node") {
        return None;
    }
    let node = std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("node"))
                .find(|n| n.is_file())
        })
        .expect("node on PATH");
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mcp/probe-server.js");
    let path = dir.join("mcp.json");
    let config =
        json!({"mcpServers": {"probe": {"type": "stdio", "command": node, "args": [server]}}});
    std::fs::write(&path, config.to_string()).expect("mcp.json");
    Some(path)
}

/// An MCP tool's dialog and a notebook edit's, seen on screen first (Claude's transcript
/// hidden, their hooks held back): the notebook edit asked in the words its hook then reports,
/// the MCP tool's cut short (`approve mcp__probe__…`: the screen shows its server, not the
/// tool's name and input), both answered, and the hooks' late reports ask nothing again. One
/// notification per dialog (deduplication off, so that a second page would be seen).
#[actix_web::test]
async fn real_claude_mcp_tool_and_notebook_dialogs_seen_on_screen_first_page_once() {
    mcp_tool_and_notebook_dialogs(true).await;
}

/// [`real_claude_mcp_tool_and_notebook_dialogs_seen_on_screen_first_page_once`] with the
/// hooks reporting as Claude runs them: the hook and the screen (or the log) see each dialog,
/// and it is still one question, in the hook's words, and one notification.
#[actix_web::test]
async fn real_claude_mcp_tool_and_notebook_dialogs_seen_by_hook_and_screen_page_once() {
    mcp_tool_and_notebook_dialogs(false).await;
}

/// Claude calls the probe MCP server's `echo`, then edits a notebook's cell, each after a "1"
/// to its dialog; the hooks are held until the answers when `late`.
async fn mcp_tool_and_notebook_dialogs(late: bool) {
    use crate::fake_anthropic::WORKDIR;
    let notebook = format!("{WORKDIR}/nb.ipynb");
    let script = vec![
        Step::tool("mcp__probe__echo", json!({"text": "hello from the model"})),
        Step::tool("Read", json!({"file_path": notebook})),
        Step::tool(
            "NotebookEdit",
            json!({"notebook_path": notebook, "cell_id": "c1", "new_source": "print(2)", "edit_mode": "replace"}),
        ),
        Step::text("Done."),
    ];
    let scratch = tempfile::tempdir().expect("tempdir");
    let Some(mcp) = probe_mcp_config(scratch.path()) else {
        return;
    };
    let hook = if late {
        late_hook(scratch.path())
    } else {
        PathBuf::from(env!("CARGO_BIN_EXE_flotilla"))
    };
    let env = [
        ("FLOTILLA__SERVER__CLI_PATH", hook.to_str().expect("path")),
        ("FLOTILLA__NOTIFICATIONS__DEDUPE_WINDOW", "0s"),
    ];
    let args = format!(
        r#"["--permission-mode", "default", "--mcp-config", "{}"]"#,
        mcp.display()
    );
    let Some(claude) = claude_bin() else {
        return;
    };
    // Held hooks: the screen alone sees each dialog first (the transcript hidden).
    let command = if late {
        hidden_transcript_wrapper(scratch.path(), &claude)
    } else {
        claude
    };
    let Some(r) = setup_full(script, "default", &args, "", &env, "", "", &command).await else {
        return;
    };
    let cell = json!({"cell_type": "code", "id": "c1", "metadata": {}, "execution_count": null,
                      "outputs": [], "source": ["print(1)"]});
    let nb = json!({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5});
    std::fs::write(r.app.repo.join("nb.ipynb"), nb.to_string()).expect("nb.ipynb");
    git(&r.app.repo, &["add", "nb.ipynb"]);
    git(&r.app.repo, &["commit", "-qm", "A notebook"]);
    let id = r
        .app
        .spawn(json!({"project": "demo", "prompt": "Echo a greeting, then edit the notebook."}))
        .await;
    // As the hook words `mcp__probe__echo`; the screen alone words it cut short (it shows the
    // server, not the tool's name and input), one question with the hook's.
    let mcp_question = r#"approve mcp__probe__echo: {"text":"hello from the model"}"#;
    let asked = if late {
        "approve mcp__probe__…"
    } else {
        mcp_question
    };
    let s = wait_session(&r.app, &id, 90, "needs_input on the MCP tool", |s| {
        s["state"] == "needs_input"
    })
    .await;
    if late {
        assert_eq!(s["meta"]["question"], asked, "{s}");
    } else {
        wait_session(&r.app, &id, 30, "the hook's wording", |s| {
            s["state"] == "needs_input" && s["meta"]["question"] == asked
        })
        .await;
    }
    send(&r.app, &id, "1").await;
    let s = wait_session(&r.app, &id, 90, "needs_input on the notebook", |s| {
        s["state"] == "needs_input"
            && s["meta"]["question"]
                .as_str()
                .is_some_and(|q| q.contains("NotebookEdit"))
    })
    .await;
    let ws = std::fs::canonicalize(s["workspace"].as_str().expect("workspace")).expect("ws");
    let notebook_question = format!("approve NotebookEdit: {}", ws.join("nb.ipynb").display());
    assert_eq!(s["meta"]["question"], notebook_question, "{s}");
    send(&r.app, &id, "1").await;
    // Both tools ran: the server's answer reached the model, the cell was replaced.
    r.model.wait_for_requests(4, Duration::from_secs(60)).await;
    assert!(
        r.model.request_contains("echo: hello from the model"),
        "the MCP tool's result reached the model"
    );
    let edited = std::fs::read_to_string(ws.join("nb.ipynb")).expect("nb.ipynb");
    assert!(edited.contains("print(2)"), "{edited}");
    wait_session(&r.app, &id, 60, "working after the answers", |s| {
        s["state"] != "needs_input"
    })
    .await;
    let reported = || async {
        let (_, events) = r.app.get(&format!("/api/v1/sessions/{id}/events")).await;
        let mut notes: Vec<String> = events["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["kind"] == "agent.reported")
            .filter_map(|e| e["data"]["event"]["note"].as_str().map(str::to_string))
            .collect();
        notes.sort_unstable();
        (notes, events)
    };
    if late {
        release_late_hooks_and_assert_quiet(&r, &id, scratch.path(), 2).await;
    } else {
        eventually(60, "both hooks reported", || async {
            (reported().await.0.len() >= 2).then_some(())
        })
        .await;
        assert_one_wait_per_dialog(&r, &id, 2).await;
    }
    // The hooks worded each dialog as the session had asked it (the MCP tool's in full).
    let (notes, events) = reported().await;
    let mut asked = vec![mcp_question.to_string(), notebook_question];
    asked.sort_unstable();
    assert_eq!(notes, asked, "{events:#}");
}

/// A question with choices answered in the human's own words: the menu's free-text option
/// ("Type something."), then the words, reach Claude as the answer. (They used to be pasted
/// with an Enter that picked the highlighted Red.)
#[actix_web::test]
async fn a_real_claude_question_answered_in_the_humans_own_words_takes_them_as_typed() {
    let Some(last) = answer_the_colour_question("Green, please").await else {
        return;
    };
    assert!(
        last.to_string().contains("The user answered")
            && last.to_string().contains("Green, please"),
        "the words reach the model as the answer: {last}"
    );
}

/// AskUserQuestion asking two things: Claude Code shows a tab per question, then "Review your
/// answers" (`1. Submit answers` / `2. Cancel`). Each `send` answers the tab on screen (the
/// screen is read at each answer, the hook reported both questions at once), and `send yes`
/// submits the review: the model gets both answers.
#[actix_web::test]
async fn a_real_claudes_two_questions_are_answered_tab_by_tab_and_submitted() {
    let q = |question: &str, header: &str, a: &str, b: &str| {
        json!({"question": question, "header": header, "multiSelect": false,
            "options": [{"label": a, "description": "one"}, {"label": b, "description": "two"}]})
    };
    let script = vec![
        Step::tool(
            "AskUserQuestion",
            json!({"questions": [
                q("Which colour should the button be?", "Colour", "Red", "Blue"),
                q("Which size should the button be?", "Size", "Small", "Large")]}),
        ),
        Step::text("Noted."),
    ];
    let Some(r) = setup(script, "auto-edit", "[]").await else {
        return;
    };
    let id = r
        .app
        .spawn(json!({"project": "demo", "prompt": "Add a button."}))
        .await;
    let s = wait_session(&r.app, &id, 90, "needs_input on the questions", |s| {
        s["state"] == "needs_input"
    })
    .await;
    assert_eq!(
        s["waiting_for"],
        "Which colour should the button be? [Red | Blue]; Which size should the button be? \
         [Small | Large]",
        "{s}"
    );
    // What a human answers: a session waiting, with this on its screen.
    let screen = |needle: &'static str| {
        let (app, id) = (&r.app, id.clone());
        eventually(30, needle, move || {
            let (app, id) = (app, id.clone());
            async move {
                let (_, o) = app
                    .get(&format!("/api/v1/sessions/{id}/output?lines=40"))
                    .await;
                let waiting = session(app, &id).await["state"] == "needs_input";
                o["output"]
                    .as_str()
                    .filter(|o| waiting && o.contains(needle))
                    .map(str::to_string)
            }
        })
    };
    let send = |text: &'static str| {
        let (app, id) = (&r.app, id.clone());
        async move {
            let (code, v) = app
                .post(
                    &format!("/api/v1/sessions/{id}/send"),
                    json!({ "message": text }),
                )
                .await;
            assert!(code < 300, "{code} {v}");
            assert_eq!(v["delivered"], true, "{text}: {v}");
        }
    };
    screen("Which colour should the button be?").await;
    send("Blue").await;
    screen("Which size should the button be?").await;
    send("Large").await;
    screen("Review your answers").await;
    assert_eq!(
        r.model.requests().len(),
        1,
        "nothing sent before the review"
    );
    send("yes").await;
    let reqs = r.model.wait_for_requests(2, Duration::from_secs(60)).await;
    let answer = reqs[1]["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or_default()
        .to_string();
    assert!(
        answer.contains(r#"\"Which colour should the button be?\"=\"Blue\""#)
            && answer.contains(r#"\"Which size should the button be?\"=\"Large\""#),
        "{answer}"
    );
}

/// A `git commit --allow-empty` of `message` through Claude's Bash tool (asks in auto-edit).
fn commit_step(message: &str) -> Step {
    Step::tool(
        "Bash",
        json!({"command": format!("git commit --allow-empty -q -m {message}"), "description": "Commit"}),
    )
}
