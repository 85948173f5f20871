//! The drain loop: a conversation's pending messages, oldest first, one at a time, each
//! claimed (`running`) in the store before its turn and `done`/`failed` after, together with
//! its final replies; those are posted before the next message is claimed, and forgotten in
//! the claim's transaction.

use std::sync::Arc;
use std::time::Duration;

use super::action::Ending;
use super::delivery::{deliver, forget, Delivered};
use super::dispatch;
use super::handles::TurnHandles;
use super::ChatContext;
use crate::store::{Fence, MessageStatus, StoreError};
use crate::telemetry::METRICS;

/// Attempts at writing a message's final status before the drain gives up (and retries the
/// whole drain later, which would re-run the message: avoided while the store answers).
const STATUS_ATTEMPTS: u32 = 5;

/// Processes the conversation's pending messages, oldest first, until none is left, posting
/// the stored replies before each. When clustered, only while this node holds the
/// conversation's lease (acquired here when it is free or expired; nothing runs while another
/// node holds it). Once a reply waits for its platform, the messages still run and their
/// replies queue behind it: the result says when to try again.
///
/// # Errors
/// The store failed (the actor drains again later); `Fenced`: another node owns the
/// conversation now (the actor stops).
pub async fn drain(
    ctx: Arc<ChatContext>,
    conversation: String,
    handles: Arc<TurnHandles>,
) -> Result<Delivered, StoreError> {
    let mut delivered = Delivered::All;
    // The message settled by the last round: its replies are on their first attempt.
    let mut settled = None;
    loop {
        let fence = match &ctx.cluster {
            None => None,
            Some(c) => match c.acquire_conversation(&conversation).await? {
                Some(f) => Some(f),
                None => return Ok(Delivered::All),
            },
        };
        let mut out = Vec::new();
        if delivered == Delivered::All {
            (delivered, out) = deliver(&ctx, &conversation, settled).await?;
        }
        // The replies out are forgotten in the claim's transaction (or, refused, on their own).
        let claim = match ctx
            .store
            .claim_after_posting(&conversation, &out, fence.as_ref())
            .await
        {
            Ok(claim) => claim,
            Err(e) => {
                forget(&ctx, &out).await;
                return Err(e);
            }
        };
        let Some(claim) = claim else {
            return Ok(delivered);
        };
        let msg = claim.message;
        if claim.resumed {
            tracing::info!(
                message = msg.id,
                "re-running a message a restart or a dead owner interrupted"
            );
        }
        let ending =
            dispatch::handle_message(&ctx, &conversation, &msg, claim.resumed, &handles).await;
        METRICS
            .chat_turns
            .with_label_values(&[ending.outcome.label()])
            .inc();
        settle(&ctx, &conversation, msg.id, &ending, fence.as_ref()).await?;
        settled = Some(msg.id);
    }
}

/// Records a message's final status with its replies (under the claim's fence when
/// clustered), retrying a failing store a few times; a refused (fenced) write is not retried.
async fn settle(
    ctx: &ChatContext,
    conversation: &str,
    id: i64,
    ending: &Ending,
    fence: Option<&Fence>,
) -> Result<(), StoreError> {
    let status = if ending.outcome.succeeded() {
        MessageStatus::Done
    } else {
        MessageStatus::Failed
    };
    let mut attempt = 0;
    loop {
        let r = ctx
            .store
            .settle_chat_message(conversation, id, status, &ending.replies, fence)
            .await;
        match r {
            Ok(()) => return Ok(()),
            Err(e @ StoreError::Fenced { .. }) => return Err(e),
            Err(e) if attempt + 1 < STATUS_ATTEMPTS => {
                attempt += 1;
                tracing::warn!(attempt, error = %e, "cannot record a chat message's status");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            Err(e) => return Err(e),
        }
    }
}
