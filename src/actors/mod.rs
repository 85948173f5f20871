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

/// Runs `fut` on a task of its own and resolves to its output.
///
/// An actor future is polled only while its actor is not waiting (`ctx.wait`,
/// `AtomicResponse`). Work that holds something shared while pending (a lock, SQLite's single
/// write connection) must not be starved that way, or the waiting actor's own next write can
/// wait for it forever. Wrapped in `detached`, the work always runs to completion; only what
/// the actor does with the result waits for the actor.
pub fn detached<F>(fut: F) -> impl std::future::Future<Output = F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let task = tokio::spawn(fut);
    async move {
        match task.await {
            Ok(out) => out,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled: the runtime is shutting down, and nothing will poll us again.
            Err(_) => std::future::pending().await,
        }
    }
}
