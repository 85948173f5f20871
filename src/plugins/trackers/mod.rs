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
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(PluginError::RateLimited {
            kind: "secondary",
            retry_after: retry_after.unwrap_or(Duration::from_secs(60)),
        });
    }
    let body = tokio::time::timeout(timeout, resp.text())
        .await
        .map_err(|_| PluginError::Timeout {
            what: what.to_string(),
            after: timeout,
        })?
        .unwrap_or_default();
    if !status.is_success() {
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| {
                v["message"]
                    .as_str()
                    .or_else(|| v["errorMessages"][0].as_str())
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
    serde_json::from_str(&body)
        .map_err(|e| PluginError::Invalid(format!("{what}: the answer is not JSON: {e}")))
}

fn client() -> PluginResult<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent("flotilla")
        .build()
        .map_err(|e| PluginError::Invalid(format!("http client: {e}")))
}
