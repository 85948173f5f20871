//! The session writes of a clustered node, fenced: each carries the node's lease generation
//! and is refused by the store once another node took the session over.

use std::sync::Arc;

use async_trait::async_trait;

use super::Cluster;
use crate::store::{
    EventRecord, NewSession, SessionCommands, SessionRecord, SharedStore, StoreError, StoreResult,
    TransitionCommit,
};

/// [`SessionCommands`] of a clustered node: a created session is leased to this node before
/// anyone can drive it, and every step is written only while this node holds the lease.
pub struct FencedCommands {
    inner: SharedStore,
    cluster: Arc<Cluster>,
}

impl FencedCommands {
    /// Fences `inner`'s session writes with `cluster`'s leases.
    pub fn new(inner: SharedStore, cluster: Arc<Cluster>) -> Self {
        FencedCommands { inner, cluster }
    }
}

#[async_trait]
impl SessionCommands for FencedCommands {
    async fn create_session(&self, new: &NewSession) -> StoreResult<(SessionRecord, EventRecord)> {
        // The session and its lease in one transaction: a node dying in between would leave
        // a live session nobody drives until another node's takeover sweep found it.
        let (session, event, lease) = self
            .inner
            .create_session_leased(new, self.cluster.node().as_str(), self.cluster.timing().ttl)
            .await?;
        self.cluster.record_created(&lease);
        Ok((session, event))
    }

    async fn commit_transition(&self, commit: &TransitionCommit) -> StoreResult<EventRecord> {
        let id = &commit.snapshot.session.id;
        // A session this node does not hold (an ended one being restored here) is leased
        // first; that fails while another node holds it.
        if !self.cluster.holds(id) && !self.cluster.acquire(id).await? {
            return Err(StoreError::Fenced {
                what: format!("session {id}"),
                generation: 0,
            });
        }
        let Some(fence) = self.cluster.fence_for(id) else {
            return Err(StoreError::Fenced {
                what: format!("session {id}"),
                generation: 0,
            });
        };
        let r = self.inner.commit_transition_fenced(commit, &fence).await;
        if let Err(StoreError::Fenced { .. }) = &r {
            tracing::warn!(%id, generation = fence.generation, "write refused: the session moved to another node");
            self.cluster.forget(id);
        }
        r
    }
}
