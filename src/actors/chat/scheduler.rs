//! The turn scheduler: at most `chat.max_concurrent` conversations run an assistant turn at
//! once; the others wait in FIFO order (tokio's semaphore hands permits out in request order,
//! and a released permit goes to the oldest waiter, never to a newcomer).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use crate::chat::overview::Standing;
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

/// Who holds and who waits for the slots.
#[derive(Debug, Default)]
struct Board {
    next_ticket: u64,
    waiting: VecDeque<(u64, String)>,
    running: BTreeMap<String, usize>,
}

/// The fair FIFO turn scheduler.
#[derive(Debug)]
pub struct Scheduler {
    slots: Arc<Semaphore>,
    max: usize,
    board: Arc<Mutex<Board>>,
}

/// A running turn's slot; dropping it (even on an error or a panic unwinding) frees it.
pub struct TurnSlot {
    _permit: OwnedSemaphorePermit,
    board: Arc<Mutex<Board>>,
    conversation: String,
}

impl Drop for TurnSlot {
    fn drop(&mut self) {
        let mut b = lock(&self.board);
        if let Some(n) = b.running.get_mut(&self.conversation) {
            *n -= 1;
            if *n == 0 {
                b.running.remove(&self.conversation);
            }
        }
    }
}

fn lock(b: &Mutex<Board>) -> MutexGuard<'_, Board> {
    // The board is plain bookkeeping: a panic elsewhere leaves it usable.
    b.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Scheduler {
    /// A scheduler with `max` slots (at least one).
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Scheduler {
            slots: Arc::new(Semaphore::new(max)),
            max,
            board: Arc::default(),
        }
    }

    fn slot(&self, permit: OwnedSemaphorePermit, conversation: &str) -> TurnSlot {
        *lock(&self.board)
            .running
            .entry(conversation.to_string())
            .or_default() += 1;
        TurnSlot {
            _permit: permit,
            board: self.board.clone(),
            conversation: conversation.to_string(),
        }
    }

    /// Waits for a slot for `conversation`. When none is free, `on_queued(position)` is called
    /// first with its 1-based place in the queue (to tell the user).
    pub async fn acquire(
        &self,
        conversation: &str,
        platform: &str,
        on_queued: impl FnOnce(usize),
    ) -> TurnSlot {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return self.slot(p, conversation);
        }
        let (ticket, position) = {
            let mut b = lock(&self.board);
            let t = b.next_ticket;
            b.next_ticket += 1;
            b.waiting.push_back((t, conversation.to_string()));
            (t, b.waiting.len())
        };
        let gauge = METRICS.chat_queue_depth.with_label_values(&[platform]);
        gauge.inc();
        // Leaves the queue even when the waiting future is dropped (the actor stopped).
        struct Waiting<'a>(&'a Mutex<Board>, u64, prometheus::IntGauge);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                lock(self.0).waiting.retain(|(t, _)| *t != self.1);
                self.2.dec();
            }
        }
        let guard = Waiting(&self.board, ticket, gauge);
        on_queued(position);
        let permit = self.slots.clone().acquire_owned().await;
        drop(guard);
        match permit {
            Ok(p) => self.slot(p, conversation),
            // The semaphore is never closed.
            Err(_) => unreachable_slot(self.board.clone(), conversation),
        }
    }

    /// Current counts.
    pub fn stats(&self) -> SchedulerStats {
        SchedulerStats {
            active: self.max - self.slots.available_permits(),
            queued: lock(&self.board).waiting.len(),
            max_concurrent: self.max,
        }
    }

    /// Which conversations run and which wait, in queue order.
    pub fn standing(&self) -> Standing {
        let b = lock(&self.board);
        Standing {
            running: b.running.keys().cloned().collect(),
            waiting: b.waiting.iter().map(|(_, c)| c.clone()).collect(),
        }
    }
}

fn unreachable_slot(board: Arc<Mutex<Board>>, conversation: &str) -> TurnSlot {
    // A closed semaphore would be a programming error; a fresh permit keeps the turn going.
    let s = Arc::new(Semaphore::new(1));
    match s.try_acquire_owned() {
        Ok(p) => TurnSlot {
            _permit: p,
            board,
            conversation: conversation.to_string(),
        },
        Err(_) => unreachable!("a fresh semaphore has a permit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn caps_and_serves_waiters_in_order() {
        let s = Arc::new(Scheduler::new(2));
        let a = s.acquire("c-a", "test", |_| panic!("free slot")).await;
        let _b = s.acquire("c-b", "test", |_| panic!("free slot")).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for i in 0..3usize {
            let s = s.clone();
            let tx = tx.clone();
            let (qtx, qrx) = tokio::sync::oneshot::channel();
            tasks.push(tokio::spawn(async move {
                let slot = s
                    .acquire(&format!("c-{i}"), "test", |pos| {
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
        assert_eq!(
            s.standing(),
            Standing {
                running: vec!["c-a".into(), "c-b".into()],
                waiting: vec!["c-0".into(), "c-1".into(), "c-2".into()],
            }
        );
        drop(a);
        let mut order = Vec::new();
        for _ in 0..3 {
            order.push(rx.recv().await.unwrap_or(99));
        }
        assert_eq!(order, [0, 1, 2]);
        for t in tasks {
            let _ = t.await;
        }
        assert_eq!(
            s.standing(),
            Standing {
                running: vec!["c-b".into()],
                waiting: vec![],
            }
        );
    }
}
