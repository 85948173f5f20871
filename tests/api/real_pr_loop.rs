//! The pull-request loop of `real_claude_pr_loop`, driven through the real Codex and OpenCode
//! TUIs (`permission_mode: permissionless`) on the fake GitHub: the agent commits, pushes and
//! opens the PR from its own shell tool; a failed check and then a review asking for changes
//! come in by webhook; each time Flotilla's instruction reaches the CLI (its next model
//! request, once) and the scripted fix is pushed; an approval then merges.
//!
//! What differs from Claude Code is how the instruction gets in: each TUI takes a long,
//! many-line paste its own way (Codex folds it into `[Pasted Content …]`, OpenCode into
//! `[Pasted ~N lines]`), and each runs its commands with an environment of its own.
//!
//! Runs under `CI=true` (a missing CLI fails it), or wherever the CLIs are found, else skips.

use std::time::Duration;

use serde_json::json;

use crate::fake_github::FakeGithub;
use crate::fake_openai::{FakeOpenAi, Step};
use crate::helpers::{eventually, require_tool};
use crate::real_claude_fleet::wait_session;
use crate::real_claude_pr_loop::{github_repo, wire, GITHUB_PROJECT, REPO};
use crate::real_fleet::AgentFleet;

const GH_TOKEN: &str = "ghp_realagentloop";
const SECRET: &str = "real-agent-loop-secret";

/// Opens the PR for the current branch on `$GITHUB_API` (what `gh pr create` does). The token
/// is in `GH_AUTH`: Codex keeps variables named like `*TOKEN*` out of its commands.
const OPEN_PR: &str = r#"curl -sS -f -X POST "$GITHUB_API/repos/acme/widgets/pulls" -H "Authorization: Bearer $GH_AUTH" -H 'Accept: application/vnd.github+json' -d "{\"title\":\"Add the widget counter\",\"head\":\"$(git branch --show-current)\",\"base\":\"main\",\"body\":\"Counts widgets.\"}""#;

/// The model's script, given how the agent's shell tool is called.
fn script(shell: fn(&str) -> Step) -> Vec<Step> {
    vec![
        shell(
            "printf 'widgets = 2\\n' > counter.txt && git add counter.txt && git commit -q -m 'Add the widget counter' && git push -q origin HEAD",
        ),
        shell(OPEN_PR),
        Step::text("Opened the pull request."),
        // After the failed-check instruction:
        shell(
            "printf 'widgets = 3\\n' > counter.txt && git commit -q -am 'Count three widgets' && git push -q origin HEAD",
        ),
        Step::text("Fixed the count and pushed."),
    ]
}

/// What the model does once the review's comment is in its conversation: in the request after
/// the fix's push when the review came while that turn ran, else in a turn of its own.
fn review_fix(shell: fn(&str) -> Step) -> Vec<Step> {
    vec![
        shell(
            "printf 'Counts widgets in counter.txt.\\n' > COUNTER.md && git add COUNTER.md && git commit -q -m 'Say what the counter is' && git push -q origin HEAD",
        ),
        Step::text("Documented the counter and pushed."),
    ]
}

/// A script whose agent is still busy (a slow command) when its PR's check fails.
fn busy_script(shell: fn(&str) -> Step) -> Vec<Step> {
    vec![
        shell(
            "printf 'widgets = 2\\n' > counter.txt && git add counter.txt && git commit -q -m 'Add the widget counter' && git push -q origin HEAD",
        ),
        shell(OPEN_PR),
        // Runs while the check fails: the instruction comes in while the agent is busy.
        shell("sleep 8 && echo SLEPT"),
    ]
}

/// The fix, once the failed check is in the model's conversation.
fn busy_fix(shell: fn(&str) -> Step) -> Vec<Step> {
    vec![
        shell(
            "printf 'widgets = 3\\n' > counter.txt && git commit -q -am 'Count three widgets' && git push -q origin HEAD",
        ),
        Step::text("Fixed the count and pushed."),
    ]
}

/// The fleet on the fake GitHub (webhooks on, no polling), with `agents` (one agent named
/// `agent`) and the model `model`.
struct Loop {
    fleet: AgentFleet,
    gh: FakeGithub,
    model: FakeOpenAi,
    /// The agent's scratch home, kept for the test's length.
    _setup: Box<dyn std::any::Any>,
}

impl Loop {
    async fn start(
        model: FakeOpenAi,
        gh: FakeGithub,
        agents: &str,
        agent: &str,
        dir: tempfile::TempDir,
        setup: Box<dyn std::any::Any>,
    ) -> Option<Loop> {
        if !require_tool("curl") {
            return None;
        }
        let (bare, github) = github_repo(&gh, GH_TOKEN, SECRET);
        let env: Vec<(&str, &str)> = github.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let fleet = AgentFleet::start_with(agents, agent, dir, GITHUB_PROJECT, &env).await?;
        wire(&fleet.app, &gh, &bare, SECRET);
        Some(Loop {
            fleet,
            gh,
            model,
            _setup: setup,
        })
    }

    /// The environment the agent's commands need, as `env:` entries.
    fn agent_env(gh: &FakeGithub) -> String {
        format!(
            "GITHUB_API: \"{api}\", GH_AUTH: \"{GH_TOKEN}\", GIT_AUTHOR_NAME: a, GIT_AUTHOR_EMAIL: a@example.com, GIT_COMMITTER_NAME: a, GIT_COMMITTER_EMAIL: a@example.com",
            api = gh.url
        )
    }

    /// Waits for the first turn request holding `needle` (as JSON, strings escaped); its index.
    async fn request_with(&self, needle: &str, secs: u64) -> usize {
        eventually(secs, &format!("a model request with {needle:?}"), || {
            let found = self
                .model
                .turn_requests()
                .iter()
                .position(|b| b.to_string().contains(needle));
            async move { found }
        })
        .await
    }

    /// How many user messages of the last request carry `needle`: an instruction typed once is
    /// in one.
    fn told(&self, needle: &str) -> usize {
        let last = self
            .model
            .turn_requests()
            .last()
            .cloned()
            .unwrap_or_default();
        // Chat Completions' `messages`, or the Responses API's `input` items.
        let items = last["messages"]
            .as_array()
            .or_else(|| last["input"].as_array())
            .cloned()
            .unwrap_or_default();
        items
            .iter()
            .filter(|m| m["role"] == "user")
            .filter(|m| m.to_string().contains(needle))
            .count()
    }

    /// Waits until the branch's head on the fake GitHub is another than `than`; on timeout,
    /// panics with session `id`'s screen and events and the model's requests.
    async fn pushed_after(&self, id: &str, branch: &str, than: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(h) = self.gh.branch_sha(REPO, branch).filter(|h| h != than) {
                return h;
            }
            if tokio::time::Instant::now() > deadline {
                let app = &self.fleet.app;
                let (_, events) = app.get(&format!("/api/v1/sessions/{id}/events")).await;
                let requests: Vec<String> = self
                    .model
                    .turn_requests()
                    .iter()
                    .map(|r| r.to_string().chars().rev().take(600).collect::<String>())
                    .map(|r| r.chars().rev().collect())
                    .collect();
                panic!(
                    "no new push\nscreen:\n{}\nevents: {events:#}\nrequests (ends): {requests:#?}",
                    self.fleet.screen(id).await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The check `unit-tests` fails on head `sha` with `log`; waits until session `id` is
    /// `ci_failed`.
    async fn fail_check(&self, id: &str, sha: &str, log: &str) {
        self.gh
            .add_check_run(REPO, sha, "unit-tests", Some("failure"), Some(log))
            .await;
        wait_session(&self.fleet.app, id, 60, "ci_failed", |s| {
            s["state"] == "ci_failed"
        })
        .await;
    }

    /// A check fails while the agent is still busy with its turn (a command running): the
    /// instruction typed meanwhile is not lost; the agent gets it once and pushes the fix.
    async fn run_busy(&self, fix: Vec<Step>) {
        self.model.when_told("Failed check: unit-tests", fix);
        let app = &self.fleet.app;
        let id = app
            .spawn(json!({"project": "demo", "prompt": "Add a widget counter in counter.txt."}))
            .await;
        let s = wait_session(app, &id, 150, "the PR found", |s| {
            s["state"] == "review_pending"
        })
        .await;
        let branch = s["branch"].as_str().expect("branch").to_string();
        let first = self.gh.branch_sha(REPO, &branch).expect("pushed");
        // The third request was answered with the slow command: it runs now.
        self.model
            .wait_for_turn_requests(3, Duration::from_secs(60))
            .await
            .expect("the request answered with the slow command");
        self.fail_check(&id, &first, "assertion failed: widgets == 3")
            .await;
        let sent = app.event_data(&id, "reaction.sent", 60).await;
        assert_eq!(sent["delivered"], true, "{sent}");
        assert!(
            self.model.turn_requests().len() <= 3,
            "typed while the command ran (it sleeps 8 s)"
        );
        self.request_with("Failed check: unit-tests", 120).await;
        let fixed = self.pushed_after(&id, &branch, &first).await;
        assert_eq!(
            self.gh
                .git(REPO, &["show", &format!("{fixed}:counter.txt")]),
            "widgets = 3"
        );
        wait_session(app, &id, 60, "the turn's end", |s| s["activity"] == "idle").await;
        assert_eq!(self.told("Failed check: unit-tests"), 1, "typed once");
    }

    /// The loop itself, from the spawn to the merge; `review` is what the model does once
    /// the review's comment is in its conversation.
    async fn run(&self, review: Vec<Step>) {
        let app = &self.fleet.app;
        let id = app
            .spawn(json!({"project": "demo", "prompt": "Add a widget counter in counter.txt."}))
            .await;
        // The CLI commits, pushes and opens the PR; the webhook tells Flotilla.
        let s = wait_session(app, &id, 150, "the PR found", |s| {
            s["state"] == "review_pending"
        })
        .await;
        let pr = s["pr"]["number"].as_i64().expect("pr number");
        let branch = s["branch"].as_str().expect("branch").to_string();
        let first = self.gh.branch_sha(REPO, &branch).expect("pushed");
        assert_eq!(
            self.gh
                .git(REPO, &["show", &format!("{first}:counter.txt")]),
            "widgets = 2"
        );
        // The CLI saw the PR's JSON (the tool's output in its third request), and its turn
        // ended there.
        let turns = self
            .model
            .wait_for_turn_requests(3, Duration::from_secs(60))
            .await
            .expect("the request after the PR was opened");
        assert!(
            turns[2]
                .to_string()
                .contains(&format!("\\\"number\\\":{pr}"))
                || turns[2]
                    .to_string()
                    .contains(&format!("\\\"number\\\": {pr}")),
            "the PR's JSON in the tool's output: {}",
            turns[2]
        );
        wait_session(app, &id, 90, "the first turn's end", |s| {
            s["activity"] == "idle"
        })
        .await;
        let before = self.model.turn_requests().len();

        // A check fails on the pushed head: Flotilla's instruction is the CLI's next request.
        self.fail_check(
            &id,
            &first,
            "running 12 tests\nassertion failed: widgets == 3\nerror: test failed",
        )
        .await;
        let at = self.request_with("Failed check: unit-tests", 120).await;
        assert_eq!(at, before, "the instruction is the next request");
        let told = self.model.turn_requests()[at].to_string();
        assert!(told.contains("assertion failed: widgets == 3"), "{told}");
        assert!(told.contains(&format!("PR #{pr}")), "{told}");
        assert!(
            told.contains("Add a widget counter in counter.txt."),
            "one conversation: {told}"
        );
        let fixed = self.pushed_after(&id, &branch, &first).await;
        self.gh
            .add_check_run(REPO, &fixed, "unit-tests", Some("success"), None)
            .await;
        wait_session(app, &id, 60, "green, waiting for review", |s| {
            s["state"] == "review_pending"
        })
        .await;

        // A review asks for changes on a line: the comment reaches the CLI, once. It may come
        // while the fix's turn still runs: the CLI takes it into that turn, and the model turns
        // to it instead of closing the turn.
        self.model
            .when_told_instead("Say what the counter counts, in COUNTER.md.", review);
        self.gh
            .add_review(
                REPO,
                pr,
                "alice",
                "CHANGES_REQUESTED",
                "One thing.",
                &[(
                    "counter.txt",
                    1,
                    "Say what the counter counts, in COUNTER.md.",
                )],
            )
            .await;
        wait_session(app, &id, 60, "changes_requested", |s| {
            s["state"] == "changes_requested"
        })
        .await;
        self.request_with("Say what the counter counts, in COUNTER.md.", 120)
            .await;
        let addressed = self.pushed_after(&id, &branch, &fixed).await;
        self.gh
            .add_check_run(REPO, &addressed, "unit-tests", Some("success"), None)
            .await;

        // Approved: auto-merge merges into the origin for real.
        self.gh
            .add_review(REPO, pr, "alice", "APPROVED", "Ship it.", &[])
            .await;
        let merged = wait_session(app, &id, 90, "merged", |s| {
            s["state"] == "merged" || s["reason"] == "pr_merged"
        })
        .await;
        assert_eq!(merged["pr"]["number"], pr, "{merged}");
        assert_eq!(
            self.gh.git(REPO, &["show", "main:counter.txt"]),
            "widgets = 3"
        );
        assert_eq!(
            self.gh.git(REPO, &["show", "main:COUNTER.md"]),
            "Counts widgets in counter.txt."
        );
        // Each instruction was typed once.
        assert_eq!(self.told("Failed check: unit-tests"), 1, "CI instruction");
        assert_eq!(
            self.told("Say what the counter counts, in COUNTER.md."),
            1,
            "review instruction"
        );
    }
}

#[actix_web::test]
async fn a_real_codex_busy_when_its_check_fails_gets_the_instruction_once() {
    let Some(l) = codex_loop(busy_script(exec_command)).await else {
        return;
    };
    l.run_busy(busy_fix(exec_command)).await;
}

#[actix_web::test]
async fn a_real_opencode_busy_when_its_check_fails_gets_the_instruction_once() {
    let Some(l) = opencode_loop(busy_script(bash)).await else {
        return;
    };
    l.run_busy(busy_fix(bash)).await;
}

/// Codex's shell tool.
fn exec_command(cmd: &str) -> Step {
    Step::tool("exec_command", json!({ "cmd": cmd }))
}

/// OpenCode's shell tool.
fn bash(command: &str) -> Step {
    Step::tool(
        "bash",
        json!({"command": command, "description": "Run a git step"}),
    )
}

#[actix_web::test]
async fn a_real_codex_runs_the_pr_loop_from_first_push_to_merge() {
    let Some(l) = codex_loop(script(exec_command)).await else {
        return;
    };
    l.run(review_fix(exec_command)).await;
}

#[actix_web::test]
async fn a_real_opencode_runs_the_pr_loop_from_first_push_to_merge() {
    let Some(l) = opencode_loop(script(bash)).await else {
        return;
    };
    l.run(review_fix(bash)).await;
}

/// The loop with the real Codex (`permissionless`), its model scripted by `steps`.
async fn codex_loop(steps: Vec<Step>) -> Option<Loop> {
    use crate::real_codex::{Setup, MODEL};

    let model = FakeOpenAi::start(steps).await;
    let setup = Setup::new(&model)?;
    let gh = FakeGithub::start(GH_TOKEN).await;
    let agents = format!(
        "  codex:\n    kind: codex\n    command: [\"{bin}\"]\n    permission_mode: permissionless\n    model: {MODEL}\n    env: {{ HOME: \"{home}\", CODEX_HOME: \"{codex_home}\", FAKE_KEY: sk-fake-0123456789, {more} }}\n",
        bin = setup.bin.display(),
        home = setup.home.display(),
        codex_home = setup.codex_home.display(),
        more = Loop::agent_env(&gh),
    );
    // Worktrees under the target dir: Codex's sandbox helper fails under /tmp.
    let dir = tempfile::Builder::new()
        .prefix("codex-loop-")
        .tempdir_in(setup.root())
        .expect("tempdir");
    Loop::start(model, gh, &agents, "codex", dir, Box::new(setup)).await
}

/// The loop with the real OpenCode (`permissionless`), its model scripted by `steps`.
async fn opencode_loop(steps: Vec<Step>) -> Option<Loop> {
    use crate::real_opencode::{Setup, MODEL};

    let model = FakeOpenAi::start(steps).await;
    let setup = Setup::new(&model)?;
    let gh = FakeGithub::start(GH_TOKEN).await;
    let agents = format!(
        "  opencode:\n    kind: opencode\n    command: [\"{bin}\"]\n    permission_mode: permissionless\n    model: {MODEL}\n    env: {{ HOME: \"{home}\", FAKE_KEY: sk-fake-0123456789, OPENCODE_DISABLE_MODELS_FETCH: \"1\", {more} }}\n",
        bin = setup.bin.display(),
        home = setup.home.display(),
        more = Loop::agent_env(&gh),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    Loop::start(model, gh, &agents, "opencode", dir, Box::new(setup)).await
}
