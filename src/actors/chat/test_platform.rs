//! The `test` chat platform (rca's test adapter, with auth): replies are kept in memory per
//! thread, edits replace a reply's text. Driven over HTTP by `http::chat_test` when
//! `chat.test_adapter` is on; for end-to-end tests against the real binary.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::plugins::{ChatPlatform, PluginResult};

/// One reply as the platform holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TestReply {
    /// Platform message id.
    pub id: String,
    /// Current text (after edits).
    pub text: String,
    /// How many times it was edited.
    pub edits: u32,
}

/// An in-memory platform.
#[derive(Debug, Default)]
pub struct TestPlatform {
    replies: Mutex<HashMap<String, Vec<TestReply>>>,
    next: Mutex<u64>,
}

impl TestPlatform {
    /// An empty platform.
    pub fn new() -> Self {
        Self::default()
    }

    /// The replies posted to `thread`, oldest first.
    pub fn replies(&self, thread: &str) -> Vec<TestReply> {
        self.replies
            .lock()
            .map(|r| r.get(thread).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Forgets every reply.
    pub fn clear(&self) {
        if let Ok(mut r) = self.replies.lock() {
            r.clear();
        }
    }
}

#[async_trait]
impl ChatPlatform for TestPlatform {
    fn name(&self) -> &'static str {
        "test"
    }

    fn max_message_len(&self) -> usize {
        4000
    }

    async fn send(&self, thread: &str, text: &str) -> PluginResult<String> {
        let id = {
            let mut n = self.next.lock().map_err(|_| poisoned())?;
            *n += 1;
            format!("r{n}")
        };
        self.replies
            .lock()
            .map_err(|_| poisoned())?
            .entry(thread.to_string())
            .or_default()
            .push(TestReply {
                id: id.clone(),
                text: text.to_string(),
                edits: 0,
            });
        Ok(id)
    }

    async fn edit(&self, thread: &str, message_id: &str, text: &str) -> PluginResult<()> {
        let mut r = self.replies.lock().map_err(|_| poisoned())?;
        let reply = r
            .get_mut(thread)
            .and_then(|v| v.iter_mut().find(|m| m.id == message_id))
            .ok_or_else(|| crate::plugins::PluginError::NotFound(message_id.to_string()))?;
        reply.text = text.to_string();
        reply.edits += 1;
        Ok(())
    }
}

fn poisoned() -> crate::plugins::PluginError {
    crate::plugins::PluginError::Invalid("test platform lock poisoned".into())
}
