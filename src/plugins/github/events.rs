//! GitHub webhook deliveries: the `X-Hub-Signature-256` check and the small typed
//! [`GithubEvent`] the lifecycle consumes (wire-formats §1.1–1.2).
//!
//! Only the fields the lifecycle routes on are kept; the raw body is persisted by the
//! endpoint, so nothing is lost by parsing little.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

/// Why a delivery could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The body is not a JSON object.
    #[error("payload is not a JSON object: {0}")]
    Malformed(String),
}

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret`.
///
/// The comparison is constant time ([`Mac::verify_slice`]); an empty secret never verifies,
/// so a misconfigured server refuses everything rather than accepting forgeries.
pub fn verify_signature(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    if secret.is_empty() {
        return false;
    }
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(given) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// `sha256=<hex>` for `body` under `secret`: what GitHub sends (used by tests and the fake).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The `X-GitHub-Event` kinds the lifecycle distinguishes; the rest are `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GithubEventKind {
    /// `ping`, sent when a hook is created.
    Ping,
    /// `pull_request`.
    PullRequest,
    /// `pull_request_review`.
    PullRequestReview,
    /// `pull_request_review_comment`.
    PullRequestReviewComment,
    /// `issue_comment` (on an issue or a PR).
    IssueComment,
    /// `issues`.
    Issues,
    /// `check_run`.
    CheckRun,
    /// `check_suite`.
    CheckSuite,
    /// `status` (commit statuses).
    Status,
    /// `workflow_run`.
    WorkflowRun,
    /// `push`.
    Push,
    /// Anything else.
    Other,
}

impl GithubEventKind {
    /// From the `X-GitHub-Event` header.
    pub fn from_header(name: &str) -> Self {
        match name {
            "ping" => Self::Ping,
            "pull_request" => Self::PullRequest,
            "pull_request_review" => Self::PullRequestReview,
            "pull_request_review_comment" => Self::PullRequestReviewComment,
            "issue_comment" => Self::IssueComment,
            "issues" => Self::Issues,
            "check_run" => Self::CheckRun,
            "check_suite" => Self::CheckSuite,
            "status" => Self::Status,
            "workflow_run" => Self::WorkflowRun,
            "push" => Self::Push,
            _ => Self::Other,
        }
    }

    /// The header name (`other` for unknown kinds); a bounded metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::PullRequest => "pull_request",
            Self::PullRequestReview => "pull_request_review",
            Self::PullRequestReviewComment => "pull_request_review_comment",
            Self::IssueComment => "issue_comment",
            Self::Issues => "issues",
            Self::CheckRun => "check_run",
            Self::CheckSuite => "check_suite",
            Self::Status => "status",
            Self::WorkflowRun => "workflow_run",
            Self::Push => "push",
            Self::Other => "other",
        }
    }
}

/// A verified delivery, reduced to what routing to a session needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GithubEvent {
    /// `X-GitHub-Delivery` (the same on a redelivery).
    pub delivery_id: String,
    /// Which event.
    pub kind: GithubEventKind,
    /// `action` (`opened`, `completed`, `submitted`…), absent for `status`, `push`, `ping`.
    pub action: Option<String>,
    /// `repository.full_name` (`owner/name`).
    pub repo: Option<String>,
    /// The PRs this is about: `pull_request.number`, an issue comment's issue when it is a
    /// PR, or every one of a check's `pull_requests[]`.
    pub prs: Vec<i64>,
    /// The PR's or check's head branch, or every branch a `status`'s commit is on (GitHub
    /// lists up to ten, in no particular order).
    pub head_branches: Vec<String>,
    /// The head commit.
    pub head_sha: Option<String>,
    /// A check's conclusion (`success`, `failure`…) or a status's state.
    pub conclusion: Option<String>,
    /// A review's state (`approved`, `changes_requested`, `commented`, `dismissed`).
    pub review_state: Option<String>,
    /// Whether a closed PR was merged.
    pub merged: Option<bool>,
    /// `sender.login`.
    pub sender: Option<String>,
}

fn s(v: &Value, path: &[&str]) -> Option<String> {
    get(v, path).and_then(Value::as_str).map(str::to_string)
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.get(*k))
}

/// The numbers of a check's `pull_requests[]`.
fn pr_numbers(v: Option<&Value>) -> Vec<i64> {
    let items = v
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    items
        .iter()
        .filter_map(|p| p.get("number")?.as_i64())
        .collect()
}

impl GithubEvent {
    /// Parses a delivery body for event `event` (the `X-GitHub-Event` header).
    ///
    /// # Errors
    /// `Malformed` when the body is not a JSON object.
    pub fn parse(event: &str, delivery_id: &str, body: &[u8]) -> Result<Self, EventError> {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| EventError::Malformed(e.to_string()))?;
        if !v.is_object() {
            return Err(EventError::Malformed("expected an object".into()));
        }
        let kind = GithubEventKind::from_header(event);
        let mut ev = GithubEvent {
            delivery_id: delivery_id.to_string(),
            kind,
            action: s(&v, &["action"]),
            repo: s(&v, &["repository", "full_name"]),
            prs: Vec::new(),
            head_branches: Vec::new(),
            head_sha: None,
            conclusion: None,
            review_state: None,
            merged: None,
            sender: s(&v, &["sender", "login"]),
        };
        match kind {
            GithubEventKind::PullRequest
            | GithubEventKind::PullRequestReview
            | GithubEventKind::PullRequestReviewComment => {
                ev.prs = get(&v, &["pull_request", "number"])
                    .or_else(|| v.get("number"))
                    .and_then(Value::as_i64)
                    .into_iter()
                    .collect();
                ev.head_branches = s(&v, &["pull_request", "head", "ref"])
                    .into_iter()
                    .collect();
                ev.head_sha = s(&v, &["pull_request", "head", "sha"]);
                ev.merged = get(&v, &["pull_request", "merged"]).and_then(Value::as_bool);
                ev.review_state = s(&v, &["review", "state"]);
            }
            GithubEventKind::IssueComment | GithubEventKind::Issues => {
                if get(&v, &["issue", "pull_request"]).is_some() {
                    ev.prs = get(&v, &["issue", "number"])
                        .and_then(Value::as_i64)
                        .into_iter()
                        .collect();
                }
            }
            GithubEventKind::CheckRun => {
                ev.prs = pr_numbers(get(&v, &["check_run", "pull_requests"]));
                ev.head_branches = s(&v, &["check_run", "check_suite", "head_branch"])
                    .into_iter()
                    .collect();
                ev.head_sha = s(&v, &["check_run", "head_sha"]);
                ev.conclusion = s(&v, &["check_run", "conclusion"]);
            }
            GithubEventKind::CheckSuite => {
                ev.prs = pr_numbers(get(&v, &["check_suite", "pull_requests"]));
                ev.head_branches = s(&v, &["check_suite", "head_branch"]).into_iter().collect();
                ev.head_sha = s(&v, &["check_suite", "head_sha"]);
                ev.conclusion = s(&v, &["check_suite", "conclusion"]);
            }
            GithubEventKind::WorkflowRun => {
                ev.prs = pr_numbers(get(&v, &["workflow_run", "pull_requests"]));
                ev.head_branches = s(&v, &["workflow_run", "head_branch"])
                    .into_iter()
                    .collect();
                ev.head_sha = s(&v, &["workflow_run", "head_sha"]);
                ev.conclusion = s(&v, &["workflow_run", "conclusion"]);
            }
            GithubEventKind::Status => {
                // `status` names the repo in `name`, and has no `repository.full_name` in
                // some older payloads.
                ev.repo = ev.repo.or_else(|| s(&v, &["name"]));
                ev.head_sha = s(&v, &["sha"]);
                ev.conclusion = s(&v, &["state"]);
                let branches = get(&v, &["branches"]).and_then(Value::as_array);
                ev.head_branches = branches
                    .map(Vec::as_slice)
                    .unwrap_or(&[])
                    .iter()
                    .filter_map(|b| Some(b.get("name")?.as_str()?.to_string()))
                    .collect();
            }
            GithubEventKind::Push => {
                ev.head_sha = s(&v, &["after"]);
                ev.head_branches = s(&v, &["ref"])
                    .map(|r| r.trim_start_matches("refs/heads/").to_string())
                    .into_iter()
                    .collect();
            }
            GithubEventKind::Ping | GithubEventKind::Other => {}
        }
        Ok(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_official_signature_vector_verifies() {
        let secret = b"It's a Secret to Everybody";
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(verify_signature(secret, b"Hello, World!", Some(header)));
        assert_eq!(sign(secret, b"Hello, World!"), header);
        assert!(!verify_signature(secret, b"Hello, World?", Some(header)));
        assert!(!verify_signature(secret, b"Hello, World!", None));
        assert!(!verify_signature(
            secret,
            b"Hello, World!",
            Some("sha256=zz")
        ));
        assert!(!verify_signature(b"", b"Hello, World!", Some(header)));
        assert!(!verify_signature(
            secret,
            b"Hello, World!",
            Some(header.trim_start_matches("sha256="))
        ));
    }

    #[test]
    fn github_pull_request_event_is_reduced_to_routing_fields() {
        let body = br#"{"action":"synchronize","number":7,"before":"a","after":"b",
            "pull_request":{"number":7,"head":{"ref":"feat/x","sha":"b"},"merged":false},
            "repository":{"full_name":"acme/widgets"},"sender":{"login":"bot"}}"#;
        let e = GithubEvent::parse("pull_request", "d1", body).expect("parses");
        assert_eq!(e.kind, GithubEventKind::PullRequest);
        assert_eq!(e.action.as_deref(), Some("synchronize"));
        assert_eq!(e.repo.as_deref(), Some("acme/widgets"));
        assert_eq!(e.prs, [7]);
        assert_eq!(e.head_branches, ["feat/x"]);
        assert_eq!(e.head_sha.as_deref(), Some("b"));
    }

    #[test]
    fn github_check_run_status_and_comment_events_parse() {
        let cr = br#"{"action":"completed","check_run":{"name":"ci","head_sha":"s",
            "conclusion":"failure","check_suite":{"head_branch":"feat/x"},
            "pull_requests":[{"number":3},{"number":4}]},"repository":{"full_name":"a/b"}}"#;
        let e = GithubEvent::parse("check_run", "d", cr).expect("parses");
        assert_eq!(
            (e.prs, e.conclusion.as_deref(), e.head_branches),
            (vec![3, 4], Some("failure"), vec!["feat/x".to_string()])
        );
        let st = br#"{"sha":"s","name":"a/b","state":"error","branches":[{"name":"main"},{"name":"f"}]}"#;
        let e = GithubEvent::parse("status", "d", st).expect("parses");
        assert_eq!(e.repo.as_deref(), Some("a/b"));
        assert_eq!(
            e.head_branches,
            ["main", "f"],
            "every branch the commit is on"
        );
        assert_eq!(e.conclusion.as_deref(), Some("error"));
        let ic = br#"{"action":"created","issue":{"number":9,"pull_request":{}},"comment":{}}"#;
        assert_eq!(
            GithubEvent::parse("issue_comment", "d", ic)
                .expect("parses")
                .prs,
            [9]
        );
        let plain = br#"{"action":"created","issue":{"number":9},"comment":{}}"#;
        assert_eq!(
            GithubEvent::parse("issue_comment", "d", plain)
                .expect("parses")
                .prs,
            Vec::<i64>::new()
        );
    }

    #[test]
    fn github_malformed_bodies_are_rejected() {
        assert!(GithubEvent::parse("pull_request", "d", b"{nope").is_err());
        assert!(GithubEvent::parse("pull_request", "d", b"[1]").is_err());
    }
}
