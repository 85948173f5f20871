//! Linear issues as tasks (GraphQL).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use super::{client, send_json};
use crate::config::LinearSettings;
use crate::plugins::{Issue, PluginError, PluginResult, Tracker};

const QUERY: &str = "query Issue($id: String!) { issue(id: $id) { identifier title description url branchName labels { nodes { name } } } }";

/// Issues of a Linear workspace.
pub struct LinearIssues {
    http: reqwest::Client,
    api_url: String,
    key: String,
    timeout: Duration,
}

impl LinearIssues {
    /// A tracker on `settings.api_url` with `settings.api_key`.
    ///
    /// # Errors
    /// `Invalid` without an API key.
    pub fn new(settings: &LinearSettings, timeout: Duration) -> PluginResult<Self> {
        let key = settings
            .api_key
            .as_ref()
            .map(|k| k.expose().to_string())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| PluginError::Invalid("linear.api_key is not set".into()))?;
        Ok(LinearIssues {
            http: client()?,
            api_url: settings.api_url.clone(),
            key,
            timeout,
        })
    }
}

#[async_trait]
impl Tracker for LinearIssues {
    async fn issue(&self, id: &str) -> PluginResult<Issue> {
        // A personal API key goes in `Authorization` as is (OAuth tokens take `Bearer`).
        let req = self
            .http
            .post(&self.api_url)
            .header("authorization", &self.key)
            .json(&json!({"query": QUERY, "variables": {"id": id}}));
        let what = format!("Linear issue {id}");
        let v = send_json(&what, req, self.timeout).await?;
        if let Some(errors) = v["errors"].as_array().filter(|e| !e.is_empty()) {
            let message = errors[0]["message"].as_str().unwrap_or("error");
            let not_found = errors[0]["extensions"]["code"] == "NOT_FOUND"
                || message.to_ascii_lowercase().contains("not found");
            return Err(if not_found {
                PluginError::NotFound(what)
            } else {
                PluginError::Api {
                    status: 200,
                    message: format!("{what}: {message}"),
                }
            });
        }
        let i = &v["data"]["issue"];
        if i.is_null() {
            return Err(PluginError::NotFound(what));
        }
        Ok(Issue {
            id: i["identifier"].as_str().unwrap_or(id).to_string(),
            title: i["title"].as_str().unwrap_or_default().to_string(),
            body: i["description"].as_str().unwrap_or_default().to_string(),
            labels: i["labels"]["nodes"]
                .as_array()
                .map(|ls| {
                    ls.iter()
                        .filter_map(|l| l["name"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            url: i["url"].as_str().unwrap_or_default().to_string(),
            branch: i["branchName"]
                .as_str()
                .filter(|b| !b.is_empty())
                .map(str::to_string),
        })
    }
}
