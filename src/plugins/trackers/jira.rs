//! Jira Cloud issues as tasks (REST v3; descriptions in Atlassian Document Format), and
//! write-back to them: a comment in ADF, a workflow transition (`GET`/`POST …/transitions`).
//!
//! A rate limit (429) or a resource limit (503 with `Retry-After`) holds the site's every
//! request until its wait is over: Jira answers a request made earlier with "the same or
//! longer `Retry-After` period" ("Rate limiting"), so until then a call fails at once with
//! the time left, without asking.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{client, send_json};
use crate::config::JiraSettings;
use crate::plugins::{Issue, PluginError, PluginResult, Tracker, WriteBack};

/// Issues of a Jira site.
pub struct JiraIssues {
    http: reqwest::Client,
    base_url: String,
    email: String,
    token: String,
    timeout: Duration,
    /// Until when no request leaves: the end of the last rate or resource limit's wait.
    hold: Mutex<Option<Instant>>,
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
            hold: Mutex::new(None),
        })
    }

    /// Sends `req` unless a limit holds (then `RateLimited` with the time left), and starts a
    /// hold when Jira answers with one.
    async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> PluginResult<Value> {
        let now = Instant::now();
        let held = self
            .hold
            .lock()
            .ok()
            .and_then(|h| *h)
            .filter(|until| *until > now);
        if let Some(until) = held {
            return Err(PluginError::RateLimited {
                kind: "secondary",
                retry_after: until - now,
            });
        }
        let r = send_json(what, req, self.timeout).await;
        if let Err(PluginError::RateLimited { retry_after, .. }) = &r {
            let until = Instant::now() + *retry_after;
            if let Ok(mut h) = self.hold.lock() {
                *h = Some(h.map_or(until, |t| t.max(until)));
            }
        }
        r
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

fn check_key(id: &str) -> PluginResult<()> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(PluginError::Invalid(format!(
            "`{id}` is not a Jira issue key"
        )));
    }
    Ok(())
}

impl JiraIssues {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/rest/api/3{path}", self.base_url))
            .basic_auth(&self.email, Some(&self.token))
            .header("accept", "application/json")
    }

    /// The transition of issue `id` that matches `wanted` (its id, its name, or the name of
    /// the status it leads to).
    async fn transition(&self, id: &str, wanted: &str) -> PluginResult<String> {
        let what = format!("Jira issue {id}: transitions");
        let req = self.request(reqwest::Method::GET, &format!("/issue/{id}/transitions"));
        let v = self.send(&what, req).await?;
        let eq = |x: &Value| x.as_str().is_some_and(|n| n.eq_ignore_ascii_case(wanted));
        v["transitions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["id"].as_str() == Some(wanted) || eq(&t["name"]) || eq(&t["to"]["name"]))
            .and_then(|t| t["id"].as_str().map(str::to_string))
            .ok_or_else(|| {
                PluginError::Invalid(format!(
                    "Jira issue {id} has no transition to `{wanted}` from its status"
                ))
            })
    }
}

#[async_trait]
impl Tracker for JiraIssues {
    async fn issue(&self, id: &str) -> PluginResult<Issue> {
        check_key(id)?;
        let req = self.request(
            reqwest::Method::GET,
            &format!("/issue/{id}?fields=summary,description,labels,status"),
        );
        let v = self.send(&format!("Jira issue {id}"), req).await?;
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
            closed: f["status"]["statusCategory"]["key"] == "done",
        })
    }

    async fn write_back(&self, id: &str, w: &WriteBack) -> PluginResult<()> {
        check_key(id)?;
        if let Some(text) = &w.comment {
            // "Add comment": the body is an ADF document; 201 with the comment.
            let req = self
                .request(reqwest::Method::POST, &format!("/issue/{id}/comment"))
                .json(&json!({ "body": crate::plugins::chat::adf::markdown_to_adf(text) }));
            self.send(&format!("Jira issue {id}: comment"), req).await?;
        }
        if let Some(wanted) = &w.state {
            let transition = self.transition(id, wanted).await?;
            // "Transition issue": 204 No Content.
            let req = self
                .request(reqwest::Method::POST, &format!("/issue/{id}/transitions"))
                .json(&json!({ "transition": { "id": transition } }));
            self.send(&format!("Jira issue {id}: transition"), req)
                .await?;
        }
        Ok(())
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
