//! Every reviewer heard: the remarks on a PR outside inline threads (conversation comments,
//! review bodies of every state — [`PrStatus::remarks`]) that the agent has not been told yet,
//! grouped into one `ReviewerComments` event.
//!
//! The `reviewer-comments` tracker's fingerprint is a watermark, `c<id>/r<id>`: the newest
//! comment and review ids already told. Ids grow with time, so each remark is told once, even
//! across a crash (the tracker is persisted with the step that sent it).

use std::fmt::Write as _;

use crate::domain::machine::EventKind;
use crate::plugins::{PrRemark, PrStatus, RemarkKind};
use crate::store::SessionSnapshot;

/// The reaction (and tracker) key.
pub const REACTION: &str = "reviewer-comments";

/// (newest comment id, newest review id) already told.
fn watermark(s: &SessionSnapshot) -> (i64, i64) {
    let fp = s
        .trackers
        .get(REACTION)
        .and_then(|t| t.fingerprint.as_deref())
        .unwrap_or_default();
    let mut out = (0, 0);
    for part in fp.split('/') {
        if let Some(n) = part.strip_prefix('c').and_then(|n| n.parse().ok()) {
            out.0 = n;
        } else if let Some(n) = part.strip_prefix('r').and_then(|n| n.parse().ok()) {
            out.1 = n;
        }
    }
    out
}

/// The event for the remarks not told yet, if any.
pub fn event(s: &SessionSnapshot, pr: &PrStatus) -> Option<EventKind> {
    if pr.state != "open" || s.session.state.is_terminal() {
        return None;
    }
    let (c, r) = watermark(s);
    let new: Vec<&PrRemark> = pr
        .remarks
        .iter()
        .filter(|m| match m.kind {
            RemarkKind::Comment => m.id > c,
            RemarkKind::Review => m.id > r,
        })
        .collect();
    if new.is_empty() {
        return None;
    }
    let newest = |k: RemarkKind, floor: i64| {
        new.iter()
            .filter(|m| m.kind == k)
            .map(|m| m.id)
            .fold(floor, i64::max)
    };
    let fingerprint = format!(
        "c{}/r{}",
        newest(RemarkKind::Comment, c),
        newest(RemarkKind::Review, r)
    );
    let mut summary = format!("PR #{} ({}):\n", pr.number, pr.url);
    for m in new {
        let who = match (m.kind, m.state.as_deref()) {
            (RemarkKind::Comment, _) => format!("Comment by @{}", m.author),
            (RemarkKind::Review, Some(st)) => {
                format!("Review by @{} ({})", m.author, st.replace('_', " "))
            }
            (RemarkKind::Review, None) => format!("Review by @{}", m.author),
        };
        let _ = write!(summary, "\n{who}:\n{}\n", m.body.trim());
    }
    Some(EventKind::ReviewerComments {
        summary,
        fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Activity, PrRef, ReactionTracker, SessionId, SessionRecord, SessionState};

    fn snapshot() -> SessionSnapshot {
        let t = chrono::Utc::now();
        SessionSnapshot {
            session: SessionRecord {
                id: SessionId("demo-1".into()),
                project: "demo".into(),
                state: SessionState::ReviewPending,
                reason: None,
                agent: "scripted".into(),
                runtime: "process".into(),
                workspace_kind: "worktree".into(),
                branch: Some("feat/x".into()),
                workspace: None,
                pr: Some(PrRef {
                    number: 5,
                    url: "u".into(),
                }),
                issue: None,
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

    fn pr() -> PrStatus {
        PrStatus {
            number: 5,
            url: "u".into(),
            state: "open".into(),
            ci: "passing".into(),
            review: "pending".into(),
            mergeable: Some(true),
            draft: false,
            head_branch: "feat/x".into(),
            head_sha: "s".into(),
            base_branch: "main".into(),
            merge_state: "clean".into(),
            conflicts: false,
            behind: false,
            checks: vec![],
            unresolved_threads: vec![],
            remarks: vec![],
        }
    }

    fn remark(kind: RemarkKind, id: i64, body: &str) -> PrRemark {
        PrRemark {
            kind,
            id,
            author: "alice".into(),
            state: (kind == RemarkKind::Review).then(|| "commented".into()),
            body: body.into(),
        }
    }

    #[test]
    fn conversation_new_remarks_are_grouped_and_the_watermark_tells_each_once() {
        let mut s = snapshot();
        let pr = PrStatus {
            remarks: vec![
                remark(RemarkKind::Comment, 5, "first"),
                remark(RemarkKind::Review, 3, "second"),
            ],
            ..pr()
        };
        let Some(EventKind::ReviewerComments {
            summary,
            fingerprint,
        }) = event(&s, &pr)
        else {
            panic!("an event");
        };
        assert!(summary.contains("Comment by @alice:\nfirst"), "{summary}");
        assert!(summary.contains("Review by @alice (commented):\nsecond"));
        assert_eq!(fingerprint, "c5/r3");
        s.trackers.insert(
            REACTION.into(),
            ReactionTracker {
                reaction: REACTION.into(),
                attempts: 1,
                first_triggered_at: chrono::Utc::now(),
                last_triggered_at: chrono::Utc::now(),
                fingerprint: Some(fingerprint),
                escalated: false,
            },
        );
        assert!(event(&s, &pr).is_none());
        let more = PrStatus {
            remarks: [
                pr.remarks.clone(),
                vec![remark(RemarkKind::Comment, 9, "third")],
            ]
            .concat(),
            ..pr
        };
        let Some(EventKind::ReviewerComments {
            summary,
            fingerprint,
        }) = event(&s, &more)
        else {
            panic!("an event");
        };
        assert!(
            summary.contains("third") && !summary.contains("first"),
            "{summary}"
        );
        assert_eq!(fingerprint, "c9/r3");
    }
}
