//! Starting a session's agent: workspace, prompt file, environment, runtime. Runs outside the
//! actor's mailbox (a spawned task) and reports back with one event.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::machine::EventKind;
use crate::actors::fleet::Fleet;
use crate::plugins::{AgentContext, LaunchSpec, PluginError, WorkspaceRequest};
use crate::store::SessionRecord;

/// Environment names always passed to agents when Flotilla has them: what a CLI needs to run
/// at all. Nothing else from Flotilla's environment reaches an agent (no tokens).
pub const BASE_ENV: &[&str] = &["PATH", "HOME", "USER", "LANG", "LC_ALL", "TERM", "TMPDIR"];

/// Builds the prompt: project rules, then the task, then how to work.
pub fn build_prompt(rules: Option<&str>, s: &SessionRecord) -> String {
    let mut p = String::new();
    if let Some(r) = rules {
        p.push_str("## Project rules\n\n");
        p.push_str(r.trim());
        p.push_str("\n\n");
    }
    p.push_str("## Task\n\n");
    match (&s.prompt, &s.issue) {
        (Some(prompt), _) => p.push_str(prompt.trim()),
        (None, Some(issue)) => p.push_str(&format!("Work on issue {issue}.")),
        (None, None) => p.push_str("No task was given: ask what to do."),
    }
    p.push_str("\n\n## How to work\n\n");
    if let Some(b) = &s.branch {
        p.push_str(&format!("Work on branch `{b}`. "));
    }
    p.push_str(&format!(
        "Commit your work, push the branch and open a pull request when done. \
         You are Flotilla session `{}`.\n",
        s.id
    ));
    p
}

/// Creates the workspace if needed and starts the agent; returns `RuntimeStarted` or
/// `SpawnFailed`. A failure removes a workspace it created, so nothing is left behind.
pub async fn start(fleet: Arc<Fleet>, s: SessionRecord, resume: bool) -> EventKind {
    match try_start(&fleet, &s, resume).await {
        Ok(ev) => ev,
        Err(e) => {
            tracing::warn!(session = %s.id, error = %e, "spawn failed");
            EventKind::SpawnFailed {
                reason: e.to_string(),
            }
        }
    }
}

async fn try_start(
    fleet: &Fleet,
    s: &SessionRecord,
    resume: bool,
) -> Result<EventKind, PluginError> {
    let project = fleet.project(&s.project).ok_or_else(|| {
        PluginError::Invalid(format!("project {} is no longer configured", s.project))
    })?;
    let runtime = fleet.plugins.runtime(&s.runtime)?;
    let workspace = fleet.plugins.workspace(&s.workspace_kind)?;
    let agent = fleet.plugins.agent(&s.agent)?;
    let branch = s
        .branch
        .clone()
        .unwrap_or_else(|| format!("session/{}", s.id));
    let path = s
        .workspace
        .as_ref()
        .map(PathBuf::from)
        .unwrap_or_else(|| fleet.workspace_path(&s.project, s.id.as_str()));
    let created = if workspace.exists(&path).await {
        false
    } else {
        workspace
            .create(&WorkspaceRequest {
                repo: project.repo.clone(),
                remote: project.remote.clone(),
                base_branch: project.default_branch.clone(),
                branch: branch.clone(),
                path: path.clone(),
            })
            .await?;
        true
    };
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
        session_id: s.id.to_string(),
        workspace: path.clone(),
        prompt_file: prompt_file.clone(),
        resume,
        agent_session_id: None,
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
    env.insert("FLOTILLA_PROJECT".into(), s.project.clone());
    env.insert(
        "FLOTILLA_PROMPT_FILE".into(),
        prompt_file.to_string_lossy().into_owned(),
    );
    let spec = LaunchSpec {
        session_id: s.id.to_string(),
        cwd: path.clone(),
        argv,
        env,
    };
    match runtime.create(&spec).await {
        Ok(handle) => Ok(EventKind::RuntimeStarted {
            handle,
            workspace: Some(path.to_string_lossy().into_owned()),
            branch: Some(branch),
        }),
        Err(e) => Err(cleanup(e).await),
    }
}
