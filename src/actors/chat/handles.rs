//! The running turn's cancel switch, shared between the actor (which gets `/cancel` ahead of
//! the queue) and the drain loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The running turn's cancel switch.
#[derive(Default)]
pub struct TurnHandles {
    current: Mutex<Option<Arc<Notify>>>,
    cancelled: AtomicBool,
    /// The conversation's lease was lost: every turn from now on stops at once, silently.
    abandoned: AtomicBool,
}

impl TurnHandles {
    /// Cancels the running (or slot-waiting) turn, if any. Idempotent.
    pub fn cancel(&self) {
        if let Ok(cur) = self.current.lock() {
            if let Some(n) = cur.as_ref() {
                n.notify_one();
                self.cancelled.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Stops the running (or slot-waiting) turn, and any later one, without telling the user:
    /// the conversation's lease was lost and its new owner runs the message again.
    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::SeqCst);
        if let Ok(cur) = self.current.lock() {
            if let Some(n) = cur.as_ref() {
                n.notify_one();
            }
        }
    }

    /// Whether the turns were abandoned ([`TurnHandles::abandon`]).
    pub(super) fn abandoned(&self) -> bool {
        self.abandoned.load(Ordering::SeqCst)
    }

    /// Marks a turn as running; its cancel switch fires on [`TurnHandles::cancel`].
    pub(super) fn begin(&self) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
        if self.abandoned() {
            // Stored: the turn's first wait ends at once.
            n.notify_one();
        }
        if let Ok(mut cur) = self.current.lock() {
            *cur = Some(n.clone());
        }
        n
    }

    /// No turn runs any more.
    pub(super) fn end(&self) {
        if let Ok(mut cur) = self.current.lock() {
            *cur = None;
        }
    }

    /// Whether a `/cancel` stopped a turn since the last call (and resets it).
    pub(super) fn take_cancelled(&self) -> bool {
        self.cancelled.swap(false, Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn abandon_stops_the_running_turn_and_every_later_one_without_a_cancel() {
        let h = TurnHandles::default();
        let running = h.begin();
        h.abandon();
        running.notified().await;
        assert!(h.abandoned());
        assert!(!h.take_cancelled(), "not a /cancel: nobody is told");
        h.end();
        let next = h.begin();
        next.notified().await;
    }
}
