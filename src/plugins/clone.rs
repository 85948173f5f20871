//! The `clone` workspace: a full `git clone` per session (for tools that dislike worktrees),
//! cloned from the local repository (fast, no network) with its `origin` pointed at the
//! project's remote, and the branch cut from a freshly fetched base.

use std::path::Path;

use async_trait::async_trait;

use super::exec::{run, QUICK};
use super::worktree::check_branch_name;
use super::{PluginResult, Workspace, WorkspaceInfo, WorkspaceRequest};

/// Full clones under `$FLOTILLA_HOME/worktrees/{project}/{session}`.
#[derive(Debug, Default, Clone)]
pub struct CloneWorkspace;

async fn git(dir: &Path, args: &[&str]) -> PluginResult<String> {
    let mut argv = vec!["git"];
    argv.extend_from_slice(args);
    run(&argv, Some(dir), QUICK).await
}

#[async_trait]
impl Workspace for CloneWorkspace {
    fn name(&self) -> &'static str {
        "clone"
    }

    async fn create(&self, req: &WorkspaceRequest) -> PluginResult<WorkspaceInfo> {
        check_branch_name(&req.branch)?;
        if let Some(parent) = req.path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let path = req.path.to_string_lossy().to_string();
        let repo = req.repo.to_string_lossy().to_string();
        let made = async {
            git(
                &req.repo,
                &["clone", "--quiet", "--no-checkout", &repo, &path],
            )
            .await?;
            // Push where the project pushes, not into the local clone it came from.
            if let Ok(url) = git(&req.repo, &["remote", "get-url", &req.remote]).await {
                git(&req.path, &["remote", "set-url", "origin", url.trim()]).await?;
            }
            let fetched = git(&req.path, &["fetch", "--quiet", "origin"])
                .await
                .is_ok();
            let remote_branch = format!("refs/remotes/origin/{}", req.branch);
            let has_remote_branch = fetched
                && git(
                    &req.path,
                    &["show-ref", "--verify", "--quiet", &remote_branch],
                )
                .await
                .is_ok();
            let local_branch = format!("refs/heads/{}", req.branch);
            let has_local_branch = git(
                &req.path,
                &["show-ref", "--verify", "--quiet", &local_branch],
            )
            .await
            .is_ok();
            if has_local_branch {
                git(&req.path, &["checkout", "--quiet", &req.branch]).await?;
            } else if has_remote_branch {
                let from = format!("origin/{}", req.branch);
                git(
                    &req.path,
                    &["checkout", "--quiet", "-b", &req.branch, &from],
                )
                .await?;
            } else {
                let base = if fetched {
                    format!("origin/{}", req.base_branch)
                } else {
                    req.base_branch.clone()
                };
                git(
                    &req.path,
                    &[
                        "checkout",
                        "--quiet",
                        "--no-track",
                        "-b",
                        &req.branch,
                        &base,
                    ],
                )
                .await?;
            }
            Ok::<_, super::PluginError>(())
        };
        if let Err(e) = made.await {
            // A failed clone leaves nothing behind.
            let _ = tokio::fs::remove_dir_all(&req.path).await;
            return Err(e);
        }
        Ok(WorkspaceInfo {
            path: req.path.clone(),
            branch: req.branch.clone(),
        })
    }

    async fn destroy(&self, _repo: &Path, path: &Path) -> PluginResult<()> {
        match tokio::fs::remove_dir_all(path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn exists(&self, path: &Path) -> bool {
        tokio::fs::metadata(path.join(".git")).await.is_ok()
    }

    async fn delete_branch(&self, _repo: &Path, _branch: &str) -> PluginResult<()> {
        // The branch lived in the clone, which `destroy` removed; the remote's is kept.
        Ok(())
    }
}
