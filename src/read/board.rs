//! The dashboard's board, read once per page load.

use super::{ReadModel, ReadResult};
use crate::store::{EventRecord, ReactionTracker, SessionFilter, SessionId, SessionRecord};

/// What the dashboard's board loads once: every session with its trackers and newest event,
/// the configured projects and agents, and the event cursor to follow the stream from.
#[derive(Debug, Clone)]
pub struct Board {
    /// The newest event id when the read began. Events after it may already show in the
    /// rows; replaying them is harmless, since events carry absolute state.
    pub cursor: i64,
    /// Every session, oldest first.
    pub sessions: Vec<SessionRecord>,
    /// Every reaction tracker, by session.
    pub trackers: Vec<(SessionId, ReactionTracker)>,
    /// The newest event of each session.
    pub latest_events: Vec<EventRecord>,
    /// Project names from config, with each project's default agent.
    pub projects: Vec<(String, String)>,
    /// Agent names from config.
    pub agents: Vec<String>,
}

impl ReadModel {
    /// The board; live changes then come from the event stream, never from re-reading it.
    ///
    /// # Errors
    /// `Store`.
    pub async fn board(&self) -> ReadResult<Board> {
        // The cursor is read first: whatever commits after it is both (maybe) in the rows
        // and in the stream, never in neither.
        let cursor = self.store.last_event_id().await?;
        let sessions = self.store.list_sessions(&SessionFilter::default()).await?;
        let trackers = self.store.list_trackers().await?;
        let latest_events = self.store.latest_session_events().await?;
        Ok(Board {
            cursor,
            sessions,
            trackers,
            latest_events,
            projects: self.catalog.projects.clone(),
            agents: self.catalog.agents.clone(),
        })
    }
}
