use std::time::Duration;

use super::TurnEffect::*;
use super::TurnEvent::*;
use super::TurnState::*;
use super::*;

fn reply(s: &str) -> TurnEffect {
    Reply(s.to_string())
}

/// Every transition of a turn: (state, event) → (state, effects).
#[test]
fn each_turn_transition_yields_its_state_and_replies() {
    let busy = SlotBusy {
        position: 2,
        max: 1,
    };
    let cap = CapReached {
        spent: 1.5,
        max: 1.0,
    };
    let table: Vec<(TurnState, TurnEvent, TurnState, Vec<TurnEffect>)> = vec![
        (Picked, BudgetChecked(None), Waiting, vec![]),
        (
            Picked,
            BudgetChecked(Some((2.0, 1.0))),
            Finished(Outcome::Done),
            vec![reply(
                "💸 This conversation has spent $2.00 of its $1.00 budget (chat.budget_usd): \
                 no more assistant turns here. Start a new thread, or ask the operator to raise the budget.",
            )],
        ),
        (
            Waiting,
            busy.clone(),
            Waiting,
            vec![reply(
                "⏳ All 1 assistant slots are busy; you are number 2 in the queue.",
            )],
        ),
        (
            Waiting,
            CancelRequested,
            Finished(Outcome::Cancelled),
            vec![reply("⏹ Cancelled before it started.")],
        ),
        (Waiting, SlotGranted, Running, vec![StartTurn]),
        (
            Running,
            TurnEnded(Ok(())),
            Finished(Outcome::Done),
            vec![FlushReplies],
        ),
        (
            Running,
            TurnEnded(Err("boom".into())),
            Finished(Outcome::Failed),
            vec![
                FlushReplies,
                reply("⚠️ The assistant failed: boom. If this keeps happening, /reset starts a fresh session."),
            ],
        ),
        (
            Running,
            TimedOut(Duration::from_secs(90)),
            Finished(Outcome::Timeout),
            vec![
                FlushReplies,
                reply("⏱ The turn took longer than 1m 30s and was stopped."),
            ],
        ),
        (
            Running,
            CancelRequested,
            Finished(Outcome::Cancelled),
            vec![FlushReplies, reply("⏹ Cancelled.")],
        ),
        (
            Finished(Outcome::Failed),
            cap.clone(),
            Finished(Outcome::Failed),
            vec![reply(
                "💸 This conversation has now spent $1.50 of its $1.00 budget \
                 (chat.budget_usd): further assistant turns here will be refused.",
            )],
        ),
        // What does not apply in a state changes nothing.
        (Picked, SlotGranted, Picked, vec![]),
        (Waiting, TurnEnded(Ok(())), Waiting, vec![]),
        (Running, SlotGranted, Running, vec![]),
        (Running, cap, Running, vec![]),
        (
            Finished(Outcome::Done),
            CancelRequested,
            Finished(Outcome::Done),
            vec![],
        ),
    ];
    for (from, event, to, effects) in table {
        assert_eq!(step(from, &event), (to, effects), "{from:?} on {event:?}");
    }
}

#[test]
fn only_a_done_turn_succeeds_and_each_outcome_has_its_label() {
    let all = [
        (Outcome::Done, true, "done"),
        (Outcome::Failed, false, "failed"),
        (Outcome::Timeout, false, "timeout"),
        (Outcome::Cancelled, false, "cancelled"),
    ];
    for (o, ok, label) in all {
        assert_eq!((o.succeeded(), o.label()), (ok, label), "{o:?}");
    }
}

#[test]
fn a_queued_message_is_told_how_many_wait_ahead() {
    assert_eq!(queued_notice(0), None);
    assert_eq!(
        queued_notice(1).as_deref(),
        Some("⏳ Queued: 1 message ahead of yours in this conversation.")
    );
    assert_eq!(
        queued_notice(3).as_deref(),
        Some("⏳ Queued: 3 messages ahead of yours in this conversation.")
    );
}
