//! Drives an app's chat bridge through its HTTP test platform, for the tests whose assistant is
//! a real CLI (`real_claude_chat`, `real_codex_chat`): messages in, replies and turn usage out.
//! Waits use deadlines, never sleeps.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::helpers::*;

/// A turn of a real CLI takes seconds; a loaded machine takes longer.
pub const TURN_DEADLINE: u64 = 120;

/// An app with `chat.test_adapter` on, and the scratch directory its chat paths live in.
pub struct ChatDriver {
    /// The app.
    pub app: TestApp,
    /// Scratch directory (the config's `chat.workspace` and `chat.worktrees` are under it).
    pub base: PathBuf,
}

impl ChatDriver {
    /// Posts `text` by the allowed `tester` in `thread`.
    pub async fn send(&self, thread: &str, text: &str) {
        let (s, v) = self
            .app
            .post(
                "/api/v1/chat/test/messages",
                json!({"thread": thread, "text": text, "author": "tester"}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }

    /// Every reply in `thread` so far.
    pub async fn replies(&self, thread: &str) -> Vec<String> {
        let (s, v) = self
            .app
            .get(&format!("/api/v1/chat/test/replies?thread={thread}"))
            .await;
        assert_eq!(s, 200);
        v["replies"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| r["text"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits for a reply of `thread` containing `needle` and returns it.
    pub async fn wait_reply(&self, thread: &str, needle: &str) -> String {
        eventually(
            TURN_DEADLINE,
            &format!("a reply in {thread} containing {needle:?}"),
            || async {
                self.replies(thread)
                    .await
                    .into_iter()
                    .find(|t| t.contains(needle))
            },
        )
        .await
    }

    /// `/clone`s a copy of the app's repository for `thread`; returns the conversation's
    /// directory (where its turns run).
    pub async fn with_codebase(&self, thread: &str) -> PathBuf {
        let up = self.base.join("src").join("acme");
        std::fs::create_dir_all(&up).expect("mkdir");
        git(
            &up,
            &[
                "clone",
                "-q",
                &self.app.repo.display().to_string(),
                "widget",
            ],
        );
        self.send(thread, &format!("/clone {}", up.join("widget").display()))
            .await;
        self.wait_reply(thread, "acme/widget").await;
        let conv = self.conversation(thread).await;
        PathBuf::from(conv.cwd.expect("the conversation has a cwd"))
    }

    /// The stored conversation of `thread`.
    pub async fn conversation(&self, thread: &str) -> flotilla::store::ConversationRecord {
        self.app
            .store
            .get_conversation(&format!("test:{thread}"))
            .await
            .expect("conversation")
    }

    /// Waits until there are `n` `chat.turn_usage` events; returns their data, oldest first.
    pub async fn wait_usage(&self, n: usize) -> Vec<Value> {
        eventually(
            TURN_DEADLINE,
            &format!("{n} chat.turn_usage events"),
            || async {
                let u: Vec<Value> = self
                    .app
                    .store
                    .events_after(0, 10_000)
                    .await
                    .expect("events")
                    .into_iter()
                    .filter(|e| e.kind == "chat.turn_usage")
                    .map(|e| e.data)
                    .collect();
                (u.len() >= n).then_some(u)
            },
        )
        .await
    }
}
