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

    /// Marks a turn as running; its cancel switch fires on [`TurnHandles::cancel`].
    pub(super) fn begin(&self) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
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
