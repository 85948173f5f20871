//! Where the agent's files are: the [`Workspace`] slot.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::plugins::PluginResult;

/// A workspace created for a session.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkspaceInfo {
    /// Its path.
    pub path: PathBuf,
    /// Its branch.
    pub branch: String,
}

/// What a workspace needs to be created.
#[derive(Debug, Clone)]
pub struct WorkspaceRequest {
    /// Project repository (a local clone).
    pub repo: PathBuf,
    /// Remote name.
    pub remote: String,
    /// Base branch.
    pub base_branch: String,
    /// Branch to create or reuse.
    pub branch: String,
    /// Where to put the workspace.
    pub path: PathBuf,
}

/// Where a session's files live (a git worktree or clone).
#[async_trait]
pub trait Workspace: Send + Sync {
    /// Plugin name.
    fn name(&self) -> &'static str;

    /// Creates the workspace on `branch` (created from the base if it does not exist; reused if
    /// it does, which is how restore recreates a workspace). A failure leaves nothing behind.
    ///
    /// # Errors
    /// `Invalid` for a bad branch name; `Command` when git fails.
    async fn create(&self, req: &WorkspaceRequest) -> PluginResult<WorkspaceInfo>;

    /// Removes the workspace; keeps the branch. Idempotent.
    ///
    /// # Errors
    /// `Command` when git fails for another reason than "already gone".
    async fn destroy(&self, repo: &Path, path: &Path) -> PluginResult<()>;

    /// Whether the workspace exists.
    async fn exists(&self, path: &Path) -> bool;

    /// Makes the workspace of `req` unless it exists (a restart's, a restore's); `true` when
    /// it made it, so a failed launch removes only what it made. Default: [`Workspace::exists`]
    /// then [`Workspace::create`]; a remote host's asks once for both.
    ///
    /// # Errors
    /// As [`Workspace::create`].
    async fn ensure(&self, req: &WorkspaceRequest) -> PluginResult<bool> {
        if self.exists(&req.path).await {
            return Ok(false);
        }
        self.create(req).await.map(|_| true)
    }

    /// Where a session's workspace goes, given where Flotilla would put it on this machine
    /// (`<home>/worktrees/<project>/<session>`). Default: there; a remote host's workspace
    /// maps it under the host's work directory.
    fn place(&self, local: &Path) -> PathBuf {
        local.to_path_buf()
    }

    /// Deletes a session's local branch (when the config says killed sessions lose it).
    /// Idempotent: a missing branch is Ok.
    ///
    /// # Errors
    /// `Command` when git fails for another reason.
    async fn delete_branch(&self, repo: &Path, branch: &str) -> PluginResult<()>;
}
