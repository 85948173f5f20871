//! The real aider (PyPI `aider-chat`) doing real work against the scripted model server
//! (`tests/support/fake_openai.rs`, Chat Completions), pointed at it as a user would: `--model
//! openai/<name>` with `OPENAI_API_BASE` / `OPENAI_API_KEY`, and the model's price and context
//! window in `~/.aider.model.metadata.json` (aider's documented file for models it does not
//! know; with it aider prices each answer and looks nothing up on the network). Launched with
//! the argv the aider agent plugin builds, under tmux as the fleet runs it; checks what the
//! plugin reads (questions from the screen, usage from aider's transcript).
//!
//! What aider 0.86.2 sends: `POST /v1/chat/completions` with `"stream": true` and no tools
//! (edits come back as text in its edit format, `whole` for an unknown model: the file name,
//! then the whole file in a fence), then a second request without `stream` for the commit
//! message. It asks for no `stream_options`, so the token counts it prints are its own.
//!
//! Runs the CLI from `FLOTILLA_AIDER_BIN`, `aider` on `PATH` or where `.ci/deps.sh` installs
//! it; under `CI=true` a missing CLI fails the test, elsewhere it is skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla::config::{AgentKind, AgentSettings, PermissionMode};
use flotilla::plugins::activity::Usage;
use flotilla::plugins::agents::AiderAgent;
use flotilla::plugins::{Agent, Runtime};
use flotilla::store::{Activity, CostSource};
use serde_json::Value;
use tempfile::TempDir;

use crate::fake_openai::{FakeOpenAi, Step};
use crate::helpers::{git, make_repo, real_cli, require_tool};
use crate::real_tmux::{within, Tmux};

/// The model as aider names it (litellm's `openai/` prefix: an OpenAI-compatible endpoint).
const MODEL: &str = "openai/fake-model";
/// Its price in `.aider.model.metadata.json`, dollars per token.
const INPUT_PRICE: f64 = 0.000002;
const OUTPUT_PRICE: f64 = 0.00001;
pub(crate) const TASK: &str = "## Task\n\nChange README.md to say goodbye.\n";
pub(crate) const COMMIT_MESSAGE: &str = "Say goodbye in the README";

/// The model's answer in aider's `whole` edit format: the file, then its new content.
pub(crate) fn edit_step() -> Step {
    Step::text("README.md\n```\ngoodbye\n```\n")
}

/// A scratch `HOME` set up as an aider user's, and a repository.
pub(crate) struct Setup {
    dir: TempDir,
    bin: PathBuf,
    home: PathBuf,
    repo: PathBuf,
    api_base: String,
}

impl Setup {
    pub(crate) fn new(fake: &FakeOpenAi) -> Option<Setup> {
        let bin = real_cli("aider", "FLOTILLA_AIDER_BIN")?;
        if !require_tool("git") {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(dir.path()).expect("canonical");
        let home = root.join("home");
        std::fs::create_dir_all(&home).expect("home");
        let metadata = serde_json::json!({ MODEL: {
            "max_input_tokens": 128000, "max_tokens": 16000, "max_output_tokens": 16000,
            "input_cost_per_token": INPUT_PRICE, "output_cost_per_token": OUTPUT_PRICE,
            "litellm_provider": "openai", "mode": "chat"}});
        std::fs::write(
            home.join(".aider.model.metadata.json"),
            metadata.to_string(),
        )
        .expect("metadata");
        std::fs::write(
            home.join(".gitconfig"),
            "[user]\n\tname = aider user\n\temail = aider@localhost\n",
        )
        .expect("gitconfig");
        let repo = make_repo(&root);
        Some(Setup {
            dir,
            bin,
            home,
            repo,
            api_base: fake.url().to_string(),
        })
    }

    /// The aider agent plugin as the fleet configures it, running this CLI.
    fn agent(&self, mode: PermissionMode) -> AiderAgent {
        let mut s = AgentSettings::built_in(AgentKind::Aider);
        s.command = vec![self.bin.to_string_lossy().into_owned()];
        s.permission_mode = mode;
        s.model = Some(MODEL.into());
        let mut env = BTreeMap::new();
        env.insert(
            "PATH".into(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        );
        env.insert("HOME".into(), self.home.to_string_lossy().into_owned());
        env.insert("OPENAI_API_BASE".into(), self.api_base.clone());
        env.insert("OPENAI_API_KEY".into(), "sk-fake-0123456789".into());
        s.env = env;
        AiderAgent::new("aider".into(), s)
    }

    /// A worktree of the repository on its own branch, as the fleet makes one per session.
    fn worktree(&self, name: &str) -> PathBuf {
        let ws = std::fs::canonicalize(self.dir.path())
            .expect("canonical")
            .join(name);
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

/// The message texts of a Chat Completions request, joined.
fn messages_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["content"].as_str().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Aider's edit reached the branch as a commit of its own, with the message the model wrote.
fn assert_committed(ws: &Path) {
    assert_eq!(
        std::fs::read_to_string(ws.join("README.md"))
            .ok()
            .as_deref(),
        Some("goodbye\n")
    );
    let subject = git(ws, &["log", "-1", "--format=%s"]);
    assert_eq!(subject.trim(), COMMIT_MESSAGE);
    let changed = git(ws, &["show", "--name-only", "--format=", "HEAD"]);
    assert_eq!(changed.trim(), "README.md");
    // No .gitignore edit (the question --no-gitignore avoids) left in the worktree.
    let status = git(ws, &["status", "--porcelain", "--untracked-files=no"]);
    assert_eq!(status.trim(), "", "uncommitted changes: {status}");
}

/// Usage read from the transcript: aider's counts, and its price of them at the metadata's
/// rates (aider prints the cost rounded to two significant digits).
fn assert_usage(u: Option<Usage>) {
    let u = u.expect("usage from .aider.chat.history.md");
    assert!(u.input_tokens > 100 && u.output_tokens > 0, "{u:?}");
    let want = u.input_tokens as f64 * INPUT_PRICE + u.output_tokens as f64 * OUTPUT_PRICE;
    let got = u.cost_usd.expect("aider priced the answer");
    assert!((got - want).abs() <= want * 0.05, "cost {got} vs {want}");
    assert_eq!(u.cost_source, Some(CostSource::Agent));
}

/// Checks the two requests aider made: the streamed turn carrying the task, then the commit
/// message.
async fn assert_requests(fake: &FakeOpenAi) {
    let turns = fake
        .wait_for_turn_requests(2, Duration::from_secs(5))
        .await
        .expect("two model requests");
    assert_eq!(turns[0]["model"], "fake-model");
    assert_eq!(turns[0]["stream"], true);
    assert!(turns[0].get("tools").is_none(), "{}", turns[0]);
    let asked = messages_text(&turns[0]);
    assert!(asked.contains("Change README.md to say goodbye."));
    assert!(asked.contains("*file listing*"), "not told how to edit");
    assert_ne!(turns[1]["stream"], true);
    assert!(
        messages_text(&turns[1]).contains("+goodbye"),
        "{}",
        turns[1]
    );
}

#[actix_web::test]
async fn real_aider_permissionless_edits_commits_exits_and_reports_usage() {
    let fake = FakeOpenAi::start(vec![edit_step(), Step::text(COMMIT_MESSAGE)]).await;
    let Some(s) = Setup::new(&fake) else { return };
    let Some(t) = Tmux::new("aider") else { return };
    let ws = s.worktree("demo-1");
    let agent = s.agent(PermissionMode::Permissionless);
    let (h, argv) = t.launch(&agent, &ws, TASK).await;
    assert!(argv.contains(&"--yes-always".to_string()), "{argv:?}");

    // One message, then aider exits by itself.
    let status = tokio::time::timeout(Duration::from_secs(150), t.rt.wait_exit(&h))
        .await
        .unwrap_or_else(|_| panic!("aider still runs after 150 s"))
        .expect("exit");
    let screen = t.screen(&h).await;
    assert_eq!(status, Some(0), "{screen}");
    assert!(!screen.contains(".gitignore (recommended)"), "{screen}");
    assert!(!screen.contains("Open documentation url"), "{screen}");
    assert_committed(&ws);
    assert_requests(&fake).await;
    assert_usage(agent.usage(&ws).await.expect("usage"));
}

#[actix_web::test]
async fn real_aider_default_mode_asks_before_adding_a_file_and_flotilla_sees_it() {
    let fake = FakeOpenAi::start(vec![edit_step(), Step::text(COMMIT_MESSAGE)]).await;
    let Some(s) = Setup::new(&fake) else { return };
    let Some(t) = Tmux::new("aider") else { return };
    let ws = s.worktree("demo-2");
    let agent = s.agent(PermissionMode::Default);
    let (h, _) = t.launch(&agent, &ws, TASK).await;

    // The model edits a file aider was not given: in its default mode aider asks the human.
    let question = within(150, "aider's question, read as waiting_input", || async {
        let probe = t.probe(&h, &ws).await;
        let activity = agent.activity(&probe).await.ok().flatten();
        match (activity, agent.question(&probe).await) {
            (Some(sig), Some(q)) if sig.activity == Activity::WaitingInput => Ok(q),
            (a, q) => Err(format!(
                "{a:?} {q:?}\n{}",
                probe.terminal.unwrap_or_default()
            )),
        }
    })
    .await;
    assert!(question.contains("Add file to the chat?"), "{question}");
    assert_eq!(
        std::fs::read_to_string(ws.join("README.md"))
            .ok()
            .as_deref(),
        Some("hello\n")
    );

    // Answered, aider applies the edit, commits and exits.
    t.send_keys(&h, &["y", "Enter"]).await;
    let status = tokio::time::timeout(Duration::from_secs(60), t.rt.wait_exit(&h))
        .await
        .unwrap_or_else(|_| panic!("aider still runs after the answer"))
        .expect("exit");
    assert_eq!(status, Some(0), "{}", t.screen(&h).await);
    assert_committed(&ws);
    assert_requests(&fake).await;
    assert_usage(agent.usage(&ws).await.expect("usage"));
}

#[actix_web::test]
async fn real_aider_suggest_mode_answers_without_editing() {
    let fake = FakeOpenAi::start(vec![edit_step()]).await;
    let Some(s) = Setup::new(&fake) else { return };
    let Some(t) = Tmux::new("aider") else { return };
    let ws = s.worktree("demo-3");
    let agent = s.agent(PermissionMode::Suggest);
    let (h, _) = t.launch(&agent, &ws, TASK).await;

    // The answer names a file: aider asks to add it even in ask mode. Yes: still no edit.
    let question = within(150, "aider's question", || async {
        let probe = t.probe(&h, &ws).await;
        match agent.activity(&probe).await.ok().flatten() {
            Some(sig) if sig.activity == Activity::WaitingInput => {
                Ok(agent.question(&probe).await.unwrap_or_default())
            }
            _ => Err(probe.terminal.unwrap_or_default()),
        }
    })
    .await;
    assert!(question.contains("Add file to the chat?"), "{question}");
    t.send_keys(&h, &["y", "Enter"]).await;
    let status = tokio::time::timeout(Duration::from_secs(60), t.rt.wait_exit(&h))
        .await
        .unwrap_or_else(|_| panic!("aider still runs after the answer"))
        .expect("exit");
    let screen = t.screen(&h).await;
    assert_eq!(status, Some(0), "{screen}");
    // Ask mode: the model is not told how to edit, and nothing is written or committed.
    let first = &fake.turn_requests()[0];
    assert!(!messages_text(first).contains("*file listing*"), "{first}");
    assert_eq!(
        std::fs::read_to_string(ws.join("README.md"))
            .ok()
            .as_deref(),
        Some("hello\n")
    );
    assert_eq!(git(&ws, &["log", "-1", "--format=%s"]).trim(), "init");
    assert!(agent.usage(&ws).await.expect("usage").is_some());
}

/// The whole fleet with the real aider: the aider plugin passes `--notifications-command
/// '<flotilla> hook aider'`, so aider itself reports the moment it waits for its human (an
/// `agent.reported` `waiting` event from the hook, before anything on the screen is read);
/// the screen then names the question, the session needs input, and an answer lets aider
/// finish.
#[actix_web::test]
async fn real_aider_reports_its_wait_through_the_notifications_command() {
    use crate::real_claude_fleet::wait_session;

    // The edit names a file not in the chat: aider asks to add it, then sends the request
    // again with the file, and the edit applies.
    let Some(f) =
        AiderFleet::start(vec![edit_step(), edit_step(), Step::text(COMMIT_MESSAGE)]).await
    else {
        return;
    };
    let (app, id, waiting) = (&f.app, &f.id, &f.waiting);
    assert!(
        waiting["waiting_for"]
            .as_str()
            .unwrap_or("")
            .contains("Add file to the chat?"),
        "{waiting}"
    );
    let (_, screen) = app
        .get(&format!("/api/v1/sessions/{id}/output?lines=60"))
        .await;
    let screen = screen["output"].as_str().unwrap_or("").to_string();
    let (_, events) = app.get(&format!("/api/v1/sessions/{id}/events")).await;
    let events = events["events"].as_array().cloned().unwrap_or_default();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    let reported = kinds
        .iter()
        .position(|k| *k == "agent.reported")
        .unwrap_or_else(|| {
            panic!("no report from aider's notifications command: {kinds:?}\n{screen}")
        });
    let reported_data = &events[reported]["data"];
    assert_eq!(
        reported_data["event"]["state"], "waiting",
        "{reported_data}"
    );
    let asked = kinds
        .iter()
        .position(|k| *k == "agent.waiting_input")
        .expect("waiting_input");
    assert!(reported < asked, "the report comes first: {kinds:?}");

    // Answered, aider applies the edit, commits and exits 0: the session is done.
    f.answer("y").await;
    let done = wait_session(app, id, 90, "done", |v| v["state"] == "done").await;
    let ws = PathBuf::from(done["workspace"].as_str().expect("workspace"));
    assert_committed(&ws);
}

/// The whole fleet with the real aider under tmux (`permission_mode: default`, the model
/// scripted by `steps`), spawned on a task whose first answer edits a file aider was not
/// given, and waited for until the session needs input.
struct AiderFleet {
    _tmux: crate::fleet_tmux::TmuxGuard,
    app: crate::helpers::TestApp,
    fake: FakeOpenAi,
    _setup: Setup,
    id: String,
    /// The session as it first needed input.
    waiting: Value,
}

/// The `aider` agent's lines under `agents:`, in `mode`, as a user configures it with the
/// scratch `s` (its API base the fake).
pub(crate) fn aider_agent_yaml(s: &Setup, mode: &str) -> String {
    format!(
        "  aider:\n    kind: aider\n    command: [\"{bin}\"]\n    permission_mode: {mode}\n    model: {MODEL}\n    env: {{ HOME: \"{home}\", OPENAI_API_BASE: \"{api}\", OPENAI_API_KEY: sk-fake-0123456789 }}\n",
        bin = s.bin.display(),
        home = s.home.display(),
        api = s.api_base,
    )
}

/// The fleet with the real aider under tmux in `mode`, its model the fake `fake`: the app, its
/// tmux server (killed on drop) and aider's scratch home.
async fn aider_app(
    fake: &FakeOpenAi,
    mode: &str,
) -> Option<(crate::fleet_tmux::TmuxGuard, crate::helpers::TestApp, Setup)> {
    use crate::helpers::{spawn_app_with_env, Backend};

    let s = Setup::new(fake)?;
    if !require_tool("tmux") {
        return None;
    }
    let agents = aider_agent_yaml(&s, mode);
    let cli = env!("CARGO_BIN_EXE_flotilla");
    let app = spawn_app_with_env(
        Backend::Sqlite,
        &agents,
        "    runtime: tmux\n    agent: aider\n",
        tempfile::tempdir().expect("tempdir"),
        &[("FLOTILLA__SERVER__CLI_PATH", cli)],
    )
    .await?;
    let tmux = crate::fleet_tmux::TmuxGuard(flotilla::app::tmux_socket(&app.home));
    Some((tmux, app, s))
}

impl AiderFleet {
    async fn start(steps: Vec<Step>) -> Option<AiderFleet> {
        use crate::real_claude_fleet::wait_session;
        use serde_json::json;

        let fake = FakeOpenAi::start(steps).await;
        let (tmux, app, s) = aider_app(&fake, "default").await?;
        // Aider rings only once a model answer is in: a task naming README.md would be asked
        // about ("Add file to the chat?") before any request, which only the screen shows.
        let task = "## Task\n\nChange the readme to say goodbye.\n";
        let id = app.spawn(json!({"project": "demo", "prompt": task})).await;
        // The model edits a file aider was not given: aider reports its wait, then asks.
        let waiting = wait_session(&app, &id, 150, "needs_input", |v| {
            v["state"] == "needs_input"
        })
        .await;
        Some(AiderFleet {
            _tmux: tmux,
            app,
            fake,
            _setup: s,
            id,
            waiting,
        })
    }

    /// Answers the question as a human does: `send` while the session needs input.
    async fn answer(&self, text: &str) {
        let (code, v) = self
            .app
            .post(
                &format!("/api/v1/sessions/{}/send", self.id),
                serde_json::json!({"message": text}),
            )
            .await;
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["delivered"], true, "{v}");
    }

    async fn screen(&self) -> String {
        let (_, v) = self
            .app
            .get(&format!("/api/v1/sessions/{}/output?lines=30", self.id))
            .await;
        v["output"].as_str().unwrap_or("").to_string()
    }

    async fn event_kinds(&self) -> Vec<String> {
        let (_, v) = self
            .app
            .get(&format!("/api/v1/sessions/{}/events", self.id))
            .await;
        v["events"]
            .as_array()
            .map(|es| {
                es.iter()
                    .filter_map(|e| e["kind"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The answered question left on screen is not asked again: after `send` answers aider's
/// "Add file to the chat?", aider echoes the answer after the prompt (`… [Yes]: y`) and
/// sends the model its request again; while the model takes its time (here it never
/// answers) aider prints nothing more, so that line stays at the bottom of the screen. The
/// session went back to work on the answer and must not read that line as a new question,
/// nor notify the human again.
#[actix_web::test]
async fn real_aider_answered_question_left_on_screen_is_not_asked_again() {
    use crate::real_claude_fleet::session;

    let Some(f) = AiderFleet::start(vec![edit_step(), Step::Hang]).await else {
        return;
    };
    let asked = f.waiting["waiting_for"].as_str().unwrap_or("").to_string();
    assert!(asked.contains("Add file to the chat?"), "{}", f.waiting);
    f.answer("y").await;
    // Aider took the answer: it asks the model again, with the file.
    f.fake
        .wait_for_turn_requests(2, Duration::from_secs(60))
        .await
        .expect("the request aider sends after the answer");
    within(
        30,
        "the answered prompt at the bottom of the screen",
        || async {
            let screen = f.screen().await;
            let last = screen.lines().rev().find(|l| !l.trim().is_empty());
            match last {
                Some(l) if l.contains("Add file to the chat?") && l.trim_end().ends_with(": y") => {
                    Ok(())
                }
                _ => Err(screen),
            }
        },
    )
    .await;
    // The screen stays so (the model never answers); the session reads it (on the output
    // that ended with it, after the 500 ms debounce) and is never waiting again meanwhile.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        let s = session(&f.app, &f.id).await;
        assert_ne!(
            s["state"],
            "needs_input",
            "the answered question was asked again: {s}\n{}",
            f.screen().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let kinds = f.event_kinds().await;
    let answered = kinds
        .iter()
        .position(|k| k == "agent.input_answered")
        .unwrap_or_else(|| panic!("no answer recorded: {kinds:?}"));
    assert!(
        !kinds[answered..].iter().any(|k| k == "agent.waiting_input"),
        "waiting again after the answer: {kinds:?}\n{}",
        f.screen().await
    );
}

/// An aider whose tmux session died while it asked something (a reboot, a killed server) is
/// restored with its chat history (`--restore-chat-history`, no message: interactive), and the
/// next message reaches the model with the earlier exchange in its conversation.
#[actix_web::test]
async fn real_aider_restored_after_its_terminal_died_resumes_its_chat() {
    use crate::real_claude_fleet::wait_session;

    let Some(f) = AiderFleet::start(vec![edit_step(), Step::text("I changed README.md.")]).await
    else {
        return;
    };
    let socket = flotilla::app::tmux_socket(&f.app.home);
    let (killed, _) = crate::fleet_tmux::tmux(&socket, &["kill-session", "-t", &f.id]);
    assert!(killed, "tmux kill-session");
    wait_session(&f.app, &f.id, 60, "the agent exited", |s| {
        s["activity"] == "exited"
    })
    .await;

    let (code, v) = f
        .app
        .post(
            &format!("/api/v1/sessions/{}/restore", f.id),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let panes = within(60, "aider restored in tmux", || async {
        let (ok, out) = crate::fleet_tmux::tmux(
            &socket,
            &["list-panes", "-t", &f.id, "-F", "#{pane_start_command}"],
        );
        if ok && out.contains("--restore-chat-history") {
            Ok(out)
        } else {
            Err(out)
        }
    })
    .await;
    assert!(!panes.contains("--message-file"), "{panes}");
    wait_session(&f.app, &f.id, 90, "aider waiting for a message", |s| {
        s["activity"] != "exited" && s["state"] != "needs_input"
    })
    .await;
    within(90, "aider's prompt", || async {
        let screen = f.screen().await;
        let last = screen.lines().rev().find(|l| !l.trim().is_empty());
        match last {
            Some(l) if l.trim_end().ends_with('>') => Ok(()),
            _ => Err(screen),
        }
    })
    .await;

    let (code, v) = f
        .app
        .post(
            &format!("/api/v1/sessions/{}/send", f.id),
            serde_json::json!({"message": "What did you change?"}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["delivered"], true, "{v}");
    let turns = f
        .fake
        .wait_for_turn_requests(2, Duration::from_secs(90))
        .await
        .expect("the restored chat's request");
    // Aider's restored chat: the task, and the model's earlier answer as its own turn.
    let messages = turns[1]["messages"].as_array().cloned().unwrap_or_default();
    let said = |role: &str, text: &str| {
        messages
            .iter()
            .any(|m| m["role"] == role && m["content"].as_str().is_some_and(|c| c.contains(text)))
    };
    assert!(
        said("user", "Change the readme to say goodbye.")
            && said("assistant", "README.md\n```\ngoodbye\n```")
            && said("user", "What did you change?"),
        "the restored chat carries the earlier exchange: {:#}",
        turns[1]["messages"]
    );
}

/// Aider gives up on its message when the model API refuses it (a 401) and exits 0 all the
/// same: the session ends `errored`, naming the error, not `done` (the task was not done).
#[actix_web::test]
async fn real_aider_that_exits_0_after_the_model_api_refused_it_is_not_done() {
    use crate::real_claude_fleet::wait_session;

    let fake = FakeOpenAi::start(Vec::new()).await;
    fake.set_default(Step::error(401));
    let Some((_tmux, app, _setup)) = aider_app(&fake, "permissionless").await else {
        return;
    };
    let id = app
        .spawn(serde_json::json!({"project": "demo", "prompt": TASK}))
        .await;
    let ended = wait_session(&app, &id, 120, "the session's end", |s| {
        s["state"] != "working" && s["state"] != "spawning"
    })
    .await;
    assert_eq!(ended["state"], "errored", "{ended}");
    let reason = ended["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("agent_failed: litellm.AuthenticationError")
            && reason.contains("Incorrect API key provided."),
        "{ended}"
    );
    assert_eq!(ended["activity"], "exited", "{ended}");
}
