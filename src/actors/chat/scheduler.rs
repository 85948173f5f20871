//! The turn scheduler: at most `chat.max_concurrent` conversations run an assistant turn at
//! once; the others wait in FIFO order (tokio's semaphore hands permits out in request order,
//! and a released permit goes to the oldest waiter, never to a newcomer).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::telemetry::METRICS;

/// Active and waiting conversations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SchedulerStats {
    /// Conversations running a turn.
    pub active: usize,
    /// Conversations waiting for a slot.
    pub queued: usize,
    /// The cap.
    pub max_concurrent: usize,
}

/// The fair FIFO turn scheduler.
#[derive(Debug)]
pub struct Scheduler {
    slots: Arc<Semaphore>,
    max: usize,
    waiting: AtomicUsize,
}

/// A running turn's slot; dropping it (even on an error or a panic unwinding) frees it.
pub struct TurnSlot {
    _permit: OwnedSemaphorePermit,
}

impl Scheduler {
    /// A scheduler with `max` slots (at least one).
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Scheduler {
            slots: Arc::new(Semaphore::new(max)),
            max,
            waiting: AtomicUsize::new(0),
        }
    }

    /// Waits for a slot. When none is free, `on_queued(position)` is called first with this
    /// conversation's 1-based place in the queue (to tell the user).
    pub async fn acquire(&self, platform: &str, on_queued: impl FnOnce(usize)) -> TurnSlot {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return TurnSlot { _permit: p };
        }
        let position = self.waiting.fetch_add(1, Ordering::SeqCst) + 1;
        let gauge = METRICS.chat_queue_depth.with_label_values(&[platform]);
        gauge.inc();
        // Decrements even when the waiting future is dropped (the actor stopped).
        struct Waiting<'a>(&'a AtomicUsize, prometheus::IntGauge);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
                self.1.dec();
            }
        }
        let guard = Waiting(&self.waiting, gauge);
        on_queued(position);
        let permit = self.slots.clone().acquire_owned().await;
        drop(guard);
        match permit {
            Ok(p) => TurnSlot { _permit: p },
            // The semaphore is never closed.
            Err(_) => unreachable_slot(),
        }
    }

    /// Current counts.
    pub fn stats(&self) -> SchedulerStats {
        SchedulerStats {
            active: self.max - self.slots.available_permits(),
            queued: self.waiting.load(Ordering::SeqCst),
            max_concurrent: self.max,
        }
    }
}

fn unreachable_slot() -> TurnSlot {
    // A closed semaphore would be a programming error; a fresh permit keeps the turn going.
    let s = Arc::new(Semaphore::new(1));
    match s.try_acquire_owned() {
        Ok(p) => TurnSlot { _permit: p },
        Err(_) => unreachable!("a fresh semaphore has a permit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn caps_and_serves_waiters_in_order() {
        let s = Arc::new(Scheduler::new(2));
        let a = s.acquire("test", |_| panic!("free slot")).await;
        let _b = s.acquire("test", |_| panic!("free slot")).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for i in 0..3usize {
            let s = s.clone();
            let tx = tx.clone();
            let (qtx, qrx) = tokio::sync::oneshot::channel();
            tasks.push(tokio::spawn(async move {
                let slot = s
                    .acquire("test", |pos| {
                        let _ = qtx.send(pos);
                    })
                    .await;
                let _ = tx.send(i);
                drop(slot);
            }));
            assert_eq!(qrx.await.ok(), Some(i + 1));
        }
        assert_eq!(
            s.stats(),
            SchedulerStats {
                active: 2,
                queued: 3,
                max_concurrent: 2
            }
        );
        drop(a);
        let mut order = Vec::new();
        for _ in 0..3 {
            order.push(rx.recv().await.unwrap_or(99));
        }
        assert_eq!(order, [0, 1, 2]);
    }
}
