//! Finishing a delivery a crash cut short, with the real Claude Code. A long message shows in
//! Claude's input as a placeholder ("[Pasted text #1 +60 lines]"), and in its transcript once
//! taken as its text, wrapped to the pane: a paragraph-long last line is split over rows. After
//! a crash between Claude taking such a message and Flotilla recording it delivered, the pane's
//! log since the delivery's mark must confirm it, wrapped or not, and it must not be typed a
//! second time.

use serde_json::json;

use flotilla::store::InstructionState;

use crate::fake_anthropic::{request_text, Step};
use crate::helpers::eventually;
use crate::real_claude_fleet::{send, setup_notifying, spawn_until_idle, wait_session};
use crate::real_fleet::{crashed_while_typing, log_mark};

/// The end of the long message: counted in what the model is sent.
const END: &str = "LONG-MESSAGE-END";

/// A real Claude Code on `script`, its session spawned and its first turn ended. `None`
/// where the real CLI cannot run.
async fn idle_claude(script: Vec<Step>) -> Option<(crate::real_claude_fleet::Real, String)> {
    let r = setup_notifying(script, "auto-edit", "[]", "", &[], "", "").await?;
    let id = spawn_until_idle(&r.app, "Say hello.").await;
    Some((r, id))
}

#[actix_web::test]
async fn a_long_message_claude_took_before_a_crash_is_not_typed_again() {
    let script = vec![
        Step::text("Hello."),
        Step::text("Read it."),
        Step::text("Done."),
    ];
    let Some((r, id)) = idle_claude(script).await else {
        return;
    };
    // Where the pane's log stood just before the message was typed: the mark a delivery
    // stores with it.
    let log = r.app.home.join("tmux").join(format!("{id}.log"));
    let mark = log_mark(&r.app, &id);
    let long: String = (1..=60)
        .map(|i| format!("Line {i:03}: one more step of a long instruction to paste\n"))
        // A last line as long as a paragraph, which the transcript wraps (200 columns).
        .chain((0..24).map(|i| format!("word{i:03} ")))
        .chain([END.to_string()])
        .collect();
    send(&r.app, &id, &long).await;
    let sent_with = |needle: &'static str| {
        r.model
            .requests()
            .iter()
            .any(|q| request_text(q).contains(needle))
    };
    eventually(60, "the long message reaches the model", || async {
        sent_with(END).then_some(())
    })
    .await;
    wait_session(&r.app, &id, 60, "its turn ends", |s| {
        s["activity"] == "idle"
    })
    .await;

    // The scenario: Claude wrapped the last line in its transcript between its last two
    // words, so the pane's log never holds the line's end in one piece.
    let bytes = std::fs::read(&log).expect("the pane's log");
    let since = String::from_utf8_lossy(&bytes[usize::try_from(mark).expect("mark")..]);
    let plain = flotilla::plugins::tmux::strip_ansi(&since);
    assert!(
        plain.contains(END) && !plain.contains(&format!("word023 {END}")),
        "the transcript shows the last line wrapped before its end: {}",
        plain
            .chars()
            .rev()
            .take(3000)
            .collect::<String>()
            .chars()
            .rev()
            .collect::<String>()
    );
    // The store as a crash just before the delivery was recorded leaves it.
    let ins = crashed_while_typing(&r.app, &id, &long, mark).await;

    // The next message finishes what is open first, then goes itself.
    send(&r.app, &id, "SENT-AFTER-THE-CRASH").await;
    eventually(60, "the next message reaches the model", || async {
        sent_with("SENT-AFTER-THE-CRASH").then_some(())
    })
    .await;
    let requests = r.model.requests();
    let last = request_text(requests.last().expect("a request"));
    let user_turns: Vec<&str> = last.matches(END).collect();
    assert_eq!(user_turns.len(), 1, "the long message was typed once");
    let ins = r.app.store.load_instruction(ins).await.expect("load");
    assert_eq!(ins.state, InstructionState::Delivered, "{ins:?}");
}

/// A message whose one line Claude's input box wraps inside its last 24 characters (what a
/// delivery looks for on screen) is submitted and confirmed like any other, whatever the
/// length: it was left unsubmitted, and the next message was typed onto it. Lengths around
/// the 200-column pane's width, 8 characters apart, so that some wrap inside that end.
#[actix_web::test]
async fn messages_wrapped_in_claudes_input_are_each_submitted_once() {
    let script = (0..10).map(|_| Step::text("Ok.")).collect();
    let Some((r, id)) = idle_claude(script).await else {
        return;
    };
    let sent_with = |needle: &str| {
        r.model
            .requests()
            .iter()
            .any(|q| request_text(q).contains(needle))
    };
    let words = 21..28;
    for n in words.clone() {
        let message: String = (0..n)
            .map(|i| format!("w{n}x{i:03} "))
            .chain([format!("END-OF-{n}")])
            .collect();
        let (code, v) = r
            .app
            .post(
                &format!("/api/v1/sessions/{id}/send"),
                json!({ "message": message }),
            )
            .await;
        assert_eq!(
            (code, &v["delivered"]),
            (200, &json!(true)),
            "{n} words: {v}"
        );
        let end = format!("END-OF-{n}");
        eventually(60, "the message reaches the model", || async {
            sent_with(&end).then_some(())
        })
        .await;
        wait_session(&r.app, &id, 60, "the turn ends", |s| {
            s["activity"] == "idle"
        })
        .await;
    }
    // None ran into the next.
    let sent: Vec<String> = r.model.requests().iter().map(request_text).collect();
    for n in words {
        assert!(
            !sent.iter().any(|t| t.contains(&format!("END-OF-{n}w"))),
            "the next message was typed onto the one of {n} words"
        );
    }
}
