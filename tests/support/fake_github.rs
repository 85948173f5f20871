//! A faithful, stateful fake of the parts of GitHub Flotilla uses (wire-formats §1), for tests.
//!
//! - Repositories are **real bare git repositories** (in a temp dir); a PR's head and base are
//!   branches in it. `mergeable` comes from `git merge-tree --write-tree`, "behind" from
//!   `git merge-base --is-ancestor`, and a merge (merge | squash | rebase) really moves the
//!   base branch. 405 when not mergeable, 409 when `sha` is given and the head moved.
//! - REST: pulls (list/get/create/merge), reviews, review comments, issues and issue
//!   comments (with `PATCH …/issues/comments/{id}` edits), check runs, combined status and statuses, workflow jobs and job logs (302 to a
//!   plain-text log), `GET /rate_limit`.
//! - GraphQL subset: `repository(owner, name) { alias: pullRequest(number: N) {…} … }` and
//!   `rateLimit { cost remaining resetAt }`; every PR field of the subset is always returned,
//!   but the roll-up's `contexts` connection is paged as asked (`first` ≤ 100 required,
//!   `after` cursors, `totalCount`, `pageInfo`). The combined status pages its `statuses`.
//! - Mergeability can be "still computing" for a while (`mergeable: null`, `UNKNOWN`).
//! - ETags are a hash of the body: `If-None-Match` with an unchanged one answers 304, which
//!   costs no quota. `x-ratelimit-*` on every answer; forced primary/secondary limits for the
//!   next N requests (a primary limit on GraphQL is a 200 with a `RATE_LIMITED` error); `Link` pagination with `per_page`/`page`.
//! - Signed webhooks (`X-Hub-Signature-256`) to a configured URL on every state change, and
//!   redelivery of a past delivery with the same id.
//! - Every request is counted by kind (`GET /repos/{owner}/{repo}/pulls`, `graphql`) and status.
//!
//! Admin helpers are plain Rust methods (not HTTP) so they never show up in the counts.
//! Timestamps come from a logical clock that ticks on every change, so an ETag always moves
//! when something changed, even within one second: a tick is a second from the moment the
//! test process first read the clock, and a change never ticks behind the wall clock (so a
//! `since` a client computes from its own clock selects what was written after it).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::fake_server::{FakeServer, Seen};

/// A forced rate-limit answer for the next requests.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    /// `x-ratelimit-remaining: 0` and the reset time: 403 on REST, 200 with a `RATE_LIMITED`
    /// error on GraphQL.
    Primary,
    /// `status` (403 or 429) with `retry-after: secs`.
    Secondary {
        /// 403 or 429.
        status: u16,
        /// Seconds in `retry-after`.
        retry_after: u64,
    },
    /// `status` (403 or 429) naming a secondary limit without `retry-after` (and with budget
    /// left): GitHub then asks for at least a minute, exponentially more while it goes on.
    /// The fake counts requests inside that minute as early.
    SecondaryUnannounced {
        /// 403 or 429.
        status: u16,
    },
}

/// Merge methods the fake implements for real.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// A merge commit.
    Merge,
    /// One squashed commit.
    Squash,
    /// Commits replayed onto the base.
    Rebase,
}

/// A webhook delivery the fake made.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `X-GitHub-Delivery`.
    pub id: String,
    /// `X-GitHub-Event`.
    pub event: String,
    /// The raw body.
    pub body: String,
    /// The receiver's answer (0 when unreachable).
    pub status: u16,
}

#[derive(Debug, Clone)]
struct Pr {
    number: i64,
    title: String,
    body: String,
    head: String,
    base: String,
    draft: bool,
    state: &'static str,
    merged: bool,
    merge_commit_sha: Option<String>,
    /// Head sha when closed or merged (the branch may move or vanish later).
    closed_head_sha: Option<String>,
    updated: u64,
    author: String,
}

#[derive(Debug, Clone)]
struct Comment {
    id: i64,
    number: i64,
    body: String,
    user: String,
    at: u64,
}

#[derive(Debug, Clone)]
struct Review {
    id: i64,
    number: i64,
    user: String,
    body: String,
    state: &'static str,
    commit_id: String,
    at: u64,
}

#[derive(Debug, Clone)]
struct ReviewComment {
    id: i64,
    number: i64,
    review_id: Option<i64>,
    path: String,
    line: i64,
    body: String,
    user: String,
    commit_id: String,
    in_reply_to: Option<i64>,
    at: u64,
}

#[derive(Debug, Clone)]
struct CheckRun {
    id: i64,
    name: String,
    head_sha: String,
    status: &'static str,
    conclusion: Option<String>,
    summary: String,
    log: Option<String>,
    run_id: i64,
    at: u64,
}

#[derive(Debug, Clone)]
struct Status {
    id: i64,
    sha: String,
    context: String,
    state: String,
    target_url: Option<String>,
    description: Option<String>,
    at: u64,
}

#[derive(Debug, Default)]
struct Repo {
    prs: BTreeMap<i64, Pr>,
    issues: BTreeMap<i64, (String, String, &'static str)>,
    /// Labels on each issue, in the order they were added.
    issue_labels: BTreeMap<i64, Vec<String>>,
    /// Assignees (logins) of each issue.
    issue_assignees: BTreeMap<i64, Vec<String>>,
    next_number: i64,
    comments: Vec<Comment>,
    reviews: Vec<Review>,
    review_comments: Vec<ReviewComment>,
    resolved_threads: Vec<i64>,
    check_runs: Vec<CheckRun>,
    statuses: Vec<Status>,
    /// Branch protection requires an approving review (`reviewDecision: REVIEW_REQUIRED`).
    require_review: bool,
}

struct State {
    base_url: String,
    token: String,
    root: PathBuf,
    repos: BTreeMap<String, Repo>,
    next_id: i64,
    clock: u64,
    hook: Option<(String, String)>,
    deliveries: Vec<Delivery>,
    counts: BTreeMap<(String, u16), u64>,
    forced: Option<(Limit, u32)>,
    /// A secondary limit was answered: until then (on `now`) GitHub keeps refusing (and
    /// counts it).
    limited_until: Option<(chrono::DateTime<chrono::Utc>, Limit)>,
    /// The time `retry-after` windows are kept on: the wall clock, or the app's clock under
    /// test ([`FakeGithub::use_clock`]) so a test that moves it sees what the app waited.
    now: flotilla::clock::Clock,
    /// Requests that arrived inside a `retry-after` window (a client that did not wait).
    early: u64,
    core_remaining: i64,
    graphql_remaining: i64,
    reset: i64,
    /// Webhooks queued by mutations while the lock is held; sent after it is released.
    queued: Vec<(String, Value)>,
    /// Merge checks by (repo, base sha, head sha): a pair of commits merges the same way
    /// forever, and GitHub caches mergeability too (it would cost two git runs per read).
    merges: std::sync::Mutex<HashMap<MergePair, (bool, bool)>>,
    /// PRs whose mergeability GitHub is still computing, until when (`mergeable: null`,
    /// `UNKNOWN`); GitHub sends no webhook when it settles.
    computing: HashMap<(String, i64), std::time::Instant>,
    /// Repos whose merges a rule refuses, with GitHub's status and message.
    refusals: HashMap<String, (u16, String)>,
}

/// (repo, base sha, head sha).
type MergePair = (String, String, String);

const RATE_LIMIT: i64 = 5000;

/// The fake GitHub server. Start with [`FakeGithub::start`] inside an actix system.
pub struct FakeGithub {
    /// `http://127.0.0.1:PORT` (REST base; GraphQL is `{url}/graphql`).
    pub url: String,
    /// The token requests must carry (`Authorization: Bearer …`).
    pub token: String,
    state: Arc<Mutex<State>>,
    /// The server (stopped on drop).
    server: FakeServer,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "fake")
        .env("GIT_AUTHOR_EMAIL", "fake@example.com")
        .env("GIT_COMMITTER_NAME", "fake")
        .env("GIT_COMMITTER_EMAIL", "fake@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "git {args:?} ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// The instant of tick 0: the whole second the process first read the fake's clock.
fn base() -> chrono::DateTime<chrono::Utc> {
    static BASE: std::sync::OnceLock<chrono::DateTime<chrono::Utc>> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        let now = chrono::Utc::now();
        now - chrono::Duration::nanoseconds(i64::from(chrono::Timelike::nanosecond(&now)))
    })
}

fn iso(t: u64) -> String {
    (base() + chrono::Duration::seconds(t as i64))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A label object as the REST API and webhooks give it.
fn label_json(base: &str, repo: &str, name: &str) -> Value {
    json!({"id": 1000 + name.len() as i64, "node_id": "LA_kwDOfake", "name": name,
           "url": format!("{base}/repos/{repo}/labels/{}", encode_segment(name)),
           "color": "ededed", "default": false, "description": Value::Null})
}

fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn decode_segment(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Adds `labels` to issue `n` (those it lacks), queueing one `issues` `labeled` delivery
/// per added label as GitHub does; `None` for an unknown issue.
fn add_labels(s: &mut State, repo: &str, n: i64, labels: &[String]) -> Option<Vec<Value>> {
    if !s.repos.get(repo)?.issues.contains_key(&n) {
        return None;
    }
    for l in labels {
        let on = s.repos.get_mut(repo)?.issue_labels.entry(n).or_default();
        if on.iter().any(|x| x.eq_ignore_ascii_case(l)) {
            continue;
        }
        on.push(l.clone());
        let issue = s.issue_json(repo, n)?;
        let label = label_json(&s.base_url, repo, l);
        queue(
            s,
            repo,
            "issues",
            json!({"action": "labeled", "issue": issue, "label": label}),
        );
    }
    let base = s.base_url.clone();
    Some(
        s.repos[repo]
            .issue_labels
            .get(&n)
            .into_iter()
            .flatten()
            .map(|l| label_json(&base, repo, l))
            .collect(),
    )
}

/// Removes `label` from issue `n`: `Err(404)` when the issue is unknown or lacks the label
/// ("Label does not exist"); otherwise the remaining labels and an `unlabeled` delivery.
fn remove_label(s: &mut State, repo: &str, n: i64, label: &str) -> Result<Vec<Value>, Answer> {
    let gone = || Answer::msg(404, "Label does not exist");
    let r = s.repos.get_mut(repo).ok_or_else(gone)?;
    if !r.issues.contains_key(&n) {
        return Err(Answer::msg(404, "Not Found"));
    }
    let on = r.issue_labels.entry(n).or_default();
    let i = on
        .iter()
        .position(|x| x.eq_ignore_ascii_case(label))
        .ok_or_else(gone)?;
    let removed = on.remove(i);
    let issue = s.issue_json(repo, n).ok_or_else(gone)?;
    let l = label_json(&s.base_url, repo, &removed);
    queue(
        s,
        repo,
        "issues",
        json!({"action": "unlabeled", "issue": issue, "label": l}),
    );
    let base = s.base_url.clone();
    Ok(s.repos[repo]
        .issue_labels
        .get(&n)
        .into_iter()
        .flatten()
        .map(|l| label_json(&base, repo, l))
        .collect())
}

fn user(login: &str) -> Value {
    json!({"login": login, "id": 1, "type": if login.ends_with("[bot]") { "Bot" } else { "User" }})
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What a handler answers before ETag, rate-limit and counting are applied.
struct Answer {
    status: u16,
    body: Value,
    headers: Vec<(String, String)>,
    text: Option<String>,
}

impl Answer {
    fn ok(body: Value) -> Self {
        Self::with(200, body)
    }
    fn with(status: u16, body: Value) -> Self {
        Answer {
            status,
            body,
            headers: vec![],
            text: None,
        }
    }
    fn msg(status: u16, m: &str) -> Self {
        Self::with(
            status,
            json!({"message": m, "documentation_url": "https://docs.github.com/rest", "status": status.to_string()}),
        )
    }
}

impl State {
    /// The next tick: one past the last, and never behind the wall clock.
    fn tick(&mut self) -> u64 {
        let wall = u64::try_from((chrono::Utc::now() - base()).num_seconds()).unwrap_or(0);
        self.clock = (self.clock + 1).max(wall);
        self.clock
    }
    fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }
    fn bare(&self, repo: &str) -> PathBuf {
        self.root.join("bare").join(format!("{repo}.git"))
    }
    fn work(&self, repo: &str) -> PathBuf {
        self.root.join("work").join(repo)
    }
    /// The branch's commit, read from the bare repository's ref files as git itself does
    /// (a loose ref, else `packed-refs`): no subprocess on every API read.
    fn sha(&self, repo: &str, branch: &str) -> Option<String> {
        let bare = self.bare(repo);
        let name = format!("refs/heads/{branch}");
        let valid = |s: &str| s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if let Ok(loose) = std::fs::read_to_string(bare.join(&name)) {
            let loose = loose.trim();
            if valid(loose) {
                return Some(loose.to_string());
            }
        }
        let packed = std::fs::read_to_string(bare.join("packed-refs")).unwrap_or_default();
        packed.lines().find_map(|l| {
            let (sha, r) = l.split_once(' ')?;
            (r == name && valid(sha)).then(|| sha.to_string())
        })
    }
    fn repo_json(&self, repo: &str) -> Value {
        let (owner, name) = repo.split_once('/').unwrap_or((repo, repo));
        json!({"id": 1, "name": name, "full_name": repo, "owner": user(owner), "private": false,
               "html_url": format!("{}/{repo}", self.base_url), "default_branch": "main",
               "clone_url": format!("file://{}", self.bare(repo).display())})
    }
    fn head_sha(&self, repo: &str, pr: &Pr) -> String {
        pr.closed_head_sha
            .clone()
            .or_else(|| self.sha(repo, &pr.head))
            .unwrap_or_default()
    }
    /// (mergeable, conflicts, behind) from real git.
    fn merge_check(&self, repo: &str, pr: &Pr) -> (Option<bool>, bool, bool) {
        if pr.state != "open" {
            return (None, false, false);
        }
        let key = (repo.to_string(), pr.number);
        if self
            .computing
            .get(&key)
            .is_some_and(|until| std::time::Instant::now() < *until)
        {
            return (None, false, false);
        }
        let dir = self.bare(repo);
        let (Some(b), Some(h)) = (self.sha(repo, &pr.base), self.sha(repo, &pr.head)) else {
            return (Some(false), true, false);
        };
        let key = (repo.to_string(), b.clone(), h.clone());
        let cached = self.merges.lock().ok().and_then(|m| m.get(&key).copied());
        let (clean, behind) = cached.unwrap_or_else(|| {
            let clean = git(&dir, &["merge-tree", "--write-tree", &b, &h]).is_ok();
            let behind = git(&dir, &["merge-base", "--is-ancestor", &b, &h]).is_err();
            if let Ok(mut m) = self.merges.lock() {
                m.insert(key, (clean, behind));
            }
            (clean, behind)
        });
        (Some(clean), !clean, behind)
    }
    fn latest_checks(&self, repo: &str, sha: &str) -> Vec<CheckRun> {
        let mut by_name: BTreeMap<String, CheckRun> = BTreeMap::new();
        for c in self.repos[repo]
            .check_runs
            .iter()
            .filter(|c| c.head_sha == sha)
        {
            by_name.insert(c.name.clone(), c.clone());
        }
        by_name.into_values().collect()
    }
    fn latest_statuses(&self, repo: &str, sha: &str) -> Vec<Status> {
        let mut by_ctx: BTreeMap<String, Status> = BTreeMap::new();
        for s in self.repos[repo].statuses.iter().filter(|s| s.sha == sha) {
            by_ctx.insert(s.context.clone(), s.clone());
        }
        by_ctx.into_values().collect()
    }
    /// `SUCCESS`/`FAILURE`/`PENDING`, or `None` when there is nothing.
    fn rollup(&self, repo: &str, sha: &str) -> Option<&'static str> {
        let checks = self.latest_checks(repo, sha);
        let statuses = self.latest_statuses(repo, sha);
        if checks.is_empty() && statuses.is_empty() {
            return None;
        }
        let failed = checks.iter().any(|c| {
            matches!(
                c.conclusion.as_deref(),
                Some("failure" | "timed_out" | "cancelled" | "action_required" | "startup_failure")
            )
        }) || statuses
            .iter()
            .any(|s| s.state == "failure" || s.state == "error");
        let pending = checks.iter().any(|c| c.status != "completed")
            || statuses.iter().any(|s| s.state == "pending");
        Some(if failed {
            "FAILURE"
        } else if pending {
            "PENDING"
        } else {
            "SUCCESS"
        })
    }
    fn review_decision(&self, repo: &str, number: i64) -> Option<&'static str> {
        let mut latest: BTreeMap<&str, &str> = BTreeMap::new();
        for r in self.repos[repo]
            .reviews
            .iter()
            .filter(|r| r.number == number)
        {
            if r.state == "APPROVED" || r.state == "CHANGES_REQUESTED" || r.state == "DISMISSED" {
                latest.insert(&r.user, r.state);
            }
        }
        if latest.values().any(|s| *s == "CHANGES_REQUESTED") {
            Some("CHANGES_REQUESTED")
        } else if latest.values().any(|s| *s == "APPROVED") {
            Some("APPROVED")
        } else if self.repos[repo].require_review {
            Some("REVIEW_REQUIRED")
        } else {
            None
        }
    }
    fn merge_state(&self, repo: &str, pr: &Pr) -> &'static str {
        if pr.state != "open" {
            return "unknown";
        }
        if pr.draft {
            return "draft";
        }
        let (mergeable, conflicts, behind) = self.merge_check(repo, pr);
        let sha = self.head_sha(repo, pr);
        if mergeable.is_none() {
            "unknown"
        } else if conflicts {
            "dirty"
        } else if self.review_decision(repo, pr.number) == Some("CHANGES_REQUESTED") {
            "blocked"
        } else if behind {
            "behind"
        } else if matches!(self.rollup(repo, &sha), Some("FAILURE" | "PENDING")) {
            "unstable"
        } else {
            "clean"
        }
    }
    fn pr_json(&self, repo: &str, pr: &Pr, full: bool) -> Value {
        let (owner, _) = repo.split_once('/').unwrap_or((repo, repo));
        let head_sha = self.head_sha(repo, pr);
        let base_sha = self.sha(repo, &pr.base).unwrap_or_default();
        let mut v = json!({
            "url": format!("{}/repos/{repo}/pulls/{}", self.base_url, pr.number),
            "id": 1000 + pr.number, "node_id": format!("PR_{}", pr.number), "number": pr.number,
            "html_url": format!("{}/{repo}/pull/{}", self.base_url, pr.number),
            "state": pr.state, "locked": false, "title": pr.title, "body": pr.body,
            "user": user(&pr.author), "draft": pr.draft, "labels": [], "requested_reviewers": [],
            "created_at": iso(0), "updated_at": iso(pr.updated),
            "closed_at": if pr.state == "closed" { json!(iso(pr.updated)) } else { Value::Null },
            "merged_at": if pr.merged { json!(iso(pr.updated)) } else { Value::Null },
            "merge_commit_sha": pr.merge_commit_sha,
            "head": {"label": format!("{owner}:{}", pr.head), "ref": pr.head, "sha": head_sha,
                     "user": user(owner), "repo": self.repo_json(repo)},
            "base": {"label": format!("{owner}:{}", pr.base), "ref": pr.base, "sha": base_sha,
                     "user": user(owner), "repo": self.repo_json(repo)},
            "auto_merge": Value::Null,
        });
        if full {
            let (mergeable, _, _) = self.merge_check(repo, pr);
            v["merged"] = json!(pr.merged);
            v["mergeable"] = json!(mergeable);
            v["rebaseable"] = json!(mergeable);
            v["mergeable_state"] = json!(self.merge_state(repo, pr));
            v["merged_by"] = if pr.merged {
                user("merger")
            } else {
                Value::Null
            };
            v["comments"] = json!(self.repos[repo]
                .comments
                .iter()
                .filter(|c| c.number == pr.number)
                .count());
            v["commits"] = json!(1);
        }
        v
    }
    fn check_json(&self, repo: &str, c: &CheckRun) -> Value {
        let prs: Vec<Value> = self.repos[repo]
            .prs
            .values()
            .filter(|p| p.state == "open" && self.head_sha(repo, p) == c.head_sha)
            .map(|p| json!({"number": p.number, "head": {"ref": p.head, "sha": c.head_sha}, "base": {"ref": p.base}}))
            .collect();
        let branch = self.repos[repo]
            .prs
            .values()
            .find(|p| self.head_sha(repo, p) == c.head_sha)
            .map(|p| p.head.clone());
        json!({
            "id": c.id, "name": c.name, "head_sha": c.head_sha, "status": c.status,
            "conclusion": c.conclusion, "started_at": iso(c.at),
            "completed_at": if c.status == "completed" { json!(iso(c.at)) } else { Value::Null },
            "details_url": format!("{}/{repo}/actions/runs/{}/job/{}", self.base_url, c.run_id, c.id),
            "html_url": format!("{}/{repo}/runs/{}", self.base_url, c.id),
            "output": {"title": c.name, "summary": c.summary, "text": Value::Null},
            "check_suite": {"id": c.run_id, "head_branch": branch, "head_sha": c.head_sha},
            "app": {"slug": "github-actions"}, "pull_requests": prs,
        })
    }
    fn review_comment_json(&self, repo: &str, c: &ReviewComment) -> Value {
        json!({"id": c.id, "pull_request_review_id": c.review_id, "path": c.path,
               "line": c.line, "original_line": c.line, "position": c.line, "side": "RIGHT",
               "commit_id": c.commit_id, "original_commit_id": c.commit_id,
               "user": user(&c.user), "body": c.body, "in_reply_to_id": c.in_reply_to,
               "diff_hunk": "@@ -1 +1 @@", "created_at": iso(c.at), "updated_at": iso(c.at),
               "html_url": format!("{}/{repo}/pull/{}#discussion_r{}", self.base_url, c.number, c.id)})
    }
    fn review_json(&self, repo: &str, r: &Review) -> Value {
        json!({"id": r.id, "user": user(&r.user), "body": r.body, "state": r.state,
               "commit_id": r.commit_id, "submitted_at": iso(r.at), "author_association": "MEMBER",
               "html_url": format!("{}/{repo}/pull/{}#pullrequestreview-{}", self.base_url, r.number, r.id),
               "pull_request_url": format!("{}/repos/{repo}/pulls/{}", self.base_url, r.number)})
    }
    fn comment_json(&self, repo: &str, c: &Comment) -> Value {
        json!({"id": c.id, "body": c.body, "user": user(&c.user), "created_at": iso(c.at),
               "updated_at": iso(c.at), "author_association": "MEMBER",
               "performed_via_github_app": Value::Null,
               "html_url": format!("{}/{repo}/pull/{}#issuecomment-{}", self.base_url, c.number, c.id),
               "issue_url": format!("{}/repos/{repo}/issues/{}", self.base_url, c.number)})
    }
    fn issue_json(&self, repo: &str, number: i64) -> Option<Value> {
        let r = &self.repos[repo];
        if let Some(p) = r.prs.get(&number) {
            return Some(
                json!({"number": number, "title": p.title, "body": p.body, "state": p.state,
                "user": user(&p.author), "labels": [],
                "html_url": format!("{}/{repo}/pull/{number}", self.base_url),
                "pull_request": {"url": format!("{}/repos/{repo}/pulls/{number}", self.base_url)}}),
            );
        }
        r.issues.get(&number).map(|(t, b, s)| {
            let labels: Vec<Value> = r
                .issue_labels
                .get(&number)
                .into_iter()
                .flatten()
                .map(|l| label_json(&self.base_url, repo, l))
                .collect();
            let assignees: Vec<Value> = r
                .issue_assignees
                .get(&number)
                .into_iter()
                .flatten()
                .map(|a| user(a))
                .collect();
            json!({"number": number, "title": t, "body": b, "state": s, "user": user("octo"),
                   "labels": labels, "assignee": assignees.first().cloned(), "assignees": assignees,
                   "html_url": format!("{}/{repo}/issues/{number}", self.base_url)})
        })
    }
    /// Review threads: each top-level review comment starts one; replies join it.
    fn threads(&self, repo: &str, number: i64) -> Vec<(i64, bool, Vec<ReviewComment>)> {
        let r = &self.repos[repo];
        let mut out: Vec<(i64, bool, Vec<ReviewComment>)> = vec![];
        for c in r.review_comments.iter().filter(|c| c.number == number) {
            match c.in_reply_to {
                None => out.push((c.id, r.resolved_threads.contains(&c.id), vec![c.clone()])),
                Some(root) => {
                    if let Some(t) = out.iter_mut().find(|t| t.0 == root) {
                        t.2.push(c.clone());
                    }
                }
            }
        }
        out
    }
    /// A `PullRequest` node; its roll-up's `contexts` connection is one page as `page` asks.
    fn graphql_pr(&self, repo: &str, pr: &Pr, page: &Page) -> Value {
        let sha = self.head_sha(repo, pr);
        let (mergeable, _, _) = self.merge_check(repo, pr);
        let rollup = self.rollup(repo, &sha).map(|state| {
            let mut nodes: Vec<Value> = self
                .latest_checks(repo, &sha)
                .iter()
                .map(|c| {
                    json!({"__typename": "CheckRun", "name": c.name,
                    "status": c.status.to_uppercase(),
                    "conclusion": c.conclusion.as_ref().map(|s| s.to_uppercase()),
                    "detailsUrl": self.check_json(repo, c)["details_url"]})
                })
                .collect();
            nodes.extend(self.latest_statuses(repo, &sha).iter().map(|s| {
                json!({"__typename": "StatusContext", "context": s.context,
                       "state": s.state.to_uppercase(), "targetUrl": s.target_url})
            }));
            json!({"state": state, "contexts": page.connection(nodes)})
        });
        let threads: Vec<Value> = self
            .threads(repo, pr.number)
            .into_iter()
            .map(|(id, resolved, cs)| {
                json!({"id": format!("T_{id}"), "isResolved": resolved, "path": cs[0].path,
                    "line": cs[0].line,
                    "comments": {"nodes": cs.iter().map(|c| json!({"author": graphql_actor(&c.user),
                        "body": c.body, "url": self.review_comment_json(repo, c)["html_url"]})).collect::<Vec<_>>()}})
            })
            .collect();
        let comments: Vec<Value> = self.repos[repo]
            .comments
            .iter()
            .filter(|c| c.number == pr.number)
            .map(|c| json!({"databaseId": c.id, "body": c.body, "author": graphql_actor(&c.user)}))
            .collect();
        let reviews: Vec<Value> = self.repos[repo]
            .reviews
            .iter()
            .filter(|r| r.number == pr.number)
            .map(|r| json!({"databaseId": r.id, "state": r.state, "body": r.body, "author": graphql_actor(&r.user)}))
            .collect();
        json!({
            "number": pr.number, "title": pr.title,
            "url": format!("{}/{repo}/pull/{}", self.base_url, pr.number),
            "isDraft": pr.draft,
            "state": if pr.merged { "MERGED" } else if pr.state == "open" { "OPEN" } else { "CLOSED" },
            "headRefName": pr.head, "headRefOid": sha, "baseRefName": pr.base,
            "updatedAt": iso(pr.updated),
            "mergeable": match mergeable { Some(true) => "MERGEABLE", Some(false) => "CONFLICTING", None => "UNKNOWN" },
            "mergeStateStatus": self.merge_state(repo, pr).to_uppercase(),
            "reviewDecision": self.review_decision(repo, pr.number),
            "statusCheckRollup": rollup,
            "reviewThreads": {"nodes": threads},
            "author": graphql_actor(&pr.author),
            "comments": {"nodes": last(page.comments, comments)},
            "reviews": {"nodes": last(page.reviews, reviews)},
        })
    }
}

/// A connection's paging arguments (`first`, `after`), as GraphQL clients send them.
#[derive(Debug, Clone, Default)]
struct Page {
    first: Option<usize>,
    after: Option<String>,
    /// `comments(last: N)` and `reviews(last: N)` of the PR's selection.
    comments: usize,
    reviews: usize,
}

/// The last `n` nodes (a `last: N` connection).
fn last(n: usize, mut nodes: Vec<Value>) -> Vec<Value> {
    let skip = nodes.len().saturating_sub(n);
    nodes.drain(..skip);
    nodes
}

/// `N` of `name(last: N)` in a selection (0 when the connection is not asked for).
fn last_arg(selection: &str, name: &str) -> usize {
    selection
        .find(&format!(" {name}(last:"))
        .map(|i| &selection[i + name.len() + 7..])
        .and_then(|rest| {
            rest.trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
        .min(100)
}

impl Page {
    /// Reads `contexts(first: N, after: X)` from a PR's selection (literals or `$variables`).
    fn parse(selection: &str, vars: &Value) -> Result<Page, String> {
        let remarks = Page {
            comments: last_arg(selection, "comments"),
            reviews: last_arg(selection, "reviews"),
            ..Page::default()
        };
        let Some(i) = selection.find("contexts(") else {
            return Ok(remarks);
        };
        let args = &selection[i + "contexts(".len()..];
        let args = &args[..args.find(')').unwrap_or(args.len())];
        let mut page = remarks;
        for part in args.split(',') {
            let Some((k, v)) = part.split_once(':') else {
                continue;
            };
            let v = v.trim();
            let value = match v.strip_prefix('$') {
                Some(var) => vars[var.trim()].clone(),
                None => serde_json::from_str(v).unwrap_or(Value::Null),
            };
            match k.trim() {
                "first" => page.first = value.as_u64().map(|n| n as usize),
                "after" => page.after = value.as_str().map(str::to_string),
                _ => {}
            }
        }
        match page.first {
            None => Err("You must provide a `first` or `last` value to properly paginate the `contexts` connection.".into()),
            Some(n) if n > 100 => Err(format!("Requesting {n} records on the `contexts` connection exceeds the `first` limit of 100 records.")),
            _ => Ok(page),
        }
    }

    /// One page of `nodes` with `totalCount` and `pageInfo` (opaque cursors).
    fn connection(&self, nodes: Vec<Value>) -> Value {
        let total = nodes.len();
        let start = self
            .after
            .as_deref()
            .and_then(|c| hex::decode(c).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|c| c.strip_prefix("cursor:")?.parse::<usize>().ok())
            .map_or(0, |n| n + 1);
        let first = self.first.unwrap_or(100);
        let slice: Vec<Value> = nodes.into_iter().skip(start).take(first).collect();
        let end = start + slice.len();
        let cursor = |n: usize| hex::encode(format!("cursor:{n}"));
        json!({"totalCount": total, "nodes": slice, "pageInfo": {
            "hasNextPage": end < total, "hasPreviousPage": start > 0,
            "startCursor": (end > start).then(|| cursor(start)),
            "endCursor": (end > start).then(|| cursor(end - 1))}})
    }
}

fn paginate(
    items: Vec<Value>,
    q: &HashMap<String, String>,
    req: &HttpRequest,
    base: &str,
) -> Answer {
    let per_page = q
        .get("per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page = q
        .get("page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let last = items.len().div_ceil(per_page).max(1);
    let slice: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let mut a = Answer::ok(Value::Array(slice));
    if last > 1 {
        let link = |p: usize, rel: &str| {
            let mut q2: BTreeMap<String, String> =
                q.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            q2.insert("page".into(), p.to_string());
            q2.insert("per_page".into(), per_page.to_string());
            let qs = q2
                .iter()
                .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
                .collect::<Vec<_>>()
                .join("&");
            format!("<{base}{}?{qs}>; rel=\"{rel}\"", req.path())
        };
        let mut parts = vec![];
        if page > 1 {
            parts.push(link(page - 1, "prev"));
        }
        if page < last {
            parts.push(link(page + 1, "next"));
        }
        parts.push(link(last, "last"));
        parts.push(link(1, "first"));
        a.headers.push(("link".into(), parts.join(", ")));
    }
    a
}

/// Percent-encodes a query component (everything but unreserved characters).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Matches `path` against the routes; returns the kind (path template) and the captures.
fn route(method: &str, path: &str) -> Option<(String, Vec<String>)> {
    const ROUTES: &[&str] = &[
        "GET /rate_limit",
        "POST /graphql",
        "GET /repos/{owner}/{repo}/pulls",
        "POST /repos/{owner}/{repo}/pulls",
        "GET /repos/{owner}/{repo}/pulls/{number}",
        "PUT /repos/{owner}/{repo}/pulls/{number}/merge",
        "GET /repos/{owner}/{repo}/pulls/{number}/merge",
        "GET /repos/{owner}/{repo}/pulls/{number}/reviews",
        "GET /repos/{owner}/{repo}/pulls/{number}/comments",
        "GET /repos/{owner}/{repo}/issues",
        "GET /repos/{owner}/{repo}/issues/{number}",
        "GET /repos/{owner}/{repo}/issues/{number}/comments",
        "POST /repos/{owner}/{repo}/issues/{number}/labels",
        "DELETE /repos/{owner}/{repo}/issues/{number}/labels/{name}",
        "POST /repos/{owner}/{repo}/issues/{number}/comments",
        "GET /repos/{owner}/{repo}/commits/{ref}/check-runs",
        "GET /repos/{owner}/{repo}/commits/{ref}/status",
        "POST /repos/{owner}/{repo}/statuses/{sha}",
        "GET /repos/{owner}/{repo}/actions/runs/{run_id}/jobs",
        "GET /repos/{owner}/{repo}/actions/jobs/{job_id}/logs",
        "GET /_logs/{job_id}",
        // Chat bridge: streamed replies edit their comment ("Update an issue comment").
        "PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}",
    ];
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    for r in ROUTES {
        let (m, tpl) = r.split_once(' ')?;
        if m != method {
            continue;
        }
        let t: Vec<&str> = tpl.trim_matches('/').split('/').collect();
        // `{ref}` may contain slashes (`heads/feat/x`): let it absorb the extra segments.
        if t.len() > segs.len() || (t.len() < segs.len() && !tpl.contains("{ref}")) {
            continue;
        }
        let extra = segs.len() - t.len();
        let mut caps = vec![];
        let mut i = 0;
        let mut ok = true;
        for ts in &t {
            if *ts == "{ref}" {
                caps.push(segs[i..=i + extra].join("/"));
                i += extra + 1;
            } else if ts.starts_with('{') {
                caps.push(segs[i].to_string());
                i += 1;
            } else if *ts == segs[i] {
                i += 1;
            } else {
                ok = false;
                break;
            }
        }
        if ok && i == segs.len() {
            return Some((r.to_string(), caps));
        }
    }
    None
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

async fn dispatch(req: HttpRequest, body: web::Bytes, st: web::Data<Shared>) -> HttpResponse {
    let method = req.method().as_str().to_string();
    let q: HashMap<String, String> =
        web::Query::<HashMap<String, String>>::from_query(req.query_string())
            .map(|q| q.into_inner())
            .unwrap_or_default();
    let (kind, caps) =
        route(&method, req.path()).unwrap_or_else(|| (format!("{method} (unknown)"), vec![]));
    let (hooks, resp) = {
        let mut s = lock(&st);
        let resource = if kind == "POST /graphql" {
            "graphql"
        } else {
            "core"
        };
        let early = s
            .limited_until
            .filter(|(until, _)| s.now.now() < *until)
            .map(|(_, l)| l);
        if early.is_some() {
            s.early += 1;
        }
        let forced = early.map(|l| (l, 1)).or(s.forced.filter(|(_, n)| *n > 0));
        let mut a = if kind == "GET /_logs/{job_id}" {
            handle(&mut s, &kind, &caps, &q, &body, &req)
        } else if let Some((limit, n)) = forced {
            if early.is_none() {
                s.forced = if n > 1 { Some((limit, n - 1)) } else { None };
                let window = match limit {
                    Limit::Secondary { retry_after, .. } => Some(retry_after),
                    Limit::SecondaryUnannounced { .. } => Some(60),
                    Limit::Primary => None,
                };
                if let Some(secs) = window {
                    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
                    let until = s.now.now() + chrono::Duration::seconds(secs);
                    s.limited_until = Some((until, limit));
                }
            }
            match limit {
                // REST answers 403; GraphQL answers 200 with the error in `errors` ("Rate
                // limits and node limits for the GraphQL API"). Both say remaining 0.
                Limit::Primary if resource == "graphql" => {
                    let mut a = Answer::ok(json!({"errors": [{"type": "RATE_LIMITED",
                        "code": "graphql_rate_limit",
                        "message": "API rate limit already exceeded for user ID 1."}]}));
                    a.headers.push(("x-ratelimit-remaining".into(), "0".into()));
                    a
                }
                Limit::Primary => {
                    let mut a = Answer::msg(403, "API rate limit exceeded for user ID 1.");
                    a.headers.push(("x-ratelimit-remaining".into(), "0".into()));
                    a
                }
                Limit::Secondary {
                    status,
                    retry_after,
                } => {
                    let mut a = Answer::msg(
                        status,
                        "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                    );
                    a.headers
                        .push(("retry-after".into(), retry_after.to_string()));
                    a
                }
                Limit::SecondaryUnannounced { status } => Answer::msg(
                    status,
                    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                ),
            }
        } else if req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            != Some(&format!("Bearer {}", s.token))
        {
            Answer::msg(401, "Bad credentials")
        } else {
            handle(&mut s, &kind, &caps, &q, &body, &req)
        };
        // ETags on GETs: a hash of the body; an unchanged one answers 304 for free.
        let mut not_modified = false;
        if method == "GET" && a.status == 200 && a.text.is_none() {
            let etag = format!(
                "W/\"{}\"",
                hex::encode(&Sha256::digest(a.body.to_string().as_bytes())[..16])
            );
            let inm = req
                .headers()
                .get("if-none-match")
                .and_then(|v| v.to_str().ok());
            not_modified = inm.is_some_and(|v| v.trim() == etag);
            a.headers.push(("etag".into(), etag));
        }
        if not_modified {
            a.status = 304;
        }
        let spends = !not_modified
            && forced.is_none()
            && a.status != 401
            && !kind.starts_with("GET /_logs")
            && kind != "GET /rate_limit"
            && !(a.status == 403 || a.status == 429);
        if spends {
            let cost = a
                .headers
                .iter()
                .find(|(k, _)| k == "x-graphql-cost")
                .and_then(|(_, v)| v.parse::<i64>().ok())
                .unwrap_or(1);
            if resource == "graphql" {
                s.graphql_remaining = (s.graphql_remaining - cost).max(0);
            } else {
                s.core_remaining = (s.core_remaining - 1).max(0);
            }
        }
        let remaining = if resource == "graphql" {
            s.graphql_remaining
        } else {
            s.core_remaining
        };
        *s.counts.entry((kind.clone(), a.status)).or_insert(0) += 1;
        let mut b = HttpResponse::build(StatusCode::from_u16(a.status).unwrap_or(StatusCode::OK));
        let has_remaining = a.headers.iter().any(|(k, _)| k == "x-ratelimit-remaining");
        b.insert_header(("x-ratelimit-limit", RATE_LIMIT.to_string()));
        if !has_remaining {
            b.insert_header(("x-ratelimit-remaining", remaining.to_string()));
        }
        b.insert_header(("x-ratelimit-used", (RATE_LIMIT - remaining).to_string()));
        b.insert_header(("x-ratelimit-reset", s.reset.to_string()));
        b.insert_header(("x-ratelimit-resource", resource));
        for (k, v) in &a.headers {
            b.insert_header((k.as_str(), v.as_str()));
        }
        let hooks = std::mem::take(&mut s.queued);
        let resp = if not_modified {
            b.finish()
        } else if let Some(t) = a.text {
            b.content_type("text/plain").body(t)
        } else if a.status == 204 || (300..400).contains(&a.status) {
            b.finish()
        } else {
            b.json(a.body)
        };
        (hooks, resp)
    };
    for h in hooks {
        // Webhooks caused by REST mutations go out after the answer is built, like GitHub's.
        let st = st.get_ref().clone();
        actix_web::rt::spawn(async move {
            deliver(&st, &hook_client(), h).await;
        });
    }
    resp
}

fn handle(
    s: &mut State,
    kind: &str,
    caps: &[String],
    q: &HashMap<String, String>,
    body: &[u8],
    req: &HttpRequest,
) -> Answer {
    let base = s.base_url.clone();
    if kind == "GET /rate_limit" {
        return Answer::ok(json!({"resources": {
            "core": {"limit": RATE_LIMIT, "remaining": s.core_remaining, "reset": s.reset},
            "graphql": {"limit": RATE_LIMIT, "remaining": s.graphql_remaining, "reset": s.reset}}}));
    }
    if kind == "POST /graphql" {
        return graphql(s, body);
    }
    if kind == "GET /_logs/{job_id}" {
        let id: i64 = caps[0].parse().unwrap_or(0);
        let log = s
            .repos
            .values()
            .flat_map(|r| r.check_runs.iter())
            .find(|c| c.id == id)
            .and_then(|c| c.log.clone());
        return match log {
            Some(l) => Answer {
                text: Some(l),
                ..Answer::ok(Value::Null)
            },
            None => Answer::msg(404, "Not Found"),
        };
    }
    let repo = format!("{}/{}", caps[0], caps[1]);
    if !s.repos.contains_key(&repo) {
        return Answer::msg(404, "Not Found");
    }
    let num = || {
        caps.get(2)
            .and_then(|n| n.parse::<i64>().ok())
            .unwrap_or(-1)
    };
    let input: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if kind == "PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}" {
        return update_issue_comment(s, &repo, num(), &input);
    }
    match kind {
        "GET /repos/{owner}/{repo}/pulls" => {
            let state = q.get("state").map(String::as_str).unwrap_or("open");
            let head = q
                .get("head")
                .and_then(|h| h.split_once(':'))
                .map(|(_, b)| b.to_string());
            let mut prs: Vec<&Pr> = s.repos[&repo]
                .prs
                .values()
                .filter(|p| state == "all" || p.state == state)
                .filter(|p| head.as_ref().is_none_or(|h| *h == p.head))
                .filter(|p| q.get("base").is_none_or(|b| *b == p.base))
                .collect();
            if q.get("sort").map(String::as_str) == Some("updated") {
                prs.sort_by_key(|p| p.updated);
            }
            // GitHub's default is newest first (created desc); `direction=asc` reverses.
            if q.get("direction").map(String::as_str) != Some("asc") {
                prs.reverse();
            }
            let items = prs.iter().map(|p| s.pr_json(&repo, p, false)).collect();
            paginate(items, q, req, &base)
        }
        "POST /repos/{owner}/{repo}/pulls" => {
            let (Some(head), Some(b)) = (input["head"].as_str(), input["base"].as_str()) else {
                return Answer::msg(422, "Validation Failed");
            };
            match create_pr(
                s,
                &repo,
                head,
                b,
                input["title"].as_str().unwrap_or(head),
                "agent",
            ) {
                Ok(n) => {
                    let pr = s.repos[&repo].prs[&n].clone();
                    Answer::with(201, s.pr_json(&repo, &pr, true))
                }
                Err(e) => Answer::msg(422, &e),
            }
        }
        "GET /repos/{owner}/{repo}/pulls/{number}" => match s.repos[&repo].prs.get(&num()) {
            Some(p) => Answer::ok(s.pr_json(&repo, &p.clone(), true)),
            None => Answer::msg(404, "Not Found"),
        },
        "GET /repos/{owner}/{repo}/pulls/{number}/merge" => match s.repos[&repo].prs.get(&num()) {
            Some(p) if p.merged => Answer::with(204, Value::Null),
            _ => Answer::msg(404, "Not Found"),
        },
        "PUT /repos/{owner}/{repo}/pulls/{number}/merge" => {
            let method = match input["merge_method"].as_str().unwrap_or("merge") {
                "merge" => Method::Merge,
                "squash" => Method::Squash,
                "rebase" => Method::Rebase,
                _ => return Answer::msg(422, "Invalid merge_method"),
            };
            match merge_pr(s, &repo, num(), method, input["sha"].as_str()) {
                Ok(sha) => Answer::ok(
                    json!({"sha": sha, "merged": true, "message": "Pull Request successfully merged"}),
                ),
                Err((status, m)) => Answer::msg(status, &m),
            }
        }
        "GET /repos/{owner}/{repo}/pulls/{number}/reviews" => {
            let n = num();
            let items = s.repos[&repo]
                .reviews
                .iter()
                .filter(|r| r.number == n)
                .map(|r| s.review_json(&repo, r))
                .collect();
            paginate(items, q, req, &base)
        }
        "GET /repos/{owner}/{repo}/pulls/{number}/comments" => {
            let n = num();
            let items = s.repos[&repo]
                .review_comments
                .iter()
                .filter(|c| c.number == n)
                .map(|c| s.review_comment_json(&repo, c))
                .collect();
            paginate(items, q, req, &base)
        }
        // "List repository issues": open by default, `labels` a comma-separated list that
        // must all match, pull requests included (they carry `pull_request`).
        "GET /repos/{owner}/{repo}/issues" => {
            let state = q.get("state").map(String::as_str).unwrap_or("open");
            let wanted: Vec<String> = q
                .get("labels")
                .map(|l| {
                    l.split(',')
                        .map(|x| x.trim().to_ascii_lowercase())
                        .collect()
                })
                .unwrap_or_default();
            let r = &s.repos[&repo];
            let mut numbers: Vec<i64> = r.issues.keys().chain(r.prs.keys()).copied().collect();
            numbers.sort_unstable_by(|a, b| b.cmp(a));
            let items = numbers
                .into_iter()
                .filter_map(|n| s.issue_json(&repo, n))
                .filter(|i| state == "all" || i["state"] == state)
                .filter(|i| {
                    wanted.iter().all(|w| {
                        i["labels"].as_array().into_iter().flatten().any(|l| {
                            l["name"].as_str().map(str::to_ascii_lowercase).as_ref() == Some(w)
                        })
                    })
                })
                .collect();
            paginate(items, q, req, &base)
        }
        // "Add labels to an issue": `{"labels": [...]}` (or a bare array); 200 with every
        // label the issue now has.
        "POST /repos/{owner}/{repo}/issues/{number}/labels" => {
            let list = input.get("labels").unwrap_or(&input);
            let Some(labels) = list.as_array().map(|ls| {
                ls.iter()
                    .filter_map(|l| l.as_str().map(str::to_string))
                    .collect::<Vec<_>>()
            }) else {
                return Answer::msg(422, "Validation Failed");
            };
            match add_labels(s, &repo, num(), &labels) {
                Some(v) => Answer::ok(json!(v)),
                None => Answer::msg(404, "Not Found"),
            }
        }
        // "Remove a label from an issue": 200 with the remaining labels, 404 when absent.
        "DELETE /repos/{owner}/{repo}/issues/{number}/labels/{name}" => {
            match remove_label(s, &repo, num(), &decode_segment(&caps[3])) {
                Ok(v) => Answer::ok(json!(v)),
                Err(a) => a,
            }
        }
        "GET /repos/{owner}/{repo}/issues/{number}" => match s.issue_json(&repo, num()) {
            Some(v) => Answer::ok(v),
            None => Answer::msg(404, "Not Found"),
        },
        "GET /repos/{owner}/{repo}/issues/{number}/comments" => {
            let n = num();
            // `since`: "only show results that were last updated after the given time"
            // (ISO 8601), compared as the instants they are.
            let since = match q
                .get("since")
                .map(|v| chrono::DateTime::parse_from_rfc3339(v))
            {
                None => None,
                Some(Ok(t)) => Some(t.with_timezone(&chrono::Utc)),
                Some(Err(_)) => return Answer::msg(422, "Validation Failed"),
            };
            let items = s.repos[&repo]
                .comments
                .iter()
                .filter(|c| c.number == n)
                .filter(|c| {
                    since.is_none_or(|t| {
                        chrono::DateTime::parse_from_rfc3339(&iso(c.at)).is_ok_and(|at| at >= t)
                    })
                })
                .map(|c| s.comment_json(&repo, c))
                .collect();
            paginate(items, q, req, &base)
        }
        "POST /repos/{owner}/{repo}/issues/{number}/comments" => {
            let Some(text) = input["body"].as_str() else {
                return Answer::msg(422, "Validation Failed");
            };
            match add_comment(s, &repo, num(), "flotilla[bot]", text) {
                Some(v) => Answer::with(201, v),
                None => Answer::msg(404, "Not Found"),
            }
        }
        "GET /repos/{owner}/{repo}/commits/{ref}/check-runs" => {
            let sha = resolve(s, &repo, &caps[2]);
            let runs: Vec<Value> = s
                .latest_checks(&repo, &sha)
                .iter()
                .map(|c| s.check_json(&repo, c))
                .collect();
            let total = runs.len();
            let mut a = paginate(runs, q, req, &base);
            a.body = json!({"total_count": total, "check_runs": a.body});
            a
        }
        "GET /repos/{owner}/{repo}/commits/{ref}/status" => {
            let sha = resolve(s, &repo, &caps[2]);
            let st = s.latest_statuses(&repo, &sha);
            let state = if st
                .iter()
                .any(|x| x.state == "error" || x.state == "failure")
            {
                "failure"
            } else if st.is_empty() || st.iter().any(|x| x.state == "pending") {
                "pending"
            } else {
                "success"
            };
            let statuses: Vec<Value> = st.iter().map(|x| json!({"id": x.id, "context": x.context, "state": x.state,
                "target_url": x.target_url, "description": x.description, "created_at": iso(x.at), "updated_at": iso(x.at)})).collect();
            // `statuses` is paged like any list (30 by default, at most 100); the state and
            // `total_count` cover them all.
            let total = statuses.len();
            let mut a = paginate(statuses, q, req, &base);
            a.body = json!({"state": state, "sha": sha, "total_count": total, "statuses": a.body,
                "repository": s.repo_json(&repo), "commit_url": format!("{base}/repos/{repo}/commits/{sha}")});
            a
        }
        "POST /repos/{owner}/{repo}/statuses/{sha}" => {
            let (Some(state), Some(ctx)) = (
                input["state"].as_str(),
                input["context"].as_str().or(Some("default")),
            ) else {
                return Answer::msg(422, "Validation Failed");
            };
            let v = add_status(s, &repo, &caps[2], ctx, state, input["target_url"].as_str());
            Answer::with(201, v)
        }
        "GET /repos/{owner}/{repo}/actions/runs/{run_id}/jobs" => {
            let run: i64 = caps[2].parse().unwrap_or(-1);
            let jobs: Vec<Value> = s.repos[&repo].check_runs.iter().filter(|c| c.run_id == run).map(|c| json!({
                "id": c.id, "run_id": run, "name": c.name, "head_sha": c.head_sha, "status": c.status,
                "conclusion": c.conclusion, "html_url": s.check_json(&repo, c)["details_url"],
                "steps": []})).collect();
            Answer::ok(json!({"total_count": jobs.len(), "jobs": jobs}))
        }
        "GET /repos/{owner}/{repo}/actions/jobs/{job_id}/logs" => {
            let id: i64 = caps[2].parse().unwrap_or(-1);
            match s.repos[&repo].check_runs.iter().find(|c| c.id == id) {
                Some(c) if c.status == "completed" && c.log.is_some() => {
                    let mut a = Answer::with(302, Value::Null);
                    a.headers
                        .push(("location".into(), format!("{base}/_logs/{id}")));
                    a
                }
                _ => Answer::msg(404, "Not Found"),
            }
        }
        _ => Answer::msg(404, "Not Found"),
    }
}

/// A ref (branch name or sha) to a sha.
fn resolve(s: &State, repo: &str, r: &str) -> String {
    s.sha(repo, r).unwrap_or_else(|| r.to_string())
}

fn create_pr(
    s: &mut State,
    repo: &str,
    head: &str,
    base: &str,
    title: &str,
    author: &str,
) -> Result<i64, String> {
    if s.sha(repo, head).is_none() || s.sha(repo, base).is_none() {
        return Err("head or base branch does not exist".into());
    }
    if s.repos[repo]
        .prs
        .values()
        .any(|p| p.head == head && p.state == "open")
    {
        return Err(format!("A pull request already exists for {head}."));
    }
    let at = s.tick();
    let r = s.repos.get_mut(repo).ok_or("no repo")?;
    r.next_number += 1;
    let n = r.next_number;
    r.prs.insert(
        n,
        Pr {
            number: n,
            title: title.into(),
            body: String::new(),
            head: head.into(),
            base: base.into(),
            draft: false,
            state: "open",
            merged: false,
            merge_commit_sha: None,
            closed_head_sha: None,
            updated: at,
            author: author.into(),
        },
    );
    queue_pr(s, repo, n, "opened");
    Ok(n)
}

fn queue(s: &mut State, repo: &str, event: &str, mut payload: Value) {
    payload["repository"] = s.repo_json(repo);
    payload["sender"] = user("octo");
    s.queued.push((event.to_string(), payload));
}

fn queue_pr(s: &mut State, repo: &str, n: i64, action: &str) {
    let pr = s.repos[repo].prs[&n].clone();
    let v = json!({"action": action, "number": n, "pull_request": s.pr_json(repo, &pr, true)});
    queue(s, repo, "pull_request", v);
}

// ---- Issue comment edits (chat bridge) --------------------------------------------------------

/// `PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}` (REST "Update an issue
/// comment"): `body` is required (422 without it, or past 65,536 characters), an unknown id
/// is 404; 200 answers the comment and an `issue_comment` `edited` webhook (with
/// `changes.body.from`) is queued.
fn update_issue_comment(s: &mut State, repo: &str, id: i64, input: &Value) -> Answer {
    let Some(text) = input["body"].as_str() else {
        return Answer::msg(422, "Validation Failed");
    };
    if text.chars().count() > 65_536 {
        return Answer::msg(422, "Validation Failed");
    }
    let Some(c) = s
        .repos
        .get_mut(repo)
        .and_then(|r| r.comments.iter_mut().find(|c| c.id == id))
    else {
        return Answer::msg(404, "Not Found");
    };
    let from = std::mem::replace(&mut c.body, text.to_string());
    let c = c.clone();
    let v = s.comment_json(repo, &c);
    if let Some(issue) = s.issue_json(repo, c.number) {
        queue(
            s,
            repo,
            "issue_comment",
            json!({"action": "edited", "issue": issue, "comment": v,
                "changes": {"body": {"from": from}}}),
        );
    }
    Answer::ok(v)
}

/// The body of issue comment `id` in `repo`, if it exists.
fn comment_body(s: &State, repo: &str, id: i64) -> Option<String> {
    s.repos
        .get(repo)?
        .comments
        .iter()
        .find(|c| c.id == id)
        .map(|c| c.body.clone())
}

fn add_comment(s: &mut State, repo: &str, n: i64, who: &str, text: &str) -> Option<Value> {
    s.issue_json(repo, n)?;
    let (id, at) = (s.id(), s.tick());
    let c = Comment {
        id,
        number: n,
        body: text.into(),
        user: who.into(),
        at,
    };
    let r = s.repos.get_mut(repo)?;
    r.comments.push(c.clone());
    if let Some(p) = r.prs.get_mut(&n) {
        p.updated = at;
    }
    let v = s.comment_json(repo, &c);
    let issue = s.issue_json(repo, n)?;
    queue(
        s,
        repo,
        "issue_comment",
        json!({"action": "created", "issue": issue, "comment": v}),
    );
    Some(v)
}

fn add_status(
    s: &mut State,
    repo: &str,
    r: &str,
    ctx: &str,
    state: &str,
    url: Option<&str>,
) -> Value {
    let sha = resolve(s, repo, r);
    let (id, at) = (s.id(), s.tick());
    let st = Status {
        id,
        sha: sha.clone(),
        context: ctx.into(),
        state: state.into(),
        target_url: url.map(str::to_string),
        description: None,
        at,
    };
    if let Some(rp) = s.repos.get_mut(repo) {
        rp.statuses.push(st);
    }
    let branches: Vec<Value> = s.repos[repo]
        .prs
        .values()
        .filter(|p| s.head_sha(repo, p) == sha)
        .map(|p| json!({"name": p.head, "commit": {"sha": sha}}))
        .collect();
    let v = json!({"id": id, "sha": sha, "name": repo, "context": ctx, "state": state, "target_url": url,
        "description": Value::Null, "commit": {"sha": sha}, "branches": branches,
        "created_at": iso(at), "updated_at": iso(at)});
    queue(s, repo, "status", v.clone());
    v
}

/// Really merges in the bare repository; `Err((405|409|404, message))` like GitHub.
fn merge_pr(
    s: &mut State,
    repo: &str,
    n: i64,
    method: Method,
    sha: Option<&str>,
) -> Result<String, (u16, String)> {
    let pr = s.repos[repo]
        .prs
        .get(&n)
        .cloned()
        .ok_or((404, "Not Found".to_string()))?;
    if pr.state != "open" {
        return Err((405, "Pull Request is not mergeable".into()));
    }
    let head = s
        .sha(repo, &pr.head)
        .ok_or((405, "Pull Request is not mergeable".to_string()))?;
    if sha.is_some_and(|x| x != head) {
        return Err((
            409,
            "Head branch was modified. Review and try the merge again.".into(),
        ));
    }
    if let Some((status, message)) = s.refusals.get(repo) {
        return Err((*status, message.clone()));
    }
    let (mergeable, _, _) = s.merge_check(repo, &pr);
    if mergeable != Some(true) || pr.draft {
        return Err((405, "Pull Request is not mergeable".into()));
    }
    let dir = s.bare(repo);
    let base = s
        .sha(repo, &pr.base)
        .ok_or((405, "base is gone".to_string()))?;
    let e = |m: String| (405, m);
    let new = match method {
        Method::Merge | Method::Squash => {
            let tree = git(&dir, &["merge-tree", "--write-tree", &base, &head]).map_err(e)?;
            let tree = tree.lines().next().unwrap_or_default().to_string();
            let msg = format!("{} (#{n})", pr.title);
            if method == Method::Merge {
                git(
                    &dir,
                    &[
                        "commit-tree",
                        &tree,
                        "-p",
                        &base,
                        "-p",
                        &head,
                        "-m",
                        &format!("Merge pull request #{n} from {}", pr.head),
                    ],
                )
                .map_err(e)?
            } else {
                git(&dir, &["commit-tree", &tree, "-p", &base, "-m", &msg]).map_err(e)?
            }
        }
        Method::Rebase => {
            let list =
                git(&dir, &["rev-list", "--reverse", &format!("{base}..{head}")]).map_err(e)?;
            let mut tip = base.clone();
            for c in list.lines() {
                let parent = format!("{c}^");
                let tree = git(
                    &dir,
                    &[
                        "merge-tree",
                        "--write-tree",
                        &format!("--merge-base={parent}"),
                        &tip,
                        c,
                    ],
                )
                .map_err(e)?;
                let tree = tree.lines().next().unwrap_or_default().to_string();
                let msg = git(&dir, &["log", "-1", "--format=%B", c]).map_err(e)?;
                tip = git(&dir, &["commit-tree", &tree, "-p", &tip, "-m", &msg]).map_err(e)?;
            }
            tip
        }
    };
    git(
        &dir,
        &[
            "update-ref",
            &format!("refs/heads/{}", pr.base),
            &new,
            &base,
        ],
    )
    .map_err(e)?;
    let at = s.tick();
    if let Some(p) = s.repos.get_mut(repo).and_then(|r| r.prs.get_mut(&n)) {
        p.state = "closed";
        p.merged = true;
        p.merge_commit_sha = Some(new.clone());
        p.closed_head_sha = Some(head);
        p.updated = at;
    }
    queue_pr(s, repo, n, "closed");
    Ok(new)
}

/// The GraphQL subset: aliased `pullRequest(number: N)` under `repository(owner:, name:)`,
/// and `rateLimit`. Cost: 1 point per 100 PR nodes with their connections, at least 1.
fn graphql(s: &mut State, body: &[u8]) -> Answer {
    let input: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(query) = input["query"].as_str() else {
        return Answer::msg(400, "Problems parsing JSON");
    };
    let vars = &input["variables"];
    // Arguments are read inside `repository(…)`, not from the variable declarations.
    let repo_args = query
        .find("repository(")
        .map(|i| &query[i..])
        .unwrap_or_default();
    let arg = |name: &str| -> Option<String> {
        let i = repo_args.find(&format!("{name}:"))? + name.len() + 1;
        let rest = repo_args[i..].trim_start();
        if let Some(v) = rest.strip_prefix('$') {
            let var: String = v
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            vars[&var].as_str().map(str::to_string)
        } else {
            let rest = rest.strip_prefix('"')?;
            Some(rest[..rest.find('"')?].to_string())
        }
    };
    let mut data = serde_json::Map::new();
    let mut errors = vec![];
    let mut n_prs = 0i64;
    if query.contains("repository(") {
        let (Some(owner), Some(name)) = (arg("owner"), arg("name")) else {
            return Answer::ok(json!({"errors": [{"message": "repository needs owner and name"}]}));
        };
        let repo = format!("{owner}/{name}");
        if !s.repos.contains_key(&repo) {
            return Answer::ok(
                json!({"data": {"repository": null}, "errors": [{"type": "NOT_FOUND",
                "path": ["repository"], "message": format!("Could not resolve to a Repository with the name '{repo}'.")}]}),
            );
        }
        let mut obj = serde_json::Map::new();
        let mut rest = query;
        while let Some(i) = rest.find("pullRequest(") {
            let before = rest[..i].trim_end().trim_end_matches(':').trim_end();
            let alias: String = before
                .chars()
                .rev()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let after = &rest[i + "pullRequest(".len()..];
            let close = after.find(')').unwrap_or(after.len());
            let num: i64 = after[..close]
                .trim()
                .trim_start_matches("number:")
                .trim()
                .parse()
                .unwrap_or(-1);
            let key = if alias.is_empty()
                || !before.ends_with(|c: char| c.is_alphanumeric() || c == '_')
                || !rest[..i].trim_end().ends_with(':')
            {
                "pullRequest".to_string()
            } else {
                alias
            };
            n_prs += 1;
            let selection = after[close..]
                .find("pullRequest(")
                .map_or(&after[close..], |j| &after[close..close + j]);
            let page = match Page::parse(selection, vars) {
                Ok(p) => p,
                Err(message) => {
                    return Answer::ok(json!({"errors": [{"type": "MISSING_PAGINATION_BOUNDARIES",
                        "path": ["repository", key], "message": message}]}))
                }
            };
            match s.repos[&repo].prs.get(&num).cloned() {
                Some(pr) => {
                    obj.insert(key, s.graphql_pr(&repo, &pr, &page));
                }
                None => {
                    obj.insert(key.clone(), Value::Null);
                    errors.push(json!({"type": "NOT_FOUND", "path": ["repository", key],
                        "message": format!("Could not resolve to a PullRequest with the number of {num}.")}));
                }
            }
            rest = &after[close..];
        }
        data.insert("repository".into(), Value::Object(obj));
    }
    let cost = ((n_prs * 2 + 99) / 100).max(1);
    if query.contains("rateLimit") {
        data.insert("rateLimit".into(), json!({"cost": cost, "remaining": (s.graphql_remaining - cost).max(0), "resetAt": chrono::DateTime::from_timestamp(s.reset, 0).map(|d| d.to_rfc3339()) }));
    }
    let mut body = json!({"data": data});
    if !errors.is_empty() {
        body["errors"] = Value::Array(errors);
    }
    let mut a = Answer::ok(body);
    a.headers.push(("x-graphql-cost".into(), cost.to_string()));
    a
}

async fn deliver(
    st: &Shared,
    http: &reqwest::Client,
    (event, payload): (String, Value),
) -> Option<Delivery> {
    let (url, secret) = lock(st).hook.clone()?;
    let id = uuid::Uuid::new_v4().to_string();
    let body = payload.to_string();
    let d = send(http, &url, &secret, &id, &event, &body).await;
    lock(st).deliveries.push(d.clone());
    Some(d)
}

async fn send(
    http: &reqwest::Client,
    url: &str,
    secret: &str,
    id: &str,
    event: &str,
    body: &str,
) -> Delivery {
    let status = http
        .post(url)
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/fake")
        .header("x-github-event", event)
        .header("x-github-delivery", id)
        .header("x-github-hook-id", "1")
        .header("x-hub-signature-256", sign(secret, body.as_bytes()))
        .body(body.to_string())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    Delivery {
        id: id.into(),
        event: event.into(),
        body: body.into(),
        status,
    }
}

impl FakeGithub {
    /// Starts the fake on `127.0.0.1:0`; requests must carry `Bearer {token}`.
    pub async fn start(token: &str) -> FakeGithub {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = Arc::new(Mutex::new(State {
            // Known once the server listens, before anyone can ask.
            base_url: String::new(),
            token: token.to_string(),
            root: dir.path().to_path_buf(),
            repos: BTreeMap::new(),
            next_id: 100,
            clock: 0,
            hook: None,
            deliveries: vec![],
            counts: BTreeMap::new(),
            forced: None,
            limited_until: None,
            now: flotilla::clock::Clock::system(),
            early: 0,
            core_remaining: RATE_LIMIT,
            graphql_remaining: RATE_LIMIT,
            reset: chrono::Utc::now().timestamp() + 3600,
            queued: vec![],
            merges: Default::default(),
            computing: HashMap::new(),
            refusals: HashMap::new(),
        }));
        let data = web::Data::new(state.clone());
        let server = FakeServer::start(move |cfg| {
            cfg.app_data(data.clone())
                .default_service(web::to(dispatch));
        });
        let url = server.url("");
        lock(&state).base_url = url.clone();
        FakeGithub {
            url,
            token: token.to_string(),
            state,
            server,
            http: hook_client(),
            _dir: dir,
        }
    }

    fn s(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Sends queued webhooks, in order, and waits for each answer.
    async fn flush(&self) {
        let hooks = std::mem::take(&mut self.s().queued);
        for h in hooks {
            deliver(&self.state, &self.http, h).await;
        }
    }

    /// Delivers signed webhooks to `url` from now on.
    pub fn set_webhook(&self, url: &str, secret: &str) {
        self.s().hook = Some((url.to_string(), secret.to_string()));
    }

    /// Creates `owner/name`: a bare repository whose `main` has one commit.
    pub fn create_repo(&self, full_name: &str) -> PathBuf {
        let mut s = self.s();
        let bare = s.bare(full_name);
        let work = s.work(full_name);
        std::fs::create_dir_all(&bare).expect("mkdir bare");
        std::fs::create_dir_all(&work).expect("mkdir work");
        git(&bare, &["init", "-q", "--bare", "-b", "main"]).expect("init bare");
        git(&work, &["init", "-q", "-b", "main"]).expect("init work");
        std::fs::write(work.join("README.md"), "hello\n").expect("write");
        git(&work, &["add", "."]).expect("add");
        git(&work, &["commit", "-q", "-m", "init"]).expect("commit");
        git(
            &work,
            &[
                "remote",
                "add",
                "origin",
                bare.to_str().expect("utf-8 path"),
            ],
        )
        .expect("remote");
        git(&work, &["push", "-q", "origin", "main"]).expect("push");
        s.repos.insert(full_name.to_string(), Repo::default());
        bare
    }

    /// The bare repository of `repo` (usable as a project's git remote).
    pub fn bare_path(&self, repo: &str) -> PathBuf {
        self.s().bare(repo)
    }

    /// The sha of `branch`, from the bare repository.
    pub fn branch_sha(&self, repo: &str, branch: &str) -> Option<String> {
        self.s().sha(repo, branch)
    }

    /// Runs git in the bare repository (for assertions).
    pub fn git(&self, repo: &str, args: &[&str]) -> String {
        git(&self.bare_path(repo), args).expect("git")
    }

    /// Commits `files` on `branch` (created from `from` when new) and pushes it. An open PR
    /// with that head gets `synchronize`. Returns the new head sha.
    pub async fn push(
        &self,
        repo: &str,
        branch: &str,
        from: &str,
        files: &[(&str, &str)],
        msg: &str,
    ) -> String {
        let sha = {
            let mut s = self.s();
            let work = s.work(repo);
            git(&work, &["fetch", "-q", "origin"]).expect("fetch");
            let start = if s.sha(repo, branch).is_some() {
                format!("origin/{branch}")
            } else {
                format!("origin/{from}")
            };
            git(&work, &["checkout", "-q", "-B", branch, &start]).expect("checkout");
            for (p, c) in files {
                let path = work.join(p);
                if let Some(d) = path.parent() {
                    std::fs::create_dir_all(d).expect("mkdir");
                }
                std::fs::write(path, c).expect("write");
            }
            git(&work, &["add", "-A"]).expect("add");
            git(&work, &["commit", "-q", "--allow-empty", "-m", msg]).expect("commit");
            git(
                &work,
                &[
                    "push",
                    "-q",
                    "-f",
                    "origin",
                    &format!("HEAD:refs/heads/{branch}"),
                ],
            )
            .expect("push");
            let sha = git(&work, &["rev-parse", "HEAD"]).expect("sha");
            let open: Vec<i64> = s.repos[repo]
                .prs
                .values()
                .filter(|p| p.state == "open" && p.head == branch)
                .map(|p| p.number)
                .collect();
            for n in open {
                let at = s.tick();
                if let Some(p) = s.repos.get_mut(repo).and_then(|r| r.prs.get_mut(&n)) {
                    p.updated = at;
                }
                queue_pr(&mut s, repo, n, "synchronize");
            }
            sha
        };
        self.flush().await;
        sha
    }

    /// Opens a PR from `head` into `base`; returns its number.
    pub async fn open_pr(&self, repo: &str, head: &str, base: &str, title: &str) -> i64 {
        let n = create_pr(&mut self.s(), repo, head, base, title, "agent").expect("create pr");
        self.flush().await;
        n
    }

    /// Opens `count` PRs, each on its own new branch `{prefix}-{i}` with one file.
    pub async fn open_many(&self, repo: &str, prefix: &str, count: usize) -> Vec<i64> {
        let mut out = vec![];
        for i in 0..count {
            let b = format!("{prefix}-{i}");
            let f = format!("{b}.txt");
            self.push(repo, &b, "main", &[(f.as_str(), "x\n")], "work")
                .await;
            out.push(self.open_pr(repo, &b, "main", &b).await);
        }
        out
    }

    /// Adds a check run on `git_ref` (branch or sha). `conclusion: None` leaves it
    /// `in_progress`. `log` becomes the job's log (check run id = job id, as on Actions).
    pub async fn add_check_run(
        &self,
        repo: &str,
        git_ref: &str,
        name: &str,
        conclusion: Option<&str>,
        log: Option<&str>,
    ) -> i64 {
        let id = {
            let mut s = self.s();
            let sha = resolve(&s, repo, git_ref);
            let (id, run_id, at) = (s.id(), s.id(), s.tick());
            let c = CheckRun {
                id,
                name: name.into(),
                head_sha: sha,
                status: if conclusion.is_some() {
                    "completed"
                } else {
                    "in_progress"
                },
                conclusion: conclusion.map(str::to_string),
                summary: format!("{name}: {}", conclusion.unwrap_or("running")),
                log: log.map(str::to_string),
                run_id,
                at,
            };
            s.repos
                .get_mut(repo)
                .expect("repo")
                .check_runs
                .push(c.clone());
            let v = s.check_json(repo, &c);
            let action = if conclusion.is_some() {
                "completed"
            } else {
                "created"
            };
            queue(
                &mut s,
                repo,
                "check_run",
                json!({"action": action, "check_run": v}),
            );
            if conclusion.is_some() {
                let suite = json!({"id": run_id, "head_branch": v["check_suite"]["head_branch"], "head_sha": c.head_sha,
                    "status": "completed", "conclusion": conclusion, "pull_requests": v["pull_requests"],
                    "app": {"slug": "github-actions"}, "latest_check_runs_count": 1});
                queue(
                    &mut s,
                    repo,
                    "check_suite",
                    json!({"action": "completed", "check_suite": suite}),
                );
            }
            id
        };
        self.flush().await;
        id
    }

    /// Adds many completed check runs on `git_ref` at once, `(name, conclusion)` each, as one
    /// check suite: one `check_suite` `completed` webhook for the lot (a CI matrix).
    pub async fn add_check_suite(&self, repo: &str, git_ref: &str, runs: &[(String, &str)]) {
        {
            let mut s = self.s();
            let sha = resolve(&s, repo, git_ref);
            let run_id = s.id();
            let mut worst = "success";
            for (name, conclusion) in runs {
                let (id, at) = (s.id(), s.tick());
                if *conclusion != "success" {
                    worst = "failure";
                }
                let c = CheckRun {
                    id,
                    name: name.clone(),
                    head_sha: sha.clone(),
                    status: "completed",
                    conclusion: Some((*conclusion).to_string()),
                    summary: format!("{name}: {conclusion}"),
                    log: Some(format!("{name}: {conclusion}")),
                    run_id,
                    at,
                };
                s.repos.get_mut(repo).expect("repo").check_runs.push(c);
            }
            let Some(last) = s.repos[repo].check_runs.last().cloned() else {
                return;
            };
            let v = s.check_json(repo, &last);
            let suite = json!({"id": run_id, "head_branch": v["check_suite"]["head_branch"], "head_sha": sha,
                "status": "completed", "conclusion": worst, "pull_requests": v["pull_requests"],
                "app": {"slug": "github-actions"}, "latest_check_runs_count": runs.len()});
            queue(
                &mut s,
                repo,
                "check_suite",
                json!({"action": "completed", "check_suite": suite}),
            );
        }
        self.flush().await;
    }

    /// GitHub recomputes PR `n`'s mergeability for `for_how_long` (as after a push to its
    /// base): `mergeable: null`, `UNKNOWN`, merges refused; no webhook when it settles.
    pub fn compute_mergeability(&self, repo: &str, n: i64, for_how_long: std::time::Duration) {
        self.s().computing.insert(
            (repo.to_string(), n),
            std::time::Instant::now() + for_how_long,
        );
    }

    /// Branch protection (or a ruleset) refuses every merge in `repo` with `status` (405, or
    /// 422) and `message`, as GitHub answers `PUT …/merge`; `None` lifts it.
    pub fn refuse_merges(&self, repo: &str, refusal: Option<(u16, &str)>) {
        let mut s = self.s();
        match refusal {
            Some((status, m)) => {
                s.refusals.insert(repo.to_string(), (status, m.to_string()));
            }
            None => {
                s.refusals.remove(repo);
            }
        }
    }

    /// Adds a commit status on `git_ref`.
    pub async fn add_status(&self, repo: &str, git_ref: &str, context: &str, state: &str) {
        add_status(
            &mut self.s(),
            repo,
            git_ref,
            context,
            state,
            Some("https://ci.example/1"),
        );
        self.flush().await;
    }

    /// Submits a review (`APPROVED`, `CHANGES_REQUESTED`, `COMMENTED`) with inline comments
    /// `(path, line, body)`, each starting an unresolved thread. Returns the comment ids.
    pub async fn add_review(
        &self,
        repo: &str,
        n: i64,
        who: &str,
        state: &'static str,
        body: &str,
        inline: &[(&str, i64, &str)],
    ) -> Vec<i64> {
        let mut ids = vec![];
        {
            let mut s = self.s();
            let pr = s.repos[repo].prs[&n].clone();
            let sha = s.head_sha(repo, &pr);
            let (rid, at) = (s.id(), s.tick());
            let review = Review {
                id: rid,
                number: n,
                user: who.into(),
                body: body.into(),
                state,
                commit_id: sha.clone(),
                at,
            };
            let mut comments = vec![];
            for (path, line, text) in inline {
                let id = s.id();
                ids.push(id);
                comments.push(ReviewComment {
                    id,
                    number: n,
                    review_id: Some(rid),
                    path: (*path).into(),
                    line: *line,
                    body: (*text).into(),
                    user: who.into(),
                    commit_id: sha.clone(),
                    in_reply_to: None,
                    at,
                });
            }
            let r = s.repos.get_mut(repo).expect("repo");
            r.reviews.push(review.clone());
            r.review_comments.extend(comments.clone());
            if let Some(p) = r.prs.get_mut(&n) {
                p.updated = at;
            }
            let pr_json = s.pr_json(repo, &pr, false);
            for c in &comments {
                let v = s.review_comment_json(repo, c);
                queue(
                    &mut s,
                    repo,
                    "pull_request_review_comment",
                    json!({"action": "created", "comment": v, "pull_request": pr_json}),
                );
            }
            let mut rv = s.review_json(repo, &review);
            rv["state"] = json!(state.to_lowercase());
            queue(
                &mut s,
                repo,
                "pull_request_review",
                json!({"action": "submitted", "review": rv, "pull_request": pr_json}),
            );
        }
        self.flush().await;
        ids
    }

    /// Replies in the thread started by review comment `root`.
    pub async fn reply(&self, repo: &str, n: i64, root: i64, who: &str, body: &str) -> i64 {
        let id = {
            let mut s = self.s();
            let (id, at) = (s.id(), s.tick());
            let rootc = s.repos[repo]
                .review_comments
                .iter()
                .find(|c| c.id == root)
                .cloned()
                .expect("root comment");
            let c = ReviewComment {
                id,
                in_reply_to: Some(root),
                body: body.into(),
                user: who.into(),
                at,
                review_id: None,
                ..rootc
            };
            s.repos
                .get_mut(repo)
                .expect("repo")
                .review_comments
                .push(c.clone());
            let pr = s.repos[repo].prs[&n].clone();
            let v = s.review_comment_json(repo, &c);
            let pj = s.pr_json(repo, &pr, false);
            queue(
                &mut s,
                repo,
                "pull_request_review_comment",
                json!({"action": "created", "comment": v, "pull_request": pj}),
            );
            id
        };
        self.flush().await;
        id
    }

    /// Marks the thread started by review comment `root` resolved (no webhook, like GitHub).
    pub fn resolve_thread(&self, repo: &str, root: i64) {
        self.s()
            .repos
            .get_mut(repo)
            .expect("repo")
            .resolved_threads
            .push(root);
    }

    /// Adds a conversation comment to issue or PR `n`.
    pub async fn add_comment(&self, repo: &str, n: i64, who: &str, body: &str) -> i64 {
        let v = add_comment(&mut self.s(), repo, n, who, body).expect("issue exists");
        self.flush().await;
        v["id"].as_i64().unwrap_or(0)
    }

    /// Creates an issue; returns its number (shared with PR numbers).
    pub fn create_issue(&self, repo: &str, title: &str, body: &str) -> i64 {
        let mut s = self.s();
        let r = s.repos.get_mut(repo).expect("repo");
        r.next_number += 1;
        let n = r.next_number;
        r.issues.insert(n, (title.into(), body.into(), "open"));
        n
    }

    /// Closes issue `n` (as `octo`) and delivers the `issues` `closed` webhook.
    pub async fn close_issue(&self, repo: &str, n: i64) {
        {
            let mut s = self.s();
            if let Some(i) = s.repos.get_mut(repo).and_then(|r| r.issues.get_mut(&n)) {
                i.2 = "closed";
            }
            let issue = s.issue_json(repo, n).expect("issue");
            queue(
                &mut s,
                repo,
                "issues",
                json!({"action": "closed", "issue": issue}),
            );
        }
        self.flush().await;
    }

    /// Closes PR `n` without merging.
    pub async fn close_pr(&self, repo: &str, n: i64) {
        {
            let mut s = self.s();
            let at = s.tick();
            let head = {
                let p = s.repos[repo].prs[&n].clone();
                s.head_sha(repo, &p)
            };
            let p = s
                .repos
                .get_mut(repo)
                .and_then(|r| r.prs.get_mut(&n))
                .expect("pr");
            p.state = "closed";
            p.closed_head_sha = Some(head);
            p.updated = at;
            queue_pr(&mut s, repo, n, "closed");
        }
        self.flush().await;
    }

    /// Merges PR `n` as a user would (really, in the bare repository).
    pub async fn merge(&self, repo: &str, n: i64, method: Method) -> Result<String, (u16, String)> {
        let r = merge_pr(&mut self.s(), repo, n, method, None);
        self.flush().await;
        r
    }

    /// Labels issue `n` (as a person would) and delivers the `issues` `labeled` webhook.
    pub async fn label_issue(&self, repo: &str, n: i64, label: &str) {
        add_labels(&mut self.s(), repo, n, &[label.to_string()]).expect("issue exists");
        self.flush().await;
    }

    /// Takes `label` off issue `n` and delivers the `issues` `unlabeled` webhook.
    pub async fn unlabel_issue(&self, repo: &str, n: i64, label: &str) {
        let r = remove_label(&mut self.s(), repo, n, label);
        assert!(r.is_ok(), "issue {n} carries {label}");
        self.flush().await;
    }

    /// The labels issue `n` carries.
    pub fn issue_labels(&self, repo: &str, n: i64) -> Vec<String> {
        self.s().repos[repo]
            .issue_labels
            .get(&n)
            .cloned()
            .unwrap_or_default()
    }

    /// The conversation comments on issue (or PR) `n`: `(author, body)`.
    pub fn issue_comments(&self, repo: &str, n: i64) -> Vec<(String, String)> {
        self.s().repos[repo]
            .comments
            .iter()
            .filter(|c| c.number == n)
            .map(|c| (c.user.clone(), c.body.clone()))
            .collect()
    }

    /// The current body of issue comment `id` in `repo` (chat bridge edits).
    pub fn issue_comment_body(&self, repo: &str, id: i64) -> Option<String> {
        comment_body(&self.s(), repo, id)
    }

    /// Keeps `retry-after` windows on `clock` (the app's) instead of the wall clock.
    pub fn use_clock(&self, clock: flotilla::clock::Clock) {
        self.s().now = clock;
    }

    /// The next `n` API requests answer with `limit`.
    pub fn limit_next(&self, n: u32, limit: Limit) {
        self.s().forced = Some((limit, n));
    }

    /// Turns on branch protection's "require an approving review" for `repo`.
    pub fn require_reviews(&self, repo: &str) {
        if let Some(r) = self.s().repos.get_mut(repo) {
            r.require_review = true;
        }
    }

    /// Requests that arrived while a secondary limit's `retry-after` was still running.
    pub fn early_requests(&self) -> u64 {
        self.s().early
    }

    /// Requests of `kind` (`GET /repos/{owner}/{repo}/pulls`, `POST /graphql`), any status.
    pub fn count(&self, kind: &str) -> u64 {
        self.s()
            .counts
            .iter()
            .filter(|((k, _), _)| k == kind)
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests of `kind` answered with `status`.
    pub fn count_status(&self, kind: &str, status: u16) -> u64 {
        self.s()
            .counts
            .get(&(kind.to_string(), status))
            .copied()
            .unwrap_or(0)
    }

    /// Every request so far (method and path with query), in arrival order, log downloads
    /// included.
    pub fn requests(&self) -> Vec<Seen> {
        self.server.requests()
    }

    /// All requests (excluding log downloads from the redirect target).
    pub fn total(&self) -> u64 {
        self.s()
            .counts
            .iter()
            .filter(|((k, _), _)| !k.starts_with("GET /_logs"))
            .map(|(_, n)| n)
            .sum()
    }

    /// Every count, for a failure message.
    pub fn counts(&self) -> BTreeMap<(String, u16), u64> {
        self.s().counts.clone()
    }

    /// Forgets the counts.
    pub fn reset_counts(&self) {
        self.s().counts.clear();
    }

    /// `x-ratelimit-remaining` of the core (REST) bucket.
    pub fn core_remaining(&self) -> i64 {
        self.s().core_remaining
    }

    /// Every webhook delivery so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.s().deliveries.clone()
    }

    /// Sends a `ping` (as when the hook is created).
    pub async fn ping(&self) -> Delivery {
        let v = json!({"zen": "Keep it logically awesome.", "hook_id": 1,
            "hook": {"type": "Repository", "id": 1, "events": ["*"], "config": {"content_type": "json"}}});
        deliver(&self.state, &self.http, ("ping".into(), v))
            .await
            .expect("webhook configured")
    }

    /// Redelivers past delivery `id`: same id, same body, fresh signature.
    pub async fn redeliver(&self, id: &str) -> Delivery {
        let (d, (url, secret)) = {
            let s = self.s();
            let d = s
                .deliveries
                .iter()
                .find(|d| d.id == id)
                .cloned()
                .expect("known delivery");
            (d, s.hook.clone().expect("webhook configured"))
        };
        let d = send(&self.http, &url, &secret, &d.id, &d.event, &d.body).await;
        self.s().deliveries.push(d.clone());
        d
    }
}

/// The fake's webhook sender: a receiver that hangs fails the delivery, as GitHub's 10 s does.
fn hook_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("http client")
}

// ---- pushes from outside the fake (agents pushing to the bare repository) ----------------

impl FakeGithub {
    /// Watches the bare repositories for pushes made with plain git (by agents) and answers
    /// each as GitHub does: an open PR whose head moved gets a `synchronize` webhook. Stops
    /// when the fake is dropped.
    pub fn watch_pushes(&self) {
        let weak = Arc::downgrade(&self.state);
        let http = hook_client();
        actix_web::rt::spawn(async move {
            let mut seen: BTreeMap<(String, i64), String> = BTreeMap::new();
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                let Some(st) = weak.upgrade() else { return };
                let hooks = {
                    let mut s = lock(&st);
                    let open: Vec<(String, Pr)> = s
                        .repos
                        .iter()
                        .flat_map(|(r, repo)| {
                            repo.prs
                                .values()
                                .filter(|p| p.state == "open")
                                .map(move |p| (r.clone(), p.clone()))
                        })
                        .collect();
                    for (repo, pr) in open {
                        let Some(sha) = s.sha(&repo, &pr.head) else {
                            continue;
                        };
                        let key = (repo.clone(), pr.number);
                        match seen.insert(key, sha.clone()) {
                            Some(old) if old != sha => {
                                let at = s.tick();
                                if let Some(p) = s
                                    .repos
                                    .get_mut(&repo)
                                    .and_then(|r| r.prs.get_mut(&pr.number))
                                {
                                    p.updated = at;
                                }
                                queue_pr(&mut s, &repo, pr.number, "synchronize");
                            }
                            _ => {}
                        }
                    }
                    std::mem::take(&mut s.queued)
                };
                for h in hooks {
                    deliver(&st, &http, h).await;
                }
            }
        });
    }
}

/// A GraphQL `Actor`: bots are typed `Bot` and their login has no `[bot]` suffix.
fn graphql_actor(login: &str) -> Value {
    match login.strip_suffix("[bot]") {
        Some(name) => json!({"login": name, "__typename": "Bot"}),
        None => json!({"login": login, "__typename": "User"}),
    }
}
