//! The `github` SCM plugin ([`GithubScm`], on octocrab) and GitHub's webhook payloads
//! ([`events`]).
//!
//! Octocrab is the HTTP client (base URL, connection pooling, TLS, timeouts); requests are
//! built here so that every one carries the token, an optional `If-None-Match`, and is
//! counted in `flotilla_github_requests_total{kind,status}` with `kind` the path template.
//! Bodies are read into small local types rather than octocrab's models, which reject the
//! partial objects GitHub returns in some places.
//!
//! Cost (wire-formats §1.4–1.5, agent-orchestrator §9):
//! - [`Scm::repo_changed`] is one conditional request per repo; a 304 costs no quota.
//! - Every REST read sends the stored ETag, so re-reading an unchanged list is free.
//! - [`Scm::batch_status`] asks for 50 PRs per GraphQL request (aliases).
//! - Rate limits: `x-ratelimit-*` are remembered ([`Scm::rate_limit`], and the
//!   `flotilla_github_rate_limit_remaining` gauge); a primary or secondary limit is
//!   [`PluginError::RateLimited`] with the wait (`retry-after`, else until the reset).
//!
//! The token never reaches a log or an error: only the route template and status do.

pub mod checks;
pub mod events;
pub mod remarks;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, IF_NONE_MATCH, LOCATION};
use octocrab::Octocrab;
use serde_json::{json, Value};

pub use events::{GithubEvent, GithubEventKind};

use checks::IgnoreList;

use super::{
    CheckInfo, CiSummary, FailedCheck, MergeMethod, PluginError, PluginResult, PrStatus, RateLimit,
    ReviewBody, ReviewComment, ReviewFeedback, ReviewThread, Scm,
};
use crate::config::GithubSettings;
use crate::telemetry::METRICS;

/// PRs per GraphQL request in [`Scm::batch_status`] (each alias costs ~2 nodes of 100).
pub const BATCH_SIZE: usize = 50;
/// Stored ETags (with their bodies); past this the cache starts over.
const ETAG_CACHE: usize = 1000;
/// Lines of a failed job's log kept as the excerpt.
const LOG_LINES: usize = 40;
/// Characters of a failed job's log kept at most.
const LOG_CHARS: usize = 6000;
/// Wait when GitHub names a secondary limit without `retry-after` or a spent budget.
const SECONDARY_DEFAULT_WAIT: Duration = Duration::from_secs(60);
/// Doublings of [`SECONDARY_DEFAULT_WAIT`] while such limits go on (60 s … 16 min).
const SECONDARY_MAX_DOUBLINGS: u32 = 4;

/// The GitHub SCM plugin.
pub struct GithubScm {
    octo: Octocrab,
    /// REST base, without a trailing slash.
    api_url: String,
    graphql_url: String,
    /// `Bearer …`, marked sensitive so it is never printed.
    auth: Option<HeaderValue>,
    timeout: Duration,
    /// URL → (ETag, body) of the last 200, for conditional requests.
    etags: Mutex<HashMap<String, (String, Value)>>,
    rate: Mutex<Option<RateLimit>>,
    /// After a rate-limit answer, no request of the limited budget leaves before this time on
    /// `clock`, whoever asks (the poller and every session share it; GitHub punishes retries
    /// inside the wait). REST (`core`) and GraphQL have primary budgets of their own; a
    /// secondary limit holds both.
    blocked_until: Mutex<HashMap<Budget, (chrono::DateTime<chrono::Utc>, &'static str)>>,
    /// Secondary limits in a row that came without a wait: each doubles the next guess
    /// ("wait for an exponentially increasing amount of time"); any other answer resets it.
    unannounced_strikes: Mutex<u32>,
    /// The time the rate-limit wait is kept on (the application's).
    clock: crate::clock::Clock,
    /// `github.ignore_checks`.
    ignore: IgnoreList,
    /// `github.bot_login`: Flotilla's own comments are never feedback.
    bot_login: Option<String>,
}

impl std::fmt::Debug for GithubScm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubScm")
            .field("api_url", &self.api_url)
            .field("graphql_url", &self.graphql_url)
            .field("token", &self.auth.as_ref().map(|_| "***"))
            .finish()
    }
}

/// GitHub's primary rate-limit budgets (`x-ratelimit-resource`): REST's `core` and `graphql`
/// are counted and reset apart ("Rate limits for the REST API": "The GraphQL API also has a
/// separate primary rate limit").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Budget {
    Core,
    Graphql,
}

/// A response after rate-limit and error handling.
struct Reply {
    status: u16,
    headers: http::HeaderMap,
    body: Value,
    /// The body was the stored one (304).
    cached: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn split_repo(repo: &str) -> PluginResult<(&str, &str)> {
    match repo.split_once('/') {
        Some((o, n)) if !o.is_empty() && !n.is_empty() && !n.contains('/') => Ok((o, n)),
        _ => Err(PluginError::Invalid(format!(
            "repository `{repo}` is not owner/name"
        ))),
    }
}

pub(crate) fn header_i64(h: &http::HeaderMap, name: &str) -> Option<i64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The `rel="next"` URL of a `Link` header.
pub fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, rels) = part.split_once(';')?;
        rels.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

/// `v` as one query-string value: a branch may hold `+`, `&`, `#` or `%`, which a query
/// would read as a space, a new parameter, the fragment or an escape.
fn query_value(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn review_word(decision: Option<&str>) -> &'static str {
    match decision {
        Some("APPROVED") => "approved",
        Some("CHANGES_REQUESTED") => "changes_requested",
        Some("REVIEW_REQUIRED") => "pending",
        _ => "none",
    }
}

fn str_of(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
}

/// The GraphQL selection for one PR (wire-formats §1.5). The roll-up's contexts come 100 a
/// page (GitHub's maximum); further pages are read by [`contexts_query`].
fn pr_fields() -> String {
    format!(
        "number url isDraft state headRefName headRefOid baseRefName \
    mergeable mergeStateStatus reviewDecision \
    statusCheckRollup {{ state contexts(first: {page}) {{ totalCount \
      pageInfo {{ hasNextPage endCursor }} nodes {{ {ctx} }} }} }} \
    reviewThreads(first: 50) {{ nodes {{ isResolved path line \
      comments(first: 20) {{ nodes {{ author {{ login __typename }} body }} }} }} }} \
    {remarks}",
        page = checks::PAGE,
        ctx = checks::CONTEXT_FIELDS,
        remarks = remarks::fields()
    )
}

/// The next page of one PR's roll-up contexts, after `$after`.
fn contexts_query(number: i64) -> String {
    format!(
        "query($owner: String!, $name: String!, $after: String!) {{ \
         repository(owner: $owner, name: $name) {{ pullRequest(number: {number}) {{ \
         statusCheckRollup {{ contexts(first: {page}, after: $after) {{ \
         pageInfo {{ hasNextPage endCursor }} nodes {{ {ctx} }} }} }} }} }} }}",
        page = checks::PAGE,
        ctx = checks::CONTEXT_FIELDS
    )
}

/// Builds the aliased query for `numbers` (aliases `pr<N>`).
fn batch_query(numbers: &[i64]) -> String {
    let mut q = String::from(
        "query($owner: String!, $name: String!) { repository(owner: $owner, name: $name) {",
    );
    let fields = pr_fields();
    for n in numbers {
        q.push_str(&format!(" pr{n}: pullRequest(number: {n}) {{ {fields} }}"));
    }
    q.push_str(" } rateLimit { cost remaining resetAt } }");
    q
}

/// A PR read from GraphQL whose roll-up may have more pages.
struct Partial {
    status: PrStatus,
    /// The roll-up's `StatusState` (`SUCCESS`, `FAILURE`, `PENDING`, `ERROR`, `EXPECTED`).
    rollup: Option<String>,
    /// Cursor of the next page of contexts.
    next: Option<String>,
}

impl Partial {
    /// Every page read: ignored checks out, CI from the rest and the roll-up.
    fn finish(mut self, ignore: &IgnoreList) -> PrStatus {
        let mut checks = ignore.keep(std::mem::take(&mut self.status.checks));
        checks.sort_by(|a, b| a.name.cmp(&b.name));
        self.status.ci = checks::combined(&checks, self.rollup.as_deref(), ignore).into();
        self.status.checks = checks;
        self.status
    }
}

/// Reads one GraphQL `PullRequest` node (its first page of roll-up contexts).
fn pr_from_graphql(v: &Value) -> Partial {
    let rollup = &v["statusCheckRollup"];
    let (checks, next) = checks::page(&rollup["contexts"]);
    let threads: Vec<ReviewThread> = v["reviewThreads"]["nodes"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| ReviewThread {
                    path: str_of(t, "path"),
                    line: t["line"].as_i64(),
                    resolved: t["isResolved"].as_bool().unwrap_or(false),
                    comments: t["comments"]["nodes"]
                        .as_array()
                        .map(|cs| {
                            cs.iter()
                                .map(|c| {
                                    let login = c["author"]["login"].as_str().unwrap_or("ghost");
                                    ReviewComment {
                                        author: login.to_string(),
                                        body: str_of(c, "body"),
                                        bot: c["author"]["__typename"] == "Bot"
                                            || login.ends_with("[bot]"),
                                    }
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .filter(|t| !t.resolved)
                .collect()
        })
        .unwrap_or_default();
    let merge_state = str_of(v, "mergeStateStatus").to_lowercase();
    let mergeable = match v["mergeable"].as_str() {
        Some("MERGEABLE") => Some(true),
        Some("CONFLICTING") => Some(false),
        _ => None,
    };
    let status = PrStatus {
        number: v["number"].as_i64().unwrap_or_default(),
        url: str_of(v, "url"),
        state: str_of(v, "state").to_lowercase(),
        ci: checks::state_of(&checks).into(),
        review: review_word(v["reviewDecision"].as_str()).into(),
        mergeable,
        draft: v["isDraft"].as_bool().unwrap_or(false),
        head_branch: str_of(v, "headRefName"),
        head_sha: str_of(v, "headRefOid"),
        base_branch: str_of(v, "baseRefName"),
        conflicts: mergeable == Some(false) || merge_state == "dirty",
        behind: merge_state == "behind",
        merge_state: if merge_state.is_empty() {
            "unknown".into()
        } else {
            merge_state
        },
        checks,
        unresolved_threads: threads,
        remarks: vec![],
    };
    Partial {
        status,
        rollup: rollup["state"].as_str().map(str::to_string),
        next,
    }
}

/// The last `LOG_LINES` lines of a log, at most `LOG_CHARS` characters.
fn excerpt(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_LINES)..].join("\n");
    let skip = tail.chars().count().saturating_sub(LOG_CHARS);
    tail.chars().skip(skip).collect()
}

impl GithubScm {
    /// Builds the plugin from `github:` settings; `timeout` bounds every call. Call it inside
    /// a Tokio runtime (octocrab spawns its request buffer there), e.g. in `Application::build`.
    ///
    /// # Errors
    /// `Invalid` for a bad URL or a token that is not a valid header value.
    pub fn new(settings: &GithubSettings, timeout: Duration) -> PluginResult<Self> {
        let api_url = settings.api_url.trim_end_matches('/').to_string();
        let octo = Octocrab::builder()
            .base_uri(api_url.as_str())
            .map_err(|e| PluginError::Invalid(format!("github.api_url: {e}")))?
            .set_connect_timeout(Some(timeout))
            .set_read_timeout(Some(timeout))
            .build()
            .map_err(|e| PluginError::Invalid(format!("github client: {e}")))?;
        let auth = match settings.token.as_ref().filter(|t| !t.is_empty()) {
            Some(t) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {}", t.expose()))
                    .map_err(|_| PluginError::Invalid("github.token: not a valid header".into()))?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        Ok(GithubScm {
            octo,
            api_url,
            graphql_url: settings.graphql_url.clone(),
            auth,
            timeout,
            etags: Mutex::new(HashMap::new()),
            rate: Mutex::new(None),
            blocked_until: Mutex::new(HashMap::new()),
            unannounced_strikes: Mutex::new(0),
            clock: crate::clock::Clock::system(),
            ignore: IgnoreList::new(&settings.ignore_checks),
            bot_login: settings.bot_login.clone(),
        })
    }

    /// Keeps rate-limit waits on `clock` (the application's) instead of the system clock.
    #[must_use]
    pub fn on_clock(mut self, clock: crate::clock::Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Sends one request; `kind` is the bounded metric label (method + path template).
    /// GETs are conditional when an ETag is stored for the URL.
    async fn call(
        &self,
        method: http::Method,
        kind: &'static str,
        url: &str,
        body: Option<&Value>,
    ) -> PluginResult<Reply> {
        let budget = if url == self.graphql_url {
            Budget::Graphql
        } else {
            Budget::Core
        };
        let held = lock(&self.blocked_until).get(&budget).copied();
        if let Some((until, limit)) = held {
            if let Ok(left) = (until - self.clock.now()).to_std() {
                if !left.is_zero() {
                    METRICS
                        .github_requests
                        .with_label_values(&[kind, "held"])
                        .inc();
                    return Err(PluginError::RateLimited {
                        kind: limit,
                        retry_after: left,
                    });
                }
            }
        }
        let fut = self.call_inner(method, kind, url, body);
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Err(PluginError::RateLimited { kind, retry_after })) => {
                let wait = chrono::Duration::from_std(retry_after).unwrap_or(chrono::Duration::MAX);
                let until = self
                    .clock
                    .now()
                    .checked_add_signed(wait)
                    .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
                let mut holds = lock(&self.blocked_until);
                // A primary limit spends one budget; a secondary one is about the client.
                let budgets: &[Budget] = if kind == "primary" {
                    std::slice::from_ref(&budget)
                } else {
                    &[Budget::Core, Budget::Graphql]
                };
                for b in budgets {
                    holds.insert(*b, (until, kind));
                }
                Err(PluginError::RateLimited { kind, retry_after })
            }
            Ok(r) => r,
            Err(_) => {
                METRICS
                    .github_requests
                    .with_label_values(&[kind, "timeout"])
                    .inc();
                Err(PluginError::Timeout {
                    what: format!("github {kind}"),
                    after: self.timeout,
                })
            }
        }
    }

    async fn call_inner(
        &self,
        method: http::Method,
        kind: &'static str,
        url: &str,
        body: Option<&Value>,
    ) -> PluginResult<Reply> {
        let is_get = method == http::Method::GET;
        let mut builder = http::Request::builder().method(method).uri(url);
        // The token goes only to the configured API host (a log redirect may point elsewhere).
        let same_host = url.starts_with(&self.api_url) || url.starts_with(&self.graphql_url);
        if let (Some(a), true) = (&self.auth, same_host) {
            builder = builder.header(AUTHORIZATION, a.clone());
        }
        builder = builder
            .header(ACCEPT, "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28");
        let stored = if is_get {
            lock(&self.etags).get(url).cloned()
        } else {
            None
        };
        if let Some((etag, _)) = &stored {
            builder = builder.header(IF_NONE_MATCH, etag.as_str());
        }
        let req = self
            .octo
            .build_request(builder, body)
            .map_err(|e| PluginError::Invalid(format!("github request: {e}")))?;
        let resp = match self.octo.execute(req).await {
            Ok(r) => r,
            Err(e) => {
                METRICS
                    .github_requests
                    .with_label_values(&[kind, "error"])
                    .inc();
                return Err(PluginError::Io(std::io::Error::other(format!(
                    "github {kind}: {e}"
                ))));
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        METRICS
            .github_requests
            .with_label_values(&[kind, &status.to_string()])
            .inc();
        let remaining = header_i64(&headers, "x-ratelimit-remaining");
        if let Some(remaining) = remaining {
            let seen = RateLimit {
                limit: header_i64(&headers, "x-ratelimit-limit").unwrap_or(0),
                remaining,
                reset: header_i64(&headers, "x-ratelimit-reset").unwrap_or(0),
            };
            let mut rate = lock(&self.rate);
            // Requests run in parallel and answer out of order: once a window is exhausted,
            // a later-arriving answer sent before that does not refill it.
            let exhausted = rate.as_ref().is_some_and(|r| {
                r.remaining == 0
                    && r.reset >= seen.reset
                    && r.reset > chrono::Utc::now().timestamp()
            });
            if !exhausted {
                METRICS.github_rate_limit_remaining.set(remaining);
                *rate = Some(seen);
            }
        }
        if status == 304 {
            if let Some((_, body)) = stored {
                return Ok(Reply {
                    status: 200,
                    headers,
                    body,
                    cached: true,
                });
            }
        }
        let text =
            self.octo.body_to_string(resp).await.map_err(|e| {
                PluginError::Io(std::io::Error::other(format!("github {kind}: {e}")))
            })?;
        let body: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        let now = chrono::Utc::now().timestamp();
        match rate_limited(status, &headers, &body, now) {
            Some(PluginError::RateLimited {
                kind: "secondary",
                retry_after,
            }) if header_i64(&headers, "retry-after").is_none() && remaining != Some(0) => {
                // No wait given: at least a minute, doubling while it goes on.
                let mut strikes = lock(&self.unannounced_strikes);
                let wait = retry_after.saturating_mul(1 << *strikes);
                *strikes = (*strikes + 1).min(SECONDARY_MAX_DOUBLINGS);
                return Err(PluginError::RateLimited {
                    kind: "secondary",
                    retry_after: wait,
                });
            }
            Some(limited) => return Err(limited),
            None => *lock(&self.unannounced_strikes) = 0,
        }
        if is_get && status == 200 {
            if let Some(etag) = headers
                .get(http::header::ETAG)
                .and_then(|v| v.to_str().ok())
            {
                let mut cache = lock(&self.etags);
                if cache.len() >= ETAG_CACHE {
                    cache.clear();
                }
                cache.insert(url.to_string(), (etag.to_string(), body.clone()));
            }
        }
        Ok(Reply {
            status,
            headers,
            body,
            cached: false,
        })
    }

    /// GET that must answer 200 (or 304 from the cache).
    async fn get(&self, kind: &'static str, url: &str) -> PluginResult<Reply> {
        let r = self.call(http::Method::GET, kind, url, None).await?;
        match r.status {
            200 => Ok(r),
            404 => Err(PluginError::NotFound(format!("github {kind}"))),
            s => Err(api_error(s, &r.body)),
        }
    }

    /// Every page of a list, following `Link: rel="next"`. The items are the body when it is
    /// an array, else its `key` (`check_runs`, a combined status's `statuses`).
    async fn get_all(
        &self,
        kind: &'static str,
        url: String,
        key: &str,
    ) -> PluginResult<Vec<Value>> {
        let mut out = vec![];
        let mut next = Some(url);
        while let Some(url) = next.take() {
            let r = self.get(kind, &url).await?;
            let items = if let Some(a) = r.body.as_array() {
                a.clone()
            } else {
                r.body[key].as_array().cloned().unwrap_or_default()
            };
            out.extend(items);
            next = r
                .headers
                .get(http::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(next_link);
        }
        Ok(out)
    }

    fn repo_url(&self, repo: &str) -> PluginResult<String> {
        let (o, n) = split_repo(repo)?;
        Ok(format!("{}/repos/{o}/{n}", self.api_url))
    }

    /// One GraphQL request for up to [`BATCH_SIZE`] PRs.
    async fn graphql_batch(&self, repo: &str, numbers: &[i64]) -> PluginResult<Vec<PrStatus>> {
        let (owner, name) = split_repo(repo)?;
        let body =
            json!({"query": batch_query(numbers), "variables": {"owner": owner, "name": name}});
        let r = self
            .call(
                http::Method::POST,
                "graphql",
                &self.graphql_url,
                Some(&body),
            )
            .await?;
        if r.status != 200 {
            return Err(api_error(r.status, &r.body));
        }
        let data = &r.body["data"]["repository"];
        if data.is_null() {
            return Err(graphql_error(&r.body, "no data"));
        }
        let partials: Vec<Partial> = numbers
            .iter()
            .filter_map(|n| {
                let v = &data[format!("pr{n}")];
                (!v.is_null()).then(|| {
                    let mut p = pr_from_graphql(v);
                    p.status.remarks = remarks::read(v, self.bot_login.as_deref());
                    p
                })
            })
            .collect();
        let mut out = Vec::with_capacity(partials.len());
        for mut p in partials {
            self.more_contexts(owner, name, &mut p).await?;
            out.push(p.finish(&self.ignore));
        }
        Ok(out)
    }

    /// Reads the remaining pages of a PR's roll-up contexts (a matrix of 100+ checks).
    async fn more_contexts(&self, owner: &str, name: &str, p: &mut Partial) -> PluginResult<()> {
        let query = contexts_query(p.status.number);
        let mut pages = 1;
        while let Some(after) = p.next.take() {
            if pages >= checks::MAX_PAGES {
                tracing::warn!(
                    pr = p.status.number,
                    "roll-up contexts cut at {pages} pages"
                );
                break;
            }
            pages += 1;
            let body = json!({"query": query,
                "variables": {"owner": owner, "name": name, "after": after}});
            let r = self
                .call(
                    http::Method::POST,
                    "graphql",
                    &self.graphql_url,
                    Some(&body),
                )
                .await?;
            if r.status != 200 {
                return Err(api_error(r.status, &r.body));
            }
            let conn =
                &r.body["data"]["repository"]["pullRequest"]["statusCheckRollup"]["contexts"];
            if conn.is_null() {
                return Err(graphql_error(&r.body, "no contexts page"));
            }
            let (nodes, next) = checks::page(conn);
            p.status.checks.extend(nodes);
            p.next = next;
        }
        Ok(())
    }

    /// The tail of an Actions job's log (`/actions/jobs/{id}/logs`, a 302 to plain text).
    async fn job_log(&self, repo_url: &str, job_id: i64) -> Option<String> {
        let url = format!("{repo_url}/actions/jobs/{job_id}/logs");
        let r = self
            .call(
                http::Method::GET,
                "GET /repos/{owner}/{repo}/actions/jobs/{job_id}/logs",
                &url,
                None,
            )
            .await
            .ok()?;
        let text = if (300..400).contains(&r.status) {
            let loc = r.headers.get(LOCATION)?.to_str().ok()?.to_string();
            let r = self
                .call(http::Method::GET, "GET (job log download)", &loc, None)
                .await
                .ok()?;
            r.body.as_str().map(str::to_string)?
        } else if r.status == 200 {
            r.body.as_str().map(str::to_string)?
        } else {
            return None;
        };
        Some(excerpt(&text))
    }
}

/// The error of a GraphQL answer without the data asked for (HTTP 200): its first error, a
/// `NOT_FOUND` (an unknown repository or PR) as [`PluginError::NotFound`].
fn graphql_error(body: &Value, no_message: &str) -> PluginError {
    let first = &body["errors"][0];
    let message = first["message"].as_str().unwrap_or(no_message).to_string();
    match first["type"].as_str() {
        Some("NOT_FOUND") => PluginError::NotFound(message),
        _ => PluginError::Api {
            status: 200,
            message,
        },
    }
}

/// Whether an answer is a rate limit, and how long to wait (wire-formats §1.4):
/// - REST, primary: 403 or 429 with `x-ratelimit-remaining: 0`, until `x-ratelimit-reset`;
/// - secondary: 403 or 429 naming it, `retry-after` seconds when sent, else until the reset
///   when the budget is spent, else a minute (which the caller doubles while such limits go
///   on: "wait for an exponentially increasing amount of time between retries");
/// - GraphQL answers an exceeded limit with **200** and an `errors` entry (`type:
///   RATE_LIMITED`, or a message naming the limit), with `x-ratelimit-remaining: 0` for the
///   primary one ("Rate limits and node limits for the GraphQL API").
pub(crate) fn rate_limited(
    status: u16,
    headers: &http::HeaderMap,
    body: &Value,
    now: i64,
) -> Option<PluginError> {
    let messages: Vec<String> = std::iter::once(&body["message"])
        .chain(
            body["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| &e["message"]),
        )
        .filter_map(Value::as_str)
        .map(str::to_lowercase)
        .collect();
    let secondary = messages.iter().any(|m| m.contains("secondary rate limit"));
    let graphql_limited = status == 200
        && body["errors"].as_array().is_some_and(|es| {
            es.iter().any(|e| {
                e["type"] == "RATE_LIMITED"
                    || e["message"]
                        .as_str()
                        .is_some_and(|m| m.to_lowercase().contains("rate limit"))
            })
        });
    if !(status == 403 || status == 429 || graphql_limited) {
        return None;
    }
    let remaining = header_i64(headers, "x-ratelimit-remaining");
    if let Some(secs) = header_i64(headers, "retry-after") {
        return Some(PluginError::RateLimited {
            kind: "secondary",
            retry_after: Duration::from_secs(secs.max(0).unsigned_abs()),
        });
    }
    if remaining == Some(0) {
        let reset = header_i64(headers, "x-ratelimit-reset").unwrap_or(0);
        return Some(PluginError::RateLimited {
            kind: if secondary { "secondary" } else { "primary" },
            retry_after: Duration::from_secs((reset - now).max(1).unsigned_abs()),
        });
    }
    // A 429 is always a limit, even without a wait or a message naming it.
    (secondary || graphql_limited || status == 429).then_some(PluginError::RateLimited {
        kind: if secondary { "secondary" } else { "primary" },
        retry_after: SECONDARY_DEFAULT_WAIT,
    })
}

fn api_error(status: u16, body: &Value) -> PluginError {
    PluginError::Api {
        status,
        message: body["message"]
            .as_str()
            .unwrap_or("unexpected answer")
            .to_string(),
    }
}

#[async_trait]
impl Scm for GithubScm {
    #[tracing::instrument(skip_all, fields(repo, branch))]
    async fn find_pr(&self, repo: &str, branch: &str) -> PluginResult<Option<PrStatus>> {
        let (owner, _) = split_repo(repo)?;
        let url = format!(
            "{}/pulls?state=open&head={}&per_page=1",
            self.repo_url(repo)?,
            query_value(&format!("{owner}:{branch}"))
        );
        let r = self.get("GET /repos/{owner}/{repo}/pulls", &url).await?;
        let Some(n) = r.body.get(0).and_then(|p| p["number"].as_i64()) else {
            return Ok(None);
        };
        Ok(self.batch_status(repo, &[n]).await?.into_iter().next())
    }

    #[tracing::instrument(skip_all, fields(repo, number))]
    async fn pr_status(&self, repo: &str, number: i64) -> PluginResult<PrStatus> {
        self.batch_status(repo, &[number])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| PluginError::NotFound(format!("PR #{number} in {repo}")))
    }

    #[tracing::instrument(skip_all, fields(repo, count = numbers.len()))]
    async fn batch_status(&self, repo: &str, numbers: &[i64]) -> PluginResult<Vec<PrStatus>> {
        let mut out = Vec::with_capacity(numbers.len());
        for chunk in numbers.chunks(BATCH_SIZE) {
            out.extend(self.graphql_batch(repo, chunk).await?);
        }
        Ok(out)
    }

    #[tracing::instrument(skip_all, fields(repo))]
    async fn repo_changed(&self, repo: &str) -> PluginResult<bool> {
        let url = format!(
            "{}/pulls?state=open&sort=updated&direction=desc&per_page=1",
            self.repo_url(repo)?
        );
        let r = self.get("GET /repos/{owner}/{repo}/pulls", &url).await?;
        Ok(!r.cached)
    }

    #[tracing::instrument(skip_all, fields(repo, sha = head_sha))]
    async fn ci(&self, repo: &str, head_sha: &str) -> PluginResult<CiSummary> {
        let base = self.repo_url(repo)?;
        // Independent reads go out together: an instruction waits for the slowest, not the sum.
        let (runs, statuses) = futures::join!(
            self.get_all(
                "GET /repos/{owner}/{repo}/commits/{ref}/check-runs",
                format!("{base}/commits/{head_sha}/check-runs?per_page=100"),
                "check_runs",
            ),
            self.get_all(
                "GET /repos/{owner}/{repo}/commits/{ref}/status",
                format!("{base}/commits/{head_sha}/status?per_page=100"),
                "statuses",
            )
        );
        let (runs, statuses) = (runs?, statuses?);
        let mut checks = vec![];
        let mut ids = HashMap::new();
        for c in &runs {
            let info = CheckInfo {
                name: str_of(c, "name"),
                status: str_of(c, "status"),
                conclusion: c["conclusion"].as_str().map(str::to_string),
                url: c["details_url"]
                    .as_str()
                    .or(c["html_url"].as_str())
                    .map(str::to_string),
            };
            if let Some(id) = c["id"].as_i64() {
                ids.insert(info.name.clone(), id);
            }
            checks.push(info);
        }
        for s in &statuses {
            let state = str_of(s, "state");
            checks.push(CheckInfo {
                name: str_of(s, "context"),
                status: if state == "pending" {
                    "in_progress".into()
                } else {
                    "completed".into()
                },
                conclusion: (state != "pending").then_some(state),
                url: s["target_url"].as_str().map(str::to_string),
            });
        }
        let mut checks = self.ignore.keep(checks);
        checks.sort_by(|a, b| a.name.cmp(&b.name));
        let failing: Vec<&CheckInfo> = checks.iter().filter(|c| c.failed()).collect();
        // On Actions a check run's id is its job's id, so each job log is one hop away.
        let logs = futures::future::join_all(failing.iter().map(|c| async {
            match ids.get(&c.name) {
                Some(id) => self.job_log(&base, *id).await,
                None => None,
            }
        }))
        .await;
        let failed: Vec<FailedCheck> = failing
            .into_iter()
            .zip(logs)
            .map(|(c, log_excerpt)| FailedCheck {
                name: c.name.clone(),
                url: c.url.clone(),
                log_excerpt,
            })
            .collect();
        Ok(CiSummary {
            state: checks::state_of(&checks).into(),
            checks,
            failed,
        })
    }

    #[tracing::instrument(skip_all, fields(repo, number))]
    async fn review_feedback(&self, repo: &str, number: i64) -> PluginResult<ReviewFeedback> {
        let pr = self.pr_status(repo, number).await?;
        let base = self.repo_url(repo)?;
        let reviews = self
            .get_all(
                "GET /repos/{owner}/{repo}/pulls/{number}/reviews",
                format!("{base}/pulls/{number}/reviews?per_page=100"),
                "",
            )
            .await?;
        let comments = self
            .get_all(
                "GET /repos/{owner}/{repo}/issues/{number}/comments",
                format!("{base}/issues/{number}/comments?per_page=100"),
                "",
            )
            .await?;
        Ok(ReviewFeedback {
            decision: pr.review,
            unresolved_threads: pr.unresolved_threads,
            reviews: reviews
                .iter()
                .map(|r| ReviewBody {
                    author: r["user"]["login"].as_str().unwrap_or("ghost").to_string(),
                    state: str_of(r, "state").to_lowercase(),
                    body: str_of(r, "body"),
                })
                .collect(),
            comments: comments
                .iter()
                .map(|c| ReviewComment {
                    author: c["user"]["login"].as_str().unwrap_or("ghost").to_string(),
                    body: str_of(c, "body"),
                    bot: c["user"]["type"] == "Bot",
                })
                .collect(),
        })
    }

    #[tracing::instrument(skip_all, fields(repo, number, method = method.as_str()))]
    async fn merge(
        &self,
        repo: &str,
        number: i64,
        method: MergeMethod,
        expected_head: Option<&str>,
    ) -> PluginResult<String> {
        let url = format!("{}/pulls/{number}/merge", self.repo_url(repo)?);
        let mut body = json!({"merge_method": method.as_str()});
        if let Some(sha) = expected_head {
            body["sha"] = json!(sha);
        }
        let r = self
            .call(
                http::Method::PUT,
                "PUT /repos/{owner}/{repo}/pulls/{number}/merge",
                &url,
                Some(&body),
            )
            .await?;
        let message = r.body["message"].as_str().unwrap_or_default().to_string();
        match r.status {
            200 => Ok(str_of(&r.body, "sha")),
            404 => Err(PluginError::NotFound(format!("PR #{number} in {repo}"))),
            405 => Err(PluginError::NotMergeable(message)),
            409 => Err(PluginError::Conflict(message)),
            s => Err(api_error(s, &r.body)),
        }
    }

    fn rate_limit(&self) -> Option<RateLimit> {
        *lock(&self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_next_link_is_found_among_rels() {
        let h = r#"<http://x/r?page=1>; rel="prev", <http://x/r?page=3&per_page=2>; rel="next", <http://x/r?page=9>; rel="last""#;
        assert_eq!(
            next_link(h).as_deref(),
            Some("http://x/r?page=3&per_page=2")
        );
        assert_eq!(next_link(r#"<http://x/r?page=1>; rel="first""#), None);
    }

    #[test]
    fn github_query_values_escape_what_a_query_would_misread() {
        assert_eq!(query_value("acme:feat/c++"), "acme:feat/c%2B%2B");
        assert_eq!(query_value("acme:a&b#c%d e"), "acme:a%26b%23c%25d%20e");
        assert_eq!(query_value("acme:feat/x-1.2_y"), "acme:feat/x-1.2_y");
    }

    #[test]
    fn github_batch_query_aliases_every_pr() {
        let q = batch_query(&[3, 17]);
        assert!(q.contains("pr3: pullRequest(number: 3)"));
        assert!(q.contains("pr17: pullRequest(number: 17)"));
        assert!(q.contains("rateLimit { cost remaining"));
    }

    #[test]
    fn github_graphql_pr_maps_rollup_threads_and_merge_state() {
        let v = json!({"number": 5, "url": "u", "isDraft": false, "state": "OPEN",
            "headRefName": "f", "headRefOid": "s", "baseRefName": "main",
            "mergeable": "CONFLICTING", "mergeStateStatus": "DIRTY", "reviewDecision": "CHANGES_REQUESTED",
            "statusCheckRollup": {"state": "FAILURE", "contexts": {"nodes": [
                {"__typename": "CheckRun", "name": "test", "status": "COMPLETED", "conclusion": "FAILURE", "detailsUrl": "d"},
                {"__typename": "StatusContext", "context": "lint", "state": "PENDING", "targetUrl": null}]}},
            "reviewThreads": {"nodes": [
                {"isResolved": true, "path": "a.rs", "line": 1, "comments": {"nodes": []}},
                {"isResolved": false, "path": "b.rs", "line": 9, "comments": {"nodes": [{"author": {"login": "r"}, "body": "fix"}]}}]}});
        let p = pr_from_graphql(&v).finish(&IgnoreList::default());
        assert_eq!(
            (p.state.as_str(), p.ci.as_str(), p.review.as_str()),
            ("open", "failing", "changes_requested")
        );
        assert!(p.conflicts && !p.behind);
        assert_eq!(p.mergeable, Some(false));
        assert_eq!(p.unresolved_threads.len(), 1);
        assert_eq!(p.unresolved_threads[0].path, "b.rs");
        assert_eq!(p.checks[0].name, "lint");
        assert_eq!(p.checks[0].status, "in_progress");
    }

    #[test]
    fn github_log_excerpt_keeps_the_tail() {
        let log: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let e = excerpt(&log);
        assert!(e.starts_with("line 60"));
        assert!(e.ends_with("line 99"));
    }

    #[tokio::test]
    async fn github_debug_masks_the_token() {
        let s = GithubSettings {
            api_url: "http://127.0.0.1:1".into(),
            graphql_url: "http://127.0.0.1:1/graphql".into(),
            token: Some(crate::config::Secret::new("ghp_secret")),
            webhook_secret: None,
            bot_login: None,
            poll_interval: crate::config::HumanDuration::from_secs(30),
            reconcile_every: 10,
            timeout: crate::config::HumanDuration::from_secs(10),
            ignore_checks: vec![],
        };
        let scm = GithubScm::new(&s, Duration::from_secs(1)).expect("builds");
        assert!(!format!("{scm:?}").contains("ghp_secret"));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn github_graphql_rate_limit_answered_200_is_a_rate_limit() {
        let now = 1_000;
        // "Rate limits and node limits for the GraphQL API": an exceeded primary limit is a
        // 200 with an error and `x-ratelimit-remaining: 0`.
        let body = json!({"errors": [{"type": "RATE_LIMITED", "code": "graphql_rate_limit",
            "message": "API rate limit already exceeded for user ID 1."}]});
        let h = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1030"),
        ]);
        let e = rate_limited(200, &h, &body, now).expect("limited");
        assert!(
            matches!(
                e,
                PluginError::RateLimited {
                    kind: "primary",
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(30)));
        // A secondary limit in a 200 with `retry-after`.
        let body = json!({"errors": [{"message": "You have exceeded a secondary rate limit."}]});
        let e = rate_limited(200, &headers(&[("retry-after", "9")]), &body, now).expect("limited");
        assert!(
            matches!(
                e,
                PluginError::RateLimited {
                    kind: "secondary",
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(9)));
        // Other GraphQL errors and a plain 403 are not limits; an unknown repository is
        // not found.
        let body = json!({"data": {"repository": null}, "errors": [{"type": "NOT_FOUND",
            "message": "Could not resolve to a Repository with the name 'a/b'."}]});
        assert!(matches!(
            graphql_error(&body, "no data"),
            PluginError::NotFound(m) if m.contains("Could not resolve")
        ));
        assert!(rate_limited(
            200,
            &headers(&[("x-ratelimit-remaining", "4999")]),
            &body,
            now
        )
        .is_none());
        let body = json!({"message": "Resource not accessible by integration"});
        assert!(rate_limited(
            403,
            &headers(&[("x-ratelimit-remaining", "4999")]),
            &body,
            now
        )
        .is_none());
        assert!(rate_limited(200, &headers(&[]), &json!({"data": {}}), now).is_none());
        // A bare 429 is a limit all the same (a minute).
        let e = rate_limited(429, &headers(&[]), &json!({}), now).expect("limited");
        assert_eq!(e.retry_after(), Some(SECONDARY_DEFAULT_WAIT));
    }

    #[test]
    fn github_secondary_limit_is_retriable_with_its_wait() {
        let e = PluginError::RateLimited {
            kind: "secondary",
            retry_after: Duration::from_secs(7),
        };
        assert!(e.is_retriable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    }
}
