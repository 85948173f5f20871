//! How a session comes to exist. Spawn, BatchSpawn and EnsureOrchestrator each *plan* their
//! sessions (resolve the project and agent, preflight the agent, read the issue, pick a
//! branch); then one path, [`FleetSupervisor::create_and_start`], creates each row through the
//! journal and starts its actor.

use std::future::Future;

use actix::prelude::*;
use chrono::Utc;

use super::request::SpawnOrder;
use super::{FleetError, FleetSupervisor};
use crate::actors::journal::Journal;
use crate::plugins::worktree::{check_branch_name, slug};
use crate::plugins::PluginError;
use crate::preflight::{agent_ready, AgentLaunch, HostEnv};
use crate::store::{NewSession, SessionRecord, SessionSnapshot};
use crate::telemetry::METRICS;

/// Decides the branch and skipped id numbers of a new session from the remote's branches:
/// explicit branch > `feat/{issue}` (a slug when the id is not branch-safe) > `session/{id}`
/// (chosen at launch). A derived name already on the remote gets a `-2`, `-3`… suffix, and
/// numbers whose `session/{prefix}-N` branch exists on the remote are not used for ids.
pub fn plan_branch(new: &mut NewSession, remote_heads: &[String]) {
    let session_branch = format!("session/{}-", new.prefix);
    new.skip_numbers.extend(
        remote_heads
            .iter()
            .filter_map(|h| h.strip_prefix(&session_branch))
            .filter_map(|n| n.parse::<i64>().ok()),
    );
    if new.branch.is_some() {
        return;
    }
    if let Some(issue) = &new.issue {
        let candidate = format!("feat/{issue}");
        let base = if check_branch_name(&candidate).is_ok() {
            candidate
        } else {
            format!("feat/{}", slug(issue))
        };
        let mut name = base.clone();
        let mut n = 2;
        while remote_heads.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        new.branch = Some(name);
    }
}

/// Refuses a requested branch that a live session of the project already works on: two
/// agents would share one branch (git refuses a second worktree of it anyway, later).
///
/// # Errors
/// `Invalid` naming `branch` (422, as INTERFACE.md fixes it for every branch the spawn cannot
/// use); `Store` when the sessions cannot be read.
pub(super) async fn branch_free(
    store: &crate::store::SharedStore,
    project: &str,
    branch: Option<&str>,
) -> Result<(), FleetError> {
    let Some(branch) = branch else {
        return Ok(());
    };
    let live = store
        .list_sessions(&crate::store::SessionFilter {
            project: Some(project.to_string()),
            states: Vec::new(),
            active_only: true,
        })
        .await?;
    match live.iter().find(|s| s.branch.as_deref() == Some(branch)) {
        Some(s) => Err(FleetError::Invalid {
            field: "branch".into(),
            reason: format!("session {} already works on branch `{branch}`", s.id),
        }),
        None => Ok(()),
    }
}

/// The spawn-time preflight: the agent's CLI must resolve on the agent's `PATH`, or the spawn
/// fails with the cause (422 on `agent`) before any session row or worktree exists. What may
/// still stop the agent once started (an interactive `claude` without its first-run set-up)
/// comes back as warnings, which the caller keeps in the session's `meta.preflight_warnings`.
/// A few `stat`s and one small file read, on the blocking pool (never on the actor's thread).
pub(super) async fn preflight_agent(
    launch: Option<AgentLaunch>,
) -> Result<Vec<String>, FleetError> {
    let Some(launch) = launch else {
        return Ok(Vec::new());
    };
    let warnings = tokio::task::spawn_blocking(move || agent_ready(&launch, &HostEnv::current()))
        .await
        .map_err(|e| FleetError::Plugin(PluginError::Io(std::io::Error::other(e))))?
        .map_err(|e| FleetError::Invalid {
            field: "agent".into(),
            reason: e.to_string(),
        })?;
    for w in &warnings {
        tracing::warn!(warning = %w, "spawn preflight");
    }
    Ok(warnings)
}

/// A sandboxed session (`key`: the key that turns its sandbox on) placed on a host (its
/// `runtime` is `ssh:<host>`) needs bubblewrap there: asked before anything is created, so
/// a host without it refuses the spawn naming the host and the key. A host that does not
/// answer is left to the launch, which looks again (and never starts the agent unsandboxed).
///
/// # Errors
/// The refusal's reason.
pub(super) async fn bwrap_on_host(
    hosts: &crate::plugins::hosts::HostSet,
    runtime: &str,
    key: Option<&str>,
) -> Result<(), String> {
    use crate::plugins::hosts::{host_of, sandbox};
    let (Some(key), Some(name)) = (key, host_of(runtime)) else {
        return Ok(());
    };
    let Some(host) = hosts.get(name) else {
        return Ok(());
    };
    match sandbox::has_bwrap(host).await {
        Ok(false) => Err(sandbox::no_bwrap(name, key).to_string()),
        _ => Ok(()),
    }
}

/// Keeps the preflight's warnings with a new session (`meta.preflight_warnings`).
pub(super) fn with_warnings(new: &mut NewSession, warnings: &[String]) {
    if !warnings.is_empty() {
        new.meta["preflight_warnings"] = serde_json::json!(warnings);
    }
}

/// Creates `news` in order; stops at the first failure, returning the rows created before
/// it with the error (their actors must still start).
async fn create_rows(
    journal: &Journal,
    news: &[NewSession],
) -> (Vec<SessionRecord>, Option<FleetError>) {
    let mut rows = Vec::with_capacity(news.len());
    for new in news {
        match journal.create_session(new).await {
            Ok(r) => rows.push(r),
            Err(e) => return (rows, Some(e.into())),
        }
    }
    (rows, None)
}

/// A fresh session's snapshot: no trackers, no timers yet.
fn fresh(session: SessionRecord) -> SessionSnapshot {
    SessionSnapshot {
        session,
        trackers: Default::default(),
        timers: Default::default(),
    }
}

impl FleetSupervisor {
    /// The key that turns the sandbox of `agent` in `project` on, when it runs in one.
    pub(super) fn sandbox_key(&self, project: &str, agent: &str) -> Option<String> {
        let p = self.fleet.project(project)?;
        self.fleet
            .sandbox
            .sandbox_for(p, agent)
            .map(|_| self.fleet.sandbox.key(p, agent))
    }

    /// What the preflight checks for agent `name` (`None`: unknown agent or nothing to check).
    pub(super) fn agent_launch(&self, name: &str) -> Option<AgentLaunch> {
        self.fleet.plugins.agent(name).ok()?.preflight()
    }

    /// Resolves a parsed spawn order against the configuration: the project must exist, its
    /// agent (or the override), runtime and workspace must be registered.
    ///
    /// # Errors
    /// `Invalid` naming `project` or `agent`.
    pub(super) fn resolve(&self, r: SpawnOrder) -> Result<NewSession, FleetError> {
        let invalid = |field: &str, reason: String| FleetError::Invalid {
            field: field.into(),
            reason,
        };
        let project = self
            .fleet
            .project(&r.project)
            .ok_or_else(|| invalid("project", format!("unknown project `{}`", r.project)))?;
        let agent = r.agent.unwrap_or_else(|| project.agent.clone());
        self.fleet
            .plugins
            .agent(&agent)
            .map_err(|_| invalid("agent", format!("unknown agent `{agent}`")))?;
        let (runtime, workspace_kind) =
            crate::actors::placement::plugins_for(&self.fleet.plugins.hosts, project, r.host)
                .map_err(|(field, reason)| invalid(field, reason))?;
        self.fleet
            .plugins
            .runtime(&runtime)
            .map_err(|e| invalid("project", e.to_string()))?;
        self.fleet
            .plugins
            .workspace(&workspace_kind)
            .map_err(|e| invalid("project", e.to_string()))?;
        if let Some(b) = r
            .branch
            .as_ref()
            .filter(|b| b.as_str() == project.default_branch)
        {
            return Err(invalid(
                "branch",
                format!(
                    "`{}` is the project's default branch: a session works on its own branch",
                    b.as_str()
                ),
            ));
        }
        Ok(NewSession {
            project: project.name.clone(),
            prefix: project.prefix.clone(),
            agent,
            runtime,
            workspace_kind,
            branch: r.branch.map(|b| b.into_inner()),
            issue: r.issue,
            prompt: r.prompt.map(|p| p.into_inner()),
            skip_numbers: Vec::new(),
            fixed_id: None,
            meta: serde_json::Value::Null,
            at: Utc::now(),
        })
    }

    /// The one create-and-start path. `plan` runs off the actor (preflight, tracker, remote
    /// branches) and yields the sessions to create plus whatever else the answer needs; each
    /// session is then created through the journal, in order, and gets its actor (counted in
    /// the metrics) as soon as its row exists. A failure part-way still starts the actors of
    /// the rows already created, so none waits for a restart to run.
    pub(super) fn create_and_start<T, P>(
        &self,
        plan: P,
    ) -> ResponseActFuture<Self, Result<(Vec<SessionSnapshot>, T), FleetError>>
    where
        T: 'static,
        P: Future<Output = Result<(Vec<NewSession>, T), FleetError>> + 'static,
    {
        let journal = self.fleet.journal.clone();
        Box::pin(
            async move {
                let (news, extra) = plan.await?;
                let (rows, failed) = create_rows(&journal, &news).await;
                Ok::<_, FleetError>((rows, failed, extra))
            }
            .into_actor(self)
            .map(|res, act, ctx| {
                let (rows, failed, extra) = res?;
                let mut out = Vec::with_capacity(rows.len());
                for rec in rows {
                    METRICS
                        .sessions
                        .with_label_values(&[rec.state.as_str()])
                        .inc();
                    act.start_actor(rec.id.clone(), &rec.project, ctx);
                    out.push(fresh(rec));
                }
                match failed {
                    Some(e) => Err(e),
                    None => Ok((out, extra)),
                }
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(branch: Option<&str>, issue: Option<&str>) -> NewSession {
        NewSession {
            project: "demo".into(),
            prefix: "demo".into(),
            agent: "a".into(),
            runtime: "process".into(),
            workspace_kind: "worktree".into(),
            branch: branch.map(Into::into),
            issue: issue.map(Into::into),
            prompt: None,
            skip_numbers: vec![],
            fixed_id: None,
            meta: serde_json::Value::Null,
            at: Utc::now(),
        }
    }

    #[test]
    fn branch_precedence_and_remote_collisions() {
        let heads: Vec<String> = ["feat/42", "feat/42-2", "session/demo-3", "main"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut explicit = new(Some("my/branch"), Some("42"));
        plan_branch(&mut explicit, &heads);
        assert_eq!(explicit.branch.as_deref(), Some("my/branch"));
        let mut issue = new(None, Some("42"));
        plan_branch(&mut issue, &heads);
        assert_eq!(issue.branch.as_deref(), Some("feat/42-3"));
        assert_eq!(issue.skip_numbers, vec![3]);
        let mut odd = new(None, Some("Fix the parser"));
        plan_branch(&mut odd, &heads);
        assert_eq!(odd.branch.as_deref(), Some("feat/fix-the-parser"));
        let mut none = new(None, None);
        plan_branch(&mut none, &heads);
        assert_eq!(none.branch, None, "session/{{id}} is chosen at launch");
    }
}
