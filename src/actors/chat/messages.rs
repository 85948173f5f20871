//! Messages of the chat actors. Each says who sends it and why.

use actix::prelude::*;

use super::scheduler::SchedulerStats;

/// Sent by the inbox after it stored a message (and by the supervisor at start-up for every
/// conversation with pending messages): the conversation has work.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Wake {
    /// Conversation id (`{platform}:{thread}`).
    pub conversation: String,
    /// The new message is `/cancel`: stop the running turn now, ahead of the queue.
    pub cancel: bool,
    /// Messages ahead of the new one in its conversation (0: it runs next); the user is told
    /// when it is more than 0.
    pub ahead: usize,
    /// Clustered: the wake came from another node through the store (or the sweep), so it is
    /// never sent on again when another node owns the conversation.
    pub remote: bool,
}

/// Sent by a conversation actor whose write was refused: another node owns the conversation
/// now. The supervisor forgets the actor (which stops).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ConversationFenced {
    /// Conversation id.
    pub conversation: String,
    /// The actor that was fenced (a newer one for the same conversation is kept).
    pub actor: Addr<super::conversation::ConversationActor>,
}

/// Sent by the supervisor to a conversation actor: process what is pending.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Process;

/// Sent by the supervisor to a conversation actor: `/cancel` arrived; kill the running turn.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct CancelTurn;

/// Sent by the supervisor to a conversation actor whose lease another node took: stop the
/// running (or slot-waiting) turn without a word to the user (the new owner runs the message
/// again), freeing its slot.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct AbandonTurn;

/// Sent by a conversation actor that has had nothing to do for `chat.idle_after`. `wakes`
/// is how many `Process` messages it has received; the supervisor stops it only if that is
/// all it sent (otherwise a wake is in flight and the actor stays).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ConversationIdle {
    /// Conversation id.
    pub conversation: String,
    /// `Process` messages received so far.
    pub wakes: u64,
}

/// Sent by the supervisor to an idle conversation actor it has forgotten.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct StopConversation;

/// Sent by the HTTP layer and tests: the scheduler's counts and the live actors.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "ChatStats")]
pub struct GetChatStats;

/// The answer to [`GetChatStats`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatStats {
    /// Conversations running or waiting for a turn.
    #[serde(flatten)]
    pub scheduler: SchedulerStats,
    /// Live conversation actors.
    pub actors: usize,
}

/// Sent by the HTTP layer: every conversation with its inbox and its place in line, most
/// recently active first.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<Vec<crate::chat::overview::ConversationView>, crate::store::StoreError>")]
pub struct GetConversations;
