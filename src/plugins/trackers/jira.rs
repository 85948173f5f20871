//! Jira Cloud issues as tasks (REST v3; descriptions in Atlassian Document Format).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{client, send_json};
use crate::config::JiraSettings;
use crate::plugins::{Issue, PluginError, PluginResult, Tracker};

/// Issues of a Jira site.
pub struct JiraIssues {
    http: reqwest::Client,
    base_url: String,
    email: String,
    token: String,
    timeout: Duration,
}

impl JiraIssues {
    /// A tracker on `settings.base_url` with basic auth (email + API token).
    ///
    /// # Errors
    /// `Invalid` when the site, email or token is missing.
    pub fn new(settings: &JiraSettings, timeout: Duration) -> PluginResult<Self> {
        let missing = || PluginError::Invalid("jira needs base_url, email and api_token".into());
        Ok(JiraIssues {
            http: client()?,
            base_url: settings
                .base_url
                .clone()
                .ok_or_else(missing)?
                .trim_end_matches('/')
                .to_string(),
            email: settings.email.clone().ok_or_else(missing)?,
            token: settings
                .api_token
                .as_ref()
                .map(|t| t.expose().to_string())
                .filter(|t| !t.is_empty())
                .ok_or_else(missing)?,
            timeout,
        })
    }
}

/// Plain text of an ADF document: paragraphs and headings on their own lines, list items
/// with `- `, code blocks fenced.
pub fn adf_text(node: &Value) -> String {
    fn walk(n: &Value, out: &mut String) {
        match n["type"].as_str().unwrap_or("") {
            "text" => out.push_str(n["text"].as_str().unwrap_or("")),
            "hardBreak" => out.push('\n'),
            "listItem" => {
                out.push_str("- ");
                children(n, out);
            }
            "codeBlock" => {
                out.push_str("```\n");
                children(n, out);
                out.push_str("\n```\n");
            }
            "paragraph" | "heading" => {
                children(n, out);
                out.push('\n');
            }
            _ => children(n, out),
        }
    }
    fn children(n: &Value, out: &mut String) {
        for c in n["content"].as_array().into_iter().flatten() {
            walk(c, out);
        }
    }
    let mut out = String::new();
    if let Some(s) = node.as_str() {
        // API v2-style plain string descriptions.
        return s.to_string();
    }
    walk(node, &mut out);
    out.trim_end().to_string()
}

#[async_trait]
impl Tracker for JiraIssues {
    async fn issue(&self, id: &str) -> PluginResult<Issue> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(PluginError::Invalid(format!(
                "`{id}` is not a Jira issue key"
            )));
        }
        let req = self
            .http
            .get(format!(
                "{}/rest/api/3/issue/{id}?fields=summary,description,labels",
                self.base_url
            ))
            .basic_auth(&self.email, Some(&self.token))
            .header("accept", "application/json");
        let v = send_json(&format!("Jira issue {id}"), req, self.timeout).await?;
        let f = &v["fields"];
        let key = v["key"].as_str().unwrap_or(id).to_string();
        Ok(Issue {
            url: format!("{}/browse/{key}", self.base_url),
            id: key,
            title: f["summary"].as_str().unwrap_or_default().to_string(),
            body: adf_text(&f["description"]),
            labels: f["labels"]
                .as_array()
                .map(|ls| {
                    ls.iter()
                        .filter_map(|l| l.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            branch: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adf_descriptions_become_text() {
        let doc = serde_json::json!({"type": "doc", "version": 1, "content": [
            {"type": "heading", "content": [{"type": "text", "text": "Steps"}]},
            {"type": "paragraph", "content": [{"type": "text", "text": "Open "}, {"type": "text", "text": "the app", "marks": [{"type": "strong"}]}]},
            {"type": "bulletList", "content": [{"type": "listItem", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "click"}]}]}]},
            {"type": "codeBlock", "content": [{"type": "text", "text": "panic!()"}]}
        ]});
        assert_eq!(
            adf_text(&doc),
            "Steps\nOpen the app\n- click\n```\npanic!()\n```"
        );
        assert_eq!(adf_text(&serde_json::json!("plain")), "plain");
    }
}
