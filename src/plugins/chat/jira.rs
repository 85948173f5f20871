//! Jira Cloud comments as a chat platform (wire-formats §5): a `comment_created` webhook on
//! `POST /webhooks/jira` (verified by `X-Hub-Signature`, [`super::verify::jira`]) that
//! mentions `jira.bot_account_id` starts a turn in the conversation named by the issue key;
//! the reply is a REST v3 comment whose body is Atlassian Document Format converted from
//! Markdown ([`super::adf`]), with basic auth `email:api_token`.
//!
//! A webhook's comment body may be wiki markup (mention `[~accountid:ID]`) or ADF (a
//! `mention` node with `attrs.id`); both are read. The bot's own comments, edits and
//! deletions never trigger.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::adf::{adf_mentions, adf_to_text, markdown_to_adf};
use super::split::split_message;
use super::Http;
use crate::chat::jira_repos::{repository_urls, IssueFacts};
use crate::config::JiraSettings;
use crate::plugins::{ChatPlatform, InboundMessage, PluginError, PluginResult};

/// Longest comment we post, in characters (Jira refuses bodies past 32,767).
pub const MAX_MESSAGE: usize = 30_000;

/// Replies as Jira comments.
pub struct JiraPlatform {
    http: Http,
    base_url: String,
    email: String,
    token: String,
}

impl JiraPlatform {
    /// The platform, when `jira.base_url`, `email` and `api_token` are all set.
    ///
    /// # Errors
    /// `Invalid` when the HTTP client cannot be built.
    pub fn from_settings(s: &JiraSettings, timeout: Duration) -> PluginResult<Option<Self>> {
        let (Some(base), Some(email), Some(token)) = (
            s.base_url.as_deref().filter(|b| !b.is_empty()),
            s.email.as_deref().filter(|e| !e.is_empty()),
            s.api_token.as_ref().filter(|t| !t.is_empty()),
        ) else {
            return Ok(None);
        };
        Ok(Some(Self::new(base, email, token.expose(), timeout)?))
    }

    /// A platform posting to the site at `base_url`.
    ///
    /// # Errors
    /// `Invalid` when the HTTP client cannot be built.
    pub fn new(base_url: &str, email: &str, token: &str, timeout: Duration) -> PluginResult<Self> {
        Ok(JiraPlatform {
            http: Http::new("jira", timeout)?,
            base_url: base_url.trim_end_matches('/').to_string(),
            email: email.to_string(),
            token: token.to_string(),
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> PluginResult<Value> {
        let url = format!("{}{path}", self.base_url);
        let r = self
            .http
            .call(|c| {
                c.request(method.clone(), &url)
                    .basic_auth(&self.email, Some(&self.token))
                    .header(reqwest::header::ACCEPT, "application/json")
                    .json(&body)
            })
            .await?;
        if (200..300).contains(&r.status) {
            return Ok(r.json);
        }
        let msg = r.json["errorMessages"][0]
            .as_str()
            .map(str::to_string)
            .or_else(|| r.json.get("errors").map(|e| e.to_string()));
        Err(r.error("jira", msg.as_deref()))
    }
}

fn check_key(thread: &str) -> PluginResult<&str> {
    let ok = thread.split_once('-').is_some_and(|(p, n)| {
        !p.is_empty()
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !n.is_empty()
            && n.chars().all(|c| c.is_ascii_digit())
    });
    if ok {
        Ok(thread)
    } else {
        Err(PluginError::Invalid(format!("bad Jira issue key {thread}")))
    }
}

#[async_trait]
impl ChatPlatform for JiraPlatform {
    fn name(&self) -> &'static str {
        "jira"
    }

    fn max_message_len(&self) -> usize {
        MAX_MESSAGE
    }

    async fn send(&self, thread: &str, text: &str) -> PluginResult<String> {
        let key = check_key(thread)?;
        let mut last = None;
        for chunk in split_message(text, MAX_MESSAGE) {
            let v = self
                .call(
                    reqwest::Method::POST,
                    &format!("/rest/api/3/issue/{key}/comment"),
                    json!({"body": markdown_to_adf(&chunk)}),
                )
                .await?;
            last = v["id"].as_str().map(str::to_string);
        }
        last.ok_or_else(|| PluginError::Invalid("nothing to send".into()))
    }

    async fn edit(&self, thread: &str, message_id: &str, text: &str) -> PluginResult<()> {
        let key = check_key(thread)?;
        let Some(first) = split_message(text, MAX_MESSAGE).into_iter().next() else {
            return Ok(());
        };
        self.call(
            reqwest::Method::PUT,
            &format!("/rest/api/3/issue/{key}/comment/{message_id}"),
            json!({"body": markdown_to_adf(&first)}),
        )
        .await
        .map(|_| ())
    }
}

/// The chat message in a Jira webhook body, if it is a `comment_created` mentioning the bot
/// account `bot_account_id` by someone else.
pub fn parse_webhook(v: &Value, bot_account_id: &str) -> Option<InboundMessage> {
    if bot_account_id.is_empty() || v["webhookEvent"].as_str() != Some("comment_created") {
        return None;
    }
    let c = &v["comment"];
    let author = c["author"]["accountId"].as_str()?;
    if author == bot_account_id {
        return None;
    }
    let key = v["issue"]["key"].as_str()?;
    let text = match &c["body"] {
        Value::String(s) => {
            let wiki = format!("[~accountid:{bot_account_id}]");
            if !s.contains(&wiki) {
                return None;
            }
            s.replace(&wiki, " ")
        }
        doc @ Value::Object(_) => {
            if !adf_mentions(doc, bot_account_id) {
                return None;
            }
            strip_adf_mention(doc, bot_account_id)
        }
        _ => return None,
    };
    let text = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string();
    if text.is_empty() {
        return None;
    }
    let mut meta = std::collections::BTreeMap::new();
    issue_facts(&v["issue"], key).into_meta(&mut meta);
    Some(InboundMessage {
        platform: "jira".into(),
        thread: key.to_string(),
        message_id: c["id"].as_str()?.to_string(),
        author: author.to_string(),
        text,
        meta,
    })
}

/// What the repository mapping reads of the webhook's issue: project key, components,
/// labels, and the repository URLs of its description (wiki text or ADF).
fn issue_facts(issue: &Value, key: &str) -> IssueFacts {
    let f = &issue["fields"];
    let names = |v: &Value, field: Option<&str>| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| match field {
                Some(k) => x[k].as_str(),
                None => x.as_str(),
            })
            .filter(|s| !s.is_empty() && !s.contains('\n'))
            .map(str::to_string)
            .collect()
    };
    let description = match &f["description"] {
        Value::String(s) => s.clone(),
        doc @ Value::Object(_) => adf_to_text(doc),
        _ => String::new(),
    };
    IssueFacts {
        project: f["project"]["key"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| key.split('-').next().unwrap_or_default().to_string()),
        components: names(&f["components"], Some("name")),
        labels: names(&f["labels"], None),
        urls: repository_urls(&description),
    }
}

/// The ADF's text without the bot's mention nodes.
fn strip_adf_mention(doc: &Value, account_id: &str) -> String {
    fn prune(v: &Value, id: &str) -> Value {
        let mut v = v.clone();
        if let Some(items) = v.get_mut("content").and_then(Value::as_array_mut) {
            items.retain(|c| !(c["type"] == "mention" && c["attrs"]["id"].as_str() == Some(id)));
            for c in items.iter_mut() {
                *c = prune(c, id);
            }
        }
        v
    }
    adf_to_text(&prune(doc, account_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(event: &str, author: &str, body: Value) -> Value {
        json!({"timestamp": 1, "webhookEvent": event, "issue": {"id": "1", "key": "ABC-123",
            "fields": {"summary": "s"}}, "comment": {"id": "10001", "author": {"accountId": author},
            "body": body}})
    }

    #[test]
    fn wiki_and_adf_mentions_trigger() {
        let m = parse_webhook(
            &hook("comment_created", "u1", json!("[~accountid:bot-1] /status")),
            "bot-1",
        )
        .expect("wiki");
        assert_eq!(
            (m.thread.as_str(), m.text.as_str(), m.author.as_str()),
            ("ABC-123", "/status", "u1")
        );
        let adf = json!({"type": "doc", "version": 1, "content": [{"type": "paragraph", "content": [
            {"type": "mention", "attrs": {"id": "bot-1", "text": "@Flotilla"}},
            {"type": "text", "text": " explain"}]}]});
        let m = parse_webhook(&hook("comment_created", "u1", adf), "bot-1").expect("adf");
        assert_eq!(m.text, "explain");
    }

    #[test]
    fn the_issue_facts_travel_in_the_meta() {
        let mut h = hook("comment_created", "u1", json!("[~accountid:bot-1] go"));
        h["issue"]["fields"]["components"] = json!([{"id": "1", "name": "Backend"}]);
        h["issue"]["fields"]["labels"] = json!(["web", "urgent"]);
        h["issue"]["fields"]["description"] = json!({"type": "doc", "version": 1, "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": "in https://github.com/acme/api"}]}]});
        let m = parse_webhook(&h, "bot-1").expect("message");
        let f = IssueFacts::from_meta(&m.meta).expect("facts");
        assert_eq!(f.project, "ABC");
        assert_eq!(f.components, vec!["Backend"]);
        assert_eq!(f.labels, vec!["web", "urgent"]);
        assert_eq!(f.urls, vec!["https://github.com/acme/api"]);
    }

    #[test]
    fn own_comments_updates_and_unmentioned_do_not() {
        let body = json!("[~accountid:bot-1] hi");
        assert!(parse_webhook(&hook("comment_updated", "u1", body.clone()), "bot-1").is_none());
        assert!(parse_webhook(&hook("comment_created", "bot-1", body), "bot-1").is_none());
        assert!(parse_webhook(&hook("comment_created", "u1", json!("hi")), "bot-1").is_none());
    }
}
