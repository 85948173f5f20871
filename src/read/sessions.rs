//! Sessions, their events, output and attach info, and the live event feed.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::{ReadError, ReadModel, ReadResult};
use crate::plugins::{AttachInfo, PluginError};
use crate::store::{EventRecord, SessionFilter, SessionId, SessionRecord, SessionSnapshot, Store};

/// A live event feed: the backlog after the requested id, then live events.
pub struct Feed {
    /// Stored events after the resume point, oldest first.
    pub backlog: Vec<EventRecord>,
    /// Live events (subscribed before the backlog was read; may repeat backlog ids).
    pub live: broadcast::Receiver<Arc<EventRecord>>,
}

/// Sessions matching `filter`, oldest first (for callers that hold only a store, such as the
/// chat bridge).
///
/// # Errors
/// `Store`.
pub async fn list(store: &dyn Store, filter: &SessionFilter) -> ReadResult<Vec<SessionRecord>> {
    Ok(store.list_sessions(filter).await?)
}

impl ReadModel {
    /// Sessions matching `filter`, oldest first.
    ///
    /// # Errors
    /// `Store`.
    pub async fn sessions(&self, filter: &SessionFilter) -> ReadResult<Vec<SessionRecord>> {
        list(self.store.as_ref(), filter).await
    }

    /// One session with its reaction trackers and timers, as last committed. A session actor
    /// commits each step before it answers or takes its next message, so this is what the
    /// actor holds; for a session another node drives, it is that node's.
    ///
    /// # Errors
    /// `NotFound` for an unknown session; `Store`.
    pub async fn session(&self, id: &SessionId) -> ReadResult<SessionSnapshot> {
        Ok(self.store.load_snapshot(id).await?)
    }

    /// The node that owns session `id` (its lease holder), or `None`: one node without
    /// `cluster.node_id` leases nothing and owns everything.
    ///
    /// # Errors
    /// `Store`.
    pub async fn session_node(&self, id: &str) -> ReadResult<Option<String>> {
        let holder = self
            .store
            .lease_holder(crate::store::LeaseKind::Session, id)
            .await?;
        Ok(holder.map(|f| f.owner))
    }

    /// The owning node of every leased session, by session id (one read for a list).
    ///
    /// # Errors
    /// `Store`.
    pub async fn session_nodes(&self) -> ReadResult<std::collections::HashMap<String, String>> {
        let owners = self
            .store
            .lease_owners(crate::store::LeaseKind::Session)
            .await?;
        Ok(owners.into_iter().collect())
    }

    /// Events after `after`, at most `limit`, oldest first: one session's, or everyone's.
    ///
    /// # Errors
    /// `NotFound` for an unknown session; `Store`.
    pub async fn events(
        &self,
        session: Option<&SessionId>,
        after: i64,
        limit: i64,
    ) -> ReadResult<Vec<EventRecord>> {
        Ok(match session {
            Some(id) => {
                self.store.load_session(id).await?;
                self.store.session_events(id, after, limit).await?
            }
            None => self.store.events_after(after, limit).await?,
        })
    }

    /// Opens a feed resuming after `after`: live events are subscribed before the backlog is
    /// read, so nothing falls between the two (the reader drops repeats by id).
    ///
    /// # Errors
    /// `Store`.
    pub async fn open_feed(&self, after: i64, limit: i64) -> ReadResult<Feed> {
        let live = self.live.subscribe();
        let backlog = self.store.events_after(after, limit).await?;
        Ok(Feed { backlog, live })
    }

    /// The last `lines` lines of the session's agent output; empty when it has no runtime
    /// yet or its output is gone.
    ///
    /// # Errors
    /// `NotFound`; `Plugin` when the runtime fails otherwise.
    pub async fn output(&self, id: &SessionId, lines: usize) -> ReadResult<String> {
        let s = self.store.load_session(id).await?;
        let Some(h) = s.runtime_handle.as_ref() else {
            return Ok(String::new());
        };
        let rt = self.runtime(&s.runtime)?;
        match rt.output(h, lines).await {
            Ok(o) => Ok(o),
            Err(PluginError::NotFound(_)) => Ok(String::new()),
            Err(e) => Err(ReadError::Plugin(e)),
        }
    }

    /// How a human attaches to the session's terminal (`None`: no runtime yet).
    ///
    /// # Errors
    /// `NotFound`; `Conflict` once the session ended.
    pub async fn attach(&self, id: &SessionId) -> ReadResult<Option<AttachInfo>> {
        let s = self.store.load_session(id).await?;
        if s.state.is_terminal() {
            return Err(ReadError::Conflict(format!(
                "session {} is {}; nothing to attach to",
                s.id, s.state
            )));
        }
        let rt = self.runtime(&s.runtime)?;
        Ok(s.runtime_handle.as_ref().and_then(|h| rt.attach_info(h)))
    }
}
