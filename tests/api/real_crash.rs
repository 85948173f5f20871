//! `kill -9` of the real `flotilla` server around the real agents' permission prompts (Claude
//! Code, Codex, OpenCode): the agent outlives the server (its tmux server is its own), so a
//! question it asked before the crash still waits after it, and one it asks while the server
//! is down (no hook report can reach it) is found once the server is back. Either way the
//! session is `needs_input` naming the command, the human is paged once, and the answer sent
//! after the restart is typed to the dialog. Also: an aider that finished while the server
//! was down is `done` once it is back, and a chat turn of `claude -p` cut by the kill is run
//! again and answered once.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::crash::{get, post};
use crate::fake_anthropic::{request_text, FakeAnthropic, Step};
use crate::fake_openai::{FakeOpenAi, Step as OpenAiStep};
use crate::fleet_tmux::TmuxGuard;
use crate::helpers::{eventually, require_tool, ECHO_AGENT};
use crate::real_aider::{
    aider_agent_yaml, edit_step as aider_edit_step, Setup as AiderSetup,
    COMMIT_MESSAGE as AIDER_COMMIT_MESSAGE, TASK as AIDER_TASK,
};
use crate::real_claude_chat::{claude_chat_yaml, KEY as CHAT_KEY};
use crate::real_claude_fleet::{
    claude_agent_yaml, claude_bin, notifications_with, onboarded_home, project_yaml, KEY,
};
use crate::real_codex::Setup as CodexSetup;
use crate::real_codex_fleet::{codex_agent_yaml, codex_dir};
use crate::real_opencode::{bash_step, Setup as OpencodeSetup};
use crate::real_opencode_fleet::opencode_agent_yaml;
use crate::receivers::Receivers;
use crate::server::{Scratch, ServerProc};

/// The server as a child process, one real agent CLI, pages to a webhook.
struct Crashable {
    hooks: Receivers,
    server: ServerProc,
    scratch: Scratch,
    _tmux: TmuxGuard,
}

impl Crashable {
    /// The server on a new database in `dir`, with `agents` (YAML under `agents:`) and the
    /// project running `agent` under tmux.
    async fn start(agents: &str, agent: &str, dir: TempDir) -> Option<Crashable> {
        let hooks = Receivers::start().await;
        let project = project_yaml(&hooks, agent, "", "");
        Self::start_with(hooks, agents, &project, dir).await
    }

    /// The server with `agents` and `extra` (the project's lines, then top-level sections).
    async fn start_with(
        hooks: Receivers,
        agents: &str,
        extra: &str,
        dir: TempDir,
    ) -> Option<Crashable> {
        if !require_tool("tmux") || !require_tool("git") {
            return None;
        }
        let scratch = Scratch::with_agents(dir, agents, extra);
        let server = Self::serve(&scratch).await;
        let tmux = TmuxGuard(flotilla::app::tmux_socket(&scratch.home));
        Some(Crashable {
            hooks,
            server,
            scratch,
            _tmux: tmux,
        })
    }

    /// [`Crashable::start`] with the real Claude Code talking to a model scripted by `script`.
    async fn claude(script: Vec<Step>) -> Option<(Crashable, FakeAnthropic)> {
        let claude = claude_bin()?;
        let model = FakeAnthropic::start(script).await;
        model.require_api_key(KEY);
        let dir = tempfile::tempdir().expect("tempdir");
        let agent_home = onboarded_home(dir.path());
        let agents = claude_agent_yaml(&claude, &model, &agent_home, "auto-edit", "[]", "");
        Some((Self::start(&agents, "claude", dir).await?, model))
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

    /// Waits until the session asks about `command` and one page says so; the question.
    async fn asked_and_paged(&self, id: &str, command: &str) -> String {
        let question = self.asked(id, command).await;
        eventually(30, &format!("the page about {command}"), || async {
            (self.pages(command) == 1).then_some(())
        })
        .await;
        question
    }

    /// Spawns a session, lets its first turn end, kills the server, types `message` at the
    /// agent's terminal, waits until the agent shows its `dialog` with nobody to tell, and
    /// starts the server again; the session's id once it asks about `command`, paged once,
    /// and the question.
    async fn asks_while_down(
        &mut self,
        message: &str,
        dialog: &[&str],
        command: &str,
    ) -> (String, String) {
        let id = self.spawn("Say hello.").await;
        eventually(90, "the first turn ends", || async {
            (self.session(&id).await["activity"] == "idle").then_some(())
        })
        .await;
        self.crash();
        self.type_at_terminal(&id, message).await;
        self.screen_with(&id, dialog).await;
        self.restart().await;
        let question = self.asked_and_paged(&id, command).await;
        (id, question)
    }

    /// The pages naming `command` (a redelivery counted too).
    fn pages(&self, command: &str) -> usize {
        notifications_with(&self.hooks, command).len()
    }

    /// The needs-input pages about `needle` the session's events record.
    async fn recorded_pages(&self, id: &str, needle: &str) -> usize {
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
            .filter(|f| {
                f["type"] == "notify"
                    && f["reaction"] == "agent-needs-input"
                    && f.to_string().contains(needle)
            })
            .count()
    }

    /// Sends `choice` to `question`, as the dashboard does; it must be typed.
    async fn answer(&self, id: &str, question: &str, choice: &str) {
        let (code, v) = post(
            &self.server.address,
            &format!("/api/v1/sessions/{id}/send"),
            json!({"message": choice, "question": question}),
        )
        .await;
        assert_eq!((code, &v["delivered"]), (200, &json!(true)), "{v}");
    }

    /// One page about `needle` in all, however the crash fell: delivered (at least once: a
    /// page the server posted just before its kill is posted again after the restart, with
    /// the same id for the receiver to drop it by) and recorded.
    async fn paged_once(&self, id: &str, needle: &str) {
        let pages = notifications_with(&self.hooks, needle);
        let ids: BTreeSet<&str> = pages.iter().filter_map(|p| p["id"].as_str()).collect();
        let recorded = self.recorded_pages(id, needle).await;
        assert_eq!(
            (ids.len(), recorded),
            (1, 1),
            "one page for the question, delivered and recorded: {pages:#?}\nserver log: {}",
            std::fs::read_to_string(self.scratch.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    /// Answers Claude's `question` with Yes and waits for the turn to end with `command` run.
    async fn approve_and_finish(&self, id: &str, question: &str, command: &str) {
        self.answer(id, question, "1").await;
        eventually(60, "the turn ends", || async {
            (self.session(id).await["activity"] == "idle").then_some(())
        })
        .await;
        let s = self.session(id).await;
        let ws = s["workspace"].as_str().expect("workspace");
        let log = crate::helpers::git(Path::new(ws), &["log", "--format=%s", "-1"]);
        assert_eq!(log.trim(), command.rsplit(' ').next().unwrap_or(""), "{s}");
        self.paged_once(id, command).await;
    }

    /// `tmux` on the agents' server; its output.
    fn tmux(&self, args: &[&str]) -> String {
        let socket = flotilla::app::tmux_socket(&self.scratch.home);
        let (ok, out) = crate::fleet_tmux::tmux(&socket, args);
        assert!(ok, "tmux {args:?}: {out}");
        out
    }

    /// Waits until the agent's screen holds every one of `needles`.
    async fn screen_with(&self, id: &str, needles: &[&str]) {
        let target = format!("={id}:");
        eventually(60, &format!("{needles:?} on screen"), || async {
            let screen = self.tmux(&["capture-pane", "-p", "-t", &target]);
            needles.iter().all(|n| screen.contains(n)).then_some(())
        })
        .await;
    }

    /// `text` typed and submitted at the agent's terminal, as a human attached to it does.
    async fn type_at_terminal(&self, id: &str, text: &str) {
        let target = format!("={id}:");
        self.tmux(&["send-keys", "-t", &target, "-l", text]);
        self.screen_with(id, &[text]).await;
        self.tmux(&["send-keys", "-t", &target, "Enter"]);
    }
}

impl Crashable {
    /// [`Crashable::start`] with the real Codex in `suggest` mode talking to a model scripted
    /// by `script`; the model, and Codex's scratch home (kept for the test's length).
    async fn codex(script: Vec<OpenAiStep>) -> Option<(Crashable, FakeOpenAi, CodexSetup)> {
        let model = FakeOpenAi::start(script).await;
        let setup = CodexSetup::new(&model)?;
        let agents = codex_agent_yaml(&setup, "suggest");
        let c = Self::start(&agents, "codex", codex_dir(&setup)).await?;
        Some((c, model, setup))
    }
}

impl Crashable {
    /// [`Crashable::start`] with the real OpenCode in `auto-edit` mode talking to a model
    /// scripted by `script`; the model, and OpenCode's scratch home.
    async fn opencode(script: Vec<OpenAiStep>) -> Option<(Crashable, FakeOpenAi, OpencodeSetup)> {
        let model = FakeOpenAi::start(script).await;
        let setup = OpencodeSetup::new(&model)?;
        let agents = opencode_agent_yaml(&setup, "auto-edit");
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Self::start(&agents, "opencode", dir).await?;
        Some((c, model, setup))
    }
}

impl Crashable {
    /// [`Crashable::start`] with the real aider in `permissionless` mode talking to a model
    /// scripted by `script`; the model, and aider's scratch home.
    async fn aider(script: Vec<OpenAiStep>) -> Option<(Crashable, FakeOpenAi, AiderSetup)> {
        let model = FakeOpenAi::start(script).await;
        let setup = AiderSetup::new(&model)?;
        let agents = aider_agent_yaml(&setup, "permissionless");
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Self::start(&agents, "aider", dir).await?;
        Some((c, model, setup))
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
    let Some((mut c, model)) = Crashable::claude(script).await else {
        return;
    };
    let id = c.spawn("Commit.").await;
    let question = c.asked_and_paged(&id, command).await;

    c.crash();
    c.restart().await;
    let s = c.session(&id).await;
    assert_eq!(
        (&s["state"], &s["meta"]["question"]),
        (&json!("needs_input"), &json!(question)),
        "{s}"
    );
    c.approve_and_finish(&id, &question, command).await;
    assert_eq!(model.requests().len(), 2);
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
    let Some((mut c, model)) = Crashable::claude(script).await else {
        return;
    };
    // Claude asks with nobody to tell.
    let dialog = ["while-it-was-down", "Do you want to proceed?"];
    let (id, question) = c.asks_while_down("Commit it.", &dialog, command).await;
    c.approve_and_finish(&id, &question, command).await;
    assert_eq!(model.requests().len(), 3);
}

/// The same with the real Codex, which has no hook: it asks to run a command outside its
/// sandbox while the server is down, and once the server is back the session needs input with
/// Codex's dialog, one page says so, and `y` sent to the new server approves it.
#[actix_web::test]
async fn a_codex_question_asked_while_the_server_is_down_is_asked_once_it_is_back() {
    let script = vec![
        OpenAiStep::text("Hello."),
        OpenAiStep::tool(
            "exec_command",
            json!({"cmd": "printf made > out.txt", "sandbox_permissions": "require_escalated",
                "justification": "Write out.txt?"}),
        ),
        OpenAiStep::text("Wrote out.txt."),
    ];
    let Some((mut c, _model, _setup)) = Crashable::codex(script).await else {
        return;
    };
    let command = "$ printf made > out.txt";
    let dialog = [
        "Would you like to run the following command?",
        "printf made",
    ];
    let (id, question) = c.asks_while_down("Write out.txt.", &dialog, command).await;
    c.answer(&id, &question, "y").await;
    c.screen_with(&id, &["You approved codex to run printf made > out.txt"])
        .await;
    c.paged_once(&id, command).await;
}

/// Claude's question is answered at its terminal while the server is down, and its turn
/// ends: once the server is back the session no longer waits (the stored question is not
/// taken for the screen's), and nobody is paged again.
#[actix_web::test]
async fn a_question_answered_at_the_terminal_while_the_server_is_down_waits_no_more() {
    let command = "git commit --allow-empty -q -m answered-while-down";
    let script = vec![commit("answered-while-down"), Step::text("Committed.")];
    let Some((mut c, model)) = Crashable::claude(script).await else {
        return;
    };
    let id = c.spawn("Commit.").await;
    c.asked_and_paged(&id, command).await;

    c.crash();
    c.tmux(&["send-keys", "-t", &format!("={id}:"), "1"]);
    model.wait_for_requests(2, Duration::from_secs(60)).await;
    c.screen_with(&id, &["Committed."]).await;

    c.restart().await;
    let s = eventually(60, "the session waits no more", || async {
        let s = c.session(&id).await;
        (s["state"] != "needs_input" && s["activity"] == "idle").then_some(s)
    })
    .await;
    assert_eq!(s["waiting_for"], Value::Null, "{s}");
    c.paged_once(&id, command).await;
}

/// Claude's question is answered at its terminal while the server is down, and it asks the
/// next: once the server is back the session waits on the next question, which pages once,
/// and the first is not asked again.
#[actix_web::test]
async fn the_next_question_asked_while_the_server_is_down_replaces_the_answered_one() {
    let first = "git commit --allow-empty -q -m first-before-the-crash";
    let next = "git commit --allow-empty -q -m next-while-down";
    let script = vec![
        commit("first-before-the-crash"),
        commit("next-while-down"),
        Step::text("Committed twice."),
    ];
    let Some((mut c, _model)) = Crashable::claude(script).await else {
        return;
    };
    let id = c.spawn("Commit twice.").await;
    c.asked_and_paged(&id, first).await;

    c.crash();
    c.tmux(&["send-keys", "-t", &format!("={id}:"), "1"]);
    c.screen_with(&id, &["next-while-down", "Do you want to proceed?"])
        .await;

    c.restart().await;
    let question = c.asked_and_paged(&id, next).await;
    c.approve_and_finish(&id, &question, next).await;
    let firsts: BTreeSet<String> = notifications_with(&c.hooks, first)
        .iter()
        .filter_map(|p| p["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(firsts.len(), 1, "the answered question paged once");
}

/// The same with the real OpenCode, whose waits Flotilla reads from its database and screen:
/// it asks to run a command while the server is down, and once the server is back the session
/// needs input with OpenCode's dialog, one page says so, and `yes` sent to the new server runs
/// the command.
#[actix_web::test]
async fn an_opencode_question_asked_while_the_server_is_down_is_asked_once_it_is_back() {
    let script = vec![
        OpenAiStep::text("Hello."),
        bash_step(),
        OpenAiStep::text("Ran it."),
    ];
    let Some((mut c, _model, _setup)) = Crashable::opencode(script).await else {
        return;
    };
    let command = "printf made > cmd.txt";
    let dialog = ["Permission required", "printf made > cmd.txt"];
    let (id, question) = c.asks_while_down("Write cmd.txt.", &dialog, command).await;
    c.answer(&id, &question, "yes").await;
    c.screen_with(&id, &["Ran it."]).await;
    let s = c.session(&id).await;
    let ws = Path::new(s["workspace"].as_str().expect("workspace"));
    assert_eq!(
        std::fs::read_to_string(ws.join("cmd.txt")).ok().as_deref(),
        Some("made")
    );
    c.paged_once(&id, command).await;
}

/// The real aider answers its one message, commits and exits while the server is down: once
/// the server is back the session is `done` (aider's exit status 0, read from its pane), with
/// aider's commit on its branch and its usage read.
#[actix_web::test]
async fn an_aider_that_finished_while_the_server_was_down_is_done_once_it_is_back() {
    let script = vec![aider_edit_step(), OpenAiStep::text(AIDER_COMMIT_MESSAGE)];
    let Some((mut c, model, _setup)) = Crashable::aider(script).await else {
        return;
    };
    model.hold();
    let id = c.spawn(AIDER_TASK).await;
    eventually(90, "the agent runs", || async {
        (c.session(&id).await["state"] == "working").then_some(())
    })
    .await;

    c.crash();
    model.release();
    let target = format!("={id}");
    eventually(150, "aider exits", || async {
        let socket = flotilla::app::tmux_socket(&c.scratch.home);
        let (ok, dead) = crate::fleet_tmux::tmux(
            &socket,
            &["list-panes", "-t", &target, "-F", "#{pane_dead}"],
        );
        (!ok || dead.trim() == "1").then_some(())
    })
    .await;

    c.restart().await;
    let s = eventually(60, "the session ends", || async {
        let s = c.session(&id).await;
        (s["state"] == "done").then_some(s)
    })
    .await;
    assert_eq!(s["reason"], "agent_exited_0", "{s}");
    let ws = Path::new(s["workspace"].as_str().expect("workspace"));
    let log = crate::helpers::git(ws, &["log", "--format=%s", "-1"]);
    assert_eq!(log.trim(), AIDER_COMMIT_MESSAGE, "{s}");
    assert!(
        s["meta"]["usage"]["output_tokens"].as_u64() > Some(0),
        "usage read: {s}"
    );
}

/// The chat bridge with the real `claude -p` as its assistant, its conversation in a clone of
/// the scratch repository; the model scripted by `script`.
async fn claude_chat(script: Vec<Step>) -> Option<(Crashable, FakeAnthropic)> {
    let claude = claude_bin()?;
    let model = FakeAnthropic::start(script).await;
    model.require_api_key(CHAT_KEY);
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("chat");
    let home = onboarded_home(&base);
    let chat = format!(
        "chat:\n{}",
        claude_chat_yaml(&claude, &model, &base, &home, "")
    );
    let agents = format!("  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n");
    let c = Crashable::start_with(Receivers::start().await, &agents, &chat, dir).await?;
    Some((c, model))
}

impl Crashable {
    /// Posts `text` by the allowed `tester` in `thread` through the test platform.
    async fn say(&self, thread: &str, text: &str) {
        let (code, v) = post(
            &self.server.address,
            "/api/v1/chat/test/messages",
            json!({"thread": thread, "text": text, "author": "tester"}),
        )
        .await;
        assert_eq!(code, 200, "{v}");
    }

    /// The replies this server process sent to `thread` containing `needle`.
    async fn replies_with(&self, thread: &str, needle: &str) -> Vec<String> {
        let v = get(
            &self.server.address,
            &format!("/api/v1/chat/test/replies?thread={thread}"),
        )
        .await;
        v["replies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["text"].as_str())
            .filter(|t| t.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// Waits for a reply in `thread` containing `needle`; on a timeout, panics with the
    /// thread's replies and the server's log.
    async fn reply(&self, thread: &str, needle: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while self.replies_with(thread, needle).await.is_empty() {
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "no reply with {needle:?}; replies: {:#?}\nserver log: {}",
                    self.replies_with(thread, "").await,
                    std::fs::read_to_string(self.scratch.dir.path().join("server.log"))
                        .unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A chat turn of the real `claude -p` cut by `kill -9` (its model had not answered yet) is
/// run again once the server is back: resumed in the conversation's Claude session (the
/// model sees the earlier exchange), asking the interrupted message with a note that its
/// last turn on it was cut, and answered once.
#[actix_web::test]
async fn a_chat_turn_cut_by_a_kill_9_is_run_again_resumed_and_answered_once() {
    let script = vec![
        Step::text("Noted: the number is 4217."),
        Step::Hang,
        Step::text("It was 4217."),
    ];
    let Some((mut c, model)) = claude_chat(script).await else {
        return;
    };
    // The conversation's codebase: a clone named as an owner's repository.
    let owner = c.scratch.dir.path().join("src").join("acme");
    std::fs::create_dir_all(&owner).expect("mkdir");
    let repo = c.scratch.dir.path().join("repo");
    crate::helpers::git(
        &owner,
        &["clone", "-q", repo.to_str().expect("utf8"), "widget"],
    );
    c.say("t1", &format!("/clone {}", owner.join("widget").display()))
        .await;
    c.reply("t1", "acme/widget").await;
    c.say("t1", "Remember the number 4217.").await;
    c.reply("t1", "Noted: the number is 4217.").await;
    c.say("t1", "Which number was it?").await;
    model.wait_for_requests(2, Duration::from_secs(120)).await;

    c.crash();
    c.restart().await;
    c.reply("t1", "It was 4217.").await;
    let requests = model.requests();
    let rerun = requests.last().expect("the re-run's request");
    let text = request_text(rerun);
    assert!(
        text.contains("Remember the number 4217.") && text.contains("Noted: the number is 4217."),
        "the re-run resumed the conversation: {text}"
    );
    // The model is asked the interrupted message now. (Claude Code stored it when the cut
    // turn began, and records that turn as unanswered: its history holds it once more.)
    let last = rerun["messages"]
        .as_array()
        .and_then(|m| m.last())
        .expect("a last message");
    assert_eq!(last["role"], "user", "{last}");
    assert!(
        last.to_string().contains("Which number was it?"),
        "the re-run asks the interrupted message: {last}"
    );
    // Told that its last turn on it was cut (it may have done some of the work); a turn run
    // the first time is not.
    let note = "Note from Flotilla: this message was already being answered";
    assert!(last.to_string().contains(note), "{last}");
    assert!(
        !request_text(&requests[0]).contains(note),
        "{}",
        request_text(&requests[0])
    );
    assert_eq!(c.replies_with("t1", "It was 4217.").await.len(), 1);
}
