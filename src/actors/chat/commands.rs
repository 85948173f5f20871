//! The deterministic commands (reference §2, plus `/cancel`, `/spawn`, `/fleet`). Each
//! returns what to do next: a reply, a failure, or a prompt for the assistant. Paths are
//! confined to the workspace root; git runs through `plugins::exec` (argv, timeout).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;

pub use super::action::Action;
use super::workspace::{self, codebase_dir, git, turn_dir};
use super::ChatContext;
use crate::actors::supervisor::messages::{Spawn, SpawnRequest};
use crate::actors::supervisor::request::SpawnOrder;
use crate::chat::paths::{confine, valid_branch, validate_clone_url};
use crate::chat::template::{
    execute_now, front_matter_description, strip_front_matter, substitute,
};
use crate::store::{ChatTemplateRecord, ConversationRecord};

/// Longest a clone or pull may take.
const CLONE_TIMEOUT: Duration = Duration::from_secs(300);

const HELP: &str = "Commands:
/help — this list
/status — platform, assistant, codebase, directory, worktree, session, queue
/getcwd, /setcwd <path> — the working directory (inside the workspace)
/clone <url> — clone a repository into the workspace and use it
/repos — the repositories in the workspace; /repo <#|name> [pull] — use one
/reset — start a fresh assistant session (keeps the codebase)
/cancel — stop the running turn
/commands, /command-set <name> <path> [text], /load-commands <folder>, /command-invoke <name> [args]
/templates, /template-add <name> <file>, /template-delete <name> — global templates, run as /<name> [args]
/worktree create <branch> | list | remove [--force] | orphans
/spawn <project> [--agent NAME] <task…> — start a fleet session (its notifications come back here through a `chat` notifier); /fleet — list sessions
/answer <session> <text> — answer a session started here that waits for you (with one waiting, a plain reply does)";

/// A deterministic command as the message gave it.
#[derive(Debug, Clone, Copy)]
pub struct Command<'a> {
    /// Its name, without the slash.
    pub name: &'a str,
    /// Its arguments, split.
    pub args: &'a [String],
    /// Everything after its name, as typed.
    pub rest: &'a str,
    /// When its message came in.
    pub received_at: chrono::DateTime<chrono::Utc>,
    /// Its message is run again: a restart (or its node's death) cut its last run short.
    pub resumed: bool,
}

/// Runs a deterministic command, updating (and saving) the conversation's state.
pub async fn run(
    ctx: &ChatContext,
    conv: &mut ConversationRecord,
    command: Command<'_>,
    context: Option<&str>,
) -> Action {
    let Command {
        name, args, rest, ..
    } = command;
    let before = conv.clone();
    let action = match name {
        "help" => Action::Reply(HELP.into()),
        "status" => status(ctx, conv).await,
        "getcwd" => Action::Reply(
            conv.cwd
                .clone()
                .map(|c| format!("Working directory: {c}"))
                .unwrap_or_else(|| "Working directory: not set".into()),
        ),
        "setcwd" => setcwd(ctx, conv, rest),
        "clone" => clone(ctx, conv, args).await,
        "repos" => repos(ctx, conv).await,
        "repo" => repo(ctx, conv, args).await,
        "reset" | "reset-context" => {
            if conv.resume_id.take().is_some() {
                Action::Reply(if name == "reset" {
                    "Session reset: the next message starts a fresh assistant session.".into()
                } else {
                    "Context reset: the next message starts a fresh session (the worktree is kept)."
                        .into()
                })
            } else {
                Action::Reply("No active session to reset.".into())
            }
        }
        "commands" => commands(ctx, conv).await,
        "command-set" => command_set(ctx, conv, args).await,
        "load-commands" => load_commands_cmd(ctx, conv, rest).await,
        "command-invoke" => command_invoke(ctx, conv, args, context).await,
        "template-add" => template_add(ctx, conv, args).await,
        "templates" | "template-list" => templates(ctx).await,
        "template-delete" => match args.first() {
            None => Action::Reply("Usage: /template-delete <name>".into()),
            Some(n) => match ctx.store.delete_chat_template(n).await {
                Ok(true) => Action::Reply(format!("Template /{n} deleted.")),
                Ok(false) => Action::Reply(format!("Template '{n}' not found.")),
                Err(e) => Action::Fail(format!("cannot delete the template: {e}")),
            },
        },
        "worktree" => worktree(ctx, conv, args).await,
        "spawn" => {
            spawn(
                ctx,
                conv,
                args,
                command.resumed.then_some(command.received_at),
            )
            .await
        }
        "fleet" => fleet(ctx).await,
        "answer" => super::answers::command(ctx, conv, args).await,
        other => Action::Reply(format!("Unknown command: /{other}")),
    };
    if *conv != before {
        if let Err(e) = ctx.save_conversation(conv).await {
            return Action::Fail(format!("cannot save the conversation: {e}"));
        }
    }
    action
}

async fn status(ctx: &ChatContext, conv: &ConversationRecord) -> Action {
    let stats = super::scheduler_stats(ctx).await;
    let session = conv
        .resume_id
        .as_deref()
        .map(|s| s.chars().take(8).collect::<String>())
        .unwrap_or_else(|| "none".into());
    Action::Reply(format!(
        "Platform: {}\nAssistant: {}\nCodebase: {}\nDirectory: {}\nWorktree: {}\nSession: {}\nLast command: {}\nQueue: {}",
        conv.platform,
        ctx.assistant.kind(),
        conv.codebase.as_deref().unwrap_or("No codebase configured"),
        conv.cwd.as_deref().unwrap_or("not set"),
        conv.worktree.as_deref().unwrap_or("none"),
        session,
        conv.last_command.as_deref().unwrap_or("none"),
        queue_line(&stats),
    ))
}

/// The queue's counts as `/status` shows them; clustered, the cap is the cluster's.
fn queue_line(stats: &super::scheduler::SchedulerStats) -> String {
    match stats.cap_scope {
        super::scheduler::CapScope::Node => format!(
            "{} running, {} waiting (max {})",
            stats.active, stats.queued, stats.max_concurrent
        ),
        super::scheduler::CapScope::Cluster => format!(
            "{} running here, {} waiting here; {} running across the cluster (max {} across the cluster)",
            stats.active,
            stats.queued,
            stats
                .cluster_active
                .map_or_else(|| "?".to_string(), |n| n.to_string()),
            stats.max_concurrent
        ),
    }
}

fn setcwd(ctx: &ChatContext, conv: &mut ConversationRecord, rest: &str) -> Action {
    if rest.trim().is_empty() {
        return Action::Reply("Usage: /setcwd <path>".into());
    }
    let base = turn_dir(ctx, conv);
    match confine(&ctx.workspace, &base, rest.trim()) {
        Ok(p) => {
            conv.cwd = Some(p.display().to_string());
            // Unlike rca, an explicit directory wins over an active worktree.
            conv.worktree = None;
            conv.resume_id = None;
            Action::Reply(format!("Working directory set to {}", p.display()))
        }
        Err(e) => Action::Reply(e),
    }
}

async fn clone(ctx: &ChatContext, conv: &mut ConversationRecord, args: &[String]) -> Action {
    let Some(url) = args.first() else {
        return Action::Reply("Usage: /clone <repo-url>".into());
    };
    match clone_and_use(ctx, conv, url).await {
        Ok(text) => Action::Reply(text),
        Err(CloneError::Refused(e)) => Action::Reply(format!("Cannot clone: {e}")),
        Err(CloneError::Failed(e)) => Action::Fail(format!("Failed to clone repository: {e}")),
    }
}

/// Why [`clone_and_use`] did not.
#[derive(Debug)]
pub(super) enum CloneError {
    /// The URL is not one we clone.
    Refused(String),
    /// git (or the file system) failed.
    Failed(String),
}

/// Clones `url` into the workspace (unless it is there already) and makes it the
/// conversation's codebase; says what it did (for the reply).
///
/// # Errors
/// The URL is refused, or the clone failed.
pub(super) async fn clone_and_use(
    ctx: &ChatContext,
    conv: &mut ConversationRecord,
    url: &str,
) -> Result<String, CloneError> {
    let (url, owner, repo) = validate_clone_url(url).map_err(CloneError::Refused)?;
    let name = format!("{owner}/{repo}");
    let target = codebase_dir(ctx, &name);
    let lock = ctx.repo_lock(&target);
    let _guard = lock.lock().await;
    let existed = workspace::exists(&target).await;
    if !existed {
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| CloneError::Failed(e.to_string()))?;
        }
        let t = target.display().to_string();
        // `--` ends options: a URL can never be read as one. Credentials are refused by
        // `validate_clone_url`, so none can end up in `.git/config`.
        crate::plugins::exec::run(
            &["git", "clone", "--", &url, &t],
            Some(&ctx.workspace),
            CLONE_TIMEOUT,
        )
        .await
        .map_err(|e| CloneError::Failed(e.to_string()))?;
    }
    link(conv, &name, &target);
    let loaded = auto_load(ctx, &name, &target).await;
    Ok(format!(
        "{} {name} at {}.{loaded}",
        if existed {
            "Repository already in the workspace; now using"
        } else {
            "Cloned"
        },
        target.display()
    ))
}

fn link(conv: &mut ConversationRecord, name: &str, dir: &Path) {
    conv.codebase = Some(name.to_string());
    conv.cwd = Some(dir.display().to_string());
    conv.worktree = None;
    conv.resume_id = None;
}

async fn auto_load(ctx: &ChatContext, codebase: &str, dir: &Path) -> String {
    for folder in [".claude/commands", ".agents/commands"] {
        let found = workspace::find_markdown(&dir.join(folder)).await;
        if !found.is_empty() {
            let map = relative_commands(dir, &found);
            let n = map.len();
            if ctx
                .store
                .add_codebase_commands(codebase, &map)
                .await
                .is_ok()
            {
                return format!(" Loaded {n} command(s) from {folder}.");
            }
        }
    }
    String::new()
}

fn relative_commands(dir: &Path, files: &[PathBuf]) -> BTreeMap<String, String> {
    files
        .iter()
        .filter_map(|f| {
            let name = f.file_stem()?.to_string_lossy().into_owned();
            let rel = f.strip_prefix(dir).unwrap_or(f).display().to_string();
            Some((name, rel))
        })
        .collect()
}

/// `owner/repo` directories of the workspace (and single-level repositories), sorted; the
/// listing runs off the actor's thread.
async fn workspace_repos(ctx: &ChatContext) -> Vec<(String, PathBuf)> {
    let root = ctx.workspace.clone();
    tokio::task::spawn_blocking(move || list_repos(&root))
        .await
        .unwrap_or_default()
}

fn list_repos(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let Ok(top) = std::fs::read_dir(root) else {
        return out;
    };
    for e in top.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if !p.is_dir() || name.starts_with('.') {
            continue;
        }
        if p.join(".git").exists() {
            out.push((name, p));
            continue;
        }
        if let Ok(sub) = std::fs::read_dir(&p) {
            for s in sub.flatten() {
                let sp = s.path();
                if sp.join(".git").exists() {
                    out.push((format!("{name}/{}", s.file_name().to_string_lossy()), sp));
                }
            }
        }
    }
    out.sort();
    out
}

async fn repos(ctx: &ChatContext, conv: &ConversationRecord) -> Action {
    let list = workspace_repos(ctx).await;
    if list.is_empty() {
        return Action::Reply(format!(
            "No repositories in {}. Use /clone <repo-url> to add one.",
            ctx.workspace.display()
        ));
    }
    let lines: Vec<String> = list
        .iter()
        .enumerate()
        .map(|(i, (n, _))| {
            let active = conv.codebase.as_deref() == Some(n.as_str());
            format!("{}. {n}{}", i + 1, if active { " ← active" } else { "" })
        })
        .collect();
    Action::Reply(format!("Repositories:\n{}", lines.join("\n")))
}

async fn repo(ctx: &ChatContext, conv: &mut ConversationRecord, args: &[String]) -> Action {
    let Some(sel) = args.first() else {
        return Action::Reply("Usage: /repo <#|name> [pull]".into());
    };
    let list = workspace_repos(ctx).await;
    let found = sel
        .parse::<usize>()
        .ok()
        .and_then(|i| i.checked_sub(1))
        .and_then(|i| list.get(i))
        .or_else(|| list.iter().find(|(n, _)| n == sel))
        .or_else(|| {
            list.iter()
                .find(|(n, _)| n.rsplit('/').next() == Some(sel.as_str()))
        })
        .or_else(|| list.iter().find(|(n, _)| n.starts_with(sel.as_str())))
        .cloned();
    let Some((name, dir)) = found else {
        return Action::Reply(format!(
            "Repository not found: {sel}. Use /repos to list them."
        ));
    };
    if args.get(1).map(String::as_str) == Some("pull") {
        if let Err(e) = git(&dir, &["pull", "--ff-only"], CLONE_TIMEOUT).await {
            return Action::Fail(format!("Failed to pull: {e}"));
        }
    }
    link(conv, &name, &dir);
    let loaded = auto_load(ctx, &name, &dir).await;
    Action::Reply(format!("Now using {name} at {}.{loaded}", dir.display()))
}

async fn commands(ctx: &ChatContext, conv: &ConversationRecord) -> Action {
    let Some(cb) = &conv.codebase else {
        return Action::Reply("No codebase configured. Use /clone first.".into());
    };
    match ctx.store.codebase_commands(cb).await {
        Ok(m) if m.is_empty() => Action::Reply(
            "No commands registered. Use /load-commands <folder> or /command-set.".into(),
        ),
        Ok(m) => Action::Reply(format!(
            "Commands:\n{}",
            m.iter()
                .map(|(n, p)| format!("{n} - {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        )),
        Err(e) => Action::Fail(format!("cannot list commands: {e}")),
    }
}

async fn command_set(ctx: &ChatContext, conv: &ConversationRecord, args: &[String]) -> Action {
    let (Some(name), Some(path)) = (args.first(), args.get(1)) else {
        return Action::Reply("Usage: /command-set <name> <path> [text]".into());
    };
    let Some(cb) = &conv.codebase else {
        return Action::Reply("No codebase configured. Use /clone first.".into());
    };
    let base = turn_dir(ctx, conv);
    let full = match confine(&ctx.workspace, &base, path) {
        Ok(p) => p,
        Err(e) => return Action::Reply(e),
    };
    let text = args[2..].join(" ");
    let io = if text.is_empty() {
        tokio::fs::metadata(&full).await.map(|_| ())
    } else {
        if let Some(parent) = full.parent() {
            let _ = tokio::fs::create_dir_all(parent).await;
        }
        tokio::fs::write(&full, text).await
    };
    if let Err(e) = io {
        return Action::Reply(format!("Failed: {e}"));
    }
    let map = BTreeMap::from([(name.clone(), path.clone())]);
    match ctx.store.add_codebase_commands(cb, &map).await {
        Ok(()) => Action::Reply(format!("Command {name} registered ({path}).")),
        Err(e) => Action::Fail(format!("cannot register the command: {e}")),
    }
}

async fn load_commands_cmd(ctx: &ChatContext, conv: &ConversationRecord, rest: &str) -> Action {
    if rest.trim().is_empty() {
        return Action::Reply("Usage: /load-commands <folder>".into());
    }
    let base = turn_dir(ctx, conv);
    let dir = match confine(&ctx.workspace, &base, rest.trim()) {
        Ok(p) => p,
        Err(e) => return Action::Reply(e),
    };
    let Some(cb) = &conv.codebase else {
        return Action::Reply("No codebase configured. Use /clone first.".into());
    };
    let found = workspace::find_markdown(&dir).await;
    if found.is_empty() {
        return Action::Reply(format!(
            "No .md files found in {} (searched recursively)",
            dir.display()
        ));
    }
    let map = relative_commands(&base, &found);
    let names: Vec<String> = map.keys().cloned().collect();
    match ctx.store.add_codebase_commands(cb, &map).await {
        Ok(()) => Action::Reply(format!(
            "Loaded {} command(s): {}",
            names.len(),
            names.join(", ")
        )),
        Err(e) => Action::Fail(format!("cannot register commands: {e}")),
    }
}

async fn command_invoke(
    ctx: &ChatContext,
    conv: &ConversationRecord,
    args: &[String],
    context: Option<&str>,
) -> Action {
    let Some(name) = args.first() else {
        return Action::Reply("Usage: /command-invoke <name> [args]".into());
    };
    let Some(cb) = &conv.codebase else {
        return Action::Reply("No codebase configured. Use /clone first.".into());
    };
    let registered = match ctx.store.codebase_commands(cb).await {
        Ok(m) => m,
        Err(e) => return Action::Fail(format!("cannot read commands: {e}")),
    };
    let Some(rel) = registered.get(name) else {
        return Action::Reply(format!(
            "Command '{name}' not found. Use /commands to list them."
        ));
    };
    let base = turn_dir(ctx, conv);
    // Re-read on every call, and (unlike rca) confined at invocation time too.
    let file = match confine(&ctx.workspace, &base, rel) {
        Ok(p) => p,
        Err(e) => return Action::Reply(e),
    };
    let content = match tokio::fs::read_to_string(&file).await {
        Ok(c) => c,
        Err(e) => return Action::Fail(format!("cannot read {rel}: {e}")),
    };
    let body = substitute(strip_front_matter(&content), &args[1..]);
    let last = conv.last_command.as_deref();
    let fresh = (name == "execute" && last == Some("plan-feature"))
        || (name == "execute-github" && last == Some("plan-feature-github"));
    Action::Prompt {
        prompt: execute_now(name, &body, context),
        command: Some(name.clone()),
        fresh,
    }
}

async fn template_add(ctx: &ChatContext, conv: &ConversationRecord, args: &[String]) -> Action {
    let (Some(name), Some(file)) = (args.first(), args.get(1)) else {
        return Action::Reply("Usage: /template-add <name> <file>".into());
    };
    if !crate::chat::paths::valid_name(name) {
        return Action::Reply(format!("{name:?} is not a valid template name."));
    }
    let base = turn_dir(ctx, conv);
    let path = match confine(&ctx.workspace, &base, file) {
        Ok(p) => p,
        Err(e) => return Action::Reply(e),
    };
    let content = match tokio::fs::read_to_string(&path).await {
        Ok(c) => c,
        Err(e) => return Action::Reply(format!("Failed to read file: {e}")),
    };
    let description = front_matter_description(&content).unwrap_or_else(|| format!("From {file}"));
    let t = ChatTemplateRecord {
        name: name.clone(),
        description,
        content,
        updated_at: Utc::now(),
    };
    match ctx.store.upsert_chat_template(&t).await {
        Ok(()) => Action::Reply(format!("Template /{name} saved.")),
        Err(e) => Action::Fail(format!("cannot save the template: {e}")),
    }
}

async fn templates(ctx: &ChatContext) -> Action {
    match ctx.store.list_chat_templates().await {
        Ok(t) if t.is_empty() => {
            Action::Reply("No templates. Add one with /template-add <name> <file>.".into())
        }
        Ok(t) => Action::Reply(format!(
            "Templates:\n{}",
            t.iter()
                .map(|t| format!("/{} - {}", t.name, t.description))
                .collect::<Vec<_>>()
                .join("\n")
        )),
        Err(e) => Action::Fail(format!("cannot list templates: {e}")),
    }
}

async fn worktree(ctx: &ChatContext, conv: &mut ConversationRecord, args: &[String]) -> Action {
    let Some(cb) = conv.codebase.clone() else {
        return Action::Reply("No codebase configured. Use /clone first.".into());
    };
    let main = codebase_dir(ctx, &cb);
    match args.first().map(String::as_str) {
        Some("create") => {
            let Some(branch) = args.get(1) else {
                return Action::Reply("Usage: /worktree create <branch>".into());
            };
            if !valid_branch(branch) {
                return Action::Reply(
                    "Invalid branch name: use letters, digits, '-' and '_' only.".into(),
                );
            }
            if let Some(w) = &conv.worktree {
                return Action::Reply(format!(
                    "Already using worktree {w}. Use /worktree remove first."
                ));
            }
            let repo = cb.rsplit('/').next().unwrap_or(&cb).to_string();
            let path = ctx.worktrees.join(&repo).join(branch);
            let lock = ctx.repo_lock(&main);
            let _guard = lock.lock().await;
            match workspace::add_worktree(&main, &path, branch, None).await {
                Ok(()) => {
                    conv.worktree = Some(path.display().to_string());
                    conv.resume_id = None;
                    Action::Reply(format!(
                        "Worktree created at {} on branch {branch}.",
                        path.display()
                    ))
                }
                Err(e) if e.contains("already exists") => Action::Reply(format!(
                    "Branch '{branch}' already exists. Pick another name."
                )),
                Err(e) => Action::Fail(format!("Failed to create the worktree: {e}")),
            }
        }
        Some("list") => match git(&main, &["worktree", "list"], Duration::from_secs(30)).await {
            Ok(out) => {
                let active = conv.worktree.clone().unwrap_or_default();
                let lines: Vec<String> = out
                    .lines()
                    .map(|l| {
                        if !active.is_empty() && l.starts_with(&active) {
                            format!("{l} <- active")
                        } else {
                            l.to_string()
                        }
                    })
                    .collect();
                Action::Reply(lines.join("\n"))
            }
            Err(e) => Action::Fail(format!("git worktree list failed: {e}")),
        },
        Some("remove") => {
            let Some(w) = conv.worktree.clone() else {
                return Action::Reply("No worktree is active.".into());
            };
            let force = args.get(1).map(String::as_str) == Some("--force");
            let mut argv = vec!["worktree", "remove"];
            if force {
                argv.push("--force");
            }
            argv.push(&w);
            match git(&main, &argv, Duration::from_secs(60)).await {
                Ok(_) => {
                    conv.worktree = None;
                    conv.cwd = Some(main.display().to_string());
                    conv.resume_id = None;
                    Action::Reply(format!("Worktree {w} removed."))
                }
                Err(e) if e.contains("modified") || e.contains("untracked") => Action::Reply(
                    "Worktree has uncommitted changes. Commit them or use /worktree remove --force."
                        .into(),
                ),
                Err(e) => Action::Fail(format!("Failed to remove the worktree: {e}")),
            }
        }
        Some("orphans") => {
            match git(
                &main,
                &["worktree", "list", "--porcelain"],
                Duration::from_secs(30),
            )
            .await
            {
                Ok(out) => {
                    let main_s = main.display().to_string();
                    let others: Vec<&str> = out
                        .lines()
                        .filter_map(|l| l.strip_prefix("worktree "))
                        .filter(|p| *p != main_s)
                        .collect();
                    Action::Reply(if others.is_empty() {
                        "No worktrees besides the main checkout.".into()
                    } else {
                        format!("Worktrees:\n{}", others.join("\n"))
                    })
                }
                Err(e) => Action::Fail(format!("git worktree list failed: {e}")),
            }
        }
        _ => Action::Reply(
            "Usage: /worktree create <branch> | list | remove [--force] | orphans".into(),
        ),
    }
}

async fn spawn(
    ctx: &ChatContext,
    conv: &ConversationRecord,
    args: &[String],
    rerun_of: Option<chrono::DateTime<chrono::Utc>>,
) -> Action {
    let Some(fleet) = &ctx.fleet else {
        return Action::Reply("The fleet is not available here.".into());
    };
    let usage = || Action::Reply("Usage: /spawn <project> [--agent NAME] <task…>".into());
    let Some(project) = args.first() else {
        return usage();
    };
    let (agent, task) = match args.get(1).map(String::as_str) {
        Some("--agent") => match args.get(2) {
            Some(a) => (Some(a.clone()), &args[3..]),
            None => return usage(),
        },
        _ => (None, &args[1..]),
    };
    if task.is_empty() {
        return usage();
    }
    let request = SpawnRequest {
        project: project.clone(),
        prompt: Some(format!(
            "{}\n\n(Requested from chat conversation {})",
            task.join(" "),
            conv.id
        )),
        issue: None,
        agent,
        branch: None,
        host: None,
    };
    let order = match SpawnOrder::try_from(request) {
        Ok(o) => o,
        Err(e) => return Action::Reply(format!("Cannot spawn: {e}")),
    };
    // Run again after a restart cut it short (`rerun_of`: when the message came in), it may
    // have started its session already: that one is the answer, not a second agent on the
    // same task.
    if let Some(received_at) = rerun_of {
        match spawned_since(ctx, &order, received_at).await {
            Ok(Some(id)) => return started(ctx, conv, &id, project).await,
            Ok(None) => {}
            Err(e) => return Action::Fail(format!("cannot list sessions: {e}")),
        }
    }
    match tokio::time::timeout(ctx.actor_timeout, fleet.send(Spawn { order })).await {
        Ok(Ok(Ok(s))) => started(ctx, conv, s.session.id.as_str(), project).await,
        Ok(Ok(Err(e))) => Action::Reply(format!("Cannot spawn: {e}")),
        _ => Action::Fail("the fleet did not answer in time".into()),
    }
}

/// Links session `id` to the conversation that started it, and says so.
async fn started(ctx: &ChatContext, conv: &ConversationRecord, id: &str, project: &str) -> Action {
    if let Err(e) = ctx.store.link_session_to_conversation(id, &conv.id).await {
        tracing::warn!(session = %id, error = %e, "cannot link the session to its chat");
    }
    Action::Reply(format!("Started session {id} ({project})."))
}

/// The session `order` started since `since`, if any: a conversation's messages run one at a
/// time, and the prompt names the conversation, so only this message (in a run a restart cut
/// short) can have started one with that prompt since it came in.
async fn spawned_since(
    ctx: &ChatContext,
    order: &SpawnOrder,
    since: chrono::DateTime<chrono::Utc>,
) -> Result<Option<String>, crate::read::ReadError> {
    let filter = crate::store::SessionFilter {
        project: Some(order.project.clone()),
        ..Default::default()
    };
    let sessions = crate::read::sessions::list(ctx.store.as_ref(), &filter).await?;
    Ok(sessions
        .into_iter()
        .find(|s| {
            s.created_at >= since
                && s.prompt.as_deref() == order.prompt.as_ref().map(|p| p.as_str())
        })
        .map(|s| s.id.to_string()))
}

async fn fleet(ctx: &ChatContext) -> Action {
    if ctx.fleet.is_none() {
        return Action::Reply("The fleet is not available here.".into());
    }
    let every = Default::default();
    let all = crate::read::sessions::list(ctx.store.as_ref(), &every);
    match tokio::time::timeout(ctx.actor_timeout, all).await {
        Ok(Ok(list)) if list.is_empty() => Action::Reply("No sessions.".into()),
        Ok(Ok(list)) => Action::Reply(format!(
            "Sessions:\n{}",
            list.iter()
                .map(|s| format!("{} — {} ({})", s.id, s.state.as_str(), s.project))
                .collect::<Vec<_>>()
                .join("\n")
        )),
        Ok(Err(e)) => Action::Fail(format!("cannot list sessions: {e}")),
        Err(_) => Action::Fail("the fleet did not answer in time".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::scheduler::{CapScope, SchedulerStats};
    use super::queue_line;

    #[test]
    fn status_says_whether_the_cap_is_the_nodes_or_the_clusters() {
        let mut stats = SchedulerStats {
            active: 1,
            queued: 2,
            max_concurrent: 3,
            cap_scope: CapScope::Node,
            cluster_active: None,
        };
        assert_eq!(queue_line(&stats), "1 running, 2 waiting (max 3)");
        stats.cap_scope = CapScope::Cluster;
        stats.cluster_active = Some(3);
        assert_eq!(
            queue_line(&stats),
            "1 running here, 2 waiting here; 3 running across the cluster (max 3 across the cluster)"
        );
    }
}
