//! A chat conversation's turn as a pure step function: what happens to one message from the
//! moment the drain picks it up until its status is settled, given what the shell observed.
//!
//! The shell (`actors::chat::assistant`) feeds [`TurnEvent`]s and runs the returned
//! [`TurnEffect`]s in order; it owns the I/O (the slot, the assistant, the platform) and
//! records the message's status from the final [`TurnState::Finished`]. Nothing here waits,
//! sends or reads a clock.
//!
//! ```text
//! Picked ─┬─ budget spent ───────────────────────────────▶ Finished(Done)      "💸 … refused"
//!         └─ Waiting ─┬─ slot busy (stay, tell position)
//!                     ├─ cancel ─────────────────────────▶ Finished(Cancelled) "⏹ … before it started."
//!                     └─ slot granted ─▶ Running ─┬─ ended ok ─────▶ Finished(Done)
//!                                                 ├─ ended with error ▶ Finished(Failed)
//!                                                 ├─ timed out ─────▶ Finished(Timeout)
//!                                                 └─ cancel ────────▶ Finished(Cancelled)
//! Finished ── budget reached by this turn ──▶ Finished (same outcome)      "💸 … now spent"
//! ```

use std::time::Duration;

/// How one message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered.
    Done,
    /// The assistant or a command failed (the user was told).
    Failed,
    /// The turn ran past `chat.turn_timeout` and was killed.
    Timeout,
    /// `/cancel` killed the turn.
    Cancelled,
}

impl Outcome {
    /// Whether the message counts as done (every other outcome marks it failed).
    pub fn succeeded(self) -> bool {
        self == Outcome::Done
    }

    /// The metrics label (`chat_turns{outcome}`).
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Failed => "failed",
            Outcome::Timeout => "timeout",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// Where a message's assistant turn stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnState {
    /// Picked up by the drain; the budget is not checked yet.
    Picked,
    /// Waiting for one of the `chat.max_concurrent` slots.
    Waiting,
    /// The assistant runs.
    Running,
    /// Settled; the message gets this outcome's status.
    Finished(Outcome),
}

/// What the shell observed.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnEvent {
    /// The budget check before the turn: `Some((spent, max))` when the conversation's spend
    /// reached `chat.budget_usd`, `None` when it may go on.
    BudgetChecked(Option<(f64, f64)>),
    /// Every slot is taken; the message is `position`th in line for one of `max`.
    SlotBusy {
        /// Place in the queue, 1 first.
        position: usize,
        /// The cap (`chat.max_concurrent`).
        max: usize,
    },
    /// A slot is ours: the assistant starts.
    SlotGranted,
    /// `/cancel` arrived.
    CancelRequested,
    /// The assistant's turn ended: `Err` carries what of the error the user may see.
    TurnEnded(Result<(), String>),
    /// The turn ran past `chat.turn_timeout`.
    TimedOut(Duration),
    /// The finished turn's spend (recorded) brought the conversation to its budget.
    CapReached {
        /// Spent so far, US dollars.
        spent: f64,
        /// `chat.budget_usd`.
        max: f64,
    },
}

/// What the shell does next, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnEffect {
    /// Send this text to the conversation.
    Reply(String),
    /// Start the assistant's turn (and the replier's "on the case" notice).
    StartTurn,
    /// Flush what the assistant said (the batch reply, the rest of a stream, refusals).
    FlushReplies,
}

/// One step: the state after `event` and the effects to run. An event that does not apply in
/// `state` changes nothing.
pub fn step(state: TurnState, event: &TurnEvent) -> (TurnState, Vec<TurnEffect>) {
    use TurnEffect::*;
    use TurnEvent::*;
    use TurnState::*;
    match (state, event) {
        (Picked, BudgetChecked(Some((spent, max)))) => finish(
            Outcome::Done,
            vec![Reply(refusal(*spent, *max))],
        ),
        (Picked, BudgetChecked(None)) => (Waiting, vec![]),
        (Waiting, SlotBusy { position, max }) => (
            Waiting,
            vec![Reply(format!(
                "⏳ All {max} assistant slots are busy; you are number {position} in the queue."
            ))],
        ),
        (Waiting, CancelRequested) => finish(
            Outcome::Cancelled,
            vec![Reply("⏹ Cancelled before it started.".into())],
        ),
        (Waiting, SlotGranted) => (Running, vec![StartTurn]),
        (Running, TurnEnded(Ok(()))) => finish(Outcome::Done, vec![FlushReplies]),
        (Running, TurnEnded(Err(e))) => finish(
            Outcome::Failed,
            vec![
                FlushReplies,
                Reply(format!(
                    "⚠️ The assistant failed: {e}. If this keeps happening, /reset starts a fresh session."
                )),
            ],
        ),
        (Running, TimedOut(after)) => finish(
            Outcome::Timeout,
            vec![
                FlushReplies,
                Reply(format!(
                    "⏱ The turn took longer than {} and was stopped.",
                    humantime::format_duration(*after)
                )),
            ],
        ),
        (Running, CancelRequested) => finish(
            Outcome::Cancelled,
            vec![FlushReplies, Reply("⏹ Cancelled.".into())],
        ),
        (Finished(o), CapReached { spent, max }) => {
            (Finished(o), vec![Reply(crossed(*spent, *max))])
        }
        (s, _) => (s, vec![]),
    }
}

fn finish(outcome: Outcome, effects: Vec<TurnEffect>) -> (TurnState, Vec<TurnEffect>) {
    (TurnState::Finished(outcome), effects)
}

/// The notice for a message that waits behind `ahead` others of its conversation; none when
/// it is next.
pub fn queued_notice(ahead: usize) -> Option<String> {
    (ahead > 0).then(|| {
        format!(
            "⏳ Queued: {ahead} message{} ahead of yours in this conversation.",
            if ahead == 1 { "" } else { "s" }
        )
    })
}

/// The reply refusing a turn of a conversation that spent its budget.
pub fn refusal(spent: f64, max: f64) -> String {
    format!(
        "💸 This conversation has spent ${spent:.2} of its ${max:.2} budget (chat.budget_usd): \
         no more assistant turns here. Start a new thread, or ask the operator to raise the budget."
    )
}

/// The notice after the turn that reached the budget.
pub fn crossed(spent: f64, max: f64) -> String {
    format!(
        "💸 This conversation has now spent ${spent:.2} of its ${max:.2} budget \
         (chat.budget_usd): further assistant turns here will be refused."
    )
}

#[cfg(test)]
mod tests;
