//! The whole fleet with one real agent CLI under tmux, as the `real_*_fleet` tests drive it:
//! an app whose only agent is the one configured, a webhook notifier that catches its pages,
//! and the HTTP calls a human makes (spawn, send, read the screen).

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::fake_openai::FakeOpenAi;
use crate::fleet_tmux::TmuxGuard;
use crate::helpers::{eventually, require_tool, spawn_app_with_env, Backend, TestApp};
use crate::real_claude_fleet::{notifications_with, project_yaml, wait_session};
use crate::receivers::Receivers;

/// An [`AgentFleet`] whose agent talks to the scripted OpenAI-style model `model`, with the
/// agent's scratch set-up (`S`: its home, kept for the test's length).
pub(crate) struct ModelFleet<S> {
    pub(crate) fleet: AgentFleet,
    pub(crate) model: FakeOpenAi,
    pub(crate) setup: S,
}

impl<S> std::ops::Deref for ModelFleet<S> {
    type Target = AgentFleet;
    fn deref(&self) -> &AgentFleet {
        &self.fleet
    }
}

/// The app, its pages, and its private tmux server (killed on drop).
pub(crate) struct AgentFleet {
    _tmux: TmuxGuard,
    pub(crate) app: TestApp,
    pub(crate) hooks: Receivers,
}

impl AgentFleet {
    /// An app in `dir` with the agents of `agents` (YAML under `agents:`), projects running
    /// `agent` under tmux, every page to a webhook, and hooks through the `flotilla` binary.
    pub(crate) async fn start(agents: &str, agent: &str, dir: TempDir) -> Option<AgentFleet> {
        Self::start_with(agents, agent, dir, "", &[]).await
    }

    /// As [`AgentFleet::start`], with more lines for the project (`project`, indented as its
    /// keys) and more environment for the app (`env`).
    pub(crate) async fn start_with(
        agents: &str,
        agent: &str,
        dir: TempDir,
        project: &str,
        env: &[(&str, &str)],
    ) -> Option<AgentFleet> {
        if !require_tool("tmux") || !require_tool("git") {
            return None;
        }
        let hooks = Receivers::start().await;
        let project = project_yaml(&hooks, agent, project, "");
        let cli = env!("CARGO_BIN_EXE_flotilla");
        let mut env = env.to_vec();
        env.push(("FLOTILLA__SERVER__CLI_PATH", cli));
        let app = spawn_app_with_env(Backend::Sqlite, agents, &project, dir, &env).await?;
        let tmux = TmuxGuard(flotilla::app::tmux_socket(&app.home));
        Some(AgentFleet {
            app,
            hooks,
            _tmux: tmux,
        })
    }

    /// Spawns `task` and waits until the session needs input; its id and the session.
    pub(crate) async fn spawn_until_asked(&self, task: &str) -> (String, Value) {
        let id = self
            .app
            .spawn(json!({"project": "demo", "prompt": task}))
            .await;
        let waiting = wait_session(&self.app, &id, 150, "needs_input", |s| {
            s["state"] == "needs_input" && s["waiting_for"].is_string()
        })
        .await;
        (id, waiting)
    }

    /// Waits until the session needs input again, asking something else than `before`.
    pub(crate) async fn asked_again(&self, id: &str, before: &str) -> String {
        let s = wait_session(&self.app, id, 60, "the next question", |s| {
            s["state"] == "needs_input" && s["waiting_for"].as_str().is_some_and(|q| q != before)
        })
        .await;
        s["waiting_for"].as_str().unwrap_or_default().to_string()
    }

    /// `send` as a human does; the API's answer.
    pub(crate) async fn send(&self, id: &str, text: &str) -> Value {
        let (code, v) = self
            .app
            .post(
                &format!("/api/v1/sessions/{id}/send"),
                json!({ "message": text }),
            )
            .await;
        assert_eq!(code, 200, "{v}");
        v
    }

    /// The session's screen (its last 60 rows).
    pub(crate) async fn screen(&self, id: &str) -> String {
        let (_, v) = self
            .app
            .get(&format!("/api/v1/sessions/{id}/output?lines=60"))
            .await;
        v["output"].as_str().unwrap_or("").to_string()
    }

    /// Waits until the screen holds `needle`; the screen.
    pub(crate) async fn screen_with(&self, id: &str, secs: u64, needle: &str) -> String {
        eventually(secs, needle, || {
            let screen = self.screen(id);
            async move {
                let screen = screen.await;
                screen.contains(needle).then_some(screen)
            }
        })
        .await
    }

    /// The agent's tmux session killed (as on a reboot), seen as exited, then restored through
    /// the API; the command its pane was started with again, once it holds `relaunched`.
    pub(crate) async fn kill_terminal_and_restore(&self, id: &str, relaunched: &str) -> String {
        let socket = flotilla::app::tmux_socket(&self.app.home);
        let (killed, _) = crate::fleet_tmux::tmux(&socket, &["kill-session", "-t", id]);
        assert!(killed, "tmux kill-session");
        wait_session(&self.app, id, 60, "the agent exited", |s| {
            s["activity"] == "exited"
        })
        .await;
        let (code, v) = self
            .app
            .post(&format!("/api/v1/sessions/{id}/restore"), json!({}))
            .await;
        assert_eq!(code, 200, "{v}");
        eventually(60, "the agent relaunched in tmux", || {
            let (ok, out) = crate::fleet_tmux::tmux(
                &socket,
                &["list-panes", "-t", id, "-F", "#{pane_start_command}"],
            );
            async move { (ok && out.contains(relaunched)).then_some(out) }
        })
        .await
    }

    /// After [`AgentFleet::kill_terminal_and_restore`] of an agent told "Remember the number
    /// 4217." (answered "Noted: the number is 4217."): it shows its conversation again, in the
    /// same worktree as `before`, and the next message's request to `model` carries it.
    pub(crate) async fn resumes_the_number(&self, id: &str, before: &Value, model: &FakeOpenAi) {
        self.screen_with(id, 60, "Noted: the number is 4217.").await;
        let back = wait_session(&self.app, id, 60, "the agent back", |s| {
            s["activity"] != "exited"
        })
        .await;
        assert_eq!(back["workspace"], before["workspace"], "{back}");
        let sent = self.send(id, "Which number was it?").await;
        assert_eq!(sent["delivered"], true, "{sent}");
        let turns = model
            .wait_for_turn_requests(2, std::time::Duration::from_secs(90))
            .await
            .expect("the resumed turn");
        let history = turns[1].to_string();
        assert!(
            history.contains("Remember the number 4217.")
                && history.contains("Noted: the number is 4217.")
                && history.contains("Which number was it?"),
            "the resumed turn carries the conversation: {history}"
        );
        self.screen_with(id, 60, "It was 4217.").await;
    }

    /// Two calls of one answer (parallel tool calls), each asked on its own: the session waits
    /// on the first (`waiting`), `send y` allows it, it then waits on the other, and `send y`
    /// allows that one. Each question names one of `files` (`names(question, file)`), not the
    /// same one; both files are written, the turn ends idle, and each call was paged once,
    /// by a page naming its file.
    pub(crate) async fn allow_two_parallel_calls(
        &self,
        id: &str,
        waiting: &Value,
        files: [&str; 2],
        names: impl Fn(&str, &str) -> bool,
    ) {
        let ws = std::path::PathBuf::from(waiting["workspace"].as_str().expect("workspace"));
        let file = |q: &str| {
            files
                .into_iter()
                .find(|file| names(q, file))
                .unwrap_or_else(|| panic!("names one of {files:?}: {q}"))
        };
        let mut asked = vec![waiting["waiting_for"]
            .as_str()
            .expect("question")
            .to_string()];
        let sent = self.send(id, "y").await;
        assert_eq!(sent["delivered"], true, "{sent}");
        asked.push(self.asked_again(id, &asked[0]).await);
        let sent = self.send(id, "y").await;
        assert_eq!(sent["delivered"], true, "{sent}");
        let named: Vec<&str> = asked.iter().map(|q| file(q)).collect();
        assert!(named[0] != named[1], "each call asked once: {asked:#?}");
        for file in files {
            eventually(60, file, || {
                let path = ws.join(file);
                async move { path.exists().then_some(()) }
            })
            .await;
        }
        wait_session(&self.app, id, 60, "the turn ends", |s| {
            s["state"] == "working" && s["activity"] == "idle"
        })
        .await;
        let pages = self.pages();
        assert_eq!(pages.len(), 2, "one page a dialog: {pages:#?}");
        for file in files {
            let naming = pages
                .iter()
                .filter(|p| p["message"].as_str().is_some_and(|m| m.contains(file)))
                .count();
            assert_eq!(naming, 1, "{file}: {pages:#?}");
        }
    }

    /// The pages saying the agent waits for input.
    pub(crate) fn pages(&self) -> Vec<Value> {
        notifications_with(&self.hooks, "waiting for input")
    }

    /// Waits for the first page.
    pub(crate) async fn first_page(&self) -> Value {
        eventually(30, "the page", || {
            let pages = self.pages();
            async move { pages.into_iter().next() }
        })
        .await
    }
}

/// Where the pane's log of session `id` stands now: the mark a delivery stores with itself
/// just before it types.
pub(crate) fn log_mark(app: &TestApp, id: &str) -> u64 {
    let log = app.home.join("tmux").join(format!("{id}.log"));
    std::fs::metadata(&log).expect("the pane's log").len()
}

/// The store as a crash just after the agent took the message `body` of session `id`, and
/// before its delivery was recorded, leaves it: the instruction typing, from `mark`. Returns
/// the instruction's id.
pub(crate) async fn crashed_while_typing(app: &TestApp, id: &str, body: &str, mark: u64) -> i64 {
    let session = flotilla::store::SessionId(id.to_string());
    let mut found = None;
    for n in 1..100 {
        match app.store.load_instruction(n).await {
            Ok(i) if i.session_id == session && i.body == body => {
                found = Some(i);
                break;
            }
            _ => {}
        }
    }
    let ins = found.expect("the message's instruction");
    app.store
        .set_instruction_state(
            ins.id,
            flotilla::store::InstructionState::Typing,
            Some(i64::try_from(mark).expect("mark")),
            chrono::Utc::now(),
        )
        .await
        .expect("typing");
    ins.id
}
