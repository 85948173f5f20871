//! The cluster-wide half of the turn cap: when several nodes share one PostgreSQL
//! (`cluster.node_id`), a turn runs only while its node holds one of the `chat.max_concurrent`
//! slots of `chat_turn_slots` (claimed through [`crate::store::LeaseStore::claim_turn_slot`]),
//! so the cap holds across the cluster, not per node.
//!
//! The local [`super::scheduler::Scheduler`] still orders this node's conversations and tells
//! them their place; the node's waiters then ask the database one at a time, in that order
//! (a fair lock). A slot is freed when its [`GlobalSlot`] drops (the turn ended, failed, timed
//! out, was cancelled or abandoned because the conversation's lease was lost); the release
//! wakes the waiters of every node (`NOTIFY flotilla_turn_slots`), and each waiter also tries
//! again every `cluster.renew_interval` (a lost wake-up, or a dead node's slot that expired).
//! The lease manager renews the node's slots with its leases: a node killed with `kill -9`
//! blocks its slots for at most a lease time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, Notify, OnceCell};

use crate::actors::cluster::Cluster;
use crate::clock::Clock;
use crate::store::{SharedStore, StoreResult};

/// How many times a slot's release is tried before it is left to expire.
const RELEASE_ATTEMPTS: u32 = 3;

/// This node's access to the cluster's turn slots.
pub struct ClusterSlots {
    store: SharedStore,
    node: String,
    cap: usize,
    ttl: Duration,
    /// How often a waiter tries again without a wake-up.
    recheck: Duration,
    clock: Clock,
    /// Slots `0..cap` exist and this node's slots from before a restart are freed.
    prepared: OnceCell<()>,
    /// A slot was freed (here, or on another node through `LISTEN`).
    freed: Arc<Notify>,
    /// One waiter of this node asks the database at a time, in the order they queued.
    line: Mutex<()>,
}

impl std::fmt::Debug for ClusterSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSlots")
            .field("node", &self.node)
            .field("cap", &self.cap)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// A slot held in the database; freed when dropped.
pub struct GlobalSlot {
    store: SharedStore,
    token: String,
    freed: Arc<Notify>,
}

impl Drop for GlobalSlot {
    fn drop(&mut self) {
        let store = self.store.clone();
        let token = std::mem::take(&mut self.token);
        let freed = self.freed.clone();
        // Without a runtime (shutting down) the slot expires a lease time later.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            for attempt in 1..=RELEASE_ATTEMPTS {
                match store.release_turn_slot(&token).await {
                    Ok(_) => break,
                    Err(e) if attempt < RELEASE_ATTEMPTS => {
                        tracing::warn!(attempt, error = %e, "cannot free a chat turn slot; retrying");
                        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot free a chat turn slot; it stays held while this node renews its leases")
                    }
                }
            }
            freed.notify_waiters();
        });
    }
}

impl ClusterSlots {
    /// The slots of `cluster`'s database under `cap`, and the task that forwards other nodes'
    /// releases to this node's waiters. Must run inside a tokio runtime.
    pub fn start(cluster: &Cluster, cap: usize, clock: Clock) -> Arc<ClusterSlots> {
        let slots = Arc::new(ClusterSlots {
            store: cluster.raw_store().clone(),
            node: cluster.node().as_str().to_string(),
            cap: cap.max(1),
            ttl: cluster.timing().ttl,
            recheck: cluster.timing().renew_every,
            clock,
            prepared: OnceCell::new(),
            freed: Arc::new(Notify::new()),
            line: Mutex::new(()),
        });
        let store = slots.store.clone();
        let freed = slots.freed.clone();
        tokio::spawn(async move {
            match store.turn_slot_wakeups().await {
                Ok(Some(mut rx)) => {
                    while rx.recv().await.is_some() {
                        freed.notify_waiters();
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e,
                    "cannot listen for freed chat turn slots; waiters look again every renewal interval"),
            }
        });
        slots
    }

    /// The cap, shared by every node.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Waits for a slot for `conversation`. `on_wait` is called once when every slot is held
    /// (by any node) at the first try.
    pub async fn acquire(&self, conversation: &str, on_wait: impl FnOnce()) -> GlobalSlot {
        let _turn = self.line.lock().await;
        let mut on_wait = Some(on_wait);
        loop {
            // Registered before the try, so a release between the try and the wait wakes it.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.try_claim(conversation).await {
                Ok(Some(slot)) => return slot,
                Ok(None) => {
                    if let Some(f) = on_wait.take() {
                        f();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim a chat turn slot; trying again")
                }
            }
            tokio::select! {
                _ = freed => {}
                _ = self.clock.sleep(self.recheck) => {}
            }
        }
    }

    /// One claim. It runs on its own task: when the waiter is dropped meanwhile (`/cancel`),
    /// a slot the claim got is freed instead of staying held.
    async fn try_claim(&self, conversation: &str) -> StoreResult<Option<GlobalSlot>> {
        self.prepared
            .get_or_try_init(|| self.store.prepare_turn_slots(&self.node, self.cap))
            .await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let store = self.store.clone();
        let freed = self.freed.clone();
        let node = self.node.clone();
        let conversation = conversation.to_string();
        let (cap, ttl) = (self.cap, self.ttl);
        tokio::spawn(async move {
            let token = uuid::Uuid::new_v4().to_string();
            let got = store
                .claim_turn_slot(&node, &token, &conversation, cap, ttl)
                .await
                .map(|slot| {
                    slot.map(|_| GlobalSlot {
                        store: store.clone(),
                        token,
                        freed,
                    })
                });
            // Nobody waits any more: the slot (if any) drops here, which frees it.
            let _ = tx.send(got);
        });
        rx.await.unwrap_or(Ok(None))
    }

    /// Slots held by every node now; `None` when the store cannot say.
    pub async fn in_use(&self) -> Option<usize> {
        match self.store.turn_slots_in_use().await {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(error = %e, "cannot count the cluster's chat turn slots");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::chat::scheduler::{CapScope, Scheduler};
    use crate::actors::cluster::{LeaseTiming, NodeId};

    fn node(name: &str, store: &SharedStore) -> Scheduler {
        let cluster = Cluster::new(
            NodeId(name.into()),
            LeaseTiming {
                ttl: Duration::from_secs(60),
                renew_every: Duration::from_millis(20),
            },
            store.clone(),
        );
        Scheduler::clustered(ClusterSlots::start(&cluster, 1, Clock::system()))
    }

    async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Two nodes on one database with a cap of one: the second node's turn waits (told its
    /// place) until the first node's slot is freed; a wait given up leaves no slot held.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_cap_for_two_nodes() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("f.db").display());
        let store = crate::store::open(&url).await.expect("store");
        let a = node("node-a", &store);
        let b = Arc::new(node("node-b", &store));
        let held = a.acquire("test:a", "test", |_| panic!("a free slot")).await;
        assert_eq!(store.turn_slots_in_use().await.expect("count"), 1);
        let (told_tx, told_rx) = tokio::sync::oneshot::channel();
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move {
                b.acquire("test:b", "test", move |position| {
                    let _ = told_tx.send(position);
                })
                .await
            })
        };
        assert_eq!(told_rx.await.ok(), Some(1), "told it is first in line");
        let stats = b.stats();
        assert_eq!(
            (stats.active, stats.queued, stats.cap_scope),
            (0, 1, CapScope::Cluster),
            "its local permit is not a running turn"
        );
        drop(held);
        let got = waiter.await.expect("waiter");
        assert_eq!(b.stats().active, 1);
        assert_eq!(store.turn_slots_in_use().await.expect("count"), 1);

        // A wait dropped (a /cancel) while the slot is busy: no slot leaks.
        let gave_up = {
            let a = Arc::new(a);
            let a2 = a.clone();
            let t = tokio::spawn(async move { a2.acquire("test:c", "test", |_| {}).await });
            eventually("c waits", || a.stats().queued == 1).await;
            t.abort();
            let _ = t.await;
            a
        };
        eventually("c left the line", || gave_up.stats().queued == 0).await;
        drop(got);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while store.turn_slots_in_use().await.expect("count") != 0 {
            assert!(tokio::time::Instant::now() < deadline, "a slot leaked");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let again = gave_up
            .acquire("test:d", "test", |_| panic!("the freed slot"))
            .await;
        drop(again);
    }
}
