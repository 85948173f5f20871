//! Tracker write-back: a session started from an issue tells the issue about its PR — a
//! comment with the PR link and the configured labels or workflow state
//! (`projects.<name>.writeback`) — when the PR opens and when it merges.
//!
//! Triggered after a commit that found the PR or merged it, and when the actor (re)starts,
//! so a write interrupted by a restart before it was claimed is done then. Each stage is
//! claimed in the store ([`crate::store::WritebackMarks`]) before the write: a stage is
//! written at most once, across restarts. A failed write gives the claim back (a later
//! trigger tries again) and is an event on the session (`tracker.writeback_failed`), never an
//! error of the lifecycle; a done one is `tracker.written_back`.

use std::sync::Arc;

use chrono::Utc;

use crate::actors::fleet::Fleet;
use crate::config::{WritebackSettings, WritebackStage};
use crate::plugins::WriteBack;
use crate::store::{NewEvent, SessionSnapshot, SessionState};

/// A point in the PR's life the issue hears about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// The session's PR was found.
    Opened,
    /// The session's PR was merged.
    Merged,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Opened => "opened",
            Stage::Merged => "merged",
        }
    }
}

/// The stages `new` reached that `old` had not (every stage reached when `old` is `None`,
/// as after a restart). Only sessions started from an issue write back.
pub(super) fn due(old: Option<&SessionSnapshot>, new: &SessionSnapshot) -> Vec<Stage> {
    let s = &new.session;
    if s.issue.is_none() {
        return vec![];
    }
    let mut out = vec![];
    let pr_new = s.pr.as_ref().map(|p| p.number);
    if pr_new.is_some() && old.and_then(|o| o.session.pr.as_ref().map(|p| p.number)) != pr_new {
        out.push(Stage::Opened);
    }
    let merged = |x: &SessionSnapshot| x.session.state == SessionState::Merged;
    if merged(new) && !old.is_some_and(merged) {
        out.push(Stage::Merged);
    }
    out
}

/// What to write at `stage`, from the project's settings.
pub(super) fn plan(cfg: &WritebackSettings, stage: Stage, s: &SessionSnapshot) -> WriteBack {
    let url = s.session.pr.as_ref().map(|p| p.url.as_str()).unwrap_or("");
    let (moves, text): (&WritebackStage, String) = match stage {
        Stage::Opened => (
            &cfg.opened,
            format!(
                "Flotilla session `{}` opened a pull request for this issue: {url}",
                s.session.id
            ),
        ),
        Stage::Merged => (
            &cfg.merged,
            format!("The pull request for this issue was merged: {url}"),
        ),
    };
    WriteBack {
        comment: cfg.comment.then_some(text),
        add_labels: moves.add_labels.clone(),
        remove_labels: moves.remove_labels.clone(),
        state: moves.state.clone(),
    }
}

/// Writes every stage in `stages` to the session's issue, each once (see the module docs).
pub(super) async fn run(fleet: Arc<Fleet>, s: SessionSnapshot, stages: Vec<Stage>) {
    let rec = &s.session;
    let (Some(issue), Some(tracker), Some(cfg)) = (
        rec.issue.clone(),
        fleet.plugins.trackers.get(&rec.project).cloned(),
        fleet.plugins.writebacks.get(&rec.project).cloned(),
    ) else {
        return;
    };
    for stage in stages {
        let w = plan(&cfg, stage, &s);
        if w.is_empty() {
            continue;
        }
        match fleet
            .store
            .claim_writeback(rec.id.as_str(), stage.as_str(), Utc::now())
            .await
        {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = ?e, stage = stage.as_str(), "write-back not claimed");
                continue;
            }
        }
        let result = tracker.write_back(&issue, &w).await;
        let (kind, mut data) = match &result {
            Ok(()) => (
                "tracker.written_back",
                serde_json::json!({"stage": stage.as_str(), "issue": issue,
                    "comment": w.comment.is_some(), "add_labels": w.add_labels,
                    "remove_labels": w.remove_labels, "state": w.state}),
            ),
            Err(e) => (
                "tracker.writeback_failed",
                serde_json::json!({"stage": stage.as_str(), "issue": issue, "error": e.to_string()}),
            ),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, stage = stage.as_str(), %issue, "tracker write-back failed");
            if let Err(e) = fleet
                .store
                .release_writeback(rec.id.as_str(), stage.as_str())
                .await
            {
                tracing::warn!(error = ?e, "write-back claim not released");
                data["released"] = false.into();
            }
        }
        let _ = fleet
            .journal
            .append(&NewEvent {
                session_id: Some(rec.id.clone()),
                kind: kind.into(),
                data,
                at: Utc::now(),
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Activity, PrRef, SessionId, SessionRecord};

    fn snap(issue: Option<&str>, pr: Option<i64>, state: SessionState) -> SessionSnapshot {
        let t = chrono::Utc::now();
        SessionSnapshot {
            session: SessionRecord {
                id: SessionId("demo-1".into()),
                project: "demo".into(),
                state,
                reason: None,
                agent: "scripted".into(),
                runtime: "process".into(),
                workspace_kind: "worktree".into(),
                branch: Some("feat/x".into()),
                workspace: None,
                pr: pr.map(|number| PrRef {
                    number,
                    url: format!("https://github.com/acme/widgets/pull/{number}"),
                }),
                issue: issue.map(str::to_string),
                prompt: None,
                runtime_handle: None,
                activity: Activity::Active,
                activity_at: None,
                restart_count: 0,
                created_at: t,
                updated_at: t,
                meta: serde_json::json!({}),
            },
            trackers: Default::default(),
            timers: Default::default(),
        }
    }

    #[test]
    fn writeback_stages_are_due_once_when_reached_and_only_for_issues() {
        let none = snap(Some("7"), None, SessionState::Working);
        let open = snap(Some("7"), Some(3), SessionState::PrOpen);
        let merged = snap(Some("7"), Some(3), SessionState::Merged);
        assert_eq!(due(Some(&none), &open), vec![Stage::Opened]);
        assert_eq!(due(Some(&open), &open), vec![]);
        assert_eq!(due(Some(&open), &merged), vec![Stage::Merged]);
        assert_eq!(due(None, &merged), vec![Stage::Opened, Stage::Merged]);
        assert_eq!(due(None, &snap(None, Some(3), SessionState::Merged)), vec![]);
    }

    #[test]
    fn writeback_plans_the_comment_with_the_pr_link_and_the_stage_moves() {
        let cfg = WritebackSettings {
            comment: true,
            opened: WritebackStage {
                add_labels: vec!["in-review".into()],
                remove_labels: vec![],
                state: Some("In Review".into()),
            },
            merged: WritebackStage::default(),
        };
        let s = snap(Some("7"), Some(3), SessionState::PrOpen);
        let w = plan(&cfg, Stage::Opened, &s);
        assert!(w
            .comment
            .as_deref()
            .is_some_and(|c| c.contains("https://github.com/acme/widgets/pull/3")));
        assert_eq!(w.add_labels, vec!["in-review".to_string()]);
        assert_eq!(w.state.as_deref(), Some("In Review"));
        let quiet = WritebackSettings {
            comment: false,
            ..cfg
        };
        assert!(plan(&quiet, Stage::Merged, &s).is_empty());
    }
}
