//! What the conversations page shows per conversation: the stored record, what waits in its
//! inbox, its newest message, and where it stands with the turn scheduler.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::{ChatActivity, ConversationRecord};

/// Characters of the newest message shown (the page shows its first line anyway).
const BODY_CHARS: usize = 500;

/// Which conversations run a turn now and which wait for a slot (for the conversations page).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Standing {
    /// Conversations running a turn.
    pub running: Vec<String>,
    /// Conversations waiting, first in line first.
    pub waiting: Vec<String>,
}

/// A conversation as the conversations page lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConversationView {
    /// The stored conversation.
    #[serde(flatten)]
    pub conversation: ConversationRecord,
    /// Messages queued or running.
    pub pending: i64,
    /// A turn runs now.
    pub running: bool,
    /// 1-based place in the line for a turn slot, while it waits for one.
    pub queue_position: Option<usize>,
    /// The newest message received.
    pub last_message: Option<LastMessage>,
}

/// The newest message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LastMessage {
    /// Who wrote it.
    pub author: String,
    /// Its text (the first 500 characters).
    pub body: String,
    /// `queued`, `running`, `done` or `failed`.
    pub status: String,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
}

/// Joins the records (in their order) with the inbox and the scheduler.
pub fn overview(
    conversations: Vec<ConversationRecord>,
    activity: &ChatActivity,
    standing: &Standing,
) -> Vec<ConversationView> {
    conversations
        .into_iter()
        .map(|c| {
            let last_message = activity
                .latest
                .iter()
                .find(|m| m.conversation_id == c.id)
                .map(|m| LastMessage {
                    author: m.author.clone(),
                    body: m.body.chars().take(BODY_CHARS).collect(),
                    status: serde_json::to_value(m.status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    received_at: m.received_at,
                });
            ConversationView {
                pending: activity.pending.get(&c.id).copied().unwrap_or(0),
                running: standing.running.contains(&c.id),
                queue_position: standing
                    .waiting
                    .iter()
                    .position(|w| *w == c.id)
                    .map(|i| i + 1),
                last_message,
                conversation: c,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ChatMessageRecord, MessageStatus};

    fn conv(id: &str) -> ConversationRecord {
        let at = Utc::now();
        ConversationRecord {
            id: id.into(),
            platform: "telegram".into(),
            thread: id.into(),
            resume_id: None,
            cwd: None,
            codebase: None,
            worktree: None,
            last_command: None,
            created_at: at,
            updated_at: at,
        }
    }

    fn message(conversation: &str, body: &str, status: MessageStatus) -> ChatMessageRecord {
        ChatMessageRecord {
            id: 1,
            conversation_id: conversation.into(),
            platform_message_id: "m".into(),
            author: "ada".into(),
            body: body.into(),
            meta: Default::default(),
            status,
            received_at: Utc::now(),
        }
    }

    #[test]
    fn each_conversation_gets_its_inbox_and_its_place_in_line() {
        let activity = ChatActivity {
            latest: vec![
                message("a", "fix the build", MessageStatus::Running),
                message("b", &"x".repeat(900), MessageStatus::Queued),
            ],
            pending: [("a".to_string(), 1), ("b".to_string(), 3)].into(),
        };
        let standing = Standing {
            running: vec!["a".into()],
            waiting: vec!["c".into(), "b".into()],
        };
        let v = overview(vec![conv("a"), conv("b"), conv("c")], &activity, &standing);
        let ids: Vec<&str> = v.iter().map(|c| c.conversation.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"], "the records' order is kept");
        assert!(v[0].running);
        assert_eq!(v[0].queue_position, None);
        assert_eq!(
            v[0].last_message.as_ref().map(|m| m.status.as_str()),
            Some("running")
        );
        assert_eq!((v[1].pending, v[1].queue_position), (3, Some(2)));
        assert_eq!(
            v[1].last_message.as_ref().map(|m| m.body.chars().count()),
            Some(500)
        );
        assert_eq!((v[2].pending, v[2].queue_position), (0, Some(1)));
        assert_eq!(v[2].last_message, None);
    }
}
