//! Work that must run to its end even when whoever awaits it goes away.

/// Runs `fut` on a Tokio task of its own and resolves to its output, or `None` when the runtime
/// stopped the task (it is shutting down). A panic in `fut` is resumed in the caller.
///
/// Two callers need this. An actor future is polled only while its actor is not waiting
/// (`ctx.wait`, `AtomicResponse`): work that holds something shared while pending (a lock,
/// SQLite's single write connection) must not be starved that way, or the actor's own next
/// write can wait for it forever. And a caller dropped mid-way (a timeout, a cancelled turn)
/// must not cut a store write short. On its own task the work always runs to completion; only
/// what the caller does with the result waits for the caller. Dropped with the runtime, the
/// task is dropped inside it, where a pooled sqlx connection can return itself to its pool.
pub async fn to_completion<F>(fut: F) -> Option<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    match tokio::spawn(fut).await {
        Ok(out) => Some(out),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}

/// [`to_completion`] for work that runs a plugin, whose panic must not take its caller down:
/// `None` also when `fut` panicked (the panic hook has reported it).
pub async fn to_completion_or_panic<F>(fut: F) -> Option<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(fut).await.ok()
}

#[cfg(test)]
mod tests {
    use super::{to_completion, to_completion_or_panic};

    #[tokio::test]
    async fn the_work_ends_even_when_its_caller_is_dropped() {
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let caller = tokio::spawn(to_completion(async move {
            let _ = started_tx.send(());
            let _ = wait.await;
            let _ = tx.send("written");
        }));
        started.await.unwrap();
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());
        go.send(()).unwrap();
        assert_eq!(rx.await, Ok("written"));
    }

    #[tokio::test]
    async fn answers_the_output() {
        assert_eq!(to_completion(async { 7 }).await, Some(7));
    }

    #[tokio::test]
    #[should_panic(expected = "boom")]
    async fn a_panic_is_resumed() {
        to_completion(async { panic!("boom") }).await;
    }

    #[tokio::test]
    async fn a_plugins_panic_is_none() {
        assert_eq!(to_completion_or_panic(async { 7 }).await, Some(7));
        let panicked: Option<()> = to_completion_or_panic(async { panic!("boom") }).await;
        assert_eq!(panicked, None);
    }
}
