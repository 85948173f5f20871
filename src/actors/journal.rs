//! The journal: every write that appends to the event log goes through here, and each
//! committed event is published to live subscribers (SSE, WebSocket) **in id order**.
//!
//! Why a lock around commit + publish: two actors committing at once could otherwise publish
//! id 7 before id 6, and a client that disconnects right after seeing 7 would resume from 7 and
//! never see 6. The store commits ids in order (see `store`); the lock keeps publishing in the
//! same order. All writes are serialized by the database anyway (SQLite has one writer).
//!
//! Each write runs on a task of its own (`tokio::spawn`), lock included. Callers are often
//! actor futures, and an actor future is not polled while its actor waits in `ctx.wait` or an
//! `AtomicResponse`: a caller that took the lock and was then starved that way would hold it
//! forever, and the waiting actor's own commit would never get it (a session whose agent
//! exited while a message to it was being journaled stayed `working` for good). A detached
//! task always runs to completion and releases the lock, whoever stops polling for its result.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{broadcast, Mutex};

use crate::store::{
    EventRecord, NewEvent, NewSession, SessionRecord, SharedStore, StoreResult, TransitionCommit,
};
use crate::telemetry::METRICS;

/// How many events a slow subscriber may lag before it must re-read from the store.
const BUS_CAPACITY: usize = 4096;

/// Serialized writer of the event log and publisher of its events.
#[derive(Clone)]
pub struct Journal {
    store: SharedStore,
    bus: broadcast::Sender<Arc<EventRecord>>,
    order: Arc<Mutex<()>>,
}

impl Journal {
    /// A journal over `store`.
    pub fn new(store: SharedStore) -> Self {
        let (bus, _) = broadcast::channel(BUS_CAPACITY);
        Journal {
            store,
            bus,
            order: Arc::new(Mutex::new(())),
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

    /// Runs `write` under the order lock on its own task and publishes the event it returns.
    async fn serialized<T, F, Fut>(&self, write: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(SharedStore) -> Fut + Send + 'static,
        Fut: Future<Output = StoreResult<(T, EventRecord)>> + Send,
    {
        let (store, bus, order) = (self.store.clone(), self.bus.clone(), self.order.clone());
        crate::store::run_detached(async move {
            let _g = order.lock().await;
            let (out, ev) = write(store).await?;
            METRICS.events.inc();
            // No subscribers is fine.
            let _ = bus.send(Arc::new(ev));
            Ok(out)
        })
        .await
    }

    /// Persists a machine step and publishes its event.
    ///
    /// # Errors
    /// As `Store::commit_transition`; nothing is published then.
    pub async fn commit(&self, c: &TransitionCommit) -> StoreResult<EventRecord> {
        let c = c.clone();
        self.serialized(move |store| async move {
            let ev = store.commit_transition(&c).await?;
            Ok((ev.clone(), ev))
        })
        .await
    }

    /// Appends and publishes an event that changes no session state.
    ///
    /// # Errors
    /// As `Store::append_event`.
    pub async fn append(&self, e: &NewEvent) -> StoreResult<EventRecord> {
        let e = e.clone();
        self.serialized(move |store| async move {
            let ev = store.append_event(&e).await?;
            Ok((ev.clone(), ev))
        })
        .await
    }

    /// Creates a session (reserving its id) and publishes `session.created`.
    ///
    /// # Errors
    /// As `Store::create_session`.
    pub async fn create_session(&self, n: &NewSession) -> StoreResult<SessionRecord> {
        let n = n.clone();
        self.serialized(move |store| async move { store.create_session(&n).await })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix::prelude::*;
    use sqlx::Connection;

    use super::*;

    fn event(kind: &str) -> NewEvent {
        NewEvent {
            session_id: None,
            kind: kind.into(),
            data: serde_json::json!({}),
            at: chrono::Utc::now(),
        }
    }

    /// Journals from an actor future it spawns, then waits atomically on its own write: the
    /// shape of a session actor that journals a sent message while its agent exits.
    struct Writer {
        journal: Journal,
    }
    impl Actor for Writer {
        type Context = Context<Self>;
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    struct SpawnAppend;
    impl Handler<SpawnAppend> for Writer {
        type Result = ();
        fn handle(&mut self, _: SpawnAppend, ctx: &mut Self::Context) {
            let j = self.journal.clone();
            ctx.spawn(
                async move {
                    let _ = j.append(&event("spawned")).await;
                }
                .into_actor(self),
            );
        }
    }

    #[derive(Message)]
    #[rtype(result = "StoreResult<EventRecord>")]
    struct AtomicAppend(tokio::sync::oneshot::Sender<()>);
    impl Handler<AtomicAppend> for Writer {
        type Result = AtomicResponse<Self, StoreResult<EventRecord>>;
        fn handle(&mut self, msg: AtomicAppend, _: &mut Self::Context) -> Self::Result {
            let j = self.journal.clone();
            let _ = msg.0.send(()); // the actor now waits: its spawned futures are not polled
            AtomicResponse::new(Box::pin(
                async move { j.append(&event("atomic")).await }.into_actor(self),
            ))
        }
    }

    #[actix_rt::test]
    async fn a_write_starved_by_its_waiting_actor_does_not_hold_the_journal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/j.db", dir.path().display());
        let store = crate::store::open(&url).await.expect("store");
        let journal = Journal::new(store.clone());
        // Another writer holds SQLite's write lock, so the spawned append stays pending.
        let mut blocker = sqlx::SqliteConnection::connect(&url)
            .await
            .expect("connect");
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut blocker)
            .await
            .expect("lock");

        let writer = Writer { journal }.start();
        writer.send(SpawnAppend).await.expect("mailbox");
        let (entered, waiting) = tokio::sync::oneshot::channel();
        let atomic = actix_rt::spawn(writer.send(AtomicAppend(entered)));
        waiting.await.expect("the atomic write started");
        sqlx::query("COMMIT")
            .execute(&mut blocker)
            .await
            .expect("unlock");

        // Before the journal ran its writes on tasks of their own, the spawned append held the
        // order lock unpolled and this never completed.
        let ev = tokio::time::timeout(Duration::from_secs(30), atomic)
            .await
            .expect("the atomic write completes")
            .expect("task")
            .expect("mailbox")
            .expect("stored");
        assert_eq!(ev.kind, "atomic");
        let all = store.events_after(0, 10).await.expect("events");
        let kinds: Vec<&str> = all.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["spawned", "atomic"]);
    }
}
