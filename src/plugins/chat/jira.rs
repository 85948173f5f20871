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
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::adf::{adf_mentions, adf_to_text, markdown_to_adf};
use super::reply_key::{post_pieces, Marks, MARK_PAGES};
use super::split::split_message;
use super::Http;
use crate::chat::jira_repos::{repository_urls, IssueFacts};
use crate::config::JiraSettings;
use crate::plugins::{ChatPlatform, InboundMessage, PluginError, PluginResult, ReplyKey};

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
                let r = c
                    .request(method.clone(), &url)
                    .basic_auth(&self.email, Some(&self.token))
                    .header(reqwest::header::ACCEPT, "application/json");
                super::json_body(r, &body)
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

impl JiraPlatform {
    /// "Add comment" for each piece of `text`. With `key`, each piece carries its mark
    /// ([`ReplyKey::mark`]) in a comment property ([`REPLY_PROPERTY`]), which Jira does not
    /// show; when an earlier attempt may have posted it, the issue's newest comments are read
    /// first and a piece already there is not posted again.
    async fn post(&self, thread: &str, text: &str, key: Option<&ReplyKey>) -> PluginResult<String> {
        let issue = check_key(thread)?;
        let pieces = split_message(text, MAX_MESSAGE);
        let look = |since| self.marks_since(issue, since);
        post_pieces(pieces, key, look, |chunk, mark| async move {
            let mut body = json!({"body": markdown_to_adf(&chunk)});
            if let Some(mark) = mark {
                body["properties"] = json!([{"key": REPLY_PROPERTY, "value": {"mark": mark}}]);
            }
            let path = format!("/rest/api/3/issue/{issue}/comment");
            let v = self.call(reqwest::Method::POST, &path, body).await?;
            Ok(v["id"].as_str().map(str::to_string))
        })
        .await
    }

    /// The marks of the issue's comments made since `since`, with their ids: "Get comments"
    /// newest first (up to [`MARK_PAGES`] pages of [`MARK_PAGE`]) for the ids, then "Get
    /// comments by IDs" with `expand=properties` for their marks.
    async fn marks_since(&self, issue: &str, since: DateTime<Utc>) -> PluginResult<Marks> {
        let mut ids = Vec::new();
        'pages: for page in 0..MARK_PAGES {
            let path = format!(
                "/rest/api/3/issue/{issue}/comment?orderBy=-created&startAt={}&maxResults={MARK_PAGE}",
                page * MARK_PAGE
            );
            let v = self.call(reqwest::Method::GET, &path, Value::Null).await?;
            let comments = v["comments"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            for c in comments {
                let created = c["created"].as_str().and_then(jira_time);
                if created.is_some_and(|t| t < since) {
                    break 'pages;
                }
                ids.extend(c["id"].as_str().map(str::to_string));
            }
            if comments.len() < MARK_PAGE {
                break;
            }
        }
        let mut marks = Marks::new();
        for batch in ids.chunks(MARK_PAGE) {
            let v = self
                .call(
                    reqwest::Method::POST,
                    &format!("/rest/api/3/comment/list?expand=properties&maxResults={MARK_PAGE}"),
                    json!({ "ids": batch }),
                )
                .await?;
            for c in v["values"].as_array().into_iter().flatten() {
                let mark = c["properties"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find_map(|p| {
                        (p["key"].as_str() == Some(REPLY_PROPERTY))
                            .then(|| p["value"]["mark"].as_str())
                            .flatten()
                    });
                if let (Some(mark), Some(id)) = (mark, c["id"].as_str()) {
                    marks.insert(mark.to_string(), id.to_string());
                }
            }
        }
        Ok(marks)
    }
}

/// The comment property holding a stored reply's mark.
const REPLY_PROPERTY: &str = "flotilla.reply";
/// Comments read in one page when looking for a reply's earlier post.
const MARK_PAGE: usize = 100;

/// A Jira timestamp (`2026-01-01T00:00:00.000+0000`; RFC 3339 read too).
fn jira_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(s))
        .ok()
        .map(|t| t.with_timezone(&Utc))
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
        self.post(thread, text, None).await
    }

    async fn send_once(&self, thread: &str, text: &str, key: &ReplyKey) -> PluginResult<String> {
        self.post(thread, text, Some(key)).await
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

    #[test]
    fn jira_times_read_in_its_own_form_and_rfc_3339() {
        let t = jira_time("2026-12-05T10:20:30.123+0000").expect("jira form");
        assert_eq!(t.to_rfc3339(), "2026-12-05T10:20:30.123+00:00");
        let t = jira_time("2026-12-05T11:20:30.000+0100").expect("an offset");
        assert_eq!(t.to_rfc3339(), "2026-12-05T10:20:30+00:00");
        assert!(jira_time("2026-12-05T10:20:30Z").is_some());
        assert_eq!(jira_time("yesterday"), None);
    }

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
