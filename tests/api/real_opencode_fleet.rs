//! The real OpenCode (npm `opencode-ai`, its TUI under tmux) as a fleet agent, configured as a
//! user would (a provider in `~/.config/opencode/opencode.json` pointed at the scripted Chat
//! Completions server, see `real_opencode`), spawned and answered through the HTTP API.
//!
//! Runs under `CI=true` (a missing CLI fails it), or wherever the CLI is found, else skips.

use std::time::Duration;

use serde_json::Value;

use crate::fake_openai::{tool_outputs, FakeOpenAi, Step};
use crate::helpers::eventually;
use crate::real_claude_fleet::wait_session;
use crate::real_fleet::{AgentFleet, ModelFleet};
use crate::real_opencode::{bash_step, Setup, MODEL};

/// The fleet with one `opencode` agent.
type OpencodeFleet = ModelFleet<Setup>;

impl OpencodeFleet {
    /// The fleet with one `opencode` agent in `mode`, the model scripted by `script`.
    async fn start(script: Vec<Step>, mode: &str) -> Option<OpencodeFleet> {
        Self::start_with_env(script, mode, "").await
    }

    /// [`OpencodeFleet::start`], with `env` (`NAME: "value"` pairs, each after a comma) added
    /// to the agent's environment.
    async fn start_with_env(script: Vec<Step>, mode: &str, env: &str) -> Option<OpencodeFleet> {
        let model = FakeOpenAi::start(script).await;
        let setup = Setup::new(&model)?;
        let agents = opencode_agent_yaml(&setup, mode).replace(
            "OPENCODE_DISABLE_MODELS_FETCH: \"1\" }",
            &format!("OPENCODE_DISABLE_MODELS_FETCH: \"1\"{env} }}"),
        );
        let dir = tempfile::tempdir().expect("tempdir");
        Some(OpencodeFleet {
            fleet: AgentFleet::start(&agents, "opencode", dir).await?,
            model,
            setup,
        })
    }
}

/// The `opencode` agent's lines under `agents:`, in `mode`, as a user configures it with the
/// scratch `setup` (its provider the fake).
pub(crate) fn opencode_agent_yaml(setup: &Setup, mode: &str) -> String {
    format!(
        "  opencode:\n    kind: opencode\n    command: [\"{bin}\"]\n    permission_mode: {mode}\n    model: {MODEL}\n    env: {{ HOME: \"{home}\", FAKE_KEY: sk-fake-0123456789, OPENCODE_DISABLE_MODELS_FETCH: \"1\" }}\n",
        bin = setup.bin.display(),
        home = setup.home.display(),
    )
}

/// The state OpenCode recorded for the first call of `tool` (the `bash` of [`bash_step`], a
/// `question`) once it ended (`status` `completed` or `error`, with its `error`), from its
/// SQLite database.
async fn call_state(db: &std::path::Path, tool: &str) -> Option<Value> {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .ok()?;
    let parts: Vec<String> = sqlx::query_scalar("SELECT data FROM part")
        .fetch_all(&mut conn)
        .await
        .ok()?;
    parts
        .iter()
        .filter_map(|p| serde_json::from_str::<Value>(p).ok())
        .filter(|p| p["type"] == "tool" && p["tool"] == tool)
        .map(|p| p["state"].clone())
        .find(|s| s["status"] == "completed" || s["status"] == "error")
}

/// The question OpenCode's bash permission asks for [`bash_step`], as the session words it
/// (no sidebar text, its buttons as they are drawn).
const BASH_QUESTION: &str = "Permission required: Shell command: $ printf made > cmd.txt && \
    echo WROTE-$((20+22)) [Allow once | Allow always | Reject]";

/// `send no` to OpenCode's permission dialog presses its Reject button: the command never
/// runs, OpenCode records the call as rejected, and its turn ends there (no model request
/// follows), so the session is idle. (Before, the answer was pasted as a message: its Enter
/// confirmed the selected button, "Allow once", and the command ran; then the session said
/// `active` until its stuck timer, a refused step being one that "finished to call tools".)
#[actix_web::test]
async fn a_real_opencode_command_refused_by_send_no_is_never_run() {
    let Some(f) =
        OpencodeFleet::start(vec![bash_step(), Step::text("Understood.")], "auto-edit").await
    else {
        return;
    };
    let (id, waiting) = f.spawn_until_asked("Write cmd.txt.").await;
    assert_eq!(waiting["waiting_for"], BASH_QUESTION, "{waiting}");
    let ws = std::path::PathBuf::from(waiting["workspace"].as_str().expect("workspace"));
    let page = f.first_page().await;
    assert!(
        page["message"]
            .as_str()
            .is_some_and(|m| m.contains(BASH_QUESTION)),
        "{page:#}"
    );

    let sent = f.send(&id, "no").await;
    assert_eq!(sent["delivered"], true, "{sent}");
    wait_session(&f.app, &id, 60, "back from the question", |s| {
        s["state"] == "working"
    })
    .await;
    // OpenCode records how the call ended (its database, as the plugin reads usage there).
    let ended = eventually(60, "the call's end in OpenCode's records", || {
        let db = f.setup.home.join(".local/share/opencode/opencode.db");
        async move { call_state(&db, "bash").await }
    })
    .await;
    assert_eq!(ended["status"], "error", "{ended}");
    assert!(
        ended["error"]
            .as_str()
            .is_some_and(|e| e.to_lowercase().contains("rejected")),
        "{ended}"
    );
    assert!(!ws.join("cmd.txt").exists(), "a refused command ran");
    wait_session(&f.app, &id, 60, "idle after the refused call", |s| {
        s["activity"] == "idle"
    })
    .await;
    assert_eq!(
        f.model.turn_requests().len(),
        1,
        "the model heard of no run"
    );
    assert_eq!(f.pages().len(), 1);
}

/// Two commands the model asks for in one answer (parallel tool calls): OpenCode asks about
/// each, and each is its own wait and its own page, naming its own command; each `send y`
/// allows the one on screen, and both run.
#[actix_web::test]
async fn a_real_opencodes_parallel_commands_each_ask_and_page_on_their_own() {
    let command = |file: &str| {
        (
            "bash",
            serde_json::json!({"command": format!("printf made > {file}"),
                "description": format!("Write {file}")}),
        )
    };
    let Some(f) = OpencodeFleet::start(
        vec![
            Step::tools(&[command("one.txt"), command("two.txt")]),
            Step::text("Wrote both."),
        ],
        "auto-edit",
    )
    .await
    else {
        return;
    };
    let (id, waiting) = f.spawn_until_asked("Write one.txt and two.txt.").await;
    f.allow_two_parallel_calls(&id, &waiting, ["one.txt", "two.txt"], |q, file| {
        q.contains(&format!("$ printf made > {file} [Allow once"))
    })
    .await;
}

/// `send "no, <instruction>"` to OpenCode's permission dialog: OpenCode's Reject ends the turn
/// (1.18.33 asks a top-level conversation for no feedback), so the instruction is its next
/// prompt, typed once the refused turn has wound down. The command never runs and the model
/// gets the instruction. (Before, the words named none of the buttons: nothing was typed and
/// the send said `delivered: false`; a prompt typed right after the Reject was stored by
/// OpenCode but never run.)
#[actix_web::test]
async fn a_real_opencode_command_refused_with_an_instruction_runs_nothing_and_takes_the_instruction(
) {
    let Some(f) = OpencodeFleet::start(
        vec![bash_step(), Step::text("Printing it instead.")],
        "auto-edit",
    )
    .await
    else {
        return;
    };
    let (id, waiting) = f.spawn_until_asked("Write cmd.txt.").await;
    assert_eq!(waiting["waiting_for"], BASH_QUESTION, "{waiting}");
    let ws = std::path::PathBuf::from(waiting["workspace"].as_str().expect("workspace"));

    let sent = f.send(&id, "no, just print it to the terminal").await;
    assert_eq!(sent["delivered"], true, "{sent}\n{}", f.screen(&id).await);
    let turns = f
        .model
        .wait_for_turn_requests(2, Duration::from_secs(60))
        .await
        .expect("the instruction as the next prompt");
    assert!(
        turns[1]
            .to_string()
            .contains("just print it to the terminal"),
        "{}",
        turns[1]
    );
    f.screen_with(&id, 30, "Printing it instead.").await;
    let ended = call_state(
        &f.setup.home.join(".local/share/opencode/opencode.db"),
        "bash",
    )
    .await
    .expect("the call's end");
    assert_eq!(ended["status"], "error", "{ended}");
    assert!(!ws.join("cmd.txt").exists(), "a refused command ran");
    wait_session(&f.app, &id, 60, "idle after the instruction's turn", |s| {
        s["activity"] == "idle"
    })
    .await;
    assert_eq!(f.pages().len(), 1);
}

/// `send "allow always"` presses that button; OpenCode then asks to confirm the patterns it
/// will allow (a second row of buttons, a second question for the human), `send yes` confirms,
/// and the command runs once.
#[actix_web::test]
async fn a_real_opencode_command_allowed_always_asks_to_confirm_and_then_runs() {
    let Some(f) = OpencodeFleet::start(vec![bash_step(), Step::text("Ran it.")], "auto-edit").await
    else {
        return;
    };
    let (id, waiting) = f.spawn_until_asked("Write cmd.txt.").await;
    assert_eq!(waiting["waiting_for"], BASH_QUESTION, "{waiting}");
    let ws = std::path::PathBuf::from(waiting["workspace"].as_str().expect("workspace"));

    let sent = f.send(&id, "allow always").await;
    assert_eq!(sent["delivered"], true, "{sent}\n{}", f.screen(&id).await);
    let confirm = f.asked_again(&id, BASH_QUESTION).await;
    assert!(
        confirm.starts_with("Always allow: This will allow the following patterns")
            && confirm.contains("- printf *")
            && confirm.ends_with("[Confirm | Cancel]"),
        "{confirm}"
    );
    assert!(!ws.join("cmd.txt").exists(), "ran before it was confirmed");

    let sent = f.send(&id, "yes").await;
    assert_eq!(sent["delivered"], true, "{sent}");
    let turns = f
        .model
        .wait_for_turn_requests(2, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("no request after the confirmation: {e}"));
    assert!(
        tool_outputs(&turns[1])
            .iter()
            .any(|o| o.contains("WROTE-42")),
        "{:?}",
        tool_outputs(&turns[1])
    );
    assert_eq!(
        std::fs::read_to_string(ws.join("cmd.txt")).ok().as_deref(),
        Some("made")
    );
    f.screen_with(&id, 60, "Ran it.").await;
    // (The confirmation is asked within the notifications' dedupe window of the first
    // question: the session shows it, the page of the first stands.)
}

/// An OpenCode that finished its turn is `idle` (from OpenCode's own record of the turn: its
/// screen shows no end of a turn, and the session said `active` until its stuck timer). Once
/// its tmux session is gone (a reboot, a killed server) it is restored into its own
/// conversation (`--session <its id>`, or `--continue` in the same worktree), and the next
/// message reaches the model with the earlier turn as its history.
#[actix_web::test]
async fn a_real_opencode_restored_after_its_terminal_died_resumes_its_conversation() {
    let Some(f) = OpencodeFleet::start(
        vec![
            Step::text("Noted: the number is 4217."),
            Step::text("It was 4217."),
        ],
        "auto-edit",
    )
    .await
    else {
        return;
    };
    let id = f
        .app
        .spawn(serde_json::json!({"project": "demo", "prompt": "Remember the number 4217."}))
        .await;
    f.screen_with(&id, 90, "Noted: the number is 4217.").await;
    let before = wait_session(&f.app, &id, 60, "the first turn's end", |s| {
        s["activity"] == "idle"
    })
    .await;

    // Its terminal dies with it (as on a reboot), and it is restored.
    let panes = f.kill_terminal_and_restore(&id, "opencode").await;
    assert!(
        panes.contains("--session ses_") || panes.contains("--continue"),
        "resumed: {panes}"
    );
    assert!(!panes.contains("--prompt"), "not started afresh: {panes}");
    f.resumes_the_number(&id, &before, &f.model).await;
}

/// A question step of OpenCode's `question` tool: `question` with two options.
fn question_step(question: &str, options: [&str; 2]) -> Step {
    Step::tool(
        "question",
        serde_json::json!({"questions": [{"question": question, "header": "Choice",
            "options": options.map(|o| serde_json::json!({"label": o, "description": "one"}))}]}),
    )
}

const COLOUR: &str = "Which colour should the button be?";

/// The fleet, its model asking [`COLOUR`] (Red or Blue) then going on with `then`, and the
/// session once it waits on that question, as the session words it.
async fn asked_the_colour(then: Vec<Step>) -> Option<(OpencodeFleet, String, String)> {
    let mut script = vec![question_step(COLOUR, ["Red", "Blue"])];
    script.extend(then);
    let f = OpencodeFleet::start(script, "default").await?;
    let (id, waiting) = f.spawn_until_asked("Ask me about the button.").await;
    assert_eq!(
        waiting["waiting_for"],
        format!("{COLOUR} [1. Red | 2. Blue | 3. Type your own answer | Dismiss (esc)]"),
        "{waiting}"
    );
    let asked = waiting["waiting_for"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Some((f, id, asked))
}

/// The model asks the human with OpenCode's `question` tool: the session needs input with the
/// question and its options (the screen's dialog, beside OpenCode's sidebar, which the generic
/// reading missed: the session said `active`), `send Blue` picks that option by its number
/// key, and words of the human's own go to its "Type your own answer" and are taken as typed.
#[actix_web::test]
async fn a_real_opencode_question_is_asked_and_answered_by_option_or_in_own_words() {
    const SIZE: &str = "Which size should the button be?";
    let Some((f, id, colour)) = asked_the_colour(vec![
        question_step(SIZE, ["Small", "Large"]),
        Step::text("A medium blue button it is."),
    ])
    .await
    else {
        return;
    };
    let sent = f.send(&id, "Blue").await;
    assert_eq!(sent["delivered"], true, "{sent}\n{}", f.screen(&id).await);
    let turns = f
        .model
        .wait_for_turn_requests(2, Duration::from_secs(60))
        .await
        .expect("the request after the first answer");
    let answer = format!("\"{COLOUR}\"=\"Blue\"");
    assert!(
        tool_outputs(&turns[1]).iter().any(|o| o.contains(&answer)),
        "{:?}",
        tool_outputs(&turns[1])
    );

    let asked = f.asked_again(&id, &colour).await;
    assert_eq!(
        asked,
        format!("{SIZE} [1. Small | 2. Large | 3. Type your own answer | Dismiss (esc)]")
    );
    let sent = f.send(&id, "Medium, please").await;
    assert_eq!(sent["delivered"], true, "{sent}\n{}", f.screen(&id).await);
    let turns = f
        .model
        .wait_for_turn_requests(3, Duration::from_secs(60))
        .await
        .expect("the request after the second answer");
    let answer = format!("\"{SIZE}\"=\"Medium, please\"");
    assert!(
        tool_outputs(&turns[2]).iter().any(|o| o.contains(&answer)),
        "{:?}",
        tool_outputs(&turns[2])
    );
    f.screen_with(&id, 60, "A medium blue button it is.").await;
    wait_session(&f.app, &id, 60, "the turn's end", |s| {
        s["activity"] == "idle"
    })
    .await;
}

/// `send no` to OpenCode's question dismisses its dialog with Esc (the question offers
/// "Dismiss (esc)"): OpenCode records the question as dismissed, and its turn ends there (no
/// model request follows), so the session is idle with nothing waiting. (Before, the question
/// offered no dismissal: `no` was typed as the human's own answer.)
#[actix_web::test]
async fn a_real_opencode_question_dismissed_by_send_no_ends_the_turn() {
    let Some((f, id, _)) =
        asked_the_colour(vec![Step::text("Not asked for: the turn ended.")]).await
    else {
        return;
    };
    let sent = f.send(&id, "no").await;
    assert_eq!(sent["delivered"], true, "{sent}\n{}", f.screen(&id).await);
    let ended = eventually(60, "the question's end in OpenCode's records", || {
        let db = f.setup.home.join(".local/share/opencode/opencode.db");
        async move { call_state(&db, "question").await }
    })
    .await;
    assert_eq!(ended["status"], "error", "{ended}");
    assert!(
        ended["error"]
            .as_str()
            .is_some_and(|e| e.contains("dismissed")),
        "{ended}"
    );
    wait_session(&f.app, &id, 60, "idle after the dismissal", |s| {
        s["activity"] == "idle" && s["waiting_for"].is_null()
    })
    .await;
    assert_eq!(
        f.model.turn_requests().len(),
        1,
        "no answer went to the model"
    );
}

/// Several questions in one call are tabs in OpenCode's dialog: each is asked in turn (a
/// number key answers one and shows the next), then OpenCode shows the answers for review; the
/// session asks the human each question and the review, and `send yes` submits them.
#[actix_web::test]
async fn a_real_opencodes_questions_are_asked_one_by_one_then_reviewed() {
    const SIZE: &str = "Which size should the button be?";
    let two = serde_json::json!({"questions": [
        {"question": COLOUR, "header": "Colour", "options": [
            {"label": "Red", "description": "warm"}, {"label": "Blue", "description": "cool"}]},
        {"question": SIZE, "header": "Size", "options": [
            {"label": "Small", "description": "s"}, {"label": "Large", "description": "l"}]}]});
    let Some(f) = OpencodeFleet::start(
        vec![Step::tool("question", two), Step::text("Noted.")],
        "default",
    )
    .await
    else {
        return;
    };
    let (id, waiting) = f.spawn_until_asked("Ask me about the button.").await;
    let first = waiting["waiting_for"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        first,
        format!("{COLOUR} [1. Red | 2. Blue | 3. Type your own answer | Dismiss (esc)]")
    );
    // Before, "Blue" went as a message: its Enter confirmed the highlighted "Red".
    let sent = f.send(&id, "Blue").await;
    assert_eq!(sent["delivered"], true, "{sent}\n{}", f.screen(&id).await);
    let second = f.asked_again(&id, &first).await;
    assert_eq!(
        second,
        format!("{SIZE} [1. Small | 2. Large | 3. Type your own answer | Dismiss (esc)]")
    );
    let sent = f.send(&id, "Medium, please").await;
    assert_eq!(sent["delivered"], true, "{sent}\n{}", f.screen(&id).await);
    let review = f.asked_again(&id, &second).await;
    assert_eq!(
        review,
        "Review: Colour: Blue · Size: Medium, please [Submit (enter) | Dismiss (esc)]"
    );
    assert_eq!(f.model.turn_requests().len(), 1, "sent before the review");
    let sent = f.send(&id, "yes").await;
    assert_eq!(sent["delivered"], true, "{sent}\n{}", f.screen(&id).await);
    let turns = f
        .model
        .wait_for_turn_requests(2, Duration::from_secs(60))
        .await
        .expect("the request after the review");
    let answers = format!("\"{COLOUR}\"=\"Blue\", \"{SIZE}\"=\"Medium, please\"");
    assert!(
        tool_outputs(&turns[1]).iter().any(|o| o.contains(&answers)),
        "{:?}",
        tool_outputs(&turns[1])
    );
    f.screen_with(&id, 60, "Noted.").await;
}

/// A turn OpenCode ends on the model API's error (a 401: a bad key) waits for a human, as a
/// Claude turn that gave up does: the session needs input saying what failed, an
/// `agent.api_error` event records it, and a message sent then is OpenCode's next prompt.
/// (Before, the session said `active` until its stuck timer: OpenCode's screen shows no end
/// of a turn.)
#[actix_web::test]
async fn a_real_opencode_turn_ended_on_an_api_error_waits_for_a_human() {
    let Some(f) = OpencodeFleet::start(Vec::new(), "default").await else {
        return;
    };
    f.model.set_default(Step::Error {
        status: 401,
        retry_after: None,
    });
    let (id, waiting) = f.spawn_until_asked("Hello.").await;
    assert_eq!(
        waiting["waiting_for"],
        "the model API failed (Incorrect API key provided.); answer to try again",
        "{waiting}"
    );
    let (_, events) = f.app.get(&format!("/api/v1/sessions/{id}/events")).await;
    let failure = events["events"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["kind"] == "agent.api_error"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(failure["data"]["event"]["status"], 401, "{events}");

    let before = f.model.turn_requests().len();
    f.model.set_default(Step::text("Working again."));
    let sent = f.send(&id, "Try again.").await;
    assert_eq!(sent["delivered"], true, "{sent}\n{}", f.screen(&id).await);
    let turns = f
        .model
        .wait_for_turn_requests(before + 1, Duration::from_secs(60))
        .await
        .expect("the prompt after the failure");
    assert!(
        turns[before].to_string().contains("Try again."),
        "{}",
        turns[before]
    );
    f.screen_with(&id, 60, "Working again.").await;
    wait_session(&f.app, &id, 60, "the turn's end", |s| {
        s["activity"] == "idle"
    })
    .await;
}

/// A model request OpenCode retries (a 500) is recorded as the model API's failure (an
/// `agent.api_error` event, `meta.api_error`), not as work: OpenCode shows it only on its
/// status line ("… [retrying in 1s attempt #2]"), and the session said `active` throughout.
#[actix_web::test]
async fn a_real_opencode_retrying_the_model_api_records_the_failure() {
    let Some(f) = OpencodeFleet::start(Vec::new(), "default").await else {
        return;
    };
    f.model.set_default(Step::error(500));
    let id = f
        .app
        .spawn(serde_json::json!({"project": "demo", "prompt": "Hello."}))
        .await;
    let s = wait_session(&f.app, &id, 90, "the retried failure recorded", |s| {
        s["meta"]["api_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("The server had an error"))
    })
    .await;
    assert_eq!(s["state"], "working", "{s}");
    assert!(s["meta"]["api_error"]["attempt"].as_u64() >= Some(1), "{s}");
    let (_, events) = f.app.get(&format!("/api/v1/sessions/{id}/events")).await;
    let failures = events["events"]
        .as_array()
        .map(|e| e.iter().filter(|e| e["kind"] == "agent.api_error").count())
        .unwrap_or(0);
    assert!(failures >= 1, "{events}");
}

/// OpenCode's `plan` agent (the `suggest` mode) with its plan mode on
/// (`OPENCODE_EXPERIMENTAL_PLAN_MODE`, set in the agent's `env` as a user would): the model
/// ends its plan with `plan_exit`, which asks the human whether to switch to the build agent.
/// The session needs input with that question and its two options; `send yes` picks "Yes",
/// OpenCode switches to its build agent and goes on, and the build agent's edit is made.
#[actix_web::test]
async fn a_real_opencode_plan_exit_asks_to_build_and_yes_builds() {
    let script = vec![
        Step::tool("plan_exit", serde_json::json!({})),
        Step::tool(
            "write",
            serde_json::json!({"filePath": "built.txt", "content": "built\n"}),
        ),
        Step::text("Built as planned."),
    ];
    let plan_mode = ", OPENCODE_EXPERIMENTAL_PLAN_MODE: \"1\"";
    let Some(f) = OpencodeFleet::start_with_env(script, "suggest", plan_mode).await else {
        return;
    };
    let (id, waiting) = f.spawn_until_asked("Plan a file, then build it.").await;
    // The plan's file is named for it ("<created>-<slug>.md") and shown as it is (it once
    // read "Plan at [secret]": its long name was taken for a key).
    let asked = waiting["waiting_for"].as_str().unwrap_or_default();
    let plan = match asked
        .strip_prefix("Plan at .opencode/plans/")
        .and_then(|r| {
            r.strip_suffix(
            " is complete. Would you like to switch to the build agent and start implementing? \
             [1. Yes | 2. No | Dismiss (esc)]",
        )
        }) {
        Some(plan) => plan.to_string(),
        None => panic!("{waiting}\n{}", f.screen(&id).await),
    };
    assert!(plan.ends_with(".md") && !plan.contains(' '), "{plan}");
    let sent = f.send(&id, "yes").await;
    assert_eq!(sent["delivered"], true, "{sent}\n{}", f.screen(&id).await);
    let turns = f
        .model
        .wait_for_turn_requests(2, Duration::from_secs(60))
        .await
        .expect("the request after the answer");
    assert!(
        tool_outputs(&turns[1])
            .iter()
            .any(|o| o.contains("build agent")),
        "{:?}",
        tool_outputs(&turns[1])
    );
    f.screen_with(&id, 60, "Built as planned.").await;
    let s = wait_session(&f.app, &id, 60, "the turn's end", |s| {
        s["activity"] == "idle"
    })
    .await;
    let ws = s["workspace"].as_str().expect("workspace");
    assert_eq!(
        std::fs::read_to_string(std::path::Path::new(ws).join("built.txt")).ok(),
        Some("built\n".to_string())
    );
}
