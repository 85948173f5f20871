//! Tracker write-back: a session started from an issue tells the issue about its PR — a
//! comment with the PR link and the configured labels or workflow state
//! (`projects.<name>.writeback`) — when the PR opens and when it merges.
//!
//! Triggered after a commit that found the PR or merged it, and when the actor (re)starts,
//! so a write interrupted by a restart before it was claimed is done then. Each stage's two
//! parts (the comment; the labels/state) are claimed in the store
//! ([`crate::store::WritebackMarks`], marks `opened.comment`, `merged.move`…) before they are
//! written: each is written at most once, across restarts. A failed part gives its claim back
//! (the next trigger, e.g. a restart, tries again) and is an event on the session
//! (`tracker.writeback_failed`, with the error), never an error of the lifecycle; a written
//! one is `tracker.written_back`.

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

/// A stage's write in its two parts, each claimed on its own: the comment, and the moves
/// (labels, state). A part that failed is given back and tried again on a later trigger; a
/// part that was written is never written again.
fn parts(w: WriteBack) -> Vec<(&'static str, WriteBack)> {
    let comment = WriteBack {
        comment: w.comment,
        ..WriteBack::default()
    };
    let moves = WriteBack { comment: None, ..w };
    [("comment", comment), ("move", moves)]
        .into_iter()
        .filter(|(_, w)| !w.is_empty())
        .collect()
}

/// Writes every stage in `stages` to the session's issue, each part once (see the module
/// docs).
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
        for (part, w) in parts(plan(&cfg, stage, &s)) {
            let mark = format!("{}.{part}", stage.as_str());
            match fleet
                .store
                .claim_writeback(rec.id.as_str(), &mark, Utc::now())
                .await
            {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = ?e, %mark, "write-back not claimed");
                    continue;
                }
            }
            let mut data = serde_json::json!({"stage": stage.as_str(), "part": part,
                "issue": issue, "add_labels": w.add_labels, "remove_labels": w.remove_labels,
                "state": w.state});
            let kind = match tracker.write_back(&issue, &w).await {
                Ok(()) => "tracker.written_back",
                Err(e) => {
                    tracing::warn!(error = %e, %mark, %issue, "tracker write-back failed");
                    data["error"] = e.to_string().into();
                    if let Err(e) = fleet.store.release_writeback(rec.id.as_str(), &mark).await {
                        tracing::warn!(error = ?e, "write-back claim not released");
                    }
                    "tracker.writeback_failed"
                }
            };
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
        assert_eq!(
            due(None, &snap(None, Some(3), SessionState::Merged)),
            vec![]
        );
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
        let split = parts(w);
        assert_eq!(
            split.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            ["comment", "move"]
        );
        assert!(split[0].1.add_labels.is_empty() && split[1].1.comment.is_none());
    }
}
