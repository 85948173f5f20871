//! The real Codex CLI doing real work against the scripted model server
//! (`tests/support/fake_openai.rs`), pointed at it as a user would: `$CODEX_HOME/config.toml`
//! with a `fake` model provider speaking the Responses API. Checks what the codex agent plugin
//! builds (launch argv, no trust dialog) and reads (the 0.169 rollout: activity, usage, cost).
//!
//! Runs the CLI from `FLOTILLA_CODEX_BIN`, `codex` on `PATH` or where `.ci/deps.sh` installs
//! it; under `CI=true` a missing CLI fails the test, elsewhere it is skipped.
//! Temp directories live under the target dir: Codex's sandbox helper breaks when `HOME` or
//! `CODEX_HOME` is under `/tmp` (every command fails with `bwrap: execvp codex-linux-sandbox`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flotilla::config::{AgentKind, AgentSettings, PermissionMode};
use flotilla::plugins::activity::terminal_question;
use flotilla::plugins::activity::{read_tail, ActivityProbe, ActivitySource, Reading, TAIL_BYTES};
use flotilla::plugins::agents::codex::{self, CodexAgent};
use flotilla::plugins::tmux::TmuxRuntime;
use flotilla::plugins::{Agent, AgentContext, LaunchSpec, Runtime, RuntimeHandle};
use flotilla::store::Activity;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::fake_openai::{tool_outputs, FakeOpenAi, Step};
use crate::helpers::{git, make_repo, real_cli, require_tool};

pub(crate) const MODEL: &str = "gpt-5-codex";
/// The real `codex` (see [`real_cli`]).
fn codex_bin() -> Option<PathBuf> {
    real_cli("codex", "FLOTILLA_CODEX_BIN")
}

/// A scratch directory with a `CODEX_HOME` configured for the fake, and a repository.
pub(crate) struct Setup {
    dir: TempDir,
    pub(crate) bin: PathBuf,
    pub(crate) codex_home: PathBuf,
    pub(crate) home: PathBuf,
    repo: PathBuf,
}

impl Setup {
    pub(crate) fn new(fake: &FakeOpenAi) -> Option<Setup> {
        let bin = codex_bin()?;
        if !require_tool("git") {
            return None;
        }
        // Not under /tmp (see the module doc): the target dir's scratch space.
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(&base).expect("target tmp");
        let dir = tempfile::Builder::new()
            .prefix("real-codex-")
            .tempdir_in(&base)
            .expect("tempdir");
        let root = std::fs::canonicalize(dir.path()).expect("canonical");
        let codex_home = root.join("codex-home");
        let home = root.join("home");
        std::fs::create_dir_all(&codex_home).expect("codex home");
        std::fs::create_dir_all(&home).expect("home");
        std::fs::write(
            codex_home.join("config.toml"),
            format!(
                r#"model = "{MODEL}"
model_provider = "fake"
check_for_update_on_startup = false

[model_providers.fake]
name = "fake"
base_url = "{}"
env_key = "FAKE_KEY"
wire_api = "responses"
"#,
                fake.url()
            ),
        )
        .expect("config.toml");
        let repo = make_repo(&root);
        Some(Setup {
            dir,
            bin,
            codex_home,
            home,
            repo,
        })
    }

    pub(crate) fn root(&self) -> PathBuf {
        std::fs::canonicalize(self.dir.path()).expect("canonical")
    }

    /// The environment Codex runs with: nothing of this process but `PATH` (node).
    fn env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        env.insert(
            "PATH".into(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        );
        env.insert("HOME".into(), self.home.to_string_lossy().into_owned());
        env.insert(
            "CODEX_HOME".into(),
            self.codex_home.to_string_lossy().into_owned(),
        );
        env.insert("FAKE_KEY".into(), "sk-fake-0123456789".into());
        env
    }

    /// The codex agent plugin as the fleet configures it, running this CLI.
    fn agent(&self, mode: PermissionMode) -> CodexAgent {
        let mut s = AgentSettings::built_in(AgentKind::Codex);
        s.command = vec![self.bin.to_string_lossy().into_owned()];
        s.permission_mode = mode;
        s.model = Some(MODEL.into());
        s.env = self.env();
        CodexAgent::new("codex".into(), s)
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

    fn sessions(&self) -> PathBuf {
        self.codex_home.join("sessions")
    }
}

/// Polls `f` every 100 ms until it returns `Some`, failing with `what` (and the last `status`
/// it reported) after `secs`.
async fn within<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let last = match f().await {
            Ok(v) => return v,
            Err(status) => status,
        };
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {secs}s waiting for {what}; last state:\n{last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A tmux runtime on a private server, killed on drop.
struct Tmux {
    rt: Arc<TmuxRuntime>,
    _logs: TempDir,
}

impl Tmux {
    fn new() -> Option<Tmux> {
        if !require_tool("tmux") {
            return None;
        }
        let logs = tempfile::tempdir().expect("tempdir");
        let socket = format!("flotilla-codex-{}", uuid::Uuid::new_v4().simple());
        let rt = Arc::new(TmuxRuntime::new(socket, logs.path().join("logs")));
        Some(Tmux { rt, _logs: logs })
    }

    /// Launches the agent in `ws` with the argv and environment its plugin builds.
    async fn launch(&self, agent: &CodexAgent, ws: &Path, prompt: &str) -> RuntimeHandle {
        let prompt_file = ws.with_extension("prompt.md");
        std::fs::write(&prompt_file, prompt).expect("prompt");
        let ctx = AgentContext {
            permission_mode: None,
            flotilla_cli: None,
            session_id: "codex-1".into(),
            workspace: ws.to_path_buf(),
            prompt_file,
            resume: false,
            agent_session_id: None,
            message: None,
        };
        let (argv, env) = agent.launch(&ctx).expect("launch");
        assert!(
            argv.iter().any(|a| a.starts_with("projects={")),
            "no trust override in {argv:?}"
        );
        self.rt
            .create(&LaunchSpec {
                session_id: "codex-1".into(),
                cwd: ws.to_path_buf(),
                argv,
                env,
            })
            .await
            .expect("tmux create")
    }

    async fn screen(&self, h: &RuntimeHandle) -> String {
        self.rt.output(h, 60).await.unwrap_or_default()
    }

    async fn probe(&self, h: &RuntimeHandle, ws: &Path) -> ActivityProbe {
        ActivityProbe {
            workspace: ws.to_path_buf(),
            terminal: Some(self.screen(h).await),
            last_output_at: self.rt.last_output_at(h).await.ok().flatten(),
            now: chrono::Utc::now(),
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", self.rt.socket(), "kill-server"])
            .output();
    }
}

/// The plugin's reading of the rollout's tail, without the freshness rules.
async fn reading(s: &Setup, ws: &Path) -> Option<Reading> {
    let (path, _) = codex::find_rollout(&s.sessions(), ws)?;
    let (text, mtime) = read_tail(&path, TAIL_BYTES).await.ok()??;
    codex::classify(&text, mtime)
}

/// What Codex's log should say the fake reported, and what that costs at list price.
fn expected_usage(fake: &FakeOpenAi) -> flotilla::plugins::activity::Usage {
    let r = fake.reported_usage();
    let p = flotilla::pricing::builtin::price(MODEL).expect("priced");
    let (i, c, o) = (p.input, p.cache_read, p.output);
    flotilla::plugins::activity::Usage {
        input_tokens: r.input - r.cached,
        output_tokens: r.output,
        cache_tokens: r.cached,
        cost_usd: Some(
            ((r.input - r.cached) as f64 * i + r.cached as f64 * c + r.output as f64 * o) / 1e6,
        ),
        cost_source: Some(flotilla::store::CostSource::PriceTable),
        unpriced_models: Vec::new(),
    }
}

fn assert_usage(
    got: Option<flotilla::plugins::activity::Usage>,
    want: &flotilla::plugins::activity::Usage,
) {
    let got = got.expect("usage from the rollout");
    assert_eq!(
        (got.input_tokens, got.cache_tokens, got.output_tokens),
        (want.input_tokens, want.cache_tokens, want.output_tokens),
        "{got:?}"
    );
    let (g, w) = (
        got.cost_usd.expect("a cost"),
        want.cost_usd.expect("a cost"),
    );
    assert!((g - w).abs() < 1e-9, "cost {g} != {w}");
}

/// The command the scripted model runs: it writes a file and prints something only a shell
/// computes, so the output sent back proves the command ran.
fn write_step() -> Step {
    Step::tool(
        "exec_command",
        json!({"cmd": "printf made > out.txt && echo WROTE-$((20+22))"}),
    )
}

fn offers_exec_command(body: &Value) -> bool {
    body["tools"].as_array().is_some_and(|tools| {
        tools.iter().any(|t| {
            t["type"] == "function"
                && t["name"] == "exec_command"
                && t["parameters"]["properties"]["cmd"]["type"] == "string"
        })
    })
}

#[actix_web::test]
async fn real_codex_exec_runs_the_scripted_command_and_sends_its_output_back() {
    let fake = FakeOpenAi::start(vec![write_step(), Step::text("Wrote out.txt.")]).await;
    let Some(s) = Setup::new(&fake) else { return };
    let ws = s.repo.clone();
    let mut cmd = tokio::process::Command::new(&s.bin);
    cmd.args([
        "exec",
        "--sandbox",
        "workspace-write",
        "-c",
        "check_for_update_on_startup=false",
        "Write out.txt.",
    ])
    .current_dir(&ws)
    .env_clear()
    .envs(s.env())
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("codex exec finished within 120 s")
        .expect("codex exec runs");
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "codex exec failed:\n{log}");
    assert_eq!(
        std::fs::read_to_string(ws.join("out.txt")).ok().as_deref(),
        Some("made"),
        "{log}"
    );
    let turns = fake
        .wait_for_turn_requests(2, Duration::from_secs(5))
        .await
        .expect("two model requests");
    assert_eq!(turns.len(), 2, "{log}");
    assert!(offers_exec_command(&turns[0]), "{}", turns[0]["tools"]);
    assert_eq!(turns[0]["stream"], true);
    let outputs = tool_outputs(&turns[1]);
    assert!(
        outputs.iter().any(|o| o.contains("WROTE-42")),
        "the second request does not carry the command's output: {outputs:?}"
    );
    assert!(fake.request_contains("Write out.txt."));

    // The plugin reads exec's rollout too: a finished turn and the fake's counts, priced.
    let agent = s.agent(PermissionMode::AutoEdit);
    assert!(matches!(reading(&s, &ws).await, Some(Reading::Finished(_))));
    assert_usage(
        agent.usage(&ws).await.expect("usage"),
        &expected_usage(&fake),
    );
}

#[actix_web::test]
async fn real_codex_tui_in_a_fresh_worktree_works_without_a_trust_dialog() {
    let fake = FakeOpenAi::start(vec![write_step(), Step::text("Wrote out.txt.")]).await;
    let Some(s) = Setup::new(&fake) else { return };
    let Some(t) = Tmux::new() else { return };
    let ws = s.worktree("demo-1");
    let agent = s.agent(PermissionMode::AutoEdit);
    let h = t.launch(&agent, &ws, "## Task\n\nWrite out.txt.\n").await;

    within(90, "codex to write out.txt", || async {
        let screen = t.screen(&h).await;
        assert!(
            !screen.contains("Trust this folder"),
            "the trust dialog showed:\n{screen}"
        );
        match std::fs::read_to_string(ws.join("out.txt")) {
            Ok(text) if text == "made" => Ok(()),
            _ => Err(screen),
        }
    })
    .await;
    let turns = fake
        .wait_for_turn_requests(2, Duration::from_secs(30))
        .await
        .expect("two turn requests");
    assert!(tool_outputs(&turns[1])
        .iter()
        .any(|o| o.contains("WROTE-42")));

    // The turn ends; the plugin reads it from the rollout, not from the screen.
    let sig = within(60, "the finished turn in the rollout", || async {
        let probe = t.probe(&h, &ws).await;
        match agent.activity(&probe).await {
            Ok(Some(sig))
                if sig.activity == Activity::Idle && sig.source == ActivitySource::Native =>
            {
                Ok(sig)
            }
            other => Err(format!("{other:?}\n{}", probe.terminal.unwrap_or_default())),
        }
    })
    .await;
    assert!(matches!(reading(&s, &ws).await, Some(Reading::Finished(at)) if at == sig.at));
    assert_usage(
        agent.usage(&ws).await.expect("usage"),
        &expected_usage(&fake),
    );
    assert!(agent
        .agent_session_id(&ws)
        .await
        .expect("id")
        .is_some_and(|id| !id.is_empty()));
    // The TUI's title request is a side request the log does not count.
    assert!(
        t.screen(&h).await.contains("Wrote out.txt."),
        "{}",
        t.screen(&h).await
    );
}

#[actix_web::test]
async fn real_codex_tui_approval_prompt_is_waiting_input_from_the_screen() {
    // Read-only sandbox asking on request: the model asks to escalate, Codex asks the human.
    let fake = FakeOpenAi::start(vec![
        Step::tool(
            "exec_command",
            json!({"cmd": "printf made > out.txt", "sandbox_permissions": "require_escalated",
                "justification": "Write out.txt?"}),
        ),
        Step::text("Wrote out.txt."),
    ])
    .await;
    let Some(s) = Setup::new(&fake) else { return };
    let Some(t) = Tmux::new() else { return };
    let ws = s.worktree("demo-2");
    let agent = s.agent(PermissionMode::Suggest);
    let h = t.launch(&agent, &ws, "## Task\n\nWrite out.txt.\n").await;

    // Codex draws the dialog in more than one frame (its footer last): a capture can catch
    // the question above the composer's old footer. Wait for the whole dialog.
    let screen = within(90, "the approval prompt", || async {
        let screen = t.screen(&h).await;
        if screen.contains("Would you like to run the following command?")
            && screen.contains("Press enter to confirm or esc to cancel")
        {
            Ok(screen)
        } else {
            Err(screen)
        }
    })
    .await;
    // 0.169 logs no approval request: the log shows a pending call (work), the screen the
    // question, and the question wins.
    assert!(matches!(reading(&s, &ws).await, Some(Reading::Working(_))));
    let probe = t.probe(&h, &ws).await;
    let sig = agent
        .activity(&probe)
        .await
        .expect("activity")
        .expect("signal");
    assert_eq!(sig.activity, Activity::WaitingInput, "{screen}");

    // Approve once: the question leaves the screen and the agent no longer reads as waiting.
    // Whether the escalated command then finishes is Codex's business, and 0.169's escalation
    // path sometimes never returns (seen twice in CI: "Running printf ..." for over a minute;
    // upstream reports the same), so the test stops at what Flotilla reads. In that hang
    // Codex's own log ends on a new `exec_approval_request` the screen never shows: reading
    // that as waiting is the agent's own signal, not the answered question.
    //
    // The answer goes through Flotilla's own answer path (`Runtime::answer`, what `send` does
    // while a session needs input), not one raw keystroke: Codex 0.169 sometimes drops a key
    // typed just as its dialog appears (the dialog stays, nothing is redrawn), and the answer
    // path types it again while the same question stays on screen.
    let approved =
        t.rt.answer(&h, "y", terminal_question)
            .await
            .expect("answer");
    assert!(approved, "the question stayed after the answer was typed");
    within(60, "the answered question to leave the screen", || async {
        let screen = t.screen(&h).await;
        let probe = t.probe(&h, &ws).await;
        let activity = agent
            .activity(&probe)
            .await
            .ok()
            .flatten()
            .map(|s| s.activity);
        let read = reading(&s, &ws).await;
        let asked_again = matches!(read, Some(Reading::Waiting(_)));
        if !screen.contains("Would you like to run the following command?")
            && (activity.is_some_and(|a| a != Activity::WaitingInput) || asked_again)
        {
            Ok(())
        } else {
            Err(format!(
                "{activity:?} (rollout: {read:?})\nscreen:\n{screen}\nprobe's screen:\n{}",
                probe.terminal.unwrap_or_default()
            ))
        }
    })
    .await;
}

#[actix_web::test]
async fn real_codex_tui_model_errors_end_the_turn_as_failed() {
    let fake = FakeOpenAi::start(Vec::new()).await;
    fake.set_default(Step::error(500));
    let Some(s) = Setup::new(&fake) else { return };
    let Some(t) = Tmux::new() else { return };
    let ws = s.worktree("demo-3");
    let agent = s.agent(PermissionMode::AutoEdit);
    let h = t.launch(&agent, &ws, "## Task\n\nWrite out.txt.\n").await;

    // Codex retries (about 30 requests over 25 s in 0.169), then gives up on the turn.
    let sig = within(120, "the failed turn in the rollout", || async {
        let probe = t.probe(&h, &ws).await;
        let r = reading(&s, &ws).await;
        // A rollout with only its `session_meta` (the turn not logged yet) reads as finished
        // too: only a turn's own end is one.
        let (path, _) = codex::find_rollout(&s.sessions(), &ws).unwrap_or_default();
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let turn_ended = text.contains("\"task_complete\"") || text.contains("\"turn_aborted\"");
        match (r, agent.activity(&probe).await) {
            (Some(Reading::ApiFailed(..)), Ok(Some(sig))) => Ok(sig),
            (Some(Reading::Finished(_)), _) if turn_ended => {
                panic!("a model error read as a finished turn:\n{text}")
            }
            (r, a) => Err(format!(
                "{r:?} {a:?}\n{}",
                probe.terminal.unwrap_or_default()
            )),
        }
    })
    .await;
    // Given up: a human decides whether to try again (as for Claude).
    assert_eq!(sig.activity, Activity::WaitingInput);
    assert_eq!(sig.source, ActivitySource::Native);
    assert!(
        sig.api_failure
            .as_ref()
            .is_some_and(|f| f.question().starts_with("the model API failed (")),
        "{sig:?}"
    );
    let turns = fake.turn_requests();
    assert!(turns.len() > 1, "no retries: {} requests", turns.len());
    assert!(!ws.join("out.txt").exists());
    // No answer, no usage.
    assert_eq!(agent.usage(&ws).await.expect("usage"), None);
}
