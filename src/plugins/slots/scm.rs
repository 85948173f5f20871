//! Where PRs live: the [`Scm`] slot.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::plugins::{CiSummary, MergeMethod, PluginResult, PrStatus, ReviewFeedback};

/// The remote API's rate-limit budget, from the last response's `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Requests (or GraphQL points) per window.
    pub limit: i64,
    /// Left in the window.
    pub remaining: i64,
    /// When the window resets (UTC epoch seconds).
    pub reset: i64,
}

/// Where PRs live (GitHub). `repo` is always `owner/name`.
///
/// Reads are idempotent and may be answered from conditional requests (an unchanged resource
/// costs no quota). Every call has a timeout. Rate limits surface as
/// [`PluginError::RateLimited`] carrying how long to wait.
#[async_trait]
pub trait Scm: Send + Sync {
    /// Finds the open PR whose head is `branch`, with its full status.
    ///
    /// # Errors
    /// `RateLimited`, `Timeout`, `Api` on API failure.
    async fn find_pr(&self, repo: &str, branch: &str) -> PluginResult<Option<PrStatus>>;

    /// One PR's status (state, CI rollup, review decision, mergeability, threads).
    ///
    /// # Errors
    /// `NotFound` for an unknown PR; `RateLimited`, `Timeout`, `Api` on API failure.
    async fn pr_status(&self, repo: &str, number: i64) -> PluginResult<PrStatus>;

    /// Many PRs' status in as few requests as possible (GraphQL aliases, 50 PRs a request).
    /// Unknown numbers are left out of the answer.
    ///
    /// # Errors
    /// `RateLimited`, `Timeout`, `Api` on API failure.
    async fn batch_status(&self, repo: &str, numbers: &[i64]) -> PluginResult<Vec<PrStatus>>;

    /// Whether anything about the repo's open PRs changed since the last call (ao's "Guard
    /// 1"): one conditional request, free when nothing changed. The first call says `true`.
    /// Check runs and statuses do not bump a PR; poll those per head with [`Scm::ci`].
    ///
    /// # Errors
    /// `RateLimited`, `Timeout`, `Api` on API failure.
    async fn repo_changed(&self, repo: &str) -> PluginResult<bool>;

    /// CI on commit `head_sha`: every check, the failed ones with their URLs and the tail of
    /// their job logs.
    ///
    /// # Errors
    /// `RateLimited`, `Timeout`, `Api` on API failure (a missing log is not an error).
    async fn ci(&self, repo: &str, head_sha: &str) -> PluginResult<CiSummary>;

    /// What humans said: the review decision, unresolved threads (file:line, author, body),
    /// review bodies and conversation comments.
    ///
    /// # Errors
    /// `NotFound` for an unknown PR; `RateLimited`, `Timeout`, `Api` on API failure.
    async fn review_feedback(&self, repo: &str, number: i64) -> PluginResult<ReviewFeedback>;

    /// Merges a PR with `method`. With `expected_head`, refuses if the head moved. Returns the
    /// merge commit sha. Not idempotent: a merged PR answers `NotMergeable`.
    ///
    /// # Errors
    /// `NotMergeable` (conflicts, closed, draft), `Conflict` (the head is not
    /// `expected_head`), `NotFound`, `RateLimited`, `Timeout`, `Api`.
    async fn merge(
        &self,
        repo: &str,
        number: i64,
        method: MergeMethod,
        expected_head: Option<&str>,
    ) -> PluginResult<String>;

    /// The budget the last response reported, if any.
    fn rate_limit(&self) -> Option<RateLimit>;
}
