//! Actors own state. The `FleetSupervisor` owns one `SessionActor` per live session; each
//! session actor runs the pure machine in `crate::domain::machine` and persists through the
//! `journal` before acting. The `ChatSupervisor` (`chat`) owns one `ConversationActor` per
//! chat conversation.

pub mod all_complete;
pub mod chat;
pub mod cluster;
pub mod fleet;
pub mod host_events;
pub mod intake;
pub mod journal;
pub mod placement;
pub mod poller;
pub mod sandbox_host;
pub mod session;
pub mod supervisor;
pub mod watch;

/// Runs `fut` to its end on a task of its own (see [`crate::tasks::to_completion`]), for an
/// actor that may be waiting meanwhile. Never resolves once the runtime stopped the task:
/// nothing will poll the actor again.
pub async fn detached<F>(fut: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    match crate::tasks::to_completion(fut).await {
        Some(out) => out,
        None => std::future::pending().await,
    }
}
