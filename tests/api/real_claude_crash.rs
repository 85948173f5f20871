//! `kill -9` of the real `flotilla` server around the real Claude Code's permission prompts:
//! the agent outlives the server (its tmux server is its own), so a question it asked before
//! the crash still waits after it, and one it asks while the server is down (its hook cannot
//! report it) is found once the server is back. Either way the session is `needs_input`
//! naming the command, the human is paged once, and the answer sent after the restart is
//! typed to the dialog.

use serde_json::{json, Value};

use crate::crash::{get, post};
use crate::fake_anthropic::{FakeAnthropic, Step};
use crate::fleet_tmux::TmuxGuard;
use crate::helpers::{eventually, require_tool};
use crate::real_claude_fleet::{
    claude_agent_yaml, claude_bin, notifications_with, onboarded_home, project_yaml, KEY,
};
use crate::receivers::Receivers;
use crate::server::{Scratch, ServerProc};

/// The server as a child process, the real Claude as its one agent, pages to a webhook.
struct Crashable {
    model: FakeAnthropic,
    hooks: Receivers,
    server: ServerProc,
    scratch: Scratch,
    _tmux: TmuxGuard,
}

impl Crashable {
    async fn start(script: Vec<Step>) -> Option<Crashable> {
        let claude = claude_bin()?;
        if !require_tool("tmux") || !require_tool("git") {
            return None;
        }
        let model = FakeAnthropic::start(script).await;
        model.require_api_key(KEY);
        let hooks = Receivers::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let agent_home = onboarded_home(dir.path());
        let agents = claude_agent_yaml(&claude, &model, &agent_home, "auto-edit", "[]", "");
        let scratch = Scratch::with_agents(dir, &agents, &project_yaml(&hooks, "", ""));
        let server = Self::serve(&scratch).await;
        let tmux = TmuxGuard(flotilla::app::tmux_socket(&scratch.home));
        Some(Crashable {
            model,
            hooks,
            server,
            scratch,
            _tmux: tmux,
        })
    }

    async fn serve(s: &Scratch) -> ServerProc {
        let cli = env!("CARGO_BIN_EXE_flotilla");
        ServerProc::start_with_env(
            s.dir.path(),
            &s.home,
            &s.cfg,
            s.port,
            &[("FLOTILLA__SERVER__CLI_PATH", cli)],
        )
        .await
    }

    /// `kill -9` of the server (the agents live on).
    fn crash(&mut self) {
        self.server.kill9();
    }

    /// The server started again on the same home, database and port.
    async fn restart(&mut self) {
        self.server = Self::serve(&self.scratch).await;
    }

    async fn spawn(&self, prompt: &str) -> String {
        let (code, v) = post(
            &self.server.address,
            "/api/v1/sessions",
            json!({"project": "demo", "prompt": prompt}),
        )
        .await;
        assert_eq!(code, 201, "{v}");
        v["id"].as_str().expect("id").to_string()
    }

    async fn session(&self, id: &str) -> Value {
        get(&self.server.address, &format!("/api/v1/sessions/{id}")).await
    }

    /// Waits until the session waits on a question naming `command`; the question.
    async fn asked(&self, id: &str, command: &str) -> String {
        eventually(90, &format!("the question about {command}"), || async {
            let s = self.session(id).await;
            let q = s["meta"]["question"].as_str().unwrap_or("");
            (s["state"] == "needs_input" && q.contains(command)).then(|| q.to_string())
        })
        .await
    }

    /// The pages naming `command` (a redelivery counted too).
    fn pages(&self, command: &str) -> usize {
        notifications_with(&self.hooks, command).len()
    }

    /// The needs-input pages the session's events record.
    async fn recorded_pages(&self, id: &str) -> usize {
        let events = get(
            &self.server.address,
            &format!("/api/v1/sessions/{id}/events"),
        )
        .await;
        events["events"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|e| e["data"]["effects"].as_array().into_iter().flatten())
            .filter(|f| f["type"] == "notify" && f["reaction"] == "agent-needs-input")
            .count()
    }

    /// Answers `question` with Yes, as the dashboard does, and waits for the turn to end with
    /// the command run: one page in all, however the crash fell.
    async fn approve_and_finish(&self, id: &str, question: &str, command: &str) {
        let (code, v) = post(
            &self.server.address,
            &format!("/api/v1/sessions/{id}/send"),
            json!({"message": "1", "question": question}),
        )
        .await;
        assert_eq!((code, &v["delivered"]), (200, &json!(true)), "{v}");
        eventually(60, "the turn ends", || async {
            (self.session(id).await["activity"] == "idle").then_some(())
        })
        .await;
        let s = self.session(id).await;
        let ws = s["workspace"].as_str().expect("workspace");
        let log = crate::helpers::git(std::path::Path::new(ws), &["log", "--format=%s", "-1"]);
        assert_eq!(log.trim(), command.rsplit(' ').next().unwrap_or(""), "{s}");
        // Delivery is at least once: a page the server posted just before its kill is posted
        // again after the restart, with the same id for the receiver to drop it by.
        let pages = notifications_with(&self.hooks, command);
        let ids: std::collections::BTreeSet<&str> =
            pages.iter().filter_map(|p| p["id"].as_str()).collect();
        let recorded = self.recorded_pages(id).await;
        assert_eq!(
            (ids.len(), recorded),
            (1, 1),
            "one page for the question, delivered and recorded: {pages:#?}\nserver log: {}",
            std::fs::read_to_string(self.scratch.dir.path().join("server.log")).unwrap_or_default()
        );
    }
}

fn commit(message: &str) -> Step {
    Step::tool(
        "Bash",
        json!({"command": format!("git commit --allow-empty -q -m {message}"), "description": "Commit"}),
    )
}

/// Claude waits on a permission prompt; the server is killed and started again: the session
/// still waits on the same question, nobody is paged about it a second time (a page posted
/// just before the kill may be posted again, with its id), and the answer sent to the new
/// server reaches the dialog.
#[actix_web::test]
async fn a_question_asked_before_a_kill_9_still_waits_after_it_and_takes_the_answer() {
    let command = "git commit --allow-empty -q -m before-the-crash";
    let script = vec![commit("before-the-crash"), Step::text("Committed.")];
    let Some(mut c) = Crashable::start(script).await else {
        return;
    };
    let id = c.spawn("Commit.").await;
    let question = c.asked(&id, command).await;
    eventually(30, "its page", || async {
        (c.pages(command) == 1).then_some(())
    })
    .await;

    c.crash();
    c.restart().await;
    let s = c.session(&id).await;
    assert_eq!(
        (&s["state"], &s["meta"]["question"]),
        (&json!("needs_input"), &json!(question)),
        "{s}"
    );
    c.approve_and_finish(&id, &question, command).await;
    assert_eq!(c.model.requests().len(), 2);
}

/// Claude asks while the server is down (its hook's report cannot be delivered): once the
/// server is back, the session needs input naming the command, one page says so, and the
/// answer reaches the dialog.
#[actix_web::test]
async fn a_question_asked_while_the_server_is_down_is_asked_once_it_is_back() {
    let command = "git commit --allow-empty -q -m while-it-was-down";
    let script = vec![
        Step::text("Hello."),
        commit("while-it-was-down"),
        Step::text("Committed."),
    ];
    let Some(mut c) = Crashable::start(script).await else {
        return;
    };
    let id = c.spawn("Say hello.").await;
    eventually(90, "the first turn ends", || async {
        (c.session(&id).await["activity"] == "idle").then_some(())
    })
    .await;

    c.crash();
    // Typed at the terminal while Flotilla is down (a human attached to the session).
    let socket = flotilla::app::tmux_socket(&c.scratch.home);
    let typed = std::process::Command::new("tmux")
        .args(["-L", &socket, "send-keys", "-t", &format!("={id}:")])
        .args(["-l", "Commit it."])
        .status()
        .expect("tmux");
    assert!(typed.success());
    eventually(30, "the message is on the input line", || async {
        let out = std::process::Command::new("tmux")
            .args([
                "-L",
                &socket,
                "capture-pane",
                "-p",
                "-t",
                &format!("={id}:"),
            ])
            .output()
            .expect("tmux");
        String::from_utf8_lossy(&out.stdout)
            .contains("Commit it.")
            .then_some(())
    })
    .await;
    let entered = std::process::Command::new("tmux")
        .args([
            "-L",
            &socket,
            "send-keys",
            "-t",
            &format!("={id}:"),
            "Enter",
        ])
        .status()
        .expect("tmux");
    assert!(entered.success());
    // Claude draws the dialog with nobody to tell.
    eventually(60, "the dialog on screen", || async {
        let out = std::process::Command::new("tmux")
            .args([
                "-L",
                &socket,
                "capture-pane",
                "-p",
                "-t",
                &format!("={id}:"),
            ])
            .output()
            .expect("tmux");
        let screen = String::from_utf8_lossy(&out.stdout).to_string();
        (screen.contains("while-it-was-down") && screen.contains("Do you want to proceed?"))
            .then_some(())
    })
    .await;

    c.restart().await;
    let question = c.asked(&id, command).await;
    eventually(30, "its page", || async {
        (c.pages(command) == 1).then_some(())
    })
    .await;
    c.approve_and_finish(&id, &question, command).await;
    assert_eq!(c.model.requests().len(), 3);
}
