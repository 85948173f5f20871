//! Sending to a chat platform: one call with a timeout and waits on rate limits, and a reply
//! to a conversation split under the platform's message limit.

use std::time::Duration;

use super::ChatContext;
use crate::chat::paths::split_reply;
use crate::plugins::{ChatPlatform, PluginError, ReplyKey};
use crate::store::ChatReply;

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

/// `text` as final replies (see [`super::action::Ending`]), split under `p`'s message limit.
pub fn replies_for(p: &dyn ChatPlatform, text: &str) -> Vec<ChatReply> {
    split_reply_for(p, text)
        .into_iter()
        .map(ChatReply::post)
        .collect()
}

/// `text` as a message's final replies to `conversation` (none when no platform is registered
/// under its name).
pub fn final_replies(ctx: &ChatContext, conversation: &str, text: &str) -> Vec<ChatReply> {
    let (platform, _) = split_id(conversation);
    match ctx.platforms.get(platform) {
        Some(p) => replies_for(p.as_ref(), text),
        None => {
            tracing::warn!(
                platform,
                "no chat platform registered under that name: reply dropped"
            );
            Vec::new()
        }
    }
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
    let parts = split_reply(text, p.max_message_len());
    if let Err(e) = send_parts(ctx, conversation, p.as_ref(), thread, &parts, None).await {
        tracing::warn!(platform, error = %e, "chat reply failed");
    }
}

/// Sends `parts` to the thread in order. When the platform says the bot cannot post there
/// at all ([`ChatPlatform::cannot_post_here`]: Slack's `not_in_channel`), the part refused
/// and the rest go through the conversation's newest still-usable reply address (a slash
/// command's `response_url`, see [`super::reply_addresses`]); without one the refusal
/// stands. With `key` (a stored reply's, the same at every attempt), each part is sent
/// under its own key ([`ChatPlatform::send_once`]), so that a repeat posts nothing new where
/// the platform can tell; an attempt after one that failed is told that its post may be out.
///
/// # Errors
/// The first failed send, or the refusal when no reply address could carry the rest.
pub(super) async fn send_parts(
    ctx: &ChatContext,
    conversation: &str,
    p: &dyn ChatPlatform,
    thread: &str,
    parts: &[String],
    key: Option<&ReplyKey>,
) -> Result<(), PluginError> {
    for (i, part) in parts.iter().enumerate() {
        let sent = match key {
            Some(key) => {
                let mut key = key.part(i);
                retry(|| {
                    let this = key.clone();
                    key = key.again();
                    async move { p.send_once(thread, part, &this).await }
                })
                .await
            }
            None => send(p, thread, part).await,
        };
        match sent {
            Ok(_) => {}
            Err(e) if p.cannot_post_here(&e) => {
                return through_addresses(ctx, conversation, p, &parts[i..], e).await
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `parts` posted through the conversation's reply addresses, newest first; an address that
/// refuses is not used again and the next one is tried.
async fn through_addresses(
    ctx: &ChatContext,
    conversation: &str,
    p: &dyn ChatPlatform,
    parts: &[String],
    refused: PluginError,
) -> Result<(), PluginError> {
    let addresses = &ctx.reply_addresses;
    let mut parts = parts.iter().peekable();
    while let Some(part) = parts.peek() {
        let newest = match addresses.newest(conversation, ctx.clock.now()) {
            None if addresses.to_restore(conversation) => {
                restore_addresses(ctx, conversation).await;
                addresses.newest(conversation, ctx.clock.now())
            }
            newest => newest,
        };
        let Some(a) = newest else {
            return Err(refused);
        };
        let sent = tokio::time::timeout(PLATFORM_TIMEOUT, p.send_to_address(&a.url, part, a.left))
            .await
            .unwrap_or_else(|_| {
                Err(PluginError::Timeout {
                    what: "chat reply address".into(),
                    after: PLATFORM_TIMEOUT,
                })
            });
        match sent {
            Ok(posts) => {
                addresses.used(conversation, &a.url, posts.max(1));
                parts.next();
            }
            Err(e) => {
                // The URL is a capability: the error names the platform's code, never it.
                tracing::warn!(conversation, error = %e, "a reply address refused the reply");
                addresses.spent(conversation, &a.url);
            }
        }
    }
    tracing::info!(
        conversation,
        error = %refused,
        "the bot cannot post in the thread: the reply went through the message's reply address"
    );
    Ok(())
}

/// Keeps the reply addresses of `conversation`'s messages young enough to be used: a restart
/// forgot them, and a stored reply posted after it needs them as much as before.
async fn restore_addresses(ctx: &ChatContext, conversation: &str) {
    let since = ctx.clock.now() - super::reply_addresses::LIFETIME;
    match ctx.store.chat_messages_since(conversation, since).await {
        Ok(messages) => {
            for m in messages {
                if let Some(url) = m.meta.get(crate::plugins::META_RESPONSE_URL) {
                    ctx.reply_addresses.keep(conversation, url, m.received_at);
                }
            }
        }
        Err(e) => tracing::warn!(conversation, error = %e, "cannot read back the reply addresses"),
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
