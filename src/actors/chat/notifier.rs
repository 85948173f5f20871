//! The return path of `/spawn`: the `chat` notifier posts a session's notifications
//! (escalations, exits) into the conversation the session was spawned from
//! (`chat_session_links`). `app.rs` puts it in place of every notifier of kind `chat`.
//! A notification for a session that did not come from a chat has nowhere to go: it is
//! delivered as a no-op.

use async_trait::async_trait;

use super::platforms::ChatPlatforms;
use super::reply::{split_id, split_reply_for};
use crate::plugins::{Notification, Notifier, PluginError, PluginResult, PostedMessage};
use crate::store::SharedStore;

/// Posts notifications back into their session's chat conversation.
pub struct BridgeNotifier {
    store: SharedStore,
    platforms: ChatPlatforms,
}

impl BridgeNotifier {
    /// A notifier over the store's session links and the registered platforms.
    pub fn new(store: SharedStore, platforms: ChatPlatforms) -> Self {
        BridgeNotifier { store, platforms }
    }
}

#[async_trait]
impl Notifier for BridgeNotifier {
    fn kind(&self) -> &'static str {
        "chat"
    }

    async fn notify(&self, n: &Notification) -> PluginResult<Option<PostedMessage>> {
        let Some(session) = &n.session else {
            return Ok(None);
        };
        let conversation = self
            .store
            .conversation_for_session(session)
            .await
            .map_err(|e| PluginError::Unreachable {
                service: "store",
                detail: e.to_string(),
            })?;
        let Some(conversation) = conversation else {
            tracing::debug!(session = %session, "no chat conversation for this session");
            return Ok(None);
        };
        let (platform, thread) = split_id(&conversation);
        let p = self.platforms.require(platform)?;
        let mut text = format!("🔔 {} ({}): {}", session, n.priority, n.message);
        if let Some(url) = &n.pr_url {
            text.push_str(&format!("\n{url}"));
        }
        if n.reaction.as_deref() == Some("agent-needs-input") {
            text.push_str("\nReply here to answer it.");
        }
        // Each part under its key: a notification that may have been posted already (a
        // retry, a restart mid-delivery) is posted where the platform does not show it yet.
        let key = n.reply_key();
        for (i, part) in split_reply_for(p.as_ref(), &text).iter().enumerate() {
            // The outbox retries retriable errors with its own backoff.
            p.send_once(thread, part, &key.part(i)).await?;
        }
        Ok(None)
    }
}
