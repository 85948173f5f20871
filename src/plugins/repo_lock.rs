//! A repository's worktree lock shared by every process on the host: several Flotilla nodes
//! (or a node and a restarted one) adding worktrees to one repository at once made git fail
//! with exit 128 on its own bookkeeping. An advisory `flock` on `.git/flotilla-worktree.lock`,
//! taken without blocking a thread (polled), released when the guard drops.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use super::{PluginError, PluginResult};

/// Longest wait for another process's worktree change in the same repository.
const WAIT: Duration = Duration::from_secs(60);

/// How often a held lock is tried again.
const POLL: Duration = Duration::from_millis(20);

/// Holds the repository's lock until dropped (closing the file releases it).
#[derive(Debug)]
pub struct RepoFileLock {
    _file: Option<tokio::fs::File>,
}

/// Takes `repo`'s worktree lock. A repository without a `.git` directory (bare, or a
/// worktree itself) is not locked across processes: the caller's in-process lock remains.
///
/// # Errors
/// `Io` when the lock file cannot be opened, `Timeout` after [`WAIT`].
pub async fn lock(repo: &Path) -> PluginResult<RepoFileLock> {
    let git_dir = repo.join(".git");
    if !tokio::fs::metadata(&git_dir)
        .await
        .map(|m| m.is_dir())
        .unwrap_or(false)
    {
        return Ok(RepoFileLock { _file: None });
    }
    let path = git_dir.join("flotilla-worktree.lock");
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        // SAFETY: flock on a descriptor this function owns; LOCK_NB never blocks.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            return Ok(RepoFileLock { _file: Some(file) });
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) && e.raw_os_error() != Some(libc::EINTR) {
            return Err(PluginError::Io(e));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(PluginError::Timeout {
                what: format!("the worktree lock of {}", repo.display()),
                after: WAIT,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_holder_waits_for_the_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join(".git")).expect("git dir");
        let first = lock(dir.path()).await.expect("first");
        // A second open file description conflicts as another process's would.
        let mut second = Box::pin(lock(dir.path()));
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut second)
                .await
                .is_err(),
            "held by the first"
        );
        drop(first);
        tokio::time::timeout(Duration::from_secs(10), second)
            .await
            .expect("granted after the first drops")
            .expect("lock");
    }
}
