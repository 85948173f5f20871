//! Posting a conversation's stored final replies (`chat_replies`), oldest first, by the node
//! that owns the conversation. A reply is stored in the transaction that settles its message,
//! so a crash between the turn and the post posts it after the restart instead of running
//! the turn again, and a platform that fails gets it later instead of never.

use std::time::Duration;

use super::reply::{edit, send_parts, split_id};
use super::ChatContext;
use crate::plugins::{PluginError, ReplyKey};
use crate::store::{ChatReplyRecord, StoreError};
use crate::telemetry::METRICS;

/// Attempts at posting one reply (each one a platform call with its own retries) before it is
/// given up: with [`backoff`], about half an hour of a platform failing.
const REPLY_ATTEMPTS: i64 = 12;
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Whether every stored reply is out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Nothing is left.
    All,
    /// The platform failed: the rest waits, to be tried again after this long.
    Waiting(Duration),
}

/// Posts the conversation's stored replies in order. Returns with the ids of those out (posted,
/// or given up), for the caller to forget in the transaction of its next claim
/// ([`ChatReplies::claim_after_posting`]). A reply the platform refuses for good (not
/// retriable), or that failed [`REPLY_ATTEMPTS`] times, is given up with a warning; one that
/// failed for now stops the delivery, so replies keep their order.
///
/// `settled` is the message the caller settled just before (its replies' first attempt, made
/// by the task that stored them: none can be out yet). Any other reply may have been posted
/// by an attempt the store does not know of (a crash after the post, an answer lost on the way
/// back), and the platform is asked to look for it first where it can
/// ([`ReplyKey::look_since`]).
///
/// # Errors
/// The store failed (the replies already out are forgotten first, as far as it lets them).
///
/// [`ChatReplies::claim_after_posting`]: crate::store::ChatReplies::claim_after_posting
pub async fn deliver(
    ctx: &ChatContext,
    conversation: &str,
    settled: Option<i64>,
) -> Result<(Delivered, Vec<i64>), StoreError> {
    let mut out = Vec::new();
    for r in ctx.store.unsent_chat_replies(conversation).await? {
        let first = r.attempts == 0 && settled == Some(r.message_id);
        let result = match post(ctx, conversation, &r, first).await {
            Ok(()) => "posted",
            Err(e) if e.is_retriable() => {
                let attempts = match ctx.store.chat_reply_failed(r.id).await {
                    Ok(n) => n,
                    Err(store) => {
                        forget(ctx, &out).await;
                        return Err(store);
                    }
                };
                if attempts < REPLY_ATTEMPTS {
                    tracing::warn!(conversation, reply = r.id, attempts, error = %e, "chat reply failed; trying again later");
                    count("retried");
                    return Ok((Delivered::Waiting(backoff(attempts)), out));
                }
                tracing::error!(conversation, reply = r.id, attempts, error = %e, "chat reply given up");
                "given_up"
            }
            Err(e) => {
                tracing::error!(conversation, reply = r.id, error = %e, "the platform refused a chat reply; given up");
                "given_up"
            }
        };
        out.push(r.id);
        count(result);
    }
    Ok((Delivered::All, out))
}

/// Forgets replies that are out when no claim will: each on its own, as far as the store
/// lets it (one left is posted again later, the at-least-once of any platform call).
pub async fn forget(ctx: &ChatContext, out: &[i64]) {
    for id in out {
        if let Err(e) = ctx.store.chat_reply_done(*id).await {
            tracing::warn!(reply = id, error = %e, "cannot forget a posted chat reply");
        }
    }
}

fn count(result: &str) {
    METRICS.chat_replies.with_label_values(&[result]).inc();
}

/// One reply: an edit of the message a streamed reply grew, or a new post (through the
/// conversation's reply address where the bot cannot post).
async fn post(
    ctx: &ChatContext,
    conversation: &str,
    r: &ChatReplyRecord,
    first: bool,
) -> Result<(), PluginError> {
    let (platform, thread) = split_id(conversation);
    let p = ctx.platforms.require(platform)?;
    match &r.reply.edit_of {
        Some(id) => edit(p.as_ref(), thread, id, &r.reply.body).await,
        None => {
            // Keyed by the stored reply: posted again after a crash (or a lost answer), it is
            // the same post where the platform can tell.
            let key = ReplyKey::new(format!("{conversation}/{}", r.id), r.stored_at, !first);
            send_parts(
                ctx,
                conversation,
                p.as_ref(),
                thread,
                std::slice::from_ref(&r.reply.body),
                Some(&key),
            )
            .await
        }
    }
}

/// The wait after a reply's `attempts`th failure: 2 s, doubling, at most [`MAX_BACKOFF`].
fn backoff(attempts: i64) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(16);
    (Duration::from_secs(2) * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_from_two_seconds_up_to_five_minutes() {
        let waits: Vec<u64> = (1..=10).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff(i64::MAX), MAX_BACKOFF);
    }
}
