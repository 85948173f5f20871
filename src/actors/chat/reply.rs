//! Sending to a chat platform: one call with a timeout and waits on rate limits, and a reply
//! to a conversation split under the platform's message limit.

use std::time::Duration;

use super::ChatContext;
use crate::chat::paths::split_reply;
use crate::plugins::{ChatPlatform, PluginError};

/// Longest a platform call may take.
const PLATFORM_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts at a platform call that failed with a retriable error (rate limits).
const PLATFORM_ATTEMPTS: u32 = 5;

/// Splits `{platform}:{thread}`.
pub fn split_id(conversation: &str) -> (&str, &str) {
    conversation.split_once(':').unwrap_or((conversation, ""))
}

/// `text` split under `p`'s message limit.
pub fn split_reply_for(p: &dyn ChatPlatform, text: &str) -> Vec<String> {
    split_reply(text, p.max_message_len())
}

/// Sends `text` to a conversation (split under the platform's limit), logging failures.
pub async fn reply_to(ctx: &ChatContext, conversation: &str, text: &str) {
    let (platform, thread) = split_id(conversation);
    let Some(p) = ctx.platforms.get(platform) else {
        tracing::warn!(
            platform,
            "no chat platform registered under that name: reply dropped"
        );
        return;
    };
    for part in split_reply(text, p.max_message_len()) {
        if let Err(e) = send(p.as_ref(), thread, &part).await {
            tracing::warn!(platform, error = %e, "chat reply failed");
            return;
        }
    }
}

/// Sends a reply of the conversation's turn (or of a command it runs): only while this node
/// still owns the conversation (see [`ChatContext::still_owns`]); otherwise it is dropped.
pub async fn turn_reply(ctx: &ChatContext, conversation: &str, text: &str) {
    if !ctx.still_owns(conversation).await {
        tracing::info!(
            conversation,
            "the conversation moved to another node: reply dropped"
        );
        return;
    }
    reply_to(ctx, conversation, text).await;
}

/// One platform send, with a timeout and waits on rate limits.
pub(super) async fn send(
    p: &dyn ChatPlatform,
    thread: &str,
    text: &str,
) -> Result<String, PluginError> {
    retry(|| p.send(thread, text)).await
}

/// One platform edit, with a timeout and waits on rate limits.
pub(super) async fn edit(
    p: &dyn ChatPlatform,
    thread: &str,
    id: &str,
    text: &str,
) -> Result<(), PluginError> {
    retry(|| p.edit(thread, id, text)).await
}

async fn retry<T, F, Fut>(mut f: F) -> Result<T, PluginError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, PluginError>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let r = match tokio::time::timeout(PLATFORM_TIMEOUT, f()).await {
            Ok(r) => r,
            Err(_) => Err(PluginError::Timeout {
                what: "chat platform call".into(),
                after: PLATFORM_TIMEOUT,
            }),
        };
        match r {
            Err(e) if e.is_retriable() && attempt < PLATFORM_ATTEMPTS => {
                let wait = e
                    .retry_after()
                    .unwrap_or(Duration::from_millis(500 * u64::from(attempt)))
                    .min(Duration::from_secs(60));
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}
