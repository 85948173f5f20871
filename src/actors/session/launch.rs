//! Starting a session's agent: workspace, prompt file, environment, runtime. Runs outside the
//! actor's mailbox (a spawned task) and reports back with one event.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::actors::fleet::Fleet;
use crate::domain::machine::{launch_message, DueInstruction, EventKind};
use crate::domain::policy::BASE_ENV;
use crate::plugins::{AgentContext, LaunchSpec, PluginError, WorkspaceRequest};
use crate::store::SessionRecord;

/// The orchestrator's task: it steers workers through the `flotilla` CLI.
pub fn orchestrator_prompt(project: &crate::actors::fleet::ProjectSpec) -> String {
    format!(
        "You are the orchestrator of project `{name}`. You do not write code yourself: you plan \
the work, start worker sessions and steer them with the `flotilla` command line, which talks to \
the running Flotilla service (its address and your token are in $FLOTILLA_SERVER and \
$FLOTILLA_TOKEN).\n\n\
Commands:\n\
- `flotilla status` (or `--json`): every session with its state, branch and PR.\n\
- `flotilla spawn --project {name} --prompt \"<task>\"` or `flotilla spawn --project {name} <issue>`: \
start a worker on a task or a tracker issue.\n\
- `flotilla batch-spawn --project {name} <issue>...`: start workers for several issues; issues \
that already have a live worker are skipped.\n\
- `flotilla send <session> <message>`: tell a worker something (a dead one is restored first).\n\
- `flotilla kill <session>` / `flotilla restore <session>`.\n\
- `flotilla logs [<session>]`: follow what happens.\n\n\
Flotilla already reacts to CI failures and review comments by itself; intervene when a worker is \
stuck or needs input, and keep the number of workers proportionate to the work.",
        name = project.name
    )
}

/// Builds the prompt: project rules, then the task, then how to work.
pub fn build_prompt(rules: Option<&str>, s: &SessionRecord) -> String {
    let mut p = String::new();
    if let Some(r) = rules {
        p.push_str("## Project rules\n\n");
        p.push_str(r.trim());
        p.push_str("\n\n");
    }
    p.push_str("## Task\n\n");
    let tracked: Option<crate::plugins::Issue> = s
        .meta
        .get("issue")
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    match (&s.prompt, &s.issue, tracked) {
        (prompt, _, Some(i)) => {
            p.push_str(&format!("Issue {}: {}\n", i.id, i.title.trim()));
            if !i.url.is_empty() {
                p.push_str(&format!("{}\n", i.url));
            }
            if !i.labels.is_empty() {
                p.push_str(&format!("Labels: {}\n", i.labels.join(", ")));
            }
            if !i.body.trim().is_empty() {
                p.push_str(&format!("\n{}\n", i.body.trim()));
            }
            if let Some(extra) = prompt {
                p.push_str(&format!("\n{}", extra.trim()));
            }
        }
        (Some(prompt), _, None) => p.push_str(prompt.trim()),
        (None, Some(issue), None) => p.push_str(&format!("Work on issue {issue}.")),
        (None, None, None) => p.push_str("No task was given: ask what to do."),
    }
    p.push_str("\n\n## How to work\n\n");
    if let Some(b) = &s.branch {
        p.push_str(&format!("Work on branch `{b}`. "));
    }
    p.push_str(&format!(
        "Commit your work, push the branch and open a pull request when done. \
         You are Flotilla session `{}`.\n\n\
         Tell Flotilla what you are doing with `flotilla report <state>` (states: started, \
         working, waiting, needs_input, fixing_ci, addressing_reviews, pr_created, \
         draft_pr_created, ready_for_review, completed); add `--pr-url URL --pr-number N` \
         when you open a PR and `--note TEXT` to say why. Report `needs_input` when only a \
         human can unblock you.\n",
        s.id
    ));
    p
}

/// Creates the workspace if needed and starts the agent; returns `RuntimeStarted` or
/// `SpawnFailed`. A failure removes a workspace it created, so nothing is left behind.
pub async fn start(fleet: Arc<Fleet>, s: SessionRecord, resume: bool) -> EventKind {
    match try_start(&fleet, &s, resume, None).await {
        Ok(st) => EventKind::RuntimeStarted {
            handle: st.handle.to_json(),
            workspace: Some(st.workspace),
            branch: Some(st.branch),
        },
        Err(e) => {
            tracing::warn!(session = %s.id, error = %e, "spawn failed");
            EventKind::SpawnFailed {
                reason: e.to_string(),
            }
        }
    }
}

/// The first prompt a restart gives `agent` for `due`, when the agent takes one at launch and
/// it fits on a command line; `None` means it is typed in once the agent runs.
pub fn restart_message(
    agent: &dyn crate::plugins::Agent,
    due: &[DueInstruction],
) -> Option<String> {
    let m = launch_message(due);
    (agent.takes_message_at_launch() && m.len() <= crate::plugins::agents::INLINE_PROMPT_MAX)
        .then_some(m)
}

/// Starts an exited agent again in its worktree, resumed, with `due` as its first prompt
/// where it takes one; returns `AgentRestarted` or `RestartFailed`.
pub async fn restart(fleet: Arc<Fleet>, s: SessionRecord, due: Vec<DueInstruction>) -> EventKind {
    let message = fleet
        .plugins
        .agent(&s.agent)
        .ok()
        .and_then(|a| restart_message(a.as_ref(), &due));
    let prompted = message.is_some();
    match try_start(&fleet, &s, true, message).await {
        Ok(st) => EventKind::AgentRestarted {
            handle: st.handle.to_json(),
            prompted,
        },
        Err(e) => {
            tracing::warn!(session = %s.id, error = %e, "restarting the agent failed");
            EventKind::RestartFailed {
                reason: e.to_string(),
            }
        }
    }
}

/// Where a session's agent runs: its workspace path and branch, both functions of the stored
/// session (so a launch and an adoption after a crash agree).
pub fn place(fleet: &Fleet, s: &SessionRecord) -> (PathBuf, String) {
    let branch = s
        .branch
        .clone()
        .unwrap_or_else(|| format!("session/{}", s.id));
    let path = s.workspace.as_ref().map(PathBuf::from).unwrap_or_else(|| {
        let local = fleet.workspace_path(&s.project, s.id.as_str());
        // A remote host's workspace puts it under the host's work directory.
        match fleet.plugins.workspace(&s.workspace_kind) {
            Ok(w) => w.place(&local),
            Err(_) => local,
        }
    });
    (path, branch)
}

/// What a launch produced.
struct Started {
    handle: crate::plugins::RuntimeHandle,
    workspace: String,
    branch: String,
}

async fn try_start(
    fleet: &Fleet,
    s: &SessionRecord,
    resume: bool,
    message: Option<String>,
) -> Result<Started, PluginError> {
    let project = fleet.project(&s.project).ok_or_else(|| {
        PluginError::Invalid(format!("project {} is no longer configured", s.project))
    })?;
    let runtime = fleet.plugins.runtime(&s.runtime)?;
    let workspace = fleet.plugins.workspace(&s.workspace_kind)?;
    let agent = fleet.plugins.agent(&s.agent)?;
    let (path, branch) = place(fleet, s);
    // A remote host's session (`ssh:<host>`): setup, preparation, hooks and API go there.
    let host = crate::plugins::hosts::host_of(&s.runtime)
        .and_then(|h| fleet.plugins.hosts.get(h))
        .cloned();
    let sandbox = fleet.sandbox.sandbox_for(project, &s.agent);
    // Bounded: a batch of a hundred spawns does not run a hundred `git worktree add` at once.
    let _permit = fleet.spawn_permits.acquire().await.ok();
    let created = workspace
        .ensure(&WorkspaceRequest {
            repo: project.repo.clone(),
            remote: project.remote.clone(),
            base_branch: project.default_branch.clone(),
            branch: branch.clone(),
            path: path.clone(),
        })
        .await?;
    let cleanup = |e: PluginError| {
        let ws = workspace.clone();
        let repo = project.repo.clone();
        let path = path.clone();
        async move {
            if created {
                if let Err(ce) = ws.destroy(&repo, &path).await {
                    tracing::warn!(error = %ce, "cleaning up a failed spawn's workspace failed");
                }
            }
            e
        }
    };
    if created {
        let done = match &host {
            Some(h) => {
                let clone = crate::plugins::hosts::workspace::clone_dir(h, &project.repo);
                crate::plugins::hosts::launch::setup(
                    h,
                    &project.repo,
                    &clone,
                    &path,
                    &project.setup,
                )
                .await
            }
            None => setup_workspace(&project.repo, &path, &project.setup).await,
        };
        if let Err(e) = done {
            return Err(cleanup(e).await);
        }
    }
    // On a host: Flotilla's executable there (the hooks') and its API through the forward;
    // a sandboxed agent reaches the API through its egress proxy, which runs here, at
    // Flotilla's own address.
    let (cli, server_url) = match &host {
        None => (fleet.cli_path.clone(), fleet.server_url.clone()),
        Some(h) => {
            let on_host = async {
                let cli = match &fleet.cli_path {
                    Some(local) => {
                        Some(crate::plugins::hosts::launch::install_cli(h, local).await?)
                    }
                    None => None,
                };
                let url = if sandbox.is_some() {
                    fleet.server_url.clone()
                } else {
                    crate::plugins::hosts::launch::server_url(h, &fleet.server_url).await?
                };
                Ok::<_, PluginError>((cli, url))
            };
            match on_host.await {
                Ok(v) => v,
                Err(e) => return Err(cleanup(e).await),
            }
        }
    };
    let mut with_branch = s.clone();
    with_branch.branch = Some(branch.clone());
    let prompt_file = fleet.prompt_path(s.id.as_str());
    let write = async {
        if let Some(dir) = prompt_file.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::write(
            &prompt_file,
            build_prompt(project.rules.as_deref(), &with_branch),
        )
        .await
    };
    if let Err(e) = write.await {
        return Err(cleanup(e.into()).await);
    }
    let ctx = AgentContext {
        permission_mode: sandbox.as_ref().map(|b| b.permission_mode),
        flotilla_cli: cli.clone(),
        session_id: s.id.to_string(),
        workspace: path.clone(),
        prompt_file: prompt_file.clone(),
        resume,
        agent_session_id: None,
        message,
    };
    let (argv, extra) = match agent.launch(&ctx) {
        Ok(l) => l,
        Err(e) => return Err(cleanup(e).await),
    };
    let mut env = BTreeMap::new();
    for name in BASE_ENV
        .iter()
        .map(|s| s.to_string())
        .chain(fleet.agent_env_passthrough.iter().cloned())
    {
        if let Ok(v) = std::env::var(&name) {
            env.insert(name, v);
        }
    }
    env.extend(extra);
    env.insert("FLOTILLA_SESSION_ID".into(), s.id.to_string());
    env.insert(
        "FLOTILLA_REPORT_TOKEN".into(),
        fleet.report_token(s.id.as_str()),
    );
    env.insert("FLOTILLA_SERVER".into(), server_url);
    if let (Some(_), Some(dir)) = (&host, cli.as_ref().and_then(|c| c.parent())) {
        // `flotilla report` on the host is the installed one.
        let path = env
            .get("PATH")
            .cloned()
            .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        env.insert("PATH".into(), format!("{}:{path}", dir.display()));
    }
    if s.meta["role"] == "orchestrator" {
        // Steering workers is its job: it gets an API token of its own (never the admin one).
        env.insert(
            "FLOTILLA_TOKEN".into(),
            fleet.orchestrator_token(&s.project),
        );
    }
    if project.setup.ports > 0 {
        let base = port_block(project.port_base, project.setup.ports, s.id.as_str());
        env.insert("FLOTILLA_PORT_BASE".into(), base.to_string());
        env.insert(
            "FLOTILLA_PORT_COUNT".into(),
            project.setup.ports.to_string(),
        );
    }
    env.insert("FLOTILLA_PROJECT".into(), s.project.clone());
    env.insert(
        "FLOTILLA_PROMPT_FILE".into(),
        prompt_file.to_string_lossy().into_owned(),
    );
    let prepared = match &host {
        Some(h) => {
            let clone = crate::plugins::hosts::workspace::clone_dir(h, &project.repo);
            let files = crate::plugins::hosts::files::HostFiles(h.clone());
            agent.prepare(&ctx, &clone, &env, &files).await
        }
        None => {
            agent
                .prepare(&ctx, &project.repo, &env, &crate::plugins::LocalFiles)
                .await
        }
    };
    if let Err(e) = prepared {
        return Err(cleanup(e).await);
    }
    let argv = match &sandbox {
        None => argv,
        Some(b) => {
            let key = fleet.sandbox.key(project, &s.agent);
            let req = super::sandboxed::Request {
                fleet,
                session: s.id.as_str(),
                sandbox: b,
                key: &key,
                agent: agent.as_ref(),
                workspace: &path,
                prompt_file: &prompt_file,
                cli: cli.as_deref(),
                host: host.as_ref(),
            };
            match super::sandboxed::wrap(&req, argv, &mut env).await {
                Ok(a) => a,
                Err(e) => return Err(cleanup(e).await),
            }
        }
    };
    let spec = LaunchSpec {
        session_id: s.id.to_string(),
        cwd: path.clone(),
        argv,
        env,
    };
    match runtime.create(&spec).await {
        Ok(handle) => Ok(Started {
            handle,
            workspace: path.to_string_lossy().into_owned(),
            branch,
        }),
        Err(e) => Err(cleanup(e).await),
    }
}

/// The first port of a session's block: blocks of `count` ports from `base`, one per session
/// number, wrapping before 65535, so concurrent dev servers of different sessions never clash.
pub fn port_block(base: u16, count: u16, session_id: &str) -> u16 {
    let n: u32 = session_id
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let count = u32::from(count.max(1));
    let span = 65_535u32.saturating_sub(u32::from(base)) / count;
    let slot = n.saturating_sub(1) % span.max(1);
    u16::try_from(u32::from(base) + slot * count).unwrap_or(base)
}

/// Copies ignored files, makes symlinks and runs `post_create` commands in a new workspace.
///
/// # Errors
/// `Io` for a copy or link that fails; `Command`/`Timeout` for a failing or hanging command,
/// naming it.
pub async fn setup_workspace(
    repo: &std::path::Path,
    ws: &std::path::Path,
    setup: &crate::config::WorkspaceSetup,
) -> Result<(), PluginError> {
    for rel in &setup.copy {
        let (from, to) = (repo.join(rel), ws.join(rel));
        if tokio::fs::metadata(&from).await.is_err() {
            tracing::warn!(path = %rel.display(), "setup.copy: not in the repository; skipped");
            continue;
        }
        if let Some(dir) = to.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::copy(&from, &to).await?;
    }
    for rel in &setup.symlinks {
        let (from, to) = (repo.join(rel), ws.join(rel));
        if tokio::fs::symlink_metadata(&to).await.is_ok() {
            continue;
        }
        if let Some(dir) = to.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::symlink(&from, &to).await?;
    }
    for (i, argv) in setup.post_create.iter().enumerate() {
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        crate::plugins::exec::run(&args, Some(ws), setup.post_create_timeout.get())
            .await
            .map_err(|e| {
                PluginError::Invalid(format!(
                    "setup.post_create[{i}] ({}) failed: {e}",
                    argv.join(" ")
                ))
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_blocks_are_disjoint_per_session_and_stay_in_range() {
        assert_eq!(port_block(20000, 10, "demo-1"), 20000);
        assert_eq!(port_block(20000, 10, "demo-2"), 20010);
        let top = port_block(60000, 100, "demo-999");
        assert!(top >= 60000 && u32::from(top) + 100 <= 65535);
    }
}
