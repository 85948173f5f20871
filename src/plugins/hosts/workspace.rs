//! `ssh:<host>` workspaces: git worktrees made on the host, from a clone the host keeps of the
//! project's repository (cloned once from the URL of the project's remote, fetched before each
//! new branch). Every git call is an argv sent through the host's transport.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::state::Host;
use crate::plugins::worktree::check_branch_name;
use crate::plugins::{exec, PluginError, PluginResult, Workspace, WorkspaceInfo, WorkspaceRequest};

/// Timeout of a clone or fetch on the host.
const GIT_NET_TIMEOUT: Duration = Duration::from_secs(300);
/// Timeout of other git calls.
const GIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Worktrees on one host.
pub struct RemoteWorktree {
    host: Arc<Host>,
    /// One workspace change at a time per host (git locks its repository).
    lock: tokio::sync::Mutex<()>,
}

impl RemoteWorktree {
    /// Worktrees on `host`.
    pub fn new(host: Arc<Host>) -> Self {
        RemoteWorktree {
            host,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The host's clone of the local repository `repo`: named after it and a hash of its path.
    pub fn clone_dir(&self, repo: &Path) -> PathBuf {
        let mut h: u32 = 0x811c_9dc5;
        for b in repo.as_os_str().as_encoded_bytes() {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
        let base = repo
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "repo".into());
        let base: String = base
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.host.repos_dir().join(format!("{base}-{h:08x}"))
    }

    async fn git(&self, dir: &Path, args: &[&str], timeout: Duration) -> PluginResult<String> {
        let d = dir.to_string_lossy();
        let mut argv = vec!["git", "-C", &d];
        argv.extend_from_slice(args);
        self.host.ssh.run(&argv, None, timeout).await
    }

    async fn has_ref(&self, dir: &Path, r: &str) -> bool {
        self.git(dir, &["show-ref", "--verify", "--quiet", r], GIT_TIMEOUT)
            .await
            .is_ok()
    }

    /// The host's clone of `repo`, made (from the URL of its `remote`) when missing.
    async fn ensure_clone(&self, repo: &Path, remote: &str) -> PluginResult<PathBuf> {
        let dir = self.clone_dir(repo);
        if self
            .git(&dir, &["rev-parse", "--git-dir"], GIT_TIMEOUT)
            .await
            .is_ok()
        {
            return Ok(dir);
        }
        let r = repo.to_string_lossy();
        let url = exec::run(
            &["git", "-C", &r, "remote", "get-url", remote],
            None,
            exec::QUICK,
        )
        .await?;
        let url = url.trim();
        if url.is_empty() || url.starts_with('-') {
            return Err(PluginError::Invalid(format!(
                "remote `{remote}` of {} has no usable URL for a host to clone",
                repo.display()
            )));
        }
        let d = dir.to_string_lossy();
        self.host
            .ssh
            .run(
                &["git", "clone", "--quiet", "--", url, &d],
                None,
                GIT_NET_TIMEOUT,
            )
            .await?;
        Ok(dir)
    }
}

#[async_trait]
impl Workspace for RemoteWorktree {
    fn name(&self) -> &'static str {
        "ssh"
    }

    fn place(&self, local: &Path) -> PathBuf {
        // `<home>/worktrees/<project>/<session>` → `<work_dir>/worktrees/<project>/<session>`.
        let mut tail: Vec<_> = local.components().rev().take(2).collect();
        tail.reverse();
        tail.iter()
            .fold(self.host.worktrees_dir(), |p, c| p.join(c.as_os_str()))
    }

    async fn create(&self, req: &WorkspaceRequest) -> PluginResult<WorkspaceInfo> {
        check_branch_name(&req.branch)?;
        let _held = self.lock.lock().await;
        // On the host the clone's remote is always `origin` (it was cloned from the URL).
        let dir = self.ensure_clone(&req.repo, &req.remote).await?;
        self.git(&dir, &["fetch", "--quiet", "origin"], GIT_NET_TIMEOUT)
            .await?;
        let path = req.path.to_string_lossy().into_owned();
        if let Some(parent) = req.path.parent() {
            let p = parent.to_string_lossy();
            self.host
                .ssh
                .run(&["mkdir", "-p", "--", &p], None, GIT_TIMEOUT)
                .await?;
        }
        let local_ref = format!("refs/heads/{}", req.branch);
        let remote_ref = format!("refs/remotes/origin/{}", req.branch);
        if self.has_ref(&dir, &local_ref).await {
            self.git(&dir, &["worktree", "add", &path, &req.branch], GIT_TIMEOUT)
                .await?;
        } else {
            let base = if self.has_ref(&dir, &remote_ref).await {
                format!("origin/{}", req.branch)
            } else {
                format!("origin/{}", req.base_branch)
            };
            self.git(
                &dir,
                &[
                    "worktree",
                    "add",
                    "--no-track",
                    "-b",
                    &req.branch,
                    &path,
                    &base,
                ],
                GIT_TIMEOUT,
            )
            .await?;
        }
        Ok(WorkspaceInfo {
            path: req.path.clone(),
            branch: req.branch.clone(),
        })
    }

    async fn destroy(&self, repo: &Path, path: &Path) -> PluginResult<()> {
        let _held = self.lock.lock().await;
        let dir = self.clone_dir(repo);
        let p = path.to_string_lossy();
        if self.exists(path).await {
            self.git(&dir, &["worktree", "remove", "--force", &p], GIT_TIMEOUT)
                .await?;
        }
        match self.git(&dir, &["worktree", "prune"], GIT_TIMEOUT).await {
            Err(e) if super::ssh::is_unreachable(&e) => Err(e),
            _ => Ok(()),
        }
    }

    async fn exists(&self, path: &Path) -> bool {
        let git = path.join(".git");
        let g = git.to_string_lossy();
        self.host
            .ssh
            .run(&["test", "-e", &g], None, GIT_TIMEOUT)
            .await
            .is_ok()
    }

    async fn delete_branch(&self, repo: &Path, branch: &str) -> PluginResult<()> {
        check_branch_name(branch)?;
        let dir = self.clone_dir(repo);
        let local = format!("refs/heads/{branch}");
        if self
            .git(
                &dir,
                &["show-ref", "--verify", "--quiet", &local],
                GIT_TIMEOUT,
            )
            .await
            .is_err()
        {
            return Ok(());
        }
        self.git(&dir, &["branch", "-D", branch], GIT_TIMEOUT)
            .await
            .map(drop)
    }
}
