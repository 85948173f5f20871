//! The `worktree` workspace: one `git worktree` per session, on its own branch, cut from a
//! freshly fetched base when the remote has it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::exec::{run, QUICK};
use super::{PluginError, PluginResult, Workspace, WorkspaceInfo, WorkspaceRequest};

/// Git worktrees under `$FLOTILLA_HOME/worktrees/{project}/{session}`.
#[derive(Debug, Default, Clone)]
pub struct WorktreeWorkspace {
    /// One lock per repository: git's worktree bookkeeping (`.git/worktrees`) and `fetch` are
    /// not safe to run concurrently in one repository (a batch of 100 spawns lost 3 to
    /// "failed to read .git/worktrees/…/commondir" without it). It guards what the repository
    /// last fetched. Other processes on the host are kept out by [`super::repo_lock`].
    repos: std::sync::Arc<std::sync::Mutex<HashMap<PathBuf, std::sync::Arc<RepoLock>>>>,
}

/// A repository's lock and its fetch record.
type RepoLock = tokio::sync::Mutex<Fetched>;

/// When each `(remote, branch)` of a repository was last fetched with success (the fetch's
/// start). A fetch that started after a spawn was asked for saw a remote at least as fresh as
/// that spawn needs: a burst of spawns in one repository shares one fetch (a real remote takes
/// a second or more per fetch) instead of queueing one each behind the lock.
#[derive(Debug, Default)]
pub struct Fetched(HashMap<(String, String), std::time::Instant>);

impl Fetched {
    /// Whether a fetch of `remote`/`branch` started at or after `asked` succeeded.
    fn covers(&self, remote: &str, branch: &str, asked: std::time::Instant) -> bool {
        self.0
            .get(&(remote.to_string(), branch.to_string()))
            .is_some_and(|started| *started >= asked)
    }

    fn record(&mut self, remote: &str, branch: &str, started: std::time::Instant) {
        self.0
            .insert((remote.to_string(), branch.to_string()), started);
    }
}

impl WorktreeWorkspace {
    /// A worktree workspace.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock_for(&self, repo: &Path) -> std::sync::Arc<RepoLock> {
        match self.repos.lock() {
            Ok(mut m) => m.entry(repo.to_path_buf()).or_default().clone(),
            // A poisoned map only means another thread panicked mid-insert: use a fresh lock.
            Err(_) => std::sync::Arc::default(),
        }
    }
}

/// [`check_branch_name`] as an ECMA-262 regular expression (the OpenAPI document's
/// `pattern` for a spawn's `branch`): the same rules, character for character (control
/// characters and Unicode white space listed explicitly, no trailing newline).
pub const BRANCH_PATTERN: &str = concat!(
    r"^(?![\s\S]*\n)(?!-)(?!/)(?!refs/)(?!HEAD$)(?!@$)",
    r"(?!.*\.\.)(?!.*@\{)(?!.*//)(?!.*/$)(?!.*\.lock$)(?!.*(^|/)\.)(?!.*\.(/|$))",
    r"[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000~^:?*\[\\]+$"
);

/// Rejects branch names git would refuse or that could be read as options or paths.
///
/// # Errors
/// `Invalid` naming the problem.
pub fn check_branch_name(branch: &str) -> PluginResult<()> {
    let bad = branch.is_empty()
        || branch.starts_with('-')
        || branch.starts_with('/')
        || branch.ends_with('/')
        || branch.ends_with(".lock")
        || branch.contains("..")
        || branch.contains("@{")
        || branch.contains("//")
        || branch
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c))
        // git's own rules for a component, and names that read as something else: `HEAD`
        // (the symbolic ref), `@`, a full ref name (`refs/heads/x` would become
        // `refs/heads/refs/heads/x`).
        || branch == "HEAD"
        || branch == "@"
        || branch.starts_with("refs/")
        || branch
            .split('/')
            .any(|part| part.starts_with('.') || part.ends_with('.'));
    if bad {
        return Err(PluginError::Invalid(format!(
            "`{branch}` is not a valid branch name"
        )));
    }
    Ok(())
}

/// Branch names on `remote` (`git ls-remote --heads`, bounded by a short timeout). An
/// unreachable or missing remote yields an empty list: spawning must not depend on it.
pub async fn remote_heads(repo: &Path, remote: &str) -> Vec<String> {
    let out = run(
        &["git", "ls-remote", "--heads", remote],
        Some(repo),
        std::time::Duration::from_secs(10),
    )
    .await
    .unwrap_or_default();
    out.lines()
        .filter_map(|l| l.split('\t').nth(1))
        .filter_map(|r| r.strip_prefix("refs/heads/"))
        .map(str::to_string)
        .collect()
}

/// A branch-safe slug of free text (lowercase, `-` for anything else, at most 60 chars).
pub fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let s: String = out
        .trim_matches(|c| c == '-' || c == '.')
        .chars()
        .take(60)
        .collect();
    s.trim_end_matches(['-', '.']).to_string()
}

async fn git(repo: &Path, args: &[&str]) -> PluginResult<String> {
    let mut argv = vec!["git"];
    argv.extend_from_slice(args);
    run(&argv, Some(repo), QUICK).await
}

/// `git worktree add …`, pruning first when git still has the path registered though its
/// directory is gone (Flotilla's home or a worktree deleted by hand): git then refuses every
/// later spawn of that session id with "missing but already registered worktree".
async fn add_worktree(repo: &Path, args: &[&str]) -> PluginResult<String> {
    match git(repo, args).await {
        Err(e)
            if e.to_string()
                .contains("missing but already registered worktree") =>
        {
            git(repo, &["worktree", "prune"]).await?;
            git(repo, args).await
        }
        other => other,
    }
}

#[async_trait]
impl Workspace for WorktreeWorkspace {
    fn name(&self) -> &'static str {
        "worktree"
    }

    async fn create(&self, req: &WorkspaceRequest) -> PluginResult<WorkspaceInfo> {
        check_branch_name(&req.branch)?;
        if let Some(parent) = req.path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let asked = std::time::Instant::now();
        let lock = self.lock_for(&req.repo);
        let mut fetched = lock.lock().await;
        let _across = super::repo_lock::lock(&req.repo).await?;
        let path = req.path.to_string_lossy().to_string();
        let local = format!("refs/heads/{}", req.branch);
        let exists = git(&req.repo, &["show-ref", "--verify", "--quiet", &local])
            .await
            .is_ok();
        if exists {
            add_worktree(&req.repo, &["worktree", "add", &path, &req.branch]).await?;
        } else {
            // Stale bases are a top complaint: fetch first; a repo without that remote
            // falls back to the local base branch.
            let remote_base = format!("{}/{}", req.remote, req.base_branch);
            let fresh = fetched.covers(&req.remote, &req.base_branch, asked) || {
                let started = std::time::Instant::now();
                let ok = git(
                    &req.repo,
                    &["fetch", "--quiet", &req.remote, &req.base_branch],
                )
                .await
                .is_ok();
                if ok {
                    fetched.record(&req.remote, &req.base_branch, started);
                }
                ok
            };
            let base = if fresh {
                remote_base.as_str()
            } else {
                req.base_branch.as_str()
            };
            add_worktree(
                &req.repo,
                &[
                    "worktree",
                    "add",
                    "--no-track",
                    "-b",
                    &req.branch,
                    &path,
                    base,
                ],
            )
            .await?;
        }
        Ok(WorkspaceInfo {
            path: req.path.clone(),
            branch: req.branch.clone(),
        })
    }

    async fn destroy(&self, repo: &Path, path: &Path) -> PluginResult<()> {
        let lock = self.lock_for(repo);
        let _held = lock.lock().await;
        let _across = super::repo_lock::lock(repo).await?;
        if tokio::fs::metadata(path).await.is_ok() {
            let p = path.to_string_lossy().to_string();
            git(repo, &["worktree", "remove", "--force", &p]).await?;
        }
        // Forget worktrees whose directories vanished by other means.
        git(repo, &["worktree", "prune"]).await?;
        Ok(())
    }

    async fn exists(&self, path: &Path) -> bool {
        tokio::fs::metadata(path.join(".git")).await.is_ok()
    }

    async fn delete_branch(&self, repo: &Path, branch: &str) -> PluginResult<()> {
        check_branch_name(branch)?;
        let local = format!("refs/heads/{branch}");
        if git(repo, &["show-ref", "--verify", "--quiet", &local])
            .await
            .is_err()
        {
            return Ok(());
        }
        git(repo, &["branch", "-D", branch]).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_valid_branch_names() {
        assert_eq!(slug("Fix: the Parser!!"), "fix-the-parser");
        assert_eq!(slug("INT-100"), "int-100");
        assert!(check_branch_name(&format!("feat/{}", slug("a..b c"))).is_ok());
    }

    #[test]
    fn branch_names_with_dots_spaces_or_options_are_rejected() {
        for bad in [
            "a..b",
            "has space",
            "-x",
            "x.lock",
            "a~1",
            "",
            "a//b",
            "HEAD",
            "@",
            ".hidden",
            "feat/.x",
            "x.",
            "refs/heads/x",
        ] {
            assert!(check_branch_name(bad).is_err(), "{bad}");
        }
        for good in [
            "feat/42",
            "session/demo-1",
            "fix_bug-3",
            "release-1.2",
            "head",
        ] {
            assert!(check_branch_name(good).is_ok(), "{good}");
        }
    }

    /// Runs git synchronously in `dir` (test set-up only).
    fn sh_git(dir: &Path, args: &[&str]) {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    }

    /// A burst of spawns in one repository fetches the base once (or twice, when some were
    /// asked for while the first fetch ran), not once per spawn; a spawn asked for after a
    /// push fetches again and starts from the new base.
    #[tokio::test]
    async fn a_burst_of_spawns_shares_one_fetch_and_a_later_spawn_fetches_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let upstream = root.join("upstream");
        std::fs::create_dir_all(&upstream).expect("mkdir");
        sh_git(&upstream, &["init", "-q", "-b", "main"]);
        sh_git(&upstream, &["commit", "-q", "--allow-empty", "-m", "one"]);
        sh_git(root, &["clone", "-q", "upstream", "repo"]);
        let repo = root.join("repo");
        // Every fetch runs the remote's upload-pack: a wrapper counts them.
        let count = root.join("fetches");
        let wrapper = root.join("upload-pack");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\necho x >> '{}'\nexec git-upload-pack \"$@\"\n",
                count.display()
            ),
        )
        .expect("wrapper");
        std::fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        sh_git(
            &repo,
            &[
                "config",
                "remote.origin.uploadpack",
                &wrapper.display().to_string(),
            ],
        );
        let fetches = || {
            std::fs::read_to_string(&count)
                .unwrap_or_default()
                .lines()
                .count()
        };
        let ws = WorktreeWorkspace::new();
        let req = |n: usize| WorkspaceRequest {
            repo: repo.clone(),
            remote: "origin".into(),
            base_branch: "main".into(),
            branch: format!("session/s-{n}"),
            path: root.join("wt").join(format!("s-{n}")),
        };
        let burst: Vec<_> = (0..10)
            .map(|n| {
                let ws = ws.clone();
                let r = req(n);
                async move { ws.create(&r).await }
            })
            .collect();
        for r in futures::future::join_all(burst).await {
            r.expect("created");
        }
        let after_burst = fetches();
        assert!(
            (1..=2).contains(&after_burst),
            "{after_burst} fetches for a burst of 10"
        );

        sh_git(&upstream, &["commit", "-q", "--allow-empty", "-m", "two"]);
        ws.create(&req(10)).await.expect("created");
        assert_eq!(fetches(), after_burst + 1, "a later spawn fetches again");
        let log = std::process::Command::new("git")
            .args(["log", "--format=%s", "-1"])
            .current_dir(root.join("wt").join("s-10"))
            .output()
            .expect("git log");
        assert_eq!(String::from_utf8_lossy(&log.stdout).trim(), "two");
    }

    /// A worktree directory deleted by hand (git still has it registered) does not block the
    /// next spawn at that path.
    #[tokio::test]
    async fn a_worktree_deleted_by_hand_is_pruned_and_made_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let repo = root.join("repo");
        std::fs::create_dir_all(&repo).expect("mkdir");
        sh_git(&repo, &["init", "-q", "-b", "main"]);
        sh_git(&repo, &["commit", "-q", "--allow-empty", "-m", "one"]);
        let ws = WorktreeWorkspace::new();
        let req = WorkspaceRequest {
            repo: repo.clone(),
            remote: "origin".into(),
            base_branch: "main".into(),
            branch: "session/s-1".into(),
            path: root.join("wt").join("s-1"),
        };
        ws.create(&req).await.expect("created");
        std::fs::remove_dir_all(root.join("wt")).expect("deleted by hand");
        ws.create(&req).await.expect("made again");
        assert!(ws.exists(&req.path).await);
    }
}
