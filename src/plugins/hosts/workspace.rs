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

    /// The host's clone of the local repository `repo` (see [`clone_dir`]).
    pub fn clone_dir(&self, repo: &Path) -> PathBuf {
        clone_dir(&self.host, repo)
    }

    /// The URL the host clones `repo` from: its `remote`'s.
    async fn clone_url(repo: &Path, remote: &str) -> PluginResult<String> {
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
        Ok(url.to_string())
    }
}

/// The host's clone of the local repository `repo`: named after it and a hash of its path.
pub fn clone_dir(host: &Host, repo: &Path) -> PathBuf {
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
    host.repos_dir().join(format!("{base}-{h:08x}"))
}

/// Makes a worktree in one call: `$1` the clone (made from the URL `$2` when missing, then
/// fetched), `$3` the worktree's parent, `$4` the worktree, `$5` the branch (the local one,
/// else the remote's, else a new one from `origin/$6`). Every value is a quoted word.
const CREATE: &str = r#"set -e
if ! git -C "$1" rev-parse --git-dir >/dev/null 2>&1; then
  git clone --quiet -- "$2" "$1"
fi
git -C "$1" fetch --quiet origin
mkdir -p -- "$3"
if git -C "$1" show-ref --verify --quiet "refs/heads/$5"; then
  git -C "$1" worktree add --quiet "$4" "$5"
elif git -C "$1" show-ref --verify --quiet "refs/remotes/origin/$5"; then
  git -C "$1" worktree add --quiet --no-track -b "$5" "$4" "origin/$5"
else
  git -C "$1" worktree add --quiet --no-track -b "$5" "$4" "origin/$6"
fi"#;

/// Removes a worktree in one call: `$0` the clone, `$1` the worktree (when it is there), then
/// prunes the clone's list of worktrees (its failure ignored).
const DESTROY: &str = r#"if [ -e "$1/.git" ]; then git -C "$0" worktree remove --force "$1" || exit 1; fi
git -C "$0" worktree prune || true"#;

/// Deletes branch `$1` of the clone `$0` when it is there.
const DELETE_BRANCH: &str = r#"git -C "$0" show-ref --verify --quiet "refs/heads/$1" || exit 0
git -C "$0" branch -D "$1""#;

/// [`CREATE`] unless the worktree `$4` is there already, printing `made` when it made it: what
/// [`Workspace::ensure`] asks in one call instead of two.
fn ensure_script() -> String {
    format!("if [ -e \"$4/.git\" ]; then exit 0; fi\n{CREATE}\necho made")
}

impl RemoteWorktree {
    /// Runs `script` (one of the scripts above) for `req` on the host, cloning from `url`;
    /// returns its output.
    async fn make(&self, req: &WorkspaceRequest, script: &str, url: &str) -> PluginResult<String> {
        check_branch_name(&req.branch)?;
        check_branch_name(&req.base_branch)?;
        let _held = self.lock.lock().await;
        let dir = self.clone_dir(&req.repo);
        let parent = req
            .path
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".into());
        let (d, path) = (dir.to_string_lossy(), req.path.to_string_lossy());
        self.host
            .ssh
            .run(
                &[
                    "sh",
                    "-c",
                    script,
                    "flotilla-worktree",
                    &d,
                    url,
                    &parent,
                    &path,
                    &req.branch,
                    &req.base_branch,
                ],
                None,
                GIT_NET_TIMEOUT,
            )
            .await
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
        // On the host the clone's remote is always `origin` (it was cloned from the URL).
        let url = Self::clone_url(&req.repo, &req.remote).await?;
        self.make(req, CREATE, &url).await?;
        Ok(WorkspaceInfo {
            path: req.path.clone(),
            branch: req.branch.clone(),
        })
    }

    async fn ensure(&self, req: &WorkspaceRequest) -> PluginResult<bool> {
        let url = match Self::clone_url(&req.repo, &req.remote).await {
            Ok(u) => u,
            // A worktree made earlier needs no URL.
            Err(e) if self.exists(&req.path).await => {
                tracing::debug!(error = %e, "no clone URL; the worktree is there");
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let out = self.make(req, &ensure_script(), &url).await?;
        Ok(out.lines().any(|l| l.trim() == "made"))
    }

    async fn destroy(&self, repo: &Path, path: &Path) -> PluginResult<()> {
        let _held = self.lock.lock().await;
        let dir = self.clone_dir(repo);
        let (d, p) = (dir.to_string_lossy(), path.to_string_lossy());
        // A prune that fails on a host that answers is no failure (as locally).
        self.host
            .ssh
            .run(&["sh", "-c", DESTROY, &d, &p], None, GIT_TIMEOUT)
            .await
            .map(drop)
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
        let d = dir.to_string_lossy();
        self.host
            .ssh
            .run(&["sh", "-c", DELETE_BRANCH, &d, branch], None, GIT_TIMEOUT)
            .await
            .map(drop)
    }
}
