//! The chat platforms the bridge replies through, by name.
//!
//! Registering a platform is one line in [`chat_platforms_from`] (platform adapters live in
//! `plugins::chat`).

use std::collections::HashMap;
use std::sync::Arc;

use super::test_platform::TestPlatform;
use crate::config::Settings;
use crate::plugins::chat::telegram_api::MovedChats;
use crate::plugins::{ChatPlatform, PluginError, PluginResult};

/// Platforms by name (`telegram`, `slack`, `test`…).
#[derive(Clone, Default)]
pub struct ChatPlatforms {
    by_name: HashMap<String, Arc<dyn ChatPlatform>>,
    /// The HTTP test platform, when `chat.test_adapter` is on (its routes read replies here).
    pub test: Option<Arc<TestPlatform>>,
}

impl ChatPlatforms {
    /// Registers `platform` under its own name (a later one replaces an earlier one).
    pub fn register(&mut self, platform: Arc<dyn ChatPlatform>) {
        self.by_name.insert(platform.name().to_string(), platform);
    }

    /// The platform called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn ChatPlatform>> {
        self.by_name.get(name).cloned()
    }

    /// The platform called `name`, or `Unavailable` naming it.
    ///
    /// # Errors
    /// `Unavailable` when no platform is registered under `name`.
    pub fn require(&self, name: &str) -> PluginResult<Arc<dyn ChatPlatform>> {
        self.get(name).ok_or_else(|| PluginError::Unavailable {
            slot: "chat platform",
            name: name.to_string(),
        })
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.by_name.keys().cloned().collect();
        n.sort();
        n
    }
}

/// Builds the platforms configured in `settings` (Telegram following chat moves through
/// `telegram_moves`). Platform adapters add one line each here.
pub fn chat_platforms_from(settings: &Settings, telegram_moves: &MovedChats) -> ChatPlatforms {
    let mut p = ChatPlatforms::default();
    if settings.chat.test_adapter {
        let t = Arc::new(TestPlatform::new());
        p.register(t.clone());
        p.test = Some(t);
    }
    let timeout = crate::plugins::chat::CALL_TIMEOUT;
    match crate::plugins::chat::platforms_from(settings, timeout, telegram_moves) {
        Ok(list) => list.into_iter().for_each(|pl| p.register(pl)),
        Err(e) => tracing::error!(error = %e, "chat platforms could not be built"),
    }
    p
}
