//! `chat`: posts into the conversation that spawned the session. The real implementation is
//! the chat bridge's `actors::chat::notifier::BridgeNotifier`, which `app.rs` puts in place of
//! every notifier of kind `chat` (it needs the store's session links and the registered
//! `ChatPlatform`s, which plugins do not hold). This placeholder only answers where the bridge
//! is not wired (a bare `build_notifiers`): it fails the notification for good with that
//! reason, so it is dead-lettered visibly rather than retried.

use async_trait::async_trait;

use crate::plugins::{Notification, Notifier, PluginError, PluginResult, PostedMessage};

/// The chat notifier's shape, without the bridge behind it.
pub struct ChatNotifier;

#[async_trait]
impl Notifier for ChatNotifier {
    fn kind(&self) -> &'static str {
        "chat"
    }

    async fn notify(&self, _n: &Notification) -> PluginResult<Option<PostedMessage>> {
        Err(PluginError::Unavailable {
            slot: "notifier",
            name: "chat (needs the chat bridge, not in this build)".into(),
        })
    }
}
