//! Trackers: where a session's task comes from. Each fetches one issue (title, body, labels,
//! URL, suggested branch, whether it is closed) for the prompt builder and the branch name,
//! and writes the session's progress back to it ([`crate::plugins::WriteBack`]: a comment
//! with the PR link, GitHub labels, Linear/Jira workflow states). [`intake`] decides which
//! webhook deliveries hand an issue to Flotilla.
//!
//! | kind | API |
//! |---|---|
//! | `github` | REST `GET /repos/{owner}/{repo}/issues/{n}` ([`github::GithubIssues`]) |
//! | `linear` | GraphQL `issue(id:)` ([`linear::LinearIssues`]) |
//! | `jira` | REST v3 `GET /rest/api/3/issue/{key}` ([`jira::JiraIssues`]) |

pub mod github;
pub mod intake;
pub mod jira;
pub mod linear;
pub mod linear_hook;

use std::time::Duration;

use reqwest::{RequestBuilder, StatusCode};
use serde_json::Value;

use super::{PluginError, PluginResult};

/// Sends a tracker request with a timeout and maps HTTP failures to [`PluginError`]s that
/// never contain credentials.
async fn send_json(what: &str, req: RequestBuilder, timeout: Duration) -> PluginResult<Value> {
    let resp = match tokio::time::timeout(timeout, req.send()).await {
        Err(_) => {
            return Err(PluginError::Timeout {
                what: what.to_string(),
                after: timeout,
            })
        }
        Ok(Err(e)) => {
            return Err(PluginError::Io(std::io::Error::other(format!(
                "{what}: {}",
                e.without_url()
            ))))
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    if status == StatusCode::NOT_FOUND {
        return Err(PluginError::NotFound(what.to_string()));
    }
    let headers = resp.headers().clone();
    let body = tokio::time::timeout(timeout, resp.text())
        .await
        .map_err(|_| PluginError::Timeout {
            what: what.to_string(),
            after: timeout,
        })?
        .unwrap_or_default();
    let json = serde_json::from_str::<Value>(&body).ok();
    let now_ms = chrono::Utc::now().timestamp_millis();
    if let Some(limited) = rate_limited(status.as_u16(), &headers, json.as_ref(), now_ms) {
        return Err(limited);
    }
    if !status.is_success() {
        let message = json
            .as_ref()
            .and_then(|v| {
                v["message"]
                    .as_str()
                    .or_else(|| v["errorMessages"][0].as_str())
                    .or_else(|| v["errors"][0]["message"].as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| body.chars().take(200).collect());
        return Err(PluginError::Api {
            status: status.as_u16(),
            message: format!("{what}: {message}"),
        });
    }
    if body.trim().is_empty() {
        // 204 No Content (a Jira transition, a deleted label…).
        return Ok(Value::Null);
    }
    json.ok_or_else(|| PluginError::Invalid(format!("{what}: the answer is not JSON")))
}

/// `X-RateLimit-Reset` as Jira Cloud sends it: an ISO 8601 instant, to the minute
/// (`2026-12-02T16:40Z`) or finer.
fn iso_reset(h: &reqwest::header::HeaderMap) -> Option<chrono::DateTime<chrono::Utc>> {
    let v = h.get("x-ratelimit-reset")?.to_str().ok()?.trim();
    chrono::DateTime::parse_from_rfc3339(v)
        .ok()
        .map(|d| d.with_timezone(&chrono::Utc))
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%MZ")
                .ok()
                .map(|n| n.and_utc())
        })
}

/// The wait until `reset_ms` (epoch milliseconds) from `now_ms`, at least a second.
fn until(reset_ms: i64, now_ms: i64) -> Duration {
    Duration::from_millis(reset_ms.saturating_sub(now_ms).max(1000).unsigned_abs())
}

/// Whether an answer is a rate limit, and the wait, as each tracker publishes it:
/// - Linear: a GraphQL error whose `extensions.code` is `RATELIMITED` (`extensions.type`
///   `ratelimited` in the SDK), whatever the HTTP status; the wait is `retry-after`, else the
///   `x-ratelimit-requests-reset` / `x-ratelimit-complexity-reset` instant (epoch ms).
/// - Jira Cloud: 429 with `Retry-After` seconds, else its `X-RateLimit-Reset` ISO instant
///   ("Rate limiting"); and a 503 with `Retry-After` (a resource limit reached: "not rate
///   limit responses, [but] handled with similar logic"). A 503 without it is an outage, an
///   API error like any 5xx. Any tracker's 503 with `Retry-After` is read the same way.
/// - GitHub REST: as the SCM reads it ([`crate::plugins::github::rate_limited`]): 403 or 429,
///   `retry-after` seconds (secondary), else with `x-ratelimit-remaining: 0` until
///   `x-ratelimit-reset` (primary), else a minute.
fn rate_limited(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: Option<&Value>,
    now_ms: i64,
) -> Option<PluginError> {
    use crate::plugins::github::header_i64;
    let linear = body.and_then(|v| v["errors"].as_array()).is_some_and(|es| {
        es.iter().any(|e| {
            e["extensions"]["code"] == "RATELIMITED" || e["extensions"]["type"] == "ratelimited"
        })
    });
    let retry_after = header_i64(headers, "retry-after");
    let limit = |kind, retry_after| Some(PluginError::RateLimited { kind, retry_after });
    if linear {
        let reset = ["x-ratelimit-requests-reset", "x-ratelimit-complexity-reset"]
            .iter()
            .filter_map(|h| header_i64(headers, h))
            .max();
        return match (retry_after, reset) {
            (Some(secs), _) => limit("secondary", Duration::from_secs(secs.max(0).unsigned_abs())),
            (None, Some(reset)) => limit("primary", until(reset, now_ms)),
            (None, None) => limit("secondary", Duration::from_secs(60)),
        };
    }
    if let (503, Some(secs)) = (status, retry_after) {
        return limit("secondary", Duration::from_secs(secs.max(0).unsigned_abs()));
    }
    if let (429, None, Some(at)) = (status, retry_after, iso_reset(headers)) {
        return limit("secondary", until(at.timestamp_millis(), now_ms));
    }
    crate::plugins::github::rate_limited(
        status,
        headers,
        body.unwrap_or(&Value::Null),
        now_ms / 1000,
    )
}

fn client() -> PluginResult<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent("flotilla")
        .build()
        .map_err(|e| PluginError::Invalid(format!("http client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};
    use serde_json::json;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn tracker_rate_limits_of_each_vendor_carry_their_wait() {
        let now_ms = 1_700_000_000_000;
        let wait = |e: Option<PluginError>| e.and_then(|e| e.retry_after());
        // Jira: 429 + Retry-After.
        let jira = rate_limited(429, &headers(&[("retry-after", "5")]), None, now_ms);
        assert_eq!(wait(jira), Some(Duration::from_secs(5)));
        // Jira without Retry-After: until X-RateLimit-Reset, an ISO instant to the minute.
        // now_ms is 2023-11-14T22:13:20Z.
        let jira = rate_limited(
            429,
            &headers(&[("x-ratelimit-reset", "2023-11-14T22:15Z")]),
            None,
            now_ms,
        );
        assert_eq!(wait(jira), Some(Duration::from_secs(100)));
        // Jira at a resource limit: 503 + Retry-After is waited out like a rate limit; a
        // 503 without it is not a rate limit.
        let busy = rate_limited(503, &headers(&[("retry-after", "7")]), None, now_ms);
        assert!(
            matches!(busy, Some(PluginError::RateLimited { .. })),
            "{busy:?}"
        );
        assert_eq!(wait(busy), Some(Duration::from_secs(7)));
        assert!(rate_limited(503, &headers(&[]), None, now_ms).is_none());
        // GitHub primary: 403, remaining 0, until the reset (epoch seconds).
        let gh = rate_limited(
            403,
            &headers(&[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1700000042"),
            ]),
            Some(&json!({"message": "API rate limit exceeded for user ID 1."})),
            now_ms,
        );
        assert!(matches!(
            gh,
            Some(PluginError::RateLimited {
                kind: "primary",
                ..
            })
        ));
        assert_eq!(wait(gh), Some(Duration::from_secs(42)));
        // GitHub secondary: 403 + retry-after.
        let gh = rate_limited(
            403,
            &headers(&[("retry-after", "3"), ("x-ratelimit-remaining", "4000")]),
            Some(&json!({"message": "You have exceeded a secondary rate limit."})),
            now_ms,
        );
        assert_eq!(wait(gh), Some(Duration::from_secs(3)));
        // Linear: RATELIMITED in `errors`, answered 200 or 400; reset in epoch ms.
        let body = json!({"errors": [{"message": "Rate limit exceeded",
            "extensions": {"code": "RATELIMITED", "type": "ratelimited"}}]});
        for status in [200, 400] {
            let l = rate_limited(
                status,
                &headers(&[
                    ("x-ratelimit-requests-remaining", "0"),
                    ("x-ratelimit-requests-reset", "1700000010000"),
                ]),
                Some(&body),
                now_ms,
            );
            assert_eq!(wait(l), Some(Duration::from_secs(10)), "status {status}");
        }
        // Not limits: a permission 403, a not-found GraphQL error, a plain 400.
        let h = headers(&[("x-ratelimit-remaining", "4999")]);
        let forbidden = json!({"message": "Resource not accessible by integration"});
        assert!(rate_limited(403, &h, Some(&forbidden), now_ms).is_none());
        let nf = json!({"errors": [{"message": "Entity not found",
            "extensions": {"code": "NOT_FOUND", "type": "invalid input"}}]});
        assert!(rate_limited(200, &h, Some(&nf), now_ms).is_none());
        assert!(rate_limited(400, &headers(&[]), None, now_ms).is_none());
    }
}
