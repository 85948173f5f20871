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

    async fn git(&self, dir: &Path, args: &[&str], timeout: Duration) -> PluginResult<String> {
        let d = dir.to_string_lossy();
        let mut argv = vec!["git", "-C", &d];
        argv.extend_from_slice(args);
        self.host.ssh.run(&argv, None, timeout).await
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
        check_branch_name(&req.base_branch)?;
        // On the host the clone's remote is always `origin` (it was cloned from the URL).
        let url = Self::clone_url(&req.repo, &req.remote).await?;
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
                    CREATE,
                    "flotilla-worktree",
                    &d,
                    &url,
                    &parent,
                    &path,
                    &req.branch,
                    &req.base_branch,
                ],
                None,
                GIT_NET_TIMEOUT,
            )
            .await?;
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
