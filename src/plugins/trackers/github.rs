//! GitHub issues as tasks, and write-back to them (REST: issue comments and labels).

use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{json, Value};

use super::{client, send_json};
use crate::config::GithubSettings;
use crate::plugins::{Issue, PluginError, PluginResult, Tracker, WriteBack};

/// Open issues read per page when polling for labelled ones (GitHub's maximum).
const PER_PAGE: u32 = 100;
/// Pages read per poll: issues beyond are taken on a later poll, after these were started.
const MAX_PAGES: u32 = 5;

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

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(
                method,
                format!("{}/repos/{}{path}", self.api_url, self.repo),
            )
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28");
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }
}

fn number(id: &str) -> PluginResult<u64> {
    id.trim_start_matches('#')
        .parse()
        .map_err(|_| PluginError::Invalid(format!("`{id}` is not a GitHub issue number")))
}

/// A label name as one path segment (`DELETE …/labels/{name}`).
fn segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn label_names(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|ls| {
            ls.iter()
                .filter_map(|l| l["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[async_trait]
impl Tracker for GithubIssues {
    async fn issue(&self, id: &str) -> PluginResult<Issue> {
        let n = number(id)?;
        let req = self.request(Method::GET, &format!("/issues/{n}"));
        let v = send_json(
            &format!("GitHub issue {}#{n}", self.repo),
            req,
            self.timeout,
        )
        .await?;
        // GitHub answers a pull request's number here too (with `pull_request`): a session
        // for it would take the PR's description for an issue to work on.
        if v.get("pull_request").is_some() {
            return Err(PluginError::Invalid(format!(
                "{}#{n} is a pull request, not an issue",
                self.repo
            )));
        }
        Ok(Issue {
            id: n.to_string(),
            title: v["title"].as_str().unwrap_or_default().to_string(),
            body: v["body"].as_str().unwrap_or_default().to_string(),
            labels: label_names(&v["labels"]),
            url: v["html_url"].as_str().unwrap_or_default().to_string(),
            branch: None,
            closed: v["state"] == "closed",
        })
    }

    async fn write_back(&self, id: &str, w: &WriteBack) -> PluginResult<()> {
        let n = number(id)?;
        let what = format!("GitHub issue {}#{n}", self.repo);
        if let Some(body) = &w.comment {
            // "Create an issue comment": 201 with the comment.
            let req = self
                .request(Method::POST, &format!("/issues/{n}/comments"))
                .json(&json!({ "body": body }));
            send_json(&format!("{what}: comment"), req, self.timeout).await?;
        }
        if !w.add_labels.is_empty() {
            // "Add labels to an issue": 200 with every label the issue now has.
            let req = self
                .request(Method::POST, &format!("/issues/{n}/labels"))
                .json(&json!({ "labels": w.add_labels }));
            send_json(&format!("{what}: add labels"), req, self.timeout).await?;
        }
        for label in &w.remove_labels {
            // "Remove a label from an issue": 404 when the issue does not carry it.
            let req = self.request(
                Method::DELETE,
                &format!("/issues/{n}/labels/{}", segment(label)),
            );
            match send_json(&format!("{what}: remove label"), req, self.timeout).await {
                Ok(_) | Err(PluginError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn labelled(&self, label: &str) -> PluginResult<Vec<String>> {
        let mut out = Vec::new();
        for page in 1..=MAX_PAGES {
            let req = self.request(Method::GET, "/issues").query(&[
                ("state", "open"),
                ("labels", label),
                ("per_page", &PER_PAGE.to_string()),
                ("page", &page.to_string()),
            ]);
            let v = send_json(
                &format!("GitHub issues of {} labelled", self.repo),
                req,
                self.timeout,
            )
            .await?;
            let items = v.as_array().cloned().unwrap_or_default();
            // The issues list includes pull requests (they carry `pull_request`).
            out.extend(
                items
                    .iter()
                    .filter(|i| i.get("pull_request").is_none())
                    .filter_map(|i| i["number"].as_u64().map(|n| n.to_string())),
            );
            if items.len() < PER_PAGE as usize {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_are_escaped_as_one_path_segment() {
        assert_eq!(segment("in review/ok"), "in%20review%2Fok");
        assert_eq!(segment("flotilla"), "flotilla");
    }
}
