//! A store assembled from one implementation per area, so a test can replace one area (to
//! inject a fault) and take the others from a real store.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::*;

/// One implementation per area; itself a [`Store`].
#[derive(Clone)]
pub struct StoreParts {
    /// The session commands: the two writes that create a session and step it.
    pub session_commands: Arc<dyn SessionCommands>,
    /// Reading sessions (and checking the database answers).
    pub session_queries: Arc<dyn SessionQueries>,
    /// The event log: appending events that change no session, and reading the log.
    pub events: Arc<dyn EventLog>,
    /// The webhook deliveries seen (to drop replays).
    pub webhooks: Arc<dyn WebhookLog>,
    /// What sessions wrote back to their tracker issues.
    pub writebacks: Arc<dyn WritebackMarks>,
    /// Instructions for agents, stored before they are typed.
    pub instructions: Arc<dyn InstructionLog>,
    /// The chat bridge: conversations, their message inbox and their links to sessions.
    pub chat: Arc<dyn ChatStore>,
    /// Messages' final replies, stored until posted.
    pub chat_replies: Arc<dyn ChatReplies>,
    /// Chats a platform gave a new id.
    pub chat_moves: Arc<dyn ChatMoves>,
    /// Chat templates and per-codebase commands.
    pub templates: Arc<dyn TemplateStore>,
    /// The notification outbox.
    pub outbox: Arc<dyn Outbox>,
    /// Leases, fenced writes and commands between nodes.
    pub leases: Arc<dyn LeaseStore>,
}

impl StoreParts {
    /// Every area from `store`; replace a field to change one.
    pub fn of(store: SharedStore) -> Self {
        StoreParts {
            session_commands: store.clone(),
            session_queries: store.clone(),
            events: store.clone(),
            webhooks: store.clone(),
            writebacks: store.clone(),
            instructions: store.clone(),
            chat: store.clone(),
            chat_replies: store.clone(),
            chat_moves: store.clone(),
            templates: store.clone(),
            outbox: store.clone(),
            leases: store.clone(),
        }
    }
}

/// Implements an area for [`StoreParts`] by calling the same method on the field of that area.
macro_rules! delegate {
    ($area:ident to $field:ident { $(fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)* }) => {
        #[async_trait]
        impl $area for StoreParts {
            $(async fn $name(&self, $($arg: $ty),*) -> StoreResult<$ret> {
                self.$field.$name($($arg),*).await
            })*
        }
    };
}

delegate! { SessionCommands to session_commands {
    fn create_session(new: &NewSession) -> (SessionRecord, EventRecord);
    fn commit_transition(commit: &TransitionCommit) -> EventRecord;
} }

delegate! { SessionQueries to session_queries {
    fn ping() -> ();
    fn load_session(id: &SessionId) -> SessionRecord;
    fn load_snapshot(id: &SessionId) -> SessionSnapshot;
    fn list_sessions(filter: &SessionFilter) -> Vec<SessionRecord>;
    fn count_by_state() -> Vec<(SessionState, i64)>;
    fn list_trackers() -> Vec<(SessionId, ReactionTracker)>;
} }

delegate! { EventLog to events {
    fn append_event(event: &NewEvent) -> EventRecord;
    fn events_after(after: i64, limit: i64) -> Vec<EventRecord>;
    fn session_events(id: &SessionId, after: i64, limit: i64) -> Vec<EventRecord>;
    fn last_event_id() -> i64;
    fn last_project_event_id(project: &str, kind: &str) -> Option<i64>;
    fn latest_session_events() -> Vec<EventRecord>;
} }

delegate! { WebhookLog to webhooks {
    fn record_webhook_delivery(delivery: &WebhookDelivery) -> bool;
    fn mark_webhook_processed(platform: &str, delivery_id: &str, at: DateTime<Utc>) -> ();
    fn unprocessed_webhook_deliveries(platform: &str, limit: i64) -> Vec<WebhookDelivery>;
} }

delegate! { InstructionLog to instructions {
    fn queue_instruction(new: &NewInstruction) -> InstructionRecord;
    fn load_instruction(id: i64) -> InstructionRecord;
    fn open_instructions(session: &SessionId) -> Vec<InstructionRecord>;
    fn set_instruction_state(id: i64, state: InstructionState, mark: Option<i64>, at: DateTime<Utc>) -> ();
} }

delegate! { WritebackMarks to writebacks {
    fn claim_writeback(session_id: &str, stage: &str, at: DateTime<Utc>) -> bool;
    fn release_writeback(session_id: &str, stage: &str) -> ();
} }

delegate! { ChatStore to chat {
    fn upsert_conversation(platform: &str, thread: &str, at: DateTime<Utc>) -> ConversationRecord;
    fn list_conversations() -> Vec<ConversationRecord>;
    fn get_conversation(id: &str) -> ConversationRecord;
    fn update_conversation(c: &ConversationRecord, fence: Option<&Fence>) -> ();
    fn set_resume_id(conversation_id: &str, resume_id: Option<&str>, fence: Option<&Fence>) -> ();
    fn conversations_with_worktree(worktree: &str) -> Vec<String>;
    fn conversation_spend(conversation_id: &str) -> f64;
    fn enqueue_chat_message_with_meta(conversation_id: &str, platform_message_id: &str, author: &str, body: &str, meta: &BTreeMap<String, String>, at: DateTime<Utc>) -> Option<ChatMessageRecord>;
    fn pending_chat_messages(conversation_id: &str) -> Vec<ChatMessageRecord>;
    fn chat_messages_since(conversation_id: &str, since: DateTime<Utc>) -> Vec<ChatMessageRecord>;
    fn chat_activity() -> ChatActivity;
    fn conversations_with_pending() -> Vec<String>;
    fn link_session_to_conversation(session_id: &str, conversation_id: &str) -> ();
    fn conversation_for_session(session_id: &str) -> Option<String>;
    fn record_notification_post(post: &NotificationPost) -> ();
    fn notification_post(platform: &str, key: &str) -> Option<NotificationPost>;
} }

delegate! { ChatReplies to chat_replies {
    fn settle_chat_message(conversation: &str, id: i64, status: MessageStatus, replies: &[ChatReply], fence: Option<&Fence>) -> ();
    fn unsent_chat_replies(conversation: &str) -> Vec<ChatReplyRecord>;
    fn chat_reply_done(id: i64) -> ();
    fn claim_after_posting(conversation: &str, posted: &[i64], fence: Option<&Fence>) -> Option<ClaimedMessage>;
    fn chat_reply_failed(id: i64) -> i64;
} }

delegate! { ChatMoves to chat_moves {
    fn record_chat_move(platform: &str, from: &str, to: &str, at: DateTime<Utc>) -> ();
    fn chat_moved_to(platform: &str, chat: &str) -> Option<String>;
    fn chat_moved_from(platform: &str, chat: &str) -> Option<String>;
} }

delegate! { TemplateStore to templates {
    fn upsert_chat_template(t: &ChatTemplateRecord) -> ();
    fn get_chat_template(name: &str) -> Option<ChatTemplateRecord>;
    fn list_chat_templates() -> Vec<ChatTemplateRecord>;
    fn delete_chat_template(name: &str) -> bool;
    fn add_codebase_commands(codebase: &str, commands: &BTreeMap<String, String>) -> ();
    fn codebase_commands(codebase: &str) -> BTreeMap<String, String>;
} }

delegate! { Outbox to outbox {
    fn enqueue_notification(n: &NotificationRecord) -> bool;
    fn due_notifications(now: DateTime<Utc>, limit: i64) -> Vec<NotificationRecord>;
    fn update_notification(id: &str, status: NotificationStatus, attempts: i64, next_attempt_at: DateTime<Utc>, last_error: Option<&str>) -> ();
    fn list_notifications(status: Option<NotificationStatus>, limit: i64) -> Vec<NotificationRecord>;
    fn count_notifications() -> Vec<(NotificationStatus, i64)>;
    fn defer_notifications(ids: &[String], until: DateTime<Utc>) -> u64;
    fn fold_into_digest(digest: &NotificationRecord, members: &[String]) -> u64;
} }

delegate! { LeaseStore to leases {
    fn acquire_lease(kind: LeaseKind, key: &str, owner: &str, ttl: std::time::Duration) -> Option<HeldLease>;
    fn renew_leases(owner: &str, ttl: std::time::Duration) -> Vec<HeldLease>;
    fn take_over_expired(owner: &str, ttl: std::time::Duration, limit: i64) -> Vec<HeldLease>;
    fn lease_holder(kind: LeaseKind, key: &str) -> Option<Fence>;
    fn lease_owners(kind: LeaseKind) -> Vec<(String, String)>;
    fn release_leases(kind: LeaseKind, keys: &[String], owner: &str) -> u64;
    fn commit_transition_fenced(commit: &TransitionCommit, fence: &Fence) -> EventRecord;
    fn enqueue_command(session: &SessionId, command: &str) -> i64;
    fn claim_commands(owner: &str, limit: i64) -> Vec<ClusterCommandRecord>;
    fn finish_command(id: i64, result: &str) -> ();
    fn command_status(id: i64) -> CommandStatus;
    fn claim_due_notifications(owner: &str, now: DateTime<Utc>, hold: std::time::Duration, limit: i64) -> Vec<NotificationRecord>;
    fn command_wakeups() -> Option<tokio::sync::mpsc::Receiver<()>>;
    fn create_session_leased(new: &NewSession, owner: &str, ttl: std::time::Duration) -> (SessionRecord, EventRecord, HeldLease);
    fn wake_conversation_owner(conversation: &str, cancel: bool) -> ();
    fn conversation_wakeups() -> Option<tokio::sync::mpsc::Receiver<(String, bool)>>;
    fn prepare_turn_slots(owner: &str, cap: usize) -> ();
    fn claim_turn_slot(owner: &str, token: &str, conversation: &str, cap: usize, ttl: std::time::Duration) -> Option<i64>;
    fn release_turn_slot(token: &str) -> bool;
    fn turn_slots_in_use() -> usize;
    fn turn_slot_wakeups() -> Option<tokio::sync::mpsc::Receiver<()>>;
} }
