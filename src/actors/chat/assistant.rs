//! One assistant turn of a conversation, driven by the domain's turn step
//! ([`crate::domain::chat::step`]): the budget check, the wait for a slot, the turn itself
//! (streamed chunks, resume id, timeout, cancel), what it cost, and the replies.

use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

use super::action::Ending;
use super::handles::TurnHandles;
use super::replier::Replier;
use super::reply::turn_reply;
use super::scheduler::TurnSlot;
use super::workspace::turn_dir;
use super::{spend, ChatContext};
use crate::domain::chat::{self, Outcome, TurnEffect, TurnEvent, TurnState};
use crate::plugins::{Chunk, PluginError, TurnRequest, TurnUsage};
use crate::store::{ChatReply, ConversationRecord};

/// Runs `prompt` as message `message`'s assistant turn and says how it ended.
pub(super) async fn run(
    ctx: &Arc<ChatContext>,
    conv: &ConversationRecord,
    message: i64,
    prompt: &str,
    handles: &Arc<TurnHandles>,
) -> Ending {
    let mut turn = Turn::new(ctx, conv);
    let outcome = turn_outcome(&mut turn, ctx, conv, message, prompt, handles).await;
    Ending {
        outcome,
        replies: turn.replies,
    }
}

/// The turn's steps; its final replies are left in `turn`.
async fn turn_outcome(
    turn: &mut Turn,
    ctx: &Arc<ChatContext>,
    conv: &ConversationRecord,
    message: i64,
    prompt: &str,
    handles: &Arc<TurnHandles>,
) -> Outcome {
    turn.feed(TurnEvent::BudgetChecked(budget_spent(ctx, &conv.id).await))
        .await;
    if let Some(o) = turn.outcome() {
        return o;
    }
    let cancel = handles.begin();
    let Some(slot) = wait_for_slot(ctx, conv, &cancel).await else {
        handles.end();
        if handles.abandoned() {
            // The lease was lost: the new owner runs the message; nothing to tell here.
            return Outcome::Cancelled;
        }
        turn.feed(TurnEvent::CancelRequested).await;
        return turn.outcome().unwrap_or(Outcome::Cancelled);
    };
    turn.feed(TurnEvent::SlotGranted).await;
    let mut seen = Seen {
        usage: None,
        session: conv.resume_id.clone(),
    };
    let ended = run_turn(ctx, conv, prompt, &cancel, &mut turn.replier, &mut seen).await;
    handles.end();
    drop(slot);
    // Whether this turn's spend is recorded: only then can it have reached the budget.
    let recorded = match seen.usage {
        Some(u) => spend::record_usage(ctx, conv, message, seen.session.as_deref(), u).await,
        None => false,
    };
    if ended == TurnEvent::CancelRequested && handles.abandoned() {
        // Stopped because the lease was lost: no reply from a node that no longer owns it.
        return Outcome::Cancelled;
    }
    turn.feed(ended).await;
    if recorded {
        if let Some((spent, max)) = budget_spent(ctx, &conv.id).await {
            turn.feed(TurnEvent::CapReached { spent, max }).await;
        }
    }
    turn.outcome().unwrap_or(Outcome::Failed)
}

/// The conversation's spend and budget when the budget is set and reached.
async fn budget_spent(ctx: &ChatContext, conversation: &str) -> Option<(f64, f64)> {
    let max = ctx.settings.budget_usd?;
    let spent = spend::over_budget(&ctx.store, conversation, Some(max)).await?;
    Some((spent, max))
}

/// A turn's state with the replies it shapes: applies the domain's step to each event and
/// runs its effects. Its final replies are collected, to be stored with the message's status.
struct Turn {
    state: TurnState,
    replier: Replier,
    replies: Vec<ChatReply>,
}

impl Turn {
    fn new(ctx: &Arc<ChatContext>, conv: &ConversationRecord) -> Self {
        let mode = ctx
            .settings
            .reply_modes
            .get(&conv.platform)
            .copied()
            .unwrap_or_default();
        Turn {
            state: TurnState::Picked,
            replier: Replier::new(ctx.clone(), conv, mode),
            replies: Vec::new(),
        }
    }

    async fn feed(&mut self, event: TurnEvent) {
        let (state, effects) = chat::step(self.state, &event);
        self.state = state;
        for effect in effects {
            match effect {
                TurnEffect::Reply(text) => self.replies.extend(self.replier.posts(&text)),
                TurnEffect::StartTurn => self.replier.start().await,
                TurnEffect::FlushReplies => self.replies.extend(self.replier.finish()),
            }
        }
    }

    fn outcome(&self) -> Option<Outcome> {
        match self.state {
            TurnState::Finished(o) => Some(o),
            _ => None,
        }
    }
}

/// Waits for a slot under `chat.max_concurrent`, telling the user their place while every
/// slot is busy. `None` when `/cancel` came first.
async fn wait_for_slot(
    ctx: &Arc<ChatContext>,
    conv: &ConversationRecord,
    cancel: &Notify,
) -> Option<TurnSlot> {
    let queued_ctx = ctx.clone();
    let queued_id = conv.id.clone();
    let slot_wait = ctx
        .scheduler
        .acquire(&conv.id, &conv.platform, move |position| {
            let max = queued_ctx.settings.max_concurrent;
            let busy = TurnEvent::SlotBusy { position, max };
            let (_, effects) = chat::step(TurnState::Waiting, &busy);
            actix::spawn(async move {
                for effect in effects {
                    if let TurnEffect::Reply(text) = effect {
                        turn_reply(&queued_ctx, &queued_id, &text).await;
                    }
                }
            });
        });
    tokio::select! {
        biased;
        _ = cancel.notified() => None,
        s = slot_wait => Some(s),
    }
}

/// What the chunks told about the turn so far (kept when the turn is cut short).
struct Seen {
    usage: Option<TurnUsage>,
    session: Option<String>,
}

/// Runs the assistant under the turn timeout and `/cancel`, streaming its chunks into
/// `replier`; says how it ended.
async fn run_turn(
    ctx: &ChatContext,
    conv: &ConversationRecord,
    prompt: &str,
    cancel: &Notify,
    replier: &mut Replier,
    seen: &mut Seen,
) -> TurnEvent {
    let request = TurnRequest {
        cwd: turn_dir(ctx, conv),
        prompt: prompt.to_string(),
        resume_id: conv.resume_id.clone(),
    };
    let (tx, rx) = mpsc::channel::<Chunk>(64);
    let turn = ctx.assistant.turn(&request, tx);
    let consume = consume(ctx, &conv.id, rx, replier, seen);
    let timeout = ctx.settings.turn_timeout.get();
    let work = async { tokio::join!(turn, consume).0 };
    tokio::select! {
        biased;
        _ = cancel.notified() => TurnEvent::CancelRequested,
        _ = ctx.clock.sleep(timeout) => TurnEvent::TimedOut(timeout),
        r = work => TurnEvent::TurnEnded(r.map_err(|e| {
            tracing::warn!(error = %e, "assistant turn failed");
            safe_error(&e)
        })),
    }
}

/// Feeds the turn's chunks to the replier and saves a new resume id at once (a cancelled or
/// crashed turn can still be resumed).
async fn consume(
    ctx: &ChatContext,
    conversation: &str,
    mut rx: mpsc::Receiver<Chunk>,
    replier: &mut Replier,
    seen: &mut Seen,
) {
    while let Some(c) = rx.recv().await {
        match c {
            Chunk::Text { text } => replier.text(text).await,
            Chunk::ToolUse { summary } => replier.tool(summary),
            Chunk::Denied { tool, detail } => {
                tracing::info!(conversation = %conversation, tool = %tool, "the assistant was refused a tool");
                replier.denied(&tool, &detail);
            }
            Chunk::Usage(u) => seen.usage = Some(u),
            Chunk::Session { session_id }
            | Chunk::Result {
                session_id: Some(session_id),
            } => {
                if seen.session.as_deref() != Some(&session_id) {
                    if let Err(e) = ctx.save_resume_id(conversation, Some(&session_id)).await {
                        tracing::warn!(error = %e, "cannot save the resume id");
                    }
                    seen.session = Some(session_id);
                }
            }
            Chunk::Result { session_id: None } => {}
        }
    }
}

/// What of an assistant error the user may see: short, and nothing that looks like a secret.
fn safe_error(e: &PluginError) -> String {
    let text = match e {
        PluginError::Command { status, stderr, .. } => {
            let first = stderr.lines().last().unwrap_or("").trim();
            if first.is_empty() {
                format!("it exited with {status}")
            } else {
                first.to_string()
            }
        }
        other => other.to_string(),
    };
    let lower = text.to_lowercase();
    if text.chars().count() > 200
        || ["password", "token", "secret", "key=", "authorization"]
            .iter()
            .any(|w| lower.contains(w))
    {
        "see the server log".into()
    } else {
        text
    }
}
