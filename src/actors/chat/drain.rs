//! The drain loop: a conversation's pending messages, oldest first, one at a time, each
//! marked `running` before its turn and `done`/`failed` after.

use std::sync::Arc;
use std::time::Duration;

use super::dispatch;
use super::handles::TurnHandles;
use super::ChatContext;
use crate::domain::chat::Outcome;
use crate::store::{ChatMessageRecord, MessageStatus, StoreError};
use crate::telemetry::METRICS;

/// Attempts at writing a message's final status before the drain gives up (and retries the
/// whole drain later, which would re-run the message: avoided while the store answers).
const STATUS_ATTEMPTS: u32 = 5;

/// Processes the conversation's pending messages, oldest first, until none is left.
///
/// # Errors
/// The store failed (the actor drains again later).
pub async fn drain(
    ctx: Arc<ChatContext>,
    conversation: String,
    handles: Arc<TurnHandles>,
) -> Result<(), StoreError> {
    while let Some(msg) = ctx.store.next_chat_message(&conversation).await? {
        mark_running(&ctx, &msg).await?;
        let outcome = dispatch::handle_message(&ctx, &conversation, &msg, &handles).await;
        METRICS
            .chat_turns
            .with_label_values(&[outcome.label()])
            .inc();
        settle(&ctx, msg.id, outcome).await?;
    }
    Ok(())
}

/// Marks a message `running`; one left `running` by a restart runs again as it is.
async fn mark_running(ctx: &ChatContext, msg: &ChatMessageRecord) -> Result<(), StoreError> {
    if msg.status == MessageStatus::Running {
        tracing::info!(
            message = msg.id,
            "re-running a message a restart interrupted"
        );
        return Ok(());
    }
    ctx.store
        .set_chat_message_status(msg.id, MessageStatus::Running)
        .await
}

/// Records a message's final status, retrying a failing store a few times.
async fn settle(ctx: &ChatContext, id: i64, outcome: Outcome) -> Result<(), StoreError> {
    let status = if outcome.succeeded() {
        MessageStatus::Done
    } else {
        MessageStatus::Failed
    };
    let mut attempt = 0;
    loop {
        match ctx.store.set_chat_message_status(id, status).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt + 1 < STATUS_ATTEMPTS => {
                attempt += 1;
                tracing::warn!(attempt, error = %e, "cannot record a chat message's status");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            Err(e) => return Err(e),
        }
    }
}
