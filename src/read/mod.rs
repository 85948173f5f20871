//! The read side: every question the HTTP layer (and the chat bridge's `/fleet`) asks about
//! the fleet that changes nothing — sessions, events and the live feed, an agent's output and
//! how to attach to it, the dashboard's board, orphans, chat conversations.
//!
//! Answered straight from the store (and, for output, attach and orphans, from the runtimes),
//! never through an actor's mailbox: a read does not queue behind a spawn, and the
//! `FleetSupervisor` keeps only what changes the fleet. The one write here is recording a
//! verified webhook delivery, an idempotent append that touches no session.
//!
//! Depends on `store` and `plugins` only (never on `actors`): the actors hand it what it
//! needs ([`EventSource`], runtimes, the configured catalog) when the app is built.
//!
//! | module | answers |
//! |---|---|
//! | [`sessions`] | session lists, events, output, attach info, the live feed |
//! | [`board`] | the dashboard's one-shot board |
//! | [`orphans`] | runtime instances and workspaces no live session owns |

pub mod board;
pub mod orphans;
pub mod sessions;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::plugins::{PluginError, Runtime};
use crate::store::{ConversationRecord, EventRecord, SharedStore, StoreError, WebhookDelivery};

pub use board::Board;
pub use orphans::Orphan;
pub use sessions::Feed;

/// What went wrong with a read, in terms the HTTP layer maps to a status once.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No session with that id (404).
    #[error("session {id} not found")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// Nothing to read in the session's state (409).
    #[error("{0}")]
    Conflict(String),
    /// Store failure (500).
    #[error("store error")]
    Store(#[source] StoreError),
    /// Plugin failure (502).
    #[error("plugin error: {0}")]
    Plugin(#[source] PluginError),
}

impl From<StoreError> for ReadError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { what } => ReadError::NotFound {
                id: what.trim_start_matches("session ").to_string(),
            },
            other => ReadError::Store(other),
        }
    }
}

/// Result alias of the read side.
pub type ReadResult<T> = Result<T, ReadError>;

/// Live events, oldest first, each published after its commit (the journal).
pub trait EventSource: Send + Sync {
    /// A receiver of every event committed from now on. A `Lagged` receiver must re-read
    /// from the store.
    fn subscribe(&self) -> broadcast::Receiver<Arc<EventRecord>>;
}

/// What the configuration says exists: the board lists it, orphans look under it.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Project names with each project's default agent, in name order.
    pub projects: Vec<(String, String)>,
    /// Agent names, sorted.
    pub agents: Vec<String>,
    /// Where workspaces live: `{worktrees}/{project}/{session}`.
    pub worktrees: PathBuf,
}

/// The read model: the store, the live event source, the runtimes and the catalog.
#[derive(Clone)]
pub struct ReadModel {
    store: SharedStore,
    live: Arc<dyn EventSource>,
    /// By name, so orphans come out in a stable order.
    runtimes: BTreeMap<String, Arc<dyn Runtime>>,
    catalog: Catalog,
}

impl ReadModel {
    /// A read model over `store`, following `live`, asking `runtimes` for output, attach
    /// info and what runs.
    pub fn new(
        store: SharedStore,
        live: Arc<dyn EventSource>,
        runtimes: impl IntoIterator<Item = (String, Arc<dyn Runtime>)>,
        catalog: Catalog,
    ) -> Self {
        ReadModel {
            store,
            live,
            runtimes: runtimes.into_iter().collect(),
            catalog,
        }
    }

    /// The store (for reads composed elsewhere).
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    fn runtime(&self, name: &str) -> ReadResult<Arc<dyn Runtime>> {
        self.runtimes.get(name).cloned().ok_or_else(|| {
            ReadError::Plugin(PluginError::Unavailable {
                slot: "runtime",
                name: name.to_string(),
            })
        })
    }

    /// Every chat conversation's record.
    ///
    /// # Errors
    /// `Store`.
    pub async fn conversations(&self) -> ReadResult<Vec<ConversationRecord>> {
        Ok(self.store.list_conversations().await?)
    }

    /// Marks a webhook delivery processed once it was handed over (start-up processes those
    /// that were not). On a task of its own, like the recording.
    ///
    /// # Errors
    /// `Store`.
    pub async fn mark_webhook_processed(
        &self,
        platform: &str,
        delivery_id: &str,
    ) -> ReadResult<()> {
        let (store, platform, id) = (
            self.store.clone(),
            platform.to_string(),
            delivery_id.to_string(),
        );
        Ok(crate::store::run_detached(async move {
            store
                .mark_webhook_processed(&platform, &id, chrono::Utc::now())
                .await
        })
        .await?)
    }

    /// Records a verified webhook delivery before the endpoint answers 2xx; `false` means a
    /// redelivery (same platform and delivery id). Runs on a task of its own, so a client
    /// that hangs up mid-request cannot cancel the write half-way.
    ///
    /// # Errors
    /// `Store`.
    pub async fn record_webhook_delivery(&self, delivery: WebhookDelivery) -> ReadResult<bool> {
        let store = self.store.clone();
        let write = async move { store.record_webhook_delivery(&delivery).await };
        Ok(crate::store::run_detached(write).await?)
    }
}
