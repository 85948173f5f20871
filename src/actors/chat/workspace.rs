//! Codebases and worktrees of conversations.
//!
//! - A codebase `owner/repo` lives at `<chat.workspace>/owner/repo`.
//! - A GitHub issue or PR thread (`owner/repo#N`, meta `kind` = `issue` | `pr`) works in
//!   `<chat.worktrees>/<repo>/issue-N` (or `pr-N`), cut from a freshly fetched
//!   `origin/<base>`. A PR whose meta `closes` names an issue with a worktree shares it.
//! - A thread's close event (meta `event` = `closed`) detaches its worktree, which is removed
//!   only when no other conversation uses it (never with `--force`).
//! - A worktree that vanished from disk is dropped from the conversation before a turn (and
//!   the session with it): the turn runs in the main checkout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::reply::reply_to;
use super::ChatContext;
use crate::chat::paths::validate_clone_url;
use crate::store::ConversationRecord;

/// Longest a fetch, clone or worktree command may take.
const GIT_TIMEOUT: Duration = Duration::from_secs(120);

/// The directory a turn runs in: the worktree, else the cwd, else the workspace root.
pub fn turn_dir(ctx: &ChatContext, conv: &ConversationRecord) -> std::path::PathBuf {
    conv.worktree
        .as_ref()
        .or(conv.cwd.as_ref())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| ctx.workspace.clone())
}

/// Where codebase `name` (`owner/repo`) is checked out.
pub fn codebase_dir(ctx: &ChatContext, name: &str) -> PathBuf {
    ctx.workspace.join(name)
}

/// Whether `p` exists (without blocking the actor's thread).
pub async fn exists(p: &Path) -> bool {
    tokio::fs::try_exists(p).await.unwrap_or(false)
}

/// Runs `git -C dir args…`; the error is git's stderr.
///
/// # Errors
/// git's error output, or a timeout.
pub async fn git(dir: &Path, args: &[&str], timeout: Duration) -> Result<String, String> {
    let d = dir.display().to_string();
    let mut argv = vec!["git", "-C", &d];
    argv.extend_from_slice(args);
    crate::plugins::exec::run(&argv, None, timeout)
        .await
        .map_err(|e| e.to_string())
}

/// Every `*.md` below `dir` (recursively; hidden directories and `node_modules` skipped),
/// sorted.
pub async fn find_markdown(dir: &Path) -> Vec<PathBuf> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if p.is_dir() {
                    if !name.starts_with('.') && name != "node_modules" {
                        stack.push(p);
                    }
                } else if name.ends_with(".md") {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    })
    .await
    .unwrap_or_default()
}

/// `git worktree add` of `branch` at `path`, creating the branch from `start` (or `HEAD`);
/// an existing branch is checked out as is. An existing directory that is a worktree is
/// adopted; a leftover directory that is not is refused with a clear message.
///
/// # Errors
/// git's error output.
pub async fn add_worktree(
    main: &Path,
    path: &Path,
    branch: &str,
    start: Option<&str>,
) -> Result<(), String> {
    if exists(&path.join(".git")).await {
        return Ok(());
    }
    if exists(path).await {
        return Err(format!(
            "{} exists but is not a worktree; remove it first",
            path.display()
        ));
    }
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| e.to_string())?;
    }
    let p = path.display().to_string();
    let mut args = vec!["worktree", "add", "-b", branch, &p];
    if let Some(s) = start {
        args.push(s);
    }
    match git(main, &args, GIT_TIMEOUT).await {
        Ok(_) => Ok(()),
        Err(e) if e.contains("already exists") && !exists(path).await => {
            git(main, &["worktree", "add", &p, branch], GIT_TIMEOUT)
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// Makes sure a GitHub issue/PR conversation has its codebase and worktree (scenarios 17–19).
///
/// # Errors
/// Why it could not: the caller tells the user and runs no turn.
pub async fn ensure_thread_worktree(
    ctx: &ChatContext,
    conv: &mut ConversationRecord,
    meta: &BTreeMap<String, String>,
) -> Result<(), String> {
    let kind = meta.get("kind").map(String::as_str).unwrap_or("issue");
    let (repo_full, number) = conv
        .thread
        .rsplit_once('#')
        .ok_or_else(|| format!("thread {:?} is not owner/repo#N", conv.thread))?;
    let number: u64 = number
        .parse()
        .map_err(|_| format!("thread {:?} has no issue number", conv.thread))?;
    let (owner, repo) = repo_full
        .split_once('/')
        .ok_or_else(|| format!("thread {:?} is not owner/repo#N", conv.thread))?;
    for n in [owner, repo] {
        if !crate::chat::paths::valid_name(n) {
            return Err(format!("{n:?} is not a valid owner or repository name"));
        }
    }
    if let Some(w) = &conv.worktree {
        if exists(Path::new(w)).await {
            return Ok(());
        }
    }
    let name = format!("{owner}/{repo}");
    let main = codebase_dir(ctx, &name);
    let lock = ctx.repo_lock(&main);
    let _guard = lock.lock().await;
    let base = meta.get("base").cloned().unwrap_or_else(|| "main".into());
    let valid_ref = |r: &str| r.split('/').all(crate::chat::paths::valid_name);
    if !valid_ref(&base) {
        return Err(format!("{base:?} is not a valid base branch"));
    }
    if let Some(h) = meta.get("head").filter(|h| !valid_ref(h)) {
        return Err(format!("{h:?} is not a valid head branch"));
    }
    if !exists(&main.join(".git")).await {
        let url = meta
            .get("repo_url")
            .cloned()
            .unwrap_or_else(|| format!("https://github.com/{name}"));
        let (url, _, _) = validate_clone_url(&url)?;
        if let Some(parent) = main.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| e.to_string())?;
        }
        let m = main.display().to_string();
        crate::plugins::exec::run(&["git", "clone", "--", &url, &m], None, GIT_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
    } else {
        // A fresh base for every new worktree (rca #285), never a reset of the checkout.
        git(&main, &["fetch", "origin"], GIT_TIMEOUT).await?;
    }
    conv.codebase = Some(name.clone());
    if kind == "pr" {
        for issue in meta
            .get("closes")
            .map(String::as_str)
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let other = format!("{}:{repo_full}#{issue}", conv.platform);
            if let Ok(o) = ctx.store.get_conversation(&other).await {
                if let Some(w) = o.worktree {
                    if exists(Path::new(&w)).await {
                        conv.worktree = Some(w.clone());
                        conv.cwd = Some(w);
                        return save(ctx, conv).await;
                    }
                }
            }
        }
    }
    let branch = format!("{}-{number}", if kind == "pr" { "pr" } else { "issue" });
    let path = ctx.worktrees.join(repo).join(&branch);
    let start = if kind == "pr" {
        // The PR's head, also from a fork: `pull/N/head` into a ref of our own (no shared
        // FETCH_HEAD between conversations); else the head branch, else the base.
        let ours = format!("refs/flotilla/pr-{number}");
        let spec = format!("+pull/{number}/head:{ours}");
        match git(&main, &["fetch", "origin", &spec], GIT_TIMEOUT).await {
            Ok(_) => ours,
            Err(e) => {
                tracing::debug!(error = %e, "no pull/N/head ref; using the head branch");
                match meta.get("head") {
                    Some(h) => format!("origin/{h}"),
                    None => format!("origin/{base}"),
                }
            }
        }
    } else {
        format!("origin/{base}")
    };
    add_worktree(&main, &path, &branch, Some(&start)).await?;
    let w = path.display().to_string();
    conv.worktree = Some(w.clone());
    conv.cwd = Some(w);
    save(ctx, conv).await
}

async fn save(ctx: &ChatContext, conv: &ConversationRecord) -> Result<(), String> {
    ctx.save_conversation(conv)
        .await
        .map_err(|e| format!("cannot save the conversation: {e}"))
}

/// An issue or PR was closed: end its session, detach its worktree, and remove the worktree
/// if no other conversation uses it.
pub async fn close_thread(ctx: &ChatContext, conv: &mut ConversationRecord) {
    let Some(w) = conv.worktree.take() else {
        conv.resume_id = None;
        let _ = ctx.save_conversation(conv).await;
        return;
    };
    conv.resume_id = None;
    conv.cwd = conv
        .codebase
        .as_ref()
        .map(|c| codebase_dir(ctx, c).display().to_string());
    if let Err(e) = ctx.save_conversation(conv).await {
        tracing::warn!(error = %e, "cannot save a closed conversation");
        return;
    }
    let users = ctx
        .store
        .conversations_with_worktree(&w)
        .await
        .unwrap_or_else(|_| vec!["unknown".into()]);
    if !users.is_empty() {
        tracing::info!(worktree = %w, users = users.len(), "worktree kept: still in use");
        return;
    }
    let Some(main) = conv.codebase.as_ref().map(|c| codebase_dir(ctx, c)) else {
        return;
    };
    let lock = ctx.repo_lock(&main);
    let _guard = lock.lock().await;
    match git(&main, &["worktree", "remove", &w], GIT_TIMEOUT).await {
        Ok(_) => tracing::info!(worktree = %w, "worktree removed"),
        Err(e) if e.contains("is not a working tree") => {}
        Err(e) if e.contains("modified or untracked") => {
            reply_to(
                ctx,
                &conv.id,
                &format!("⚠️ Worktree {w} has uncommitted changes and was left in place."),
            )
            .await;
        }
        Err(e) => tracing::warn!(worktree = %w, error = %e, "cannot remove worktree"),
    }
}

/// Scenario 12: a worktree that no longer exists is dropped (with the session) and the turn
/// runs in the main checkout; an existing one changes nothing.
pub async fn repair_stale(ctx: &ChatContext, conv: &mut ConversationRecord) {
    if let Some(w) = &conv.worktree {
        if !tokio::fs::try_exists(w).await.unwrap_or(false) {
            tracing::info!(worktree = %w, "worktree is gone; back to the main checkout");
            conv.worktree = None;
            conv.resume_id = None;
            conv.cwd = conv
                .codebase
                .as_ref()
                .map(|c| codebase_dir(ctx, c).display().to_string());
        }
    }
}
