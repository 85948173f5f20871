//! The turn scheduler: at most `chat.max_concurrent` conversations run an assistant turn at
//! once; the others wait in FIFO order (tokio's semaphore hands permits out in request order,
//! and a released permit goes to the oldest waiter, never to a newcomer).
//!
//! Clustered ([`Scheduler::clustered`]), the cap is the cluster's: a conversation holding a
//! local permit also waits for one of the database's slots ([`ClusterSlots`]); while it does,
//! it stays in this node's line (its place is told to the user as on one node).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::turn_slots::{ClusterSlots, GlobalSlot};
pub use crate::chat::overview::Standing;
use crate::telemetry::METRICS;

/// Whom `max_concurrent` caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CapScope {
    /// This node's turns (one node, or no cluster).
    Node,
    /// Every node's turns together (several nodes on one PostgreSQL).
    Cluster,
}

/// Active and waiting conversations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SchedulerStats {
    /// Conversations running a turn (on this node).
    pub active: usize,
    /// Conversations waiting for a slot (on this node).
    pub queued: usize,
    /// The cap.
    pub max_concurrent: usize,
    /// Whether the cap is this node's or the whole cluster's.
    pub cap_scope: CapScope,
    /// Clustered: turns running on every node together (the slots held in the database);
    /// filled in by the chat supervisor, `None` on one node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_active: Option<usize>,
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
    /// Clustered: the database's slots every turn also needs.
    cluster: Option<Arc<ClusterSlots>>,
}

/// A running turn's slot; dropping it (even on an error or a panic unwinding) frees it, and
/// its cluster slot with it.
pub struct TurnSlot {
    _permit: OwnedSemaphorePermit,
    _global: Option<GlobalSlot>,
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
            cluster: None,
        }
    }

    /// A scheduler whose cap is the cluster's (`slots`); this node orders its own waiters.
    pub fn clustered(slots: Arc<ClusterSlots>) -> Self {
        Scheduler {
            cluster: Some(slots.clone()),
            ..Scheduler::new(slots.cap())
        }
    }

    /// Puts `conversation` in this node's line (ordered by `ticket`: who asked first) and
    /// returns its 1-based place; it leaves the line when the guard drops, even when the
    /// waiting future is dropped (the actor stopped).
    fn wait_in_line(&self, ticket: u64, conversation: &str, platform: &str) -> (InLine, usize) {
        let position = {
            let mut b = lock(&self.board);
            let at = b.waiting.partition_point(|(t, _)| *t < ticket);
            b.waiting.insert(at, (ticket, conversation.to_string()));
            at + 1
        };
        let gauge = METRICS.chat_queue_depth.with_label_values(&[platform]);
        gauge.inc();
        (InLine(self.board.clone(), ticket, gauge), position)
    }

    fn slot(
        &self,
        permit: OwnedSemaphorePermit,
        global: Option<GlobalSlot>,
        conversation: &str,
    ) -> TurnSlot {
        *lock(&self.board)
            .running
            .entry(conversation.to_string())
            .or_default() += 1;
        TurnSlot {
            _permit: permit,
            _global: global,
            board: self.board.clone(),
            conversation: conversation.to_string(),
        }
    }

    /// Waits for a slot for `conversation`. When none is free, `on_queued(position)` is called
    /// first with its 1-based place in the queue (to tell the user). Clustered, a turn needs a
    /// slot of the cluster too; waiting for it counts as waiting in line.
    pub async fn acquire(
        &self,
        conversation: &str,
        platform: &str,
        on_queued: impl FnOnce(usize),
    ) -> TurnSlot {
        let ticket = {
            let mut b = lock(&self.board);
            b.next_ticket += 1;
            b.next_ticket
        };
        let mut on_queued = Some(on_queued);
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let (guard, position) = self.wait_in_line(ticket, conversation, platform);
                if let Some(f) = on_queued.take() {
                    f(position);
                }
                let permit = self.slots.clone().acquire_owned().await;
                drop(guard);
                match permit {
                    Ok(p) => p,
                    // The semaphore is never closed.
                    Err(_) => return unreachable_slot(self.board.clone(), conversation),
                }
            }
        };
        let global = match &self.cluster {
            None => None,
            Some(cluster) => {
                let mut guard = None;
                let slot = cluster
                    .acquire(conversation, || {
                        let (g, position) = self.wait_in_line(ticket, conversation, platform);
                        if let Some(f) = on_queued.take() {
                            f(position);
                        }
                        guard = Some(g);
                    })
                    .await;
                drop(guard);
                Some(slot)
            }
        };
        self.slot(permit, global, conversation)
    }

    /// Current counts.
    pub fn stats(&self) -> SchedulerStats {
        let b = lock(&self.board);
        let (active, cap_scope) = match self.cluster {
            None => (self.max - self.slots.available_permits(), CapScope::Node),
            // A local permit waiting for the cluster's slot is not running yet.
            Some(_) => (b.running.values().sum(), CapScope::Cluster),
        };
        SchedulerStats {
            active,
            queued: b.waiting.len(),
            max_concurrent: self.max,
            cap_scope,
            cluster_active: None,
        }
    }

    /// Clustered: the cluster's slots.
    pub fn cluster(&self) -> Option<&Arc<ClusterSlots>> {
        self.cluster.as_ref()
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

/// A place in line; leaving it (dropped) takes the conversation out of the board.
struct InLine(Arc<Mutex<Board>>, u64, prometheus::IntGauge);

impl Drop for InLine {
    fn drop(&mut self) {
        lock(&self.0).waiting.retain(|(t, _)| *t != self.1);
        self.2.dec();
    }
}

fn unreachable_slot(board: Arc<Mutex<Board>>, conversation: &str) -> TurnSlot {
    // A closed semaphore would be a programming error; a fresh permit keeps the turn going.
    let s = Arc::new(Semaphore::new(1));
    match s.try_acquire_owned() {
        Ok(p) => TurnSlot {
            _permit: p,
            _global: None,
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
                max_concurrent: 2,
                cap_scope: CapScope::Node,
                cluster_active: None,
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
