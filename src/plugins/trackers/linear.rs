//! Linear issues as tasks, and write-back to them (GraphQL: `commentCreate`, `issueUpdate`
//! with the team's workflow state).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{client, send_json};
use crate::config::LinearSettings;
use crate::plugins::{Issue, PluginError, PluginResult, Tracker, WriteBack};

const QUERY: &str = "query Issue($id: String!) { issue(id: $id) { identifier title description url branchName state { type } labels { nodes { name } } } }";
/// The issue's id and its team's workflow states (to move it by state name).
const STATES: &str = "query IssueStates($id: String!) { issue(id: $id) { id team { states { nodes { id name type } } } } }";
const COMMENT: &str = "mutation Comment($issueId: String!, $body: String!) { commentCreate(input: { issueId: $issueId, body: $body }) { success comment { id } } }";
const MOVE: &str = "mutation Move($id: String!, $stateId: String!) { issueUpdate(id: $id, input: { stateId: $stateId }) { success issue { id state { name } } } }";

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

impl LinearIssues {
    /// Runs one GraphQL operation; GraphQL errors (answered 200) become plugin errors.
    async fn graphql(&self, what: &str, query: &str, variables: Value) -> PluginResult<Value> {
        // A personal API key goes in `Authorization` as is (OAuth tokens take `Bearer`).
        let req = self
            .http
            .post(&self.api_url)
            .header("authorization", &self.key)
            .json(&json!({"query": query, "variables": variables}));
        let v = send_json(what, req, self.timeout).await?;
        if let Some(errors) = v["errors"].as_array().filter(|e| !e.is_empty()) {
            let message = errors[0]["message"].as_str().unwrap_or("error");
            let not_found = errors[0]["extensions"]["code"] == "NOT_FOUND"
                || message.to_ascii_lowercase().contains("not found");
            return Err(if not_found {
                PluginError::NotFound(what.to_string())
            } else {
                PluginError::Api {
                    status: 200,
                    message: format!("{what}: {message}"),
                }
            });
        }
        Ok(v)
    }
}

/// Whether a mutation's payload says it worked (`success: true`).
fn succeeded(v: &Value, field: &str, what: &str) -> PluginResult<()> {
    if v["data"][field]["success"] == true {
        Ok(())
    } else {
        Err(PluginError::Api {
            status: 200,
            message: format!("{what}: {field} did not succeed"),
        })
    }
}

#[async_trait]
impl Tracker for LinearIssues {
    async fn issue(&self, id: &str) -> PluginResult<Issue> {
        let what = format!("Linear issue {id}");
        let v = self.graphql(&what, QUERY, json!({"id": id})).await?;
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
            closed: matches!(i["state"]["type"].as_str(), Some("completed" | "canceled")),
        })
    }

    async fn write_back(&self, id: &str, w: &WriteBack) -> PluginResult<()> {
        if w.comment.is_none() && w.state.is_none() {
            return Ok(());
        }
        let what = format!("Linear issue {id}");
        let v = self.graphql(&what, STATES, json!({"id": id})).await?;
        let issue = &v["data"]["issue"];
        let uuid = issue["id"]
            .as_str()
            .ok_or_else(|| PluginError::NotFound(what.clone()))?
            .to_string();
        if let Some(body) = &w.comment {
            let v = self
                .graphql(
                    &format!("{what}: comment"),
                    COMMENT,
                    json!({"issueId": uuid, "body": body}),
                )
                .await?;
            succeeded(&v, "commentCreate", &what)?;
        }
        if let Some(wanted) = &w.state {
            let states = issue["team"]["states"]["nodes"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let state = states
                .iter()
                .find(|s| {
                    s["id"].as_str() == Some(wanted.as_str())
                        || s["name"]
                            .as_str()
                            .is_some_and(|n| n.eq_ignore_ascii_case(wanted))
                })
                .and_then(|s| s["id"].as_str())
                .ok_or_else(|| {
                    PluginError::Invalid(format!(
                        "{what}: its team has no workflow state `{wanted}`"
                    ))
                })?;
            let v = self
                .graphql(
                    &format!("{what}: move"),
                    MOVE,
                    json!({"id": uuid, "stateId": state}),
                )
                .await?;
            succeeded(&v, "issueUpdate", &what)?;
        }
        Ok(())
    }
}
