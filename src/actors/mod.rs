//! Actors own state. The `FleetSupervisor` owns one `SessionActor` per live session; each
//! session actor runs the pure machine in `session::machine` and persists through the
//! `journal` before acting. The `ChatSupervisor` (`chat`) owns one `ConversationActor` per
//! chat conversation.

pub mod chat;
pub mod fleet;
pub mod journal;
pub mod poller;
pub mod session;
pub mod supervisor;
pub mod watch;
