//! The real OpenCode (npm `opencode-ai`) doing real work against the scripted model server
//! (`tests/support/fake_openai.rs`, Chat Completions), pointed at it as a user would: a
//! provider in `~/.config/opencode/opencode.json` using `@ai-sdk/openai-compatible` (bundled
//! with OpenCode) with `options.baseURL`, its key from `{env:FAKE_KEY}`, the model's `cost`, and
//! `OPENCODE_DISABLE_MODELS_FETCH=1` so it does not fetch the models.dev catalogue. Launched
//! with the argv and environment the opencode agent plugin builds, under tmux as the fleet
//! runs it, once per permission mode, each checked against what OpenCode then really does.
//!
//! What OpenCode 1.18.33 sends: `POST /v1/chat/completions`, `"stream": true` with
//! `stream_options.include_usage`, its tools (`bash`, `edit`, `write`, `read`, …) on every
//! turn, and a title request without tools (a side request here).
//!
//! Runs the CLI from `FLOTILLA_OPENCODE_BIN`, `opencode` on `PATH` or where `.ci/deps.sh`
//! installs it; under `CI=true` a missing CLI fails the test, elsewhere it is skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla::config::{AgentKind, AgentSettings, PermissionMode};
use flotilla::plugins::agents::OpencodeAgent;
use flotilla::plugins::{Agent, RuntimeHandle};
use flotilla::store::Activity;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::fake_openai::{tool_outputs, FakeOpenAi, Step};
use crate::helpers::{git, make_repo, real_cli, require_tool};
use crate::real_tmux::{within, Tmux};

pub(crate) const MODEL: &str = "fake/fake-model";
const TASK: &str = "## Task\n\nWrite out.txt.\n";
/// The model's price in the provider config, dollars per million tokens (no cache price).
const INPUT_PER_MTOK: f64 = 2.0;
const OUTPUT_PER_MTOK: f64 = 10.0;

/// A scratch `HOME` with OpenCode configured for the fake, and a repository.
pub(crate) struct Setup {
    dir: TempDir,
    pub(crate) bin: PathBuf,
    pub(crate) home: PathBuf,
    repo: PathBuf,
}

impl Setup {
    pub(crate) fn new(fake: &FakeOpenAi) -> Option<Setup> {
        let bin = real_cli("opencode", "FLOTILLA_OPENCODE_BIN")?;
        if !require_tool("git") {
            return None;
        }
        fake.side_requests_without_tools();
        let dir = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(dir.path()).expect("canonical");
        let home = root.join("home");
        let config = home.join(".config/opencode");
        std::fs::create_dir_all(&config).expect("config dir");
        let provider = json!({
            "npm": "@ai-sdk/openai-compatible",
            "name": "Fake",
            "options": {"baseURL": fake.url(), "apiKey": "{env:FAKE_KEY}"},
            "models": {"fake-model": {"name": "Fake model",
                "cost": {"input": INPUT_PER_MTOK, "output": OUTPUT_PER_MTOK},
                "limit": {"context": 128000, "output": 16000}}},
        });
        let cfg = json!({
            "$schema": "https://opencode.ai/config.json",
            "autoupdate": false,
            "share": "disabled",
            "provider": {"fake": provider},
        });
        std::fs::write(config.join("opencode.json"), cfg.to_string()).expect("config");
        let repo = make_repo(&root);
        Some(Setup {
            dir,
            bin,
            home,
            repo,
        })
    }

    pub(crate) fn root(&self) -> PathBuf {
        std::fs::canonicalize(self.dir.path()).expect("canonical")
    }

    /// The opencode agent plugin as the fleet configures it, running this CLI.
    fn agent(&self, mode: PermissionMode) -> OpencodeAgent {
        let mut s = AgentSettings::built_in(AgentKind::Opencode);
        s.command = vec![self.bin.to_string_lossy().into_owned()];
        s.permission_mode = mode;
        s.model = Some(MODEL.into());
        let mut env = BTreeMap::new();
        env.insert(
            "PATH".into(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        );
        env.insert("HOME".into(), self.home.to_string_lossy().into_owned());
        env.insert("FAKE_KEY".into(), "sk-fake-0123456789".into());
        env.insert("OPENCODE_DISABLE_MODELS_FETCH".into(), "1".into());
        s.env = env;
        OpencodeAgent::new("opencode".into(), s)
    }

    /// A worktree of the repository on its own branch, as the fleet makes one per session.
    fn worktree(&self, name: &str) -> PathBuf {
        let ws = self.root().join(name);
        git(
            &self.repo,
            &[
                "worktree",
                "add",
                "-q",
                "-b",
                &format!("session/{name}"),
                ws.to_str().expect("utf8"),
                "main",
            ],
        );
        ws
    }
}

fn write_step(path: &Path) -> Step {
    Step::tool(
        "write",
        json!({"filePath": path.to_str().expect("utf8"), "content": "made"}),
    )
}

/// A command that writes a file and prints what only a shell computes.
pub(crate) fn bash_step() -> Step {
    Step::tool(
        "bash",
        json!({"command": "printf made > cmd.txt && echo WROTE-$((20+22))",
            "description": "Write cmd.txt"}),
    )
}

fn offers(body: &Value, tool: &str) -> bool {
    body["tools"].as_array().is_some_and(|tools| {
        tools
            .iter()
            .any(|t| t["type"] == "function" && t["function"]["name"] == tool)
    })
}

/// Waits until the plugin reads a permission dialog from the screen; returns its question.
async fn wait_for_question(
    t: &Tmux,
    agent: &OpencodeAgent,
    h: &RuntimeHandle,
    ws: &Path,
    fake: &FakeOpenAi,
) -> String {
    within(
        180,
        "OpenCode's permission dialog, read as waiting_input",
        || async {
            let probe = t.probe(h, ws).await;
            let activity = agent.activity(&probe).await.ok().flatten();
            match (activity, agent.question(&probe).await) {
                (Some(sig), Some(q)) if sig.activity == Activity::WaitingInput => {
                    Ok(format!("{q}\n{}", probe.terminal.unwrap_or_default()))
                }
                (a, q) => Err(format!(
                    "{a:?} {q:?}\n{}\nrequests: {:?}",
                    probe.terminal.unwrap_or_default(),
                    fake.requests_full()
                )),
            }
        },
    )
    .await
}

/// Waits until the turn's closing text is on the screen; with `never_waits`, fails as soon as
/// the plugin reads the agent as waiting for a human.
async fn wait_for_reply(
    t: &Tmux,
    agent: &OpencodeAgent,
    h: &RuntimeHandle,
    ws: &Path,
    reply: &str,
    never_waits: bool,
) {
    within(180, "the closing reply on the screen", || async {
        let probe = t.probe(h, ws).await;
        let screen = probe.terminal.clone().unwrap_or_default();
        let activity = agent.activity(&probe).await.ok().flatten();
        if never_waits {
            assert!(
                activity.is_none_or(|s| s.activity != Activity::WaitingInput),
                "waiting for a human:\n{screen}"
            );
        }
        // The reply is in the transcript; the dialog, if any, is gone.
        if screen.contains(reply) && agent.question(&probe).await.is_none() {
            Ok(())
        } else {
            Err(screen)
        }
    })
    .await;
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

#[actix_web::test]
async fn real_opencode_default_mode_writes_in_the_worktree_and_asks_for_outside() {
    let fake = FakeOpenAi::start(Vec::new()).await;
    let Some(s) = Setup::new(&fake) else { return };
    let Some(t) = Tmux::new("opencode") else {
        return;
    };
    let ws = s.worktree("demo-1");
    let outside = s.root().join("outside.txt");
    fake.push(vec![
        write_step(&ws.join("out.txt")),
        write_step(&outside),
        Step::text("Wrote both files."),
    ]);
    let agent = s.agent(PermissionMode::Default);
    let (h, argv) = t.launch(&agent, &ws, TASK).await;
    assert_eq!(argv[1..], ["--model", MODEL, "--prompt", TASK.trim()]);

    // Inside the worktree OpenCode writes unasked; outside it asks the human.
    let question = wait_for_question(&t, &agent, &h, &ws, &fake).await;
    assert_eq!(read(&ws.join("out.txt")).as_deref(), Some("made"));
    assert!(
        question.starts_with("Permission required: Access external directory"),
        "{question}"
    );
    assert!(read(&outside).is_none());

    // "Allow once" is selected: Enter answers it, and the turn goes on.
    t.send_keys(&h, &["Enter"]).await;
    wait_for_reply(&t, &agent, &h, &ws, "Wrote both files.", false).await;
    assert_eq!(read(&outside).as_deref(), Some("made"));
    let turns = fake
        .wait_for_turn_requests(3, Duration::from_secs(5))
        .await
        .expect("three turn requests");
    assert!(offers(&turns[0], "write") && offers(&turns[0], "bash"));
    assert_eq!(turns[0]["stream"], true);
    assert_eq!(turns[0]["stream_options"]["include_usage"], true);
    assert!(fake.request_contains("Write out.txt."));
    assert!(tool_outputs(&turns[1])
        .iter()
        .any(|o| o.contains("Wrote file successfully")));

    // Usage as OpenCode recorded it: the fake's counts for the three turns (not the title),
    // priced at the configured rates.
    let r = fake.reported_usage();
    let want_cost =
        ((r.input - r.cached) as f64 * INPUT_PER_MTOK + r.output as f64 * OUTPUT_PER_MTOK) / 1e6;
    let usage = within(30, "OpenCode's recorded usage", || async {
        match agent.usage(&ws).await {
            Ok(Some(u)) if u.output_tokens == r.output => Ok(u),
            other => Err(format!("{other:?}, want {r:?}")),
        }
    })
    .await;
    assert_eq!(
        (usage.input_tokens, usage.cache_tokens),
        (r.input - r.cached, r.cached),
        "{usage:?}"
    );
    let cost = usage.cost_usd.expect("a cost");
    assert!(
        (cost - want_cost).abs() < 1e-9,
        "cost {cost} != {want_cost}"
    );
    assert_eq!(usage.cost_source, Some(flotilla::store::CostSource::Agent));
    let id = agent
        .agent_session_id(&ws)
        .await
        .expect("id")
        .expect("a session");
    assert!(id.starts_with("ses_"), "{id}");
    // Another worktree's sessions are not this one's.
    assert_eq!(
        agent
            .usage(&s.root().join("elsewhere"))
            .await
            .expect("usage"),
        None
    );
}

#[actix_web::test]
async fn real_opencode_auto_edit_asks_before_a_command() {
    let fake = FakeOpenAi::start(Vec::new()).await;
    let Some(s) = Setup::new(&fake) else { return };
    let Some(t) = Tmux::new("opencode") else {
        return;
    };
    let ws = s.worktree("demo-2");
    fake.push(vec![
        write_step(&ws.join("out.txt")),
        bash_step(),
        Step::text("Ran it."),
    ]);
    let agent = s.agent(PermissionMode::AutoEdit);
    let (h, _) = t.launch(&agent, &ws, TASK).await;

    let question = wait_for_question(&t, &agent, &h, &ws, &fake).await;
    assert_eq!(
        read(&ws.join("out.txt")).as_deref(),
        Some("made"),
        "the edit was asked for"
    );
    assert!(
        question.starts_with("Permission required: Shell command: $ printf made > cmd.txt"),
        "{question}"
    );
    assert!(read(&ws.join("cmd.txt")).is_none());

    t.send_keys(&h, &["Enter"]).await;
    wait_for_reply(&t, &agent, &h, &ws, "Ran it.", false).await;
    let turns = fake
        .wait_for_turn_requests(3, Duration::from_secs(5))
        .await
        .expect("three turn requests");
    assert!(
        tool_outputs(&turns[2])
            .iter()
            .any(|o| o.contains("WROTE-42")),
        "{:?}",
        tool_outputs(&turns[2])
    );
}

#[actix_web::test]
async fn real_opencode_suggest_refuses_edits_and_asks_before_a_command() {
    let fake = FakeOpenAi::start(Vec::new()).await;
    let Some(s) = Setup::new(&fake) else { return };
    let Some(t) = Tmux::new("opencode") else {
        return;
    };
    let ws = s.worktree("demo-3");
    fake.push(vec![write_step(&ws.join("out.txt")), bash_step()]);
    let agent = s.agent(PermissionMode::Suggest);
    let (h, argv) = t.launch(&agent, &ws, TASK).await;
    assert_eq!(argv[1..3], ["--agent", "plan"]);

    // The plan agent refuses the edit by rule (the refusal goes back to the model) and asks
    // before the command that would write anyway.
    let question = wait_for_question(&t, &agent, &h, &ws, &fake).await;
    assert!(
        question.starts_with("Permission required: Shell command: $ printf made > cmd.txt"),
        "{question}"
    );
    assert!(read(&ws.join("out.txt")).is_none());
    assert!(read(&ws.join("cmd.txt")).is_none());
    let turns = fake.turn_requests();
    assert!(
        tool_outputs(&turns[1])
            .iter()
            .any(|o| o.contains("prevents you from using this specific tool call")),
        "{:?}",
        tool_outputs(&turns[1])
    );
}

#[actix_web::test]
async fn real_opencode_permissionless_never_asks() {
    let fake = FakeOpenAi::start(Vec::new()).await;
    let Some(s) = Setup::new(&fake) else { return };
    let Some(t) = Tmux::new("opencode") else {
        return;
    };
    let ws = s.worktree("demo-4");
    let outside = s.root().join("outside.txt");
    fake.push(vec![
        write_step(&outside),
        bash_step(),
        Step::text("All done."),
    ]);
    let agent = s.agent(PermissionMode::Permissionless);
    let (h, argv) = t.launch(&agent, &ws, TASK).await;
    assert_eq!(argv[1], "--auto");

    wait_for_reply(&t, &agent, &h, &ws, "All done.", true).await;
    assert_eq!(read(&outside).as_deref(), Some("made"));
    assert_eq!(read(&ws.join("cmd.txt")).as_deref(), Some("made"));
}
