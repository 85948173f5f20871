//! "Unknown is not an answer": while GitHub is still computing a PR's mergeability (or CI of
//! a PR that is otherwise ready), the session looks again by itself, with backoff, until it
//! settles. GitHub sends no webhook when mergeability settles, so without this a webhooks-only
//! fleet would wait for ever (and a polling one until the next reconcile).

use std::time::Duration;

use crate::plugins::PrStatus;

/// First wait before looking again.
pub const FIRST: Duration = Duration::from_millis(500);
/// Longest wait between two looks.
pub const MAX: Duration = Duration::from_secs(60);

/// Whether an observation is not an answer yet: an open PR whose mergeability GitHub is still
/// computing, or whose CI is still running while nothing else stands in the way of a merge.
pub fn unsettled(pr: &PrStatus) -> bool {
    if pr.state != "open" {
        return false;
    }
    let computing = pr.mergeable.is_none() || pr.merge_state == "unknown";
    let waiting_on_ci = pr.ci == "pending"
        && matches!(pr.review.as_str(), "approved" | "none")
        && !pr.conflicts
        && !pr.draft;
    computing || waiting_on_ci
}

/// Backoff between re-checks: doubles from [`FIRST`] up to [`MAX`]; reset once settled.
#[derive(Debug, Default)]
pub struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    /// The wait before the next look, and advances.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next.unwrap_or(FIRST);
        self.next = Some((wait * 2).min(MAX));
        wait
    }

    /// The PR settled: the next unknown starts from [`FIRST`] again.
    pub fn reset(&mut self) {
        self.next = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pr() -> PrStatus {
        PrStatus {
            number: 1,
            url: "u".into(),
            state: "open".into(),
            ci: "passing".into(),
            review: "approved".into(),
            mergeable: Some(true),
            draft: false,
            head_branch: "f".into(),
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

    #[test]
    fn recheck_unknown_mergeability_or_pending_ci_of_a_ready_pr_is_unsettled() {
        assert!(!unsettled(&pr()));
        assert!(unsettled(&PrStatus {
            mergeable: None,
            ..pr()
        }));
        assert!(unsettled(&PrStatus {
            merge_state: "unknown".into(),
            ..pr()
        }));
        assert!(unsettled(&PrStatus {
            ci: "pending".into(),
            ..pr()
        }));
        // CI pending while a review is still awaited: the review's webhook comes first.
        assert!(!unsettled(&PrStatus {
            ci: "pending".into(),
            review: "pending".into(),
            ..pr()
        }));
        assert!(!unsettled(&PrStatus {
            mergeable: None,
            state: "merged".into(),
            ..pr()
        }));
    }

    #[test]
    fn recheck_backoff_doubles_up_to_its_cap_and_resets() {
        let mut b = Backoff::default();
        assert_eq!(b.next_wait(), FIRST);
        assert_eq!(b.next_wait(), FIRST * 2);
        for _ in 0..20 {
            b.next_wait();
        }
        assert_eq!(b.next_wait(), MAX);
        b.reset();
        assert_eq!(b.next_wait(), FIRST);
    }
}
