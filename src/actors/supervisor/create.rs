//! Creating sessions: a spawn, a batch (one issue each, tracker reads in parallel) and the
//! orchestrator. Each plans its session, then goes through the one create-and-start path in
//! [`super::spawn`].

use actix::prelude::*;
use chrono::Utc;

use super::messages::*;
use super::request;
use super::spawn::{branch_free, bwrap_on_host, plan_branch, preflight_agent, with_warnings};
use super::{ready, FleetError, FleetSupervisor, Reply};
use crate::plugins::worktree::remote_heads;
use crate::plugins::PluginError;
use crate::store::{NewSession, SessionFilter, SessionId, SessionSnapshot, StoreError};

/// Tracker reads in flight at once for a batch spawn.
const BATCH_TRACKER_READS: usize = 8;

/// What a session takes from its tracker issue: the issue's own branch (unless one was asked
/// for) and the issue itself in its metadata (the prompt is built from it).
fn with_issue(new: &mut NewSession, issue: &crate::plugins::Issue) {
    if new.branch.is_none() {
        new.branch = issue.branch.clone();
    }
    if !new.meta.is_object() {
        new.meta = serde_json::json!({});
    }
    new.meta["issue"] = serde_json::to_value(issue).unwrap_or_default();
}

/// A spawn for a closed issue: refused (422) naming the issue.
fn closed(id: &str) -> FleetError {
    FleetError::Invalid {
        field: "issue".into(),
        reason: format!(
            "issue {id} is closed in the project's tracker; reopen it to start a session"
        ),
    }
}

impl Handler<Spawn> for FleetSupervisor {
    type Result = Reply<SessionSnapshot>;
    fn handle(&mut self, msg: Spawn, _ctx: &mut Self::Context) -> Self::Result {
        let mut new = match self.resolve(msg.order) {
            Ok(n) => n,
            Err(e) => return ready(Err(e)),
        };
        let repo = self
            .fleet
            .project(&new.project)
            .map(|p| (p.repo.clone(), p.remote.clone()));
        let tracker = self.fleet.plugins.trackers.get(&new.project).cloned();
        let launch = self.agent_launch(&new.agent);
        let store = self.fleet.store.clone();
        // Counted as the host's load from now, so the next spawn's `host: auto` sees it.
        let placement = crate::plugins::hosts::host_of(&new.runtime)
            .and_then(|h| self.fleet.plugins.hosts.reserve(h));
        let sandbox_key = self.sandbox_key(&new.project, &new.agent);
        let hosts = self.fleet.plugins.hosts.clone();
        let plan = async move {
            // An agent that cannot start fails the spawn before anything is created.
            let warnings = preflight_agent(launch).await?;
            with_warnings(&mut new, &warnings);
            bwrap_on_host(&hosts, &new.runtime, sandbox_key.as_deref())
                .await
                .map_err(|reason| FleetError::Invalid {
                    field: "host".into(),
                    reason,
                })?;
            branch_free(&store, &new.project, new.branch.as_deref()).await?;
            // The issue is read before anything is created: an unknown issue or a tracker
            // outage fails the spawn cleanly.
            if let (Some(t), Some(id)) = (tracker, new.issue.clone()) {
                let issue = t.issue(&id).await.map_err(|e| match e {
                    PluginError::NotFound(_) => FleetError::Invalid {
                        field: "issue".into(),
                        reason: format!("issue {id} was not found in the project's tracker"),
                    },
                    // E.g. a pull request's number given for an issue.
                    PluginError::Invalid(reason) => FleetError::Invalid {
                        field: "issue".into(),
                        reason,
                    },
                    other => FleetError::Plugin(other),
                })?;
                if issue.closed {
                    return Err(closed(&id));
                }
                with_issue(&mut new, &issue);
            }
            if let Some((repo, remote)) = repo {
                let heads = remote_heads(&repo, &remote).await;
                plan_branch(&mut new, &heads);
            }
            if let Some(p) = placement {
                p.keep();
            }
            Ok((vec![new], ()))
        };
        Box::pin(self.create_and_start(plan).map(|res, _act, _ctx| {
            let (mut created, ()) = res?;
            created
                .pop()
                .ok_or_else(|| FleetError::Conflict("the session was not created".into()))
        }))
    }
}

impl Handler<BatchSpawn> for FleetSupervisor {
    type Result = Reply<(Vec<SessionSnapshot>, Vec<Skipped>)>;
    fn handle(&mut self, msg: BatchSpawn, _ctx: &mut Self::Context) -> Self::Result {
        let r = msg.order;
        // Resolved once: every session of the batch differs only by its issue.
        let template = match self.resolve(request::SpawnOrder {
            project: r.project.clone(),
            agent: r.agent.clone(),
            branch: None,
            issue: None,
            prompt: r.prompt.clone(),
            host: None,
        }) {
            Ok(n) => n,
            Err(e) => return ready(Err(e)),
        };
        let store = self.fleet.store.clone();
        let repo = self
            .fleet
            .project(&r.project)
            .map(|p| (p.repo.clone(), p.remote.clone()));
        let launch = self.agent_launch(&template.agent);
        let sandbox_key = self.sandbox_key(&template.project, &template.agent);
        let hosts = self.fleet.plugins.hosts.clone();
        let tracker = self.fleet.plugins.trackers.get(&r.project).cloned();
        // `host: auto`: the batch is spread over the hosts by load, not all on the host the
        // template was placed on.
        let spread = self
            .fleet
            .project(&r.project)
            .is_some_and(|p| p.host.as_deref() == Some(crate::plugins::hosts::AUTO))
            .then(|| self.fleet.plugins.hosts.clone());
        let plan = async move {
            let warnings = preflight_agent(launch).await?;
            let mut template = template;
            with_warnings(&mut template, &warnings);
            let live = store
                .list_sessions(&SessionFilter {
                    project: Some(r.project.clone()),
                    states: vec![],
                    active_only: true,
                })
                .await?;
            let heads = match &repo {
                Some((repo, remote)) => remote_heads(repo, remote).await,
                None => vec![],
            };
            let mut seen = std::collections::HashSet::new();
            let (mut news, mut skipped) = (Vec::new(), Vec::new());
            for issue in r.issues {
                if !seen.insert(issue.clone()) {
                    skipped.push(Skipped {
                        issue,
                        reason: "duplicate in batch".into(),
                        session: None,
                    });
                    continue;
                }
                if let Some(s) = live
                    .iter()
                    .find(|s| s.issue.as_deref() == Some(issue.as_str()))
                {
                    skipped.push(Skipped {
                        issue,
                        reason: "live session".into(),
                        session: Some(s.id.to_string()),
                    });
                    continue;
                }
                let mut new = template.clone();
                new.issue = Some(issue);
                new.at = Utc::now();
                news.push(new);
            }
            // Each session gets its issue as `spawn` gives it (title, body, branch), read
            // concurrently; an issue the tracker cannot give is skipped, not the batch.
            if let Some(t) = tracker {
                let reads = news.iter().map(|n| {
                    let t = t.clone();
                    let id = n.issue.clone().unwrap_or_default();
                    async move { t.issue(&id).await }
                });
                use futures::StreamExt as _;
                let issues = futures::stream::iter(reads)
                    .buffered(BATCH_TRACKER_READS)
                    .collect::<Vec<_>>()
                    .await;
                let mut kept = Vec::with_capacity(news.len());
                for (mut new, issue) in news.into_iter().zip(issues) {
                    match issue {
                        Ok(issue) if issue.closed => skipped.push(Skipped {
                            issue: new.issue.unwrap_or_default(),
                            reason: "closed in the tracker".into(),
                            session: None,
                        }),
                        Ok(issue) => {
                            with_issue(&mut new, &issue);
                            kept.push(new);
                        }
                        Err(e) => skipped.push(Skipped {
                            issue: new.issue.unwrap_or_default(),
                            reason: match e {
                                PluginError::NotFound(_) => "not found in the tracker".into(),
                                other => format!("tracker: {other}"),
                            },
                            session: None,
                        }),
                    }
                }
                news = kept;
            }
            for new in &mut news {
                plan_branch(new, &heads);
            }
            if let Some(hosts) = spread {
                let picks = hosts.place_many(news.len());
                let mut placed = Vec::with_capacity(news.len());
                for (mut new, pick) in news.into_iter().zip(picks) {
                    match pick {
                        Some(h) => {
                            new.runtime = crate::plugins::hosts::plugin_name(&h);
                            new.workspace_kind.clone_from(&new.runtime);
                            placed.push(new);
                        }
                        None => skipped.push(Skipped {
                            issue: new.issue.unwrap_or_default(),
                            reason: "every host is full or unreachable".into(),
                            session: None,
                        }),
                    }
                }
                news = placed;
            }
            // A sandboxed batch on hosts: those placed on a host without bubblewrap are
            // skipped (asked once per host).
            let mut refused: std::collections::HashMap<String, Result<(), String>> =
                std::collections::HashMap::new();
            let mut ready = Vec::with_capacity(news.len());
            for new in news {
                if !refused.contains_key(&new.runtime) {
                    let r = bwrap_on_host(&hosts, &new.runtime, sandbox_key.as_deref()).await;
                    refused.insert(new.runtime.clone(), r);
                }
                match refused.get(&new.runtime) {
                    Some(Err(reason)) => skipped.push(Skipped {
                        issue: new.issue.unwrap_or_default(),
                        reason: reason.clone(),
                        session: None,
                    }),
                    _ => ready.push(new),
                }
            }
            // What is placed on a host counts as its load until its pane starts.
            for new in &ready {
                let placed =
                    crate::plugins::hosts::host_of(&new.runtime).and_then(|h| hosts.reserve(h));
                if let Some(p) = placed {
                    p.keep();
                }
            }
            Ok((ready, skipped))
        };
        self.create_and_start(plan)
    }
}

impl Handler<EnsureOrchestrator> for FleetSupervisor {
    type Result = Reply<(SessionSnapshot, bool)>;
    fn handle(&mut self, msg: EnsureOrchestrator, ctx: &mut Self::Context) -> Self::Result {
        let Some(project) = self.fleet.project(&msg.project).cloned() else {
            return ready(Err(FleetError::Invalid {
                field: "project".into(),
                reason: format!("unknown project `{}`", msg.project),
            }));
        };
        let agent = project
            .orchestrator_agent
            .clone()
            .unwrap_or_else(|| project.agent.clone());
        if let Err(e) = self.fleet.plugins.agent(&agent) {
            return ready(Err(FleetError::Invalid {
                field: "agent".into(),
                reason: e.to_string(),
            }));
        }
        let launch = self.agent_launch(&agent);
        let id = SessionId(format!("{}-orchestrator", project.prefix));
        let store = self.fleet.store.clone();
        let me = ctx.address();
        let new = NewSession {
            project: project.name.clone(),
            prefix: project.prefix.clone(),
            agent,
            runtime: project.runtime.clone(),
            workspace_kind: project.workspace.clone(),
            branch: Some(format!("session/{id}")),
            issue: None,
            prompt: Some(crate::actors::session::launch::orchestrator_prompt(
                &project,
            )),
            skip_numbers: vec![],
            fixed_id: Some(id.0.clone()),
            meta: serde_json::json!({"role": "orchestrator"}),
            at: Utc::now(),
        };
        let existing_id = id.clone();
        // Nothing to create when it exists: a live one is reused, an ended one restored.
        let plan = async move {
            match store.load_snapshot(&id).await {
                Ok(s) if s.session.state.is_terminal() => {
                    let r = me.send(RestoreSession { id }).await??;
                    return Ok((vec![], Some(r.session)));
                }
                Ok(s) => return Ok((vec![], Some(s))),
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let mut new = new;
            with_warnings(&mut new, &preflight_agent(launch).await?);
            Ok((vec![new], None))
        };
        let store = self.fleet.store.clone();
        Box::pin(self.create_and_start(plan).then(move |res, act, _ctx| {
            let answer = match res {
                Ok((_, Some(existing))) => Ok((existing, false)),
                Ok((mut created, None)) => created
                    .pop()
                    .map(|s| (s, true))
                    .ok_or_else(|| FleetError::Conflict("the orchestrator was not created".into())),
                Err(e) => Err(e),
            };
            async move {
                match answer {
                    // A concurrent `start` won the race: attach to its orchestrator.
                    Err(FleetError::Store(StoreError::Conflict(_))) => {
                        Ok((store.load_snapshot(&existing_id).await?, false))
                    }
                    other => other,
                }
            }
            .into_actor(act)
        }))
    }
}
