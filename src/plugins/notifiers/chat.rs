//! `chat`: posts into the conversation that spawned the session. That needs the chat bridge
//! (the `ChatPlatform` plugins and the conversation a session came from), which this build
//! does not have yet. Until then, `Settings::validate` rejects any route that reaches a `chat`
//! notifier, and this plugin — should a notification reach it anyway, e.g. from an older
//! configuration's rows — fails it for good with that reason, so it is dead-lettered visibly
//! rather than retried.

use async_trait::async_trait;

use crate::plugins::{Notification, Notifier, PluginError, PluginResult};

/// The chat notifier's shape, without the bridge behind it.
pub struct ChatNotifier;

#[async_trait]
impl Notifier for ChatNotifier {
    fn kind(&self) -> &'static str {
        "chat"
    }

    async fn notify(&self, _n: &Notification) -> PluginResult<()> {
        Err(PluginError::Unavailable {
            slot: "notifier",
            name: "chat (needs the chat bridge, not in this build)".into(),
        })
    }
}
