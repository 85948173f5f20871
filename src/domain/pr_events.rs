//! What an observed PR means for a session: a pure translation from the SCM's view
//! ([`PrStatus`], plus CI and review details when they are needed) into machine events.
//!
//! Level-triggered: the same observation may arrive many times (webhook, poll, reconcile).
//! Events the machine would take as a no-op are not emitted, so a quiet PR writes nothing to
//! the event log; events that would repeat an instruction are stopped by the trackers'
//! fingerprints inside the machine anyway (an instruction is sent once per fingerprint, even
//! across a crash, because trackers are persisted with the step).

use std::fmt::Write as _;

use super::machine::{EventKind, EPISODE_OVER};
use crate::domain::pr::{CiSummary, PrStatus, ReviewFeedback, ReviewThread};
use crate::domain::session::{PrRef, SessionSnapshot, SessionState as S};

/// Longest log excerpt per failed check in an instruction (the tail is what matters).
const LOG_EXCERPT_CHARS: usize = 3000;

/// Details fetched only when an instruction is due.
#[derive(Debug, Default, Clone)]
pub struct PrDetails {
    /// CI with failed checks and log excerpts (needed for a new CI failure).
    pub ci: Option<CiSummary>,
    /// Review bodies and threads (needed for a new change request).
    pub feedback: Option<ReviewFeedback>,
}

/// Which details an observation needs before [`events`] can write the instructions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// Fetch [`CiSummary`] for the head.
    pub ci: bool,
    /// Fetch [`ReviewFeedback`].
    pub feedback: bool,
}

/// Fingerprint of a CI failure: the head commit and the failed check names. A new push, or a
/// different set of failures, is a new trigger; the same failure seen again is not.
pub fn ci_fingerprint(pr: &PrStatus) -> String {
    let mut failed: Vec<&str> = pr
        .checks
        .iter()
        .filter(|c| c.failed())
        .map(|c| c.name.as_str())
        .collect();
    failed.sort_unstable();
    format!("{}:{}", pr.head_sha, failed.join(","))
}

/// Whether a thread was opened by an automated reviewer (its first comment is a bot's).
fn by_bot(t: &ReviewThread) -> bool {
    t.comments.first().is_some_and(|c| c.bot)
}

/// Unresolved threads opened by people (they are what "changes requested" is about).
fn human_threads(pr: &PrStatus) -> impl Iterator<Item = &ReviewThread> {
    pr.unresolved_threads.iter().filter(|t| !by_bot(t))
}

/// Unresolved threads opened by bots (the `bugbot-comments` reaction).
fn bot_threads(pr: &PrStatus) -> impl Iterator<Item = &ReviewThread> {
    pr.unresolved_threads.iter().filter(|t| by_bot(t))
}

/// Fingerprint of a change request: the unresolved threads (where and what was said), not the
/// head: a push that does not resolve them must not send the same threads again.
pub fn review_fingerprint(pr: &PrStatus) -> String {
    format!("{}|{}", pr.review, threads_hash(human_threads(pr)))
}

/// Fingerprint of a set of unresolved bot threads.
pub fn bot_fingerprint(pr: &PrStatus) -> String {
    threads_hash(bot_threads(pr))
}

fn threads_hash<'a>(threads: impl Iterator<Item = &'a ReviewThread>) -> String {
    let mut parts: Vec<String> = threads
        .map(|t| {
            let first = t.comments.first().map(|c| c.body.as_str()).unwrap_or("");
            format!(
                "{}:{}:{}:{}",
                t.path,
                t.line.unwrap_or(0),
                t.comments.len(),
                short_hash(first)
            )
        })
        .collect();
    parts.sort();
    short_hash(&parts.join("\n"))
}

/// A conflict episode: the head that conflicts (a new push starts a new episode).
pub fn conflict_fingerprint(pr: &PrStatus) -> String {
    format!("{}:{}", pr.head_sha, pr.base_branch)
}

fn short_hash(s: &str) -> String {
    // FNV-1a: stable across builds and platforms, unlike `DefaultHasher`.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn tracker_fp<'a>(s: &'a SessionSnapshot, key: &str) -> Option<&'a str> {
    s.trackers.get(key).and_then(|t| t.fingerprint.as_deref())
}

fn ci_failing(pr: &PrStatus) -> bool {
    pr.ci == "failing" || pr.checks.iter().any(|c| c.failed())
}

/// Changes are asked for by the review decision, or by unresolved inline comments whatever
/// the decision says (ao scenario 10) — except once the PR is approved.
fn changes_requested(pr: &PrStatus) -> bool {
    pr.review == "changes_requested"
        || (pr.review != "approved" && human_threads(pr).next().is_some())
}

/// Which details [`events`] will need for this observation.
pub fn needs(s: &SessionSnapshot, pr: &PrStatus) -> Needs {
    if pr.state != "open" || !owns(s, pr) {
        return Needs::default();
    }
    Needs {
        ci: ci_failing(pr) && tracker_fp(s, "ci-failed") != Some(ci_fingerprint(pr).as_str()),
        feedback: changes_requested(pr)
            && tracker_fp(s, "changes-requested") != Some(review_fingerprint(pr).as_str()),
    }
}

/// Whether the observed PR belongs to this session (its PR, or a PR from its branch).
pub fn owns(s: &SessionSnapshot, pr: &PrStatus) -> bool {
    match &s.session.pr {
        Some(p) => p.number == pr.number,
        None => s.session.branch.as_deref() == Some(pr.head_branch.as_str()),
    }
}

/// The events an observation of the session's PR implies, in the order to apply them.
pub fn events(s: &SessionSnapshot, pr: &PrStatus, details: &PrDetails) -> Vec<EventKind> {
    let st = s.session.state;
    if st.is_terminal() || st == S::Merged || !owns(s, pr) {
        return vec![];
    }
    let mut out = vec![];
    let known = s.session.pr.as_ref().map(|p| p.number) == Some(pr.number);
    match pr.state.as_str() {
        "merged" => {
            if !known {
                out.push(opened(pr));
            }
            out.push(EventKind::PrMerged);
            return out;
        }
        "closed" => {
            if known {
                out.push(EventKind::PrClosed);
            }
            return out;
        }
        _ => {}
    }
    // After the PR event the machine is in `pr_open` (from working/stuck) or where it was.
    let st = if known {
        st
    } else {
        out.push(opened(pr));
        if matches!(st, S::Working | S::Stuck) {
            S::PrOpen
        } else {
            st
        }
    };
    if pr.conflicts {
        let fp = conflict_fingerprint(pr);
        if tracker_fp(s, "merge-conflicts") != Some(fp.as_str()) {
            out.push(EventKind::MergeConflicts {
                summary: conflict_summary(pr),
                fingerprint: fp,
            });
        }
    } else if pr.mergeable == Some(true)
        && tracker_fp(s, "merge-conflicts").is_some_and(|fp| !fp.ends_with(EPISODE_OVER))
    {
        // Only a computed "mergeable" ends an episode: `None` means GitHub is still working.
        out.push(EventKind::ConflictsCleared);
    }
    if bot_threads(pr).next().is_some() {
        let fp = bot_fingerprint(pr);
        if tracker_fp(s, "bugbot-comments") != Some(fp.as_str()) {
            out.push(EventKind::BotComments {
                summary: bot_summary(pr),
                fingerprint: fp,
            });
        }
    } else if tracker_fp(s, "bugbot-comments").is_some_and(|fp| !fp.ends_with(EPISODE_OVER)) {
        out.push(EventKind::BotCommentsResolved);
    }
    if ci_failing(pr) {
        let fp = ci_fingerprint(pr);
        if st != S::CiFailed || tracker_fp(s, "ci-failed") != Some(fp.as_str()) {
            out.push(EventKind::CiFailed {
                summary: ci_summary(pr, details.ci.as_ref()),
                fingerprint: fp,
            });
        }
        return out;
    }
    if pr.ci == "pending" {
        // Nothing to say until CI settles.
        return out;
    }
    let st = if st == S::CiFailed {
        out.push(EventKind::CiPassed);
        S::PrOpen
    } else {
        st
    };
    if changes_requested(pr) {
        let fp = review_fingerprint(pr);
        if st != S::ChangesRequested || tracker_fp(s, "changes-requested") != Some(fp.as_str()) {
            out.push(EventKind::ChangesRequested {
                summary: review_summary(pr, details.feedback.as_ref()),
                fingerprint: fp,
            });
        }
        return out;
    }
    let green = matches!(pr.ci.as_str(), "passing" | "none");
    // No review required (decision `none`) and green is as good as approved (ao scenario 12).
    if pr.review == "none" && green && pr.mergeable == Some(true) && !pr.conflicts && !pr.draft {
        if st != S::Mergeable {
            out.push(EventKind::MergeReady);
        }
        return out;
    }
    if pr.review == "approved" {
        if green && pr.mergeable == Some(true) && !pr.conflicts && !pr.draft {
            if st != S::Mergeable {
                out.push(EventKind::MergeReady);
            }
        } else if !matches!(st, S::Approved | S::Mergeable) {
            out.push(EventKind::Approved);
        }
        return out;
    }
    if st == S::PrOpen && !pr.draft {
        out.push(EventKind::ReviewPending);
    }
    out
}

fn opened(pr: &PrStatus) -> EventKind {
    EventKind::PrOpened {
        pr: PrRef {
            number: pr.number,
            url: pr.url.clone(),
        },
    }
}

fn tail(s: &str, n: usize) -> &str {
    let count = s.chars().count();
    if count <= n {
        return s;
    }
    let skip = s.char_indices().nth(count - n).map(|(i, _)| i).unwrap_or(0);
    &s[skip..]
}

/// Failed checks with their URLs and log excerpts, as the agent reads them.
pub fn ci_summary(pr: &PrStatus, ci: Option<&CiSummary>) -> String {
    let mut out = format!(
        "PR #{} ({}), head {}:\n",
        pr.number,
        pr.url,
        short(&pr.head_sha)
    );
    match ci.filter(|c| !c.failed.is_empty()) {
        Some(ci) => {
            for f in &ci.failed {
                let _ = write!(out, "\n### Failed check: {}", f.name);
                if let Some(u) = &f.url {
                    let _ = write!(out, "\nDetails: {u}");
                }
                if let Some(log) = f.log_excerpt.as_deref().filter(|l| !l.trim().is_empty()) {
                    let _ = write!(
                        out,
                        "\nLog excerpt:\n```\n{}\n```",
                        tail(log.trim_end(), LOG_EXCERPT_CHARS)
                    );
                }
                out.push('\n');
            }
        }
        None => {
            for c in pr.checks.iter().filter(|c| c.failed()) {
                let _ = write!(
                    out,
                    "\n### Failed check: {} ({})",
                    c.name,
                    c.conclusion.as_deref().unwrap_or("failed")
                );
                if let Some(u) = &c.url {
                    let _ = write!(out, "\nDetails: {u}");
                }
                out.push('\n');
            }
        }
    }
    out
}

fn thread_line(t: &ReviewThread) -> String {
    let mut out = match t.line {
        Some(l) => format!("- {}:{l}", t.path),
        None => format!("- {}", t.path),
    };
    for c in &t.comments {
        let _ = write!(out, "\n  @{}: {}", c.author, c.body.trim());
    }
    out
}

/// Unresolved review threads (file:line, author, body) and review bodies.
pub fn review_summary(pr: &PrStatus, feedback: Option<&ReviewFeedback>) -> String {
    let threads: Vec<&ReviewThread> = feedback
        .map(|f| f.unresolved_threads.as_slice())
        .unwrap_or(&pr.unresolved_threads)
        .iter()
        .filter(|t| !by_bot(t))
        .collect();
    // Review bodies reach the agent with the other remarks (`reviewer-comments`), once each.
    let mut out = format!("PR #{} ({}):\n", pr.number, pr.url);
    if !threads.is_empty() {
        out.push_str("\nUnresolved review comments:\n");
        for t in threads {
            out.push_str(&thread_line(t));
            out.push('\n');
        }
    }
    out
}

/// Bot threads as file:line, author, body.
fn bot_summary(pr: &PrStatus) -> String {
    let mut out = format!(
        "PR #{} ({}):\n\nUnresolved automated review comments:\n",
        pr.number, pr.url
    );
    for t in bot_threads(pr) {
        out.push_str(&thread_line(t));
        out.push('\n');
    }
    out
}

fn conflict_summary(pr: &PrStatus) -> String {
    format!(
        "PR #{} ({}): branch `{}` conflicts with `{}`. Run `git fetch origin && git rebase origin/{}`, resolve the conflicts, then `git push --force-with-lease`.",
        pr.number, pr.url, pr.head_branch, pr.base_branch, pr.base_branch
    )
}

fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

#[cfg(test)]
mod tests;
