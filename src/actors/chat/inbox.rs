//! [`StoreInbox`]: the [`ChatInbox`] platform adapters call. It checks the allowlist, stores
//! the message (durably, deduplicated) and only then wakes the conversation.
//!
//! Allowlists are closed: a message whose author is not in `chat.allow.<platform>` is
//! **dropped before storage** (logged without its text, counted as `rejected`) and the
//! adapter gets a receipt with `new: false`, so it acknowledges the platform and nothing is
//! ever served. Nothing of an unknown author's is kept.
//!
//! A message that replies to a notification Flotilla posted (its `meta.reply_to` names a
//! recorded `notification_posts` row) is marked `meta.answers` = that session, and
//! `meta.answers_asked_at` = when that notification was made (and `meta.answers_question` = the
//! question it asked, when it asked one), for the conversation to deliver
//! as the session's answer to that question (not to a newer one). A message that did not address the bot
//! (`meta.unaddressed`: an unmentioned thread message) is taken only as such a reply, and
//! otherwise dropped without a trace, before the allowlist (it was not for us).
//!
//! A message from a chat the platform gave a new id (a Telegram group upgraded to a
//! supergroup) names the thread it had before, `meta.moved_from`: it joins that thread's
//! conversation when one exists (same resume id, worktree, queue), else it starts one of its
//! own thread. The key is consumed here, not stored.

use std::collections::{HashMap, HashSet};

use actix::Addr;
use async_trait::async_trait;
use chrono::Utc;

use super::messages::Wake;
use super::ChatSupervisor;
use crate::config::ChatSettings;
use crate::plugins::{ChatInbox, InboundMessage, InboxReceipt, PluginError, PluginResult};
use crate::store::{NotificationPost, SharedStore};
use crate::telemetry::METRICS;

/// The durable inbox.
pub struct StoreInbox {
    store: SharedStore,
    allow: HashMap<String, HashSet<String>>,
    supervisor: Addr<ChatSupervisor>,
}

/// The message meta key naming the session a reply to a notification answers.
pub const ANSWERS: &str = "answers";
/// The message meta key saying when the notification replied to was made (RFC 3339).
pub const ANSWERS_ASKED_AT: &str = "answers_asked_at";
/// The message meta key holding the question the notification replied to asked.
pub const ANSWERS_QUESTION: &str = "answers_question";

/// Platforms with an allowlist in `chat.allow`.
pub const PLATFORMS: [&str; 6] = ["telegram", "discord", "slack", "github", "jira", "test"];

impl StoreInbox {
    /// An inbox over `store` that wakes `supervisor`.
    pub fn new(
        store: SharedStore,
        settings: &ChatSettings,
        supervisor: Addr<ChatSupervisor>,
    ) -> Self {
        let allow = PLATFORMS
            .iter()
            .map(|p| {
                let ids = settings
                    .allow
                    .for_platform(p)
                    .iter()
                    .map(|a| normalize(p, a))
                    .collect();
                (p.to_string(), ids)
            })
            .collect();
        StoreInbox {
            store,
            allow,
            supervisor,
        }
    }

    /// The post of the notification `m` replies to, if it does.
    ///
    /// # Errors
    /// The store could not be read (the adapter must not acknowledge).
    async fn notification_replied_to(
        &self,
        m: &InboundMessage,
    ) -> PluginResult<Option<NotificationPost>> {
        let Some(key) = m.meta.get("reply_to") else {
            return Ok(None);
        };
        let post = self
            .store
            .notification_post(&m.platform, key)
            .await
            .map_err(|e| PluginError::Unreachable {
                service: "store",
                detail: e.to_string(),
            })?;
        Ok(post)
    }

    /// Whether `platform`'s thread `thread` has a conversation.
    ///
    /// # Errors
    /// The store could not be read (the adapter must not acknowledge).
    async fn conversation_exists(&self, platform: &str, thread: &str) -> PluginResult<bool> {
        match self
            .store
            .get_conversation(&format!("{platform}:{thread}"))
            .await
        {
            Ok(_) => Ok(true),
            Err(crate::store::StoreError::NotFound { .. }) => Ok(false),
            Err(e) => Err(PluginError::Unreachable {
                service: "store",
                detail: e.to_string(),
            }),
        }
    }

    /// Whether `author` may talk to Flotilla on `platform`.
    pub fn allowed(&self, platform: &str, author: &str) -> bool {
        self.allow
            .get(platform)
            .is_some_and(|ids| ids.contains(&normalize(platform, author)))
    }
}

/// GitHub logins are case-insensitive; other platforms' ids are compared as given.
fn normalize(platform: &str, id: &str) -> String {
    if platform == "github" {
        id.trim().to_lowercase()
    } else {
        id.trim().to_string()
    }
}

/// Logs a warning per platform whose allowlist is empty (nobody is served there).
pub fn warn_empty_allowlists(settings: &ChatSettings) {
    for p in PLATFORMS {
        if p == "test" && !settings.test_adapter {
            continue;
        }
        if settings.allow.for_platform(p).is_empty() {
            tracing::warn!(
                platform = p,
                "chat.allow.{p} is empty: nobody is served on {p} (allowlists are closed by default)"
            );
        }
    }
}

#[async_trait]
impl ChatInbox for StoreInbox {
    async fn receive(&self, mut m: InboundMessage) -> PluginResult<InboxReceipt> {
        if let Some(old) = m.meta.remove("moved_from") {
            if self.conversation_exists(&m.platform, &old).await? {
                m.thread = old;
            }
        }
        let conversation = format!("{}:{}", m.platform, m.thread);
        // Only this inbox says which session (and which of its questions) a message answers.
        m.meta.remove(ANSWERS);
        m.meta.remove(ANSWERS_ASKED_AT);
        m.meta.remove(ANSWERS_QUESTION);
        let answers = self.notification_replied_to(&m).await?;
        if answers.is_none() && m.meta.get("unaddressed").map(String::as_str) == Some("true") {
            return Ok(InboxReceipt {
                conversation,
                new: false,
                position: 0,
            });
        }
        if let Some(post) = answers {
            m.meta.insert(ANSWERS.to_string(), post.session_id.0);
            if let Some(at) = post.notified_at {
                m.meta.insert(ANSWERS_ASKED_AT.to_string(), at.to_rfc3339());
            }
            if let Some(q) = post.notified_question {
                m.meta.insert(ANSWERS_QUESTION.to_string(), q);
            }
        }
        if !self.allowed(&m.platform, &m.author) {
            tracing::warn!(platform = %m.platform, conversation = %conversation,
                "message from an author not in the allowlist dropped");
            METRICS.chat_turns.with_label_values(&["rejected"]).inc();
            return Ok(InboxReceipt {
                conversation,
                new: false,
                position: 0,
            });
        }
        let err = |e: crate::store::StoreError| PluginError::Unreachable {
            service: "store",
            detail: e.to_string(),
        };
        let now = Utc::now();
        let conv = self
            .store
            .upsert_conversation(&m.platform, &m.thread, now)
            .await
            .map_err(err)?;
        let stored = self
            .store
            .enqueue_chat_message_with_meta(
                &conv.id,
                &m.message_id,
                &m.author,
                &m.text,
                &m.meta,
                now,
            )
            .await
            .map_err(err)?;
        let pending = self
            .store
            .pending_chat_messages(&conv.id)
            .await
            .map_err(err)?;
        let position = match &stored {
            Some(msg) => pending.iter().take_while(|p| p.id != msg.id).count(),
            None => 0,
        };
        if stored.is_some() {
            self.supervisor.do_send(Wake {
                conversation: conv.id.clone(),
                cancel: m.text.trim() == "/cancel",
                ahead: position,
                remote: false,
            });
        }
        Ok(InboxReceipt {
            conversation: conv.id,
            new: stored.is_some(),
            position,
        })
    }

    async fn thread_closed(&self, m: InboundMessage) -> PluginResult<bool> {
        let id = format!("{}:{}", m.platform, m.thread);
        let conv = match self.store.get_conversation(&id).await {
            Ok(c) => c,
            Err(crate::store::StoreError::NotFound { .. }) => return Ok(false),
            Err(e) => {
                return Err(PluginError::Unreachable {
                    service: "store",
                    detail: e.to_string(),
                })
            }
        };
        let stored = self
            .store
            .enqueue_chat_message_with_meta(
                &conv.id,
                &m.message_id,
                &m.author,
                &m.text,
                &m.meta,
                Utc::now(),
            )
            .await
            .map_err(|e| PluginError::Unreachable {
                service: "store",
                detail: e.to_string(),
            })?;
        if stored.is_some() {
            self.supervisor.do_send(Wake {
                conversation: conv.id,
                cancel: false,
                ahead: 0,
                remote: false,
            });
        }
        Ok(stored.is_some())
    }
}
