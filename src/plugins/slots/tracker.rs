//! Where tasks come from: the [`Tracker`] slot, its issues and what a session writes back.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::plugins::PluginResult;

/// An issue from a tracker, as the prompt builder needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Issue {
    /// Tracker id (`42`, `INT-100`).
    pub id: String,
    /// Title.
    pub title: String,
    /// Body (Markdown).
    pub body: String,
    /// Labels.
    pub labels: Vec<String>,
    /// Web URL.
    pub url: String,
    /// Branch the tracker suggests.
    pub branch: Option<String>,
    /// The issue is done with (GitHub `closed`, Linear state type `completed`/`canceled`,
    /// Jira status category `done`): a spawn for it is refused.
    #[serde(default)]
    pub closed: bool,
}

/// What to write back to an issue at one stage of its session's PR (opened, merged). Every
/// part is optional; a tracker ignores the parts it has no notion of (labels on Jira/Linear,
/// states on GitHub).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBack {
    /// A comment (Markdown; Jira gets it as an ADF paragraph with its links).
    pub comment: Option<String>,
    /// Labels to add (GitHub).
    pub add_labels: Vec<String>,
    /// Labels to take off (GitHub); one the issue does not carry is not an error.
    pub remove_labels: Vec<String>,
    /// The workflow state to move to (Linear, Jira), by name or id.
    pub state: Option<String>,
}

impl WriteBack {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.comment.is_none()
            && self.add_labels.is_empty()
            && self.remove_labels.is_empty()
            && self.state.is_none()
    }
}

/// Where tasks come from (GitHub issues, Linear, Jira), and where their progress goes back.
#[async_trait]
pub trait Tracker: Send + Sync {
    /// Fetches one issue, with whether it is closed.
    ///
    /// # Errors
    /// `NotFound` for an unknown issue; anything else (auth, network) aborts a spawn before
    /// anything is created.
    async fn issue(&self, id: &str) -> PluginResult<Issue>;

    /// Writes `w` to issue `id`: the comment first, then labels, then the state. Not
    /// idempotent (a second call comments twice): the caller records what was written.
    ///
    /// # Errors
    /// `NotFound` for an unknown issue, `Invalid` for a state the issue cannot move to (no
    /// such workflow state or transition), the API's error otherwise.
    async fn write_back(&self, id: &str, w: &WriteBack) -> PluginResult<()>;

    /// Ids of the open issues carrying `label`, for polling intake. Trackers without a
    /// listing answer an empty list.
    ///
    /// # Errors
    /// The API's error.
    async fn labelled(&self, label: &str) -> PluginResult<Vec<String>> {
        let _ = label;
        Ok(vec![])
    }
}
