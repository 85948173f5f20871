//! Several Flotilla nodes on one PostgreSQL database: who drives which session.
//!
//! Each live session is owned by one node through a lease row (`leases`, written only through
//! [`crate::store::LeaseStore`]). The owner renews all its leases in one query per tick
//! ([`lease_manager`]); when a node dies its leases expire and the others take them over, each
//! taken lease with its generation + 1. Every session write of a node carries its
//! [`Fence`] (owner + generation) and is checked in the write's own transaction
//! ([`fence::FencedCommands`]), so a node that lost a lease (paused, partitioned) can no longer
//! change the session: two nodes never drive one agent. A command that reaches a node that
//! does not own its session goes to the owner through the store ([`bus`]: a `cluster_commands`
//! row plus `NOTIFY`). PostgreSQL is the only coordinator: no node talks to another.
//!
//! Off by default: with `cluster.node_id` null (always on SQLite) nothing here runs and the
//! node owns everything, as before.

pub mod bus;
pub mod fence;
pub mod heartbeat;
pub mod lease_manager;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actix::prelude::*;

use crate::config::ClusterSettings;
use crate::store::{
    Fence, HeldLease, LeaseKind, SessionId, SessionRecord, SharedStore, StoreParts, StoreResult,
};

/// How long a forwarded command may take to run once its owner claimed it.
const FORWARD_WAIT: Duration = Duration::from_secs(30);

/// This node's name among the nodes sharing the database (`cluster.node_id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeId(pub String);

impl NodeId {
    /// The name as stored in lease rows.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lease timing, from `cluster:`.
#[derive(Debug, Clone)]
pub struct LeaseTiming {
    /// How long a lease lasts unrenewed (`cluster.lease_ttl`).
    pub ttl: Duration,
    /// How often leases are renewed and expired ones looked for (`cluster.renew_interval`).
    pub renew_every: Duration,
}

/// A lease this node holds, and the renewal round it was acquired in: a lease acquired while
/// a renewal query ran is missing from that query's answer without having been lost.
#[derive(Debug, Clone, Copy)]
struct Held {
    generation: i64,
    round: u64,
}

/// This node's view of the cluster: its name, its timing and the session leases it holds.
/// Shared by the lease manager, the fenced store and the supervisor.
pub struct Cluster {
    node: NodeId,
    timing: LeaseTiming,
    /// The store without fencing (lease queries themselves are not fenced).
    store: SharedStore,
    held: Mutex<HashMap<SessionId, Held>>,
    /// The chat conversations this node holds (`LeaseKind::Conversation`).
    conversations: Mutex<HashMap<String, Held>>,
    /// Told about conversation leases taken over or lost (the chat supervisor).
    chat_hook: Mutex<Option<Recipient<ConversationLeases>>>,
    /// Renewal rounds started so far.
    round: AtomicU64,
    /// Touched after each committed renewal; read by the chat turns' guards.
    heartbeat: OnceLock<heartbeat::HeartbeatFile>,
}

/// Sent by the lease manager to the chat bridge: conversation leases this node took over
/// from a dead node (drain them) or lost to another node (stop running them).
#[derive(Debug, Clone, Default, Message)]
#[rtype(result = "()")]
pub struct ConversationLeases {
    /// Taken over: their queues (and a turn the dead owner left `running`) run here now.
    pub taken: Vec<String>,
    /// Lost: another node runs them now.
    pub lost: Vec<String>,
}

impl Cluster {
    /// The cluster view of `cluster:` settings, or `None` when `cluster.node_id` is null
    /// (one node owning everything).
    pub fn from_settings(s: &ClusterSettings, store: SharedStore) -> Option<Arc<Cluster>> {
        let node = s.node_id.clone()?;
        Some(Cluster::new(
            NodeId(node),
            LeaseTiming {
                ttl: s.lease_ttl.get(),
                renew_every: s.renew_interval.get(),
            },
            store,
        ))
    }

    /// A cluster view for `node`.
    pub fn new(node: NodeId, timing: LeaseTiming, store: SharedStore) -> Arc<Cluster> {
        Arc::new(Cluster {
            node,
            timing,
            store,
            held: Mutex::new(HashMap::new()),
            conversations: Mutex::new(HashMap::new()),
            chat_hook: Mutex::new(None),
            round: AtomicU64::new(0),
            heartbeat: OnceLock::new(),
        })
    }

    /// Keeps this node's heartbeat in `file` (an earlier run's is removed first). Set once,
    /// before the lease manager starts.
    ///
    /// # Errors
    /// The earlier file cannot be removed.
    pub fn keep_heartbeat(&self, file: heartbeat::HeartbeatFile) -> std::io::Result<()> {
        file.reset()?;
        let _ = self.heartbeat.set(file);
        Ok(())
    }

    /// The heartbeat file, if kept.
    pub fn heartbeat(&self) -> Option<&heartbeat::HeartbeatFile> {
        self.heartbeat.get()
    }

    /// What a chat turn's guard watches: the heartbeat file and how old it may get.
    pub fn guard_heartbeat(&self) -> Option<crate::plugins::assistants::guard::Heartbeat> {
        self.heartbeat
            .get()
            .map(|h| h.for_guard(self.timing.ttl, self.timing.renew_every))
    }

    /// This node's name.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// Lease timing.
    pub fn timing(&self) -> &LeaseTiming {
        &self.timing
    }

    /// The store without fencing.
    pub fn raw_store(&self) -> &SharedStore {
        &self.store
    }

    /// The store the node's actors write through: session writes carry this node's fence.
    pub fn fenced_store(self: &Arc<Self>) -> SharedStore {
        let store = self.store.clone();
        Arc::new(StoreParts {
            session_commands: Arc::new(fence::FencedCommands::new(store.clone(), self.clone())),
            ..StoreParts::of(store)
        })
    }

    /// The fencing token of a session this node holds, if it does.
    pub fn fence_for(&self, id: &SessionId) -> Option<Fence> {
        self.held_map().get(id).map(|h| Fence {
            owner: self.node.0.clone(),
            generation: h.generation,
        })
    }

    /// Whether this node holds the session's lease.
    pub fn holds(&self, id: &SessionId) -> bool {
        self.held_map().contains_key(id)
    }

    /// Acquires a session's lease (free, expired or already ours). Returns whether this node
    /// holds it now.
    ///
    /// # Errors
    /// The store's.
    pub async fn acquire(&self, id: &SessionId) -> StoreResult<bool> {
        let got = self
            .store
            .acquire_lease(
                LeaseKind::Session,
                id.as_str(),
                self.node.as_str(),
                self.timing.ttl,
            )
            .await?;
        match got {
            Some(l) => {
                // Read after the grant: a renewal round that began before it may not have
                // seen the row, and must not count the lease as lost (a false loss dropped
                // the session's actor while the node still held it).
                let round = self.round.load(Ordering::SeqCst);
                self.held_map().insert(
                    id.clone(),
                    Held {
                        generation: l.generation,
                        round,
                    },
                );
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Records a session lease acquired with the session's creation (same transaction).
    pub fn record_created(&self, lease: &HeldLease) {
        let round = self.round.load(Ordering::SeqCst);
        self.held_map().insert(
            SessionId(lease.key.clone()),
            Held {
                generation: lease.generation,
                round,
            },
        );
    }

    /// Of the live sessions found at start-up, those this node could lease (free, expired or
    /// its own from before a restart); the others belong to live nodes.
    pub async fn claim_at_start(&self, live: Vec<SessionRecord>) -> Vec<SessionRecord> {
        let mut mine = Vec::new();
        for s in live {
            match self.acquire(&s.id).await {
                Ok(true) => mine.push(s),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(id = %s.id, error = ?e, "leasing a session at start-up failed")
                }
            }
        }
        mine
    }

    /// Forgets a lease this node lost (a fenced write was refused).
    pub fn forget(&self, id: &SessionId) {
        self.held_map().remove(id);
    }

    /// Releases the lease of a session that ended here (nothing left to drive).
    pub async fn release(&self, id: &SessionId) {
        self.forget(id);
        if let Err(e) = self
            .store
            .release_leases(
                LeaseKind::Session,
                std::slice::from_ref(&id.0),
                self.node.as_str(),
            )
            .await
        {
            tracing::warn!(%id, error = ?e, "releasing a lease failed (it expires by itself)");
        }
    }

    /// Sends a message to the session's owner when that is another node, and returns its
    /// answer; `None` when this node should handle it (it holds the lease, or nobody does).
    pub async fn forward_send(
        &self,
        id: &SessionId,
        text: &str,
        allow_restore: bool,
        question: Option<&str>,
    ) -> Option<
        Result<crate::actors::session::messages::SendReport, crate::actors::supervisor::FleetError>,
    > {
        let command = bus::ClusterCommand::Send {
            text: text.to_string(),
            allow_restore,
            question: question.map(str::to_string),
        };
        let r = self.forward(id, &command).await?;
        Some(r.and_then(|a| a.into_result(id)))
    }

    /// Runs `command` on the session's owner when that is another node, and returns its
    /// answer; `None` when this node should run it (it holds the lease, or nobody does).
    pub async fn forward(
        &self,
        id: &SessionId,
        command: &bus::ClusterCommand,
    ) -> Option<Result<bus::CommandAnswer, crate::actors::supervisor::FleetError>> {
        match self
            .store
            .lease_holder(LeaseKind::Session, id.as_str())
            .await
        {
            Ok(Some(f)) if f.owner != self.node.0 => {}
            Ok(_) => return None,
            Err(e) => return Some(Err(e.into())),
        }
        // Time for a dead owner's lease to expire and its successor to run the command.
        let wait = self.timing.ttl * 2 + FORWARD_WAIT;
        Some(bus::forward(self.store.as_ref(), id, command, wait).await)
    }

    /// Starts a renewal round: its number.
    fn begin_round(&self) -> u64 {
        self.round.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Applies a renewal round's answer: updates generations and returns the sessions and
    /// the conversations whose lease was lost (held before the round began, missing from the
    /// answer).
    fn renewed(&self, round: u64, leases: &[HeldLease]) -> (Vec<SessionId>, Vec<String>) {
        let answer = |kind: LeaseKind| -> HashMap<&str, i64> {
            leases
                .iter()
                .filter(|l| l.kind == kind)
                .map(|l| (l.key.as_str(), l.generation))
                .collect()
        };
        let lost_sessions = {
            let answer = answer(LeaseKind::Session);
            take_lost(&mut self.held_map(), round, |id| {
                answer.contains_key(id.as_str())
            })
        };
        let lost_conversations = {
            let answer = answer(LeaseKind::Conversation);
            take_lost(&mut self.conversation_map(), round, |id| {
                answer.contains_key(id.as_str())
            })
        };
        (lost_sessions, lost_conversations)
    }

    /// Records leases taken over from a dead node: the sessions and the conversations.
    fn taken(&self, leases: &[HeldLease]) -> (Vec<SessionId>, Vec<String>) {
        let round = self.round.load(Ordering::SeqCst);
        let mut sessions = Vec::new();
        let mut conversations = Vec::new();
        for l in leases {
            let h = Held {
                generation: l.generation,
                round,
            };
            match l.kind {
                LeaseKind::Session => {
                    let id = SessionId(l.key.clone());
                    self.held_map().insert(id.clone(), h);
                    sessions.push(id);
                }
                LeaseKind::Conversation => {
                    self.conversation_map().insert(l.key.clone(), h);
                    conversations.push(l.key.clone());
                }
            }
        }
        (sessions, conversations)
    }

    // ---- chat conversations ---------------------------------------------------------------

    /// The fencing token of a conversation this node holds, if it does.
    pub fn conversation_fence(&self, id: &str) -> Option<Fence> {
        self.conversation_map().get(id).map(|h| Fence {
            owner: self.node.0.clone(),
            generation: h.generation,
        })
    }

    /// Acquires a conversation's lease (free, expired or already ours) and returns its fence,
    /// or `None` while another node holds it.
    ///
    /// # Errors
    /// The store's.
    pub async fn acquire_conversation(&self, id: &str) -> StoreResult<Option<Fence>> {
        if let Some(f) = self.conversation_fence(id) {
            return Ok(Some(f));
        }
        let got = self
            .store
            .acquire_lease(
                LeaseKind::Conversation,
                id,
                self.node.as_str(),
                self.timing.ttl,
            )
            .await?;
        Ok(got.map(|l| {
            let round = self.round.load(Ordering::SeqCst);
            self.conversation_map().insert(
                id.to_string(),
                Held {
                    generation: l.generation,
                    round,
                },
            );
            Fence {
                owner: self.node.0.clone(),
                generation: l.generation,
            }
        }))
    }

    /// Forgets a conversation lease this node lost (a fenced write was refused).
    pub fn forget_conversation(&self, id: &str) {
        self.conversation_map().remove(id);
    }

    /// Releases the lease of a conversation gone idle here: the next message makes whichever
    /// node receives it the owner.
    pub async fn release_conversation(&self, id: &str) {
        self.forget_conversation(id);
        if let Err(e) = self
            .store
            .release_leases(
                LeaseKind::Conversation,
                &[id.to_string()],
                self.node.as_str(),
            )
            .await
        {
            tracing::warn!(conversation = id, error = ?e, "releasing a lease failed (it expires by itself)");
        }
    }

    /// Who is told when conversation leases are taken over or lost (the chat supervisor).
    pub fn set_chat_hook(&self, hook: Recipient<ConversationLeases>) {
        *self.chat_hook.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// Tells the chat supervisor about conversation leases taken over or lost.
    fn tell_chat(&self, change: ConversationLeases) {
        if change.taken.is_empty() && change.lost.is_empty() {
            return;
        }
        let hook = self
            .chat_hook
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match hook {
            Some(h) => h.do_send(change),
            // No chat bridge yet: the taken conversations are drained by its first sweep.
            None => tracing::debug!("conversation leases changed before the chat bridge started"),
        }
    }

    /// How many conversation leases this node holds.
    pub fn held_conversations(&self) -> usize {
        self.conversation_map().len()
    }

    fn conversation_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.conversations.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many session leases this node holds.
    pub fn held_count(&self) -> usize {
        self.held_map().len()
    }

    fn held_map(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Held>> {
        // A poisoned map is still a map: the panicking holder changed at most one entry.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Removes from `held` and returns what was held before `round` began but is missing from its
/// answer (`kept` says whether the answer renewed it): those leases were lost.
fn take_lost<K: Clone + Eq + std::hash::Hash>(
    held: &mut HashMap<K, Held>,
    round: u64,
    kept: impl Fn(&K) -> bool,
) -> Vec<K> {
    let lost: Vec<K> = held
        .iter()
        .filter(|(k, h)| h.round < round && !kept(k))
        .map(|(k, _)| k.clone())
        .collect();
    for k in &lost {
        held.remove(k);
    }
    lost
}
