//! GitHub issues as tasks.

use std::time::Duration;

use async_trait::async_trait;

use super::{client, send_json};
use crate::config::GithubSettings;
use crate::plugins::{Issue, PluginError, PluginResult, Tracker};

/// Issues of one repository.
pub struct GithubIssues {
    http: reqwest::Client,
    api_url: String,
    repo: String,
    token: Option<String>,
    timeout: Duration,
}

impl GithubIssues {
    /// Issues of `repo` (`owner/name`) on the API of `settings`.
    ///
    /// # Errors
    /// `Invalid` when the HTTP client cannot be built.
    pub fn new(settings: &GithubSettings, repo: &str) -> PluginResult<Self> {
        Ok(GithubIssues {
            http: client()?,
            api_url: settings.api_url.trim_end_matches('/').to_string(),
            repo: repo.to_string(),
            token: settings
                .token
                .as_ref()
                .map(|t| t.expose().to_string())
                .filter(|t| !t.is_empty()),
            timeout: settings.timeout.get(),
        })
    }
}

#[async_trait]
impl Tracker for GithubIssues {
    async fn issue(&self, id: &str) -> PluginResult<Issue> {
        let n: u64 = id
            .trim_start_matches('#')
            .parse()
            .map_err(|_| PluginError::Invalid(format!("`{id}` is not a GitHub issue number")))?;
        let mut req = self
            .http
            .get(format!("{}/repos/{}/issues/{n}", self.api_url, self.repo))
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28");
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let v = send_json(
            &format!("GitHub issue {}#{n}", self.repo),
            req,
            self.timeout,
        )
        .await?;
        Ok(Issue {
            id: n.to_string(),
            title: v["title"].as_str().unwrap_or_default().to_string(),
            body: v["body"].as_str().unwrap_or_default().to_string(),
            labels: v["labels"]
                .as_array()
                .map(|ls| {
                    ls.iter()
                        .filter_map(|l| l["name"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            url: v["html_url"].as_str().unwrap_or_default().to_string(),
            branch: None,
        })
    }
}
