//! The journal: every write that appends to the event log goes through here, and each
//! committed event is published to live subscribers (SSE, WebSocket) **in id order**.
//!
//! Why a lock around commit + publish: two actors committing at once could otherwise publish
//! id 7 before id 6, and a client that disconnects right after seeing 7 would resume from 7 and
//! never see 6. The store commits ids in order (see `store`); the lock keeps publishing in the
//! same order. All writes are serialized by the database anyway (SQLite has one writer).

use std::sync::Arc;

use tokio::sync::{broadcast, Mutex};

use crate::store::{
    EventRecord, NewEvent, NewSession, SessionRecord, SharedStore, StoreResult, TransitionCommit,
};
use crate::telemetry::METRICS;

/// How many events a slow subscriber may lag before it must re-read from the store.
const BUS_CAPACITY: usize = 4096;

/// Serialized writer of the event log and publisher of its events.
pub struct Journal {
    store: SharedStore,
    bus: broadcast::Sender<Arc<EventRecord>>,
    order: Mutex<()>,
}

impl Journal {
    /// A journal over `store`.
    pub fn new(store: SharedStore) -> Self {
        let (bus, _) = broadcast::channel(BUS_CAPACITY);
        Journal {
            store,
            bus,
            order: Mutex::new(()),
        }
    }

    /// The underlying store (for reads).
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// Live events from now on. A `Lagged` receiver must re-read from the store.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EventRecord>> {
        self.bus.subscribe()
    }

    fn publish(&self, ev: &EventRecord) {
        METRICS.events.inc();
        // No subscribers is fine.
        let _ = self.bus.send(Arc::new(ev.clone()));
    }

    /// Persists a machine step and publishes its event.
    ///
    /// # Errors
    /// As `Store::commit_transition`; nothing is published then.
    pub async fn commit(&self, c: &TransitionCommit) -> StoreResult<EventRecord> {
        let _g = self.order.lock().await;
        let ev = self.store.commit_transition(c).await?;
        self.publish(&ev);
        Ok(ev)
    }

    /// Appends and publishes an event that changes no session state.
    ///
    /// # Errors
    /// As `Store::append_event`.
    pub async fn append(&self, e: &NewEvent) -> StoreResult<EventRecord> {
        let _g = self.order.lock().await;
        let ev = self.store.append_event(e).await?;
        self.publish(&ev);
        Ok(ev)
    }

    /// Creates a session (reserving its id) and publishes `session.created`.
    ///
    /// # Errors
    /// As `Store::create_session`.
    pub async fn create_session(&self, n: &NewSession) -> StoreResult<SessionRecord> {
        let _g = self.order.lock().await;
        let (rec, ev) = self.store.create_session(n).await?;
        self.publish(&ev);
        Ok(rec)
    }
}
