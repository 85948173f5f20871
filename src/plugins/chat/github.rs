//! GitHub comments as a chat platform: an @mention of `github.bot_login` in a *new* comment
//! (`issue_comment` or `pull_request_review_comment`, action `created`) on
//! `POST /webhooks/github` starts a turn; the reply is an issue comment, split under
//! GitHub's 65,536-character limit (rca #157).
//!
//! What never triggers (reference §10): mentions in issue or PR bodies (rca #96: `issues` and
//! `pull_request` events are not looked at), the bot's own comments (rca #199: a reply that
//! quotes the mention would loop), edits and deletions. The conversation is `owner/repo#N`.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::reply_key::{post_pieces, Marks, MARK_PAGES};
use super::split::split_message;
use super::{strip_mention, Http};
use crate::config::GithubSettings;
use crate::plugins::{ChatPlatform, InboundMessage, PluginError, PluginResult, ReplyKey};

/// Longest comment we post, in characters (GitHub refuses more than 65,536).
pub const MAX_MESSAGE: usize = 65_000;

/// Replies as issue comments.
pub struct GithubCommentsPlatform {
    http: Http,
    api_url: String,
    token: String,
}

impl GithubCommentsPlatform {
    /// The platform, when `github.token` and `github.bot_login` are both set.
    ///
    /// # Errors
    /// `Invalid` when the HTTP client cannot be built.
    pub fn from_settings(s: &GithubSettings, timeout: Duration) -> PluginResult<Option<Self>> {
        let Some(token) = s.token.as_ref().filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        if s.bot_login.as_deref().unwrap_or_default().is_empty() {
            return Ok(None);
        }
        Ok(Some(Self::new(&s.api_url, token.expose(), timeout)?))
    }

    /// A platform posting through the REST API at `api_url`.
    ///
    /// # Errors
    /// `Invalid` when the HTTP client cannot be built.
    pub fn new(api_url: &str, token: &str, timeout: Duration) -> PluginResult<Self> {
        Ok(GithubCommentsPlatform {
            http: Http::new("github", timeout)?,
            api_url: api_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> PluginResult<Value> {
        let url = format!("{}{path}", self.api_url);
        let r = self
            .http
            .call(|c| {
                let r = c
                    .request(method.clone(), &url)
                    .bearer_auth(&self.token)
                    .header(reqwest::header::ACCEPT, "application/vnd.github+json")
                    .header("X-GitHub-Api-Version", "2022-11-28");
                super::json_body(r, &body)
            })
            .await?;
        if (200..300).contains(&r.status) {
            return Ok(r.json);
        }
        Err(r.error("github", r.json["message"].as_str()))
    }
}

impl GithubCommentsPlatform {
    /// "Create an issue comment" for each piece of `text`. With `key`, each piece ends on its
    /// mark ([`ReplyKey::mark`]) in an HTML comment, which GitHub does not show; when an
    /// earlier attempt may have posted it, the issue's comments since then are read first and
    /// a piece already there is not posted again.
    async fn post(&self, thread: &str, text: &str, key: Option<&ReplyKey>) -> PluginResult<String> {
        let (repo, n) = parse_thread(thread)?;
        let pieces = split_message(text, MAX_MESSAGE);
        let look = |since| self.marks_since(repo, n, since);
        post_pieces(pieces, key, look, |chunk, mark| async move {
            let body = match &mark {
                Some(m) => format!("{chunk}\n\n{}", marker(m)),
                None => chunk,
            };
            let path = format!("/repos/{repo}/issues/{n}/comments");
            let v = self
                .call(reqwest::Method::POST, &path, json!({ "body": body }))
                .await?;
            Ok(v["id"].as_i64().map(|i| i.to_string()))
        })
        .await
    }

    /// The marks in the issue's comments updated since `since`, with the comments' ids: "List
    /// issue comments" with `since`, oldest first, [`MARK_PAGE`] a page, up to [`MARK_PAGES`]
    /// pages.
    async fn marks_since(&self, repo: &str, n: u64, since: DateTime<Utc>) -> PluginResult<Marks> {
        let since = since.format("%Y-%m-%dT%H:%M:%SZ");
        let mut marks = Marks::new();
        for page in 1..=MARK_PAGES {
            let path = format!(
                "/repos/{repo}/issues/{n}/comments?since={since}&per_page={MARK_PAGE}&page={page}"
            );
            let v = self.call(reqwest::Method::GET, &path, Value::Null).await?;
            let comments = v.as_array().map(Vec::as_slice).unwrap_or_default();
            for c in comments {
                let body = c["body"].as_str().unwrap_or_default();
                if let (Some(mark), Some(id)) = (read_marker(body), c["id"].as_i64()) {
                    marks.insert(mark.to_string(), id.to_string());
                }
            }
            if comments.len() < MARK_PAGE {
                break;
            }
        }
        Ok(marks)
    }
}

/// Comments read in one page when looking for a reply's earlier post (GitHub's most).
const MARK_PAGE: usize = 100;
/// What starts the HTML comment holding a reply's mark.
const MARKER_START: &str = "<!-- flotilla-reply ";

/// A reply's mark as the hidden last line of its comment.
fn marker(mark: &str) -> String {
    format!("{MARKER_START}{mark} -->")
}

/// The mark a comment ends on, if it is a reply's.
fn read_marker(body: &str) -> Option<&str> {
    let (_, rest) = body.trim_end().rsplit_once(MARKER_START)?;
    rest.strip_suffix(" -->")
        .filter(|m| !m.contains(char::is_whitespace))
}

/// `owner/repo#N` → (`owner/repo`, N).
fn parse_thread(thread: &str) -> PluginResult<(&str, u64)> {
    thread
        .rsplit_once('#')
        .and_then(|(repo, n)| Some((repo, n.parse().ok()?)))
        .filter(|(repo, _)| repo.split('/').count() == 2)
        .ok_or_else(|| PluginError::Invalid(format!("bad GitHub thread {thread}")))
}

#[async_trait]
impl ChatPlatform for GithubCommentsPlatform {
    fn name(&self) -> &'static str {
        "github"
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
        let (repo, _) = parse_thread(thread)?;
        let Some(first) = split_message(text, MAX_MESSAGE).into_iter().next() else {
            return Ok(());
        };
        self.call(
            reqwest::Method::PATCH,
            &format!("/repos/{repo}/issues/comments/{message_id}"),
            json!({"body": first}),
        )
        .await
        .map(|_| ())
    }
}

/// The chat message in a GitHub delivery, if it is a new comment mentioning `bot_login` by
/// someone else. `event` is `X-GitHub-Event`; `body` the parsed payload.
pub fn parse_comment(event: &str, body: &Value, bot_login: &str) -> Option<InboundMessage> {
    if bot_login.is_empty() || body["action"].as_str() != Some("created") {
        return None;
    }
    let (number, id_prefix) = match event {
        "issue_comment" => (body["issue"]["number"].as_i64()?, "comment"),
        "pull_request_review_comment" => {
            (body["pull_request"]["number"].as_i64()?, "review-comment")
        }
        _ => return None,
    };
    let c = &body["comment"];
    let login = c["user"]["login"].as_str()?;
    let short = bot_login.strip_suffix("[bot]").unwrap_or(bot_login);
    if login.eq_ignore_ascii_case(bot_login)
        || login.eq_ignore_ascii_case(short)
        || login.eq_ignore_ascii_case(&format!("{short}[bot]"))
    {
        return None;
    }
    let text = c["body"].as_str()?;
    let stripped =
        strip_mention(text, bot_login, true).or_else(|| strip_mention(text, short, true))?;
    if stripped.is_empty() {
        return None;
    }
    let repo = body["repository"]["full_name"].as_str()?;
    Some(InboundMessage {
        platform: "github".into(),
        thread: format!("{repo}#{number}"),
        message_id: format!("{id_prefix}-{}", c["id"].as_i64()?),
        author: login.to_string(),
        text: stripped,
        meta: thread_meta(event, body),
    })
}

/// The close of an issue or PR, as a message for its conversation (`event: closed` in its
/// meta): the bridge then releases the thread's worktree. `None` for any other delivery.
pub fn parse_closed(event: &str, delivery: &str, body: &Value) -> Option<InboundMessage> {
    if body["action"].as_str() != Some("closed") {
        return None;
    }
    let (item, kind) = match event {
        "issues" => (&body["issue"], "issue"),
        "pull_request" => (&body["pull_request"], "pr"),
        _ => return None,
    };
    let number = item["number"].as_i64()?;
    let repo = body["repository"]["full_name"].as_str()?;
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("kind".to_string(), kind.to_string());
    meta.insert("event".to_string(), "closed".to_string());
    Some(InboundMessage {
        platform: "github".into(),
        thread: format!("{repo}#{number}"),
        // A redelivery keeps its delivery id: the inbox stores the close once.
        message_id: format!("closed-{delivery}"),
        author: body["sender"]["login"]
            .as_str()
            .unwrap_or("github")
            .to_string(),
        text: "closed".into(),
        meta,
    })
}

/// What the chat bridge needs to prepare the thread's worktree (keys documented on
/// [`InboundMessage::meta`]): `kind`, `base`, `repo_url`, `head` and `closes` for a PR, and
/// `context` (the title and body, so the assistant knows what the thread is about).
fn thread_meta(event: &str, body: &Value) -> std::collections::BTreeMap<String, String> {
    let mut m = std::collections::BTreeMap::new();
    let (item, is_pr) = if event == "pull_request_review_comment" {
        (&body["pull_request"], true)
    } else {
        let i = &body["issue"];
        (i, i.get("pull_request").is_some_and(|p| !p.is_null()))
    };
    m.insert("kind".into(), if is_pr { "pr" } else { "issue" }.into());
    let repo = &body["repository"];
    if let Some(b) = repo["default_branch"].as_str() {
        m.insert("base".into(), b.to_string());
    }
    if let Some(u) = repo["clone_url"].as_str() {
        m.insert("repo_url".into(), u.to_string());
    }
    if let Some(h) = item["head"]["ref"].as_str() {
        m.insert("head".into(), h.to_string());
    }
    let title = item["title"].as_str().unwrap_or_default();
    let text = item["body"].as_str().unwrap_or_default();
    if is_pr {
        let closes = closed_issues(text);
        if !closes.is_empty() {
            m.insert("closes".into(), closes.join(","));
        }
    }
    if !title.is_empty() || !text.is_empty() {
        m.insert(
            "context".into(),
            format!("{title}\n\n{text}").trim().to_string(),
        );
    }
    m
}

/// Issue numbers a PR body closes (`closes #3`, `Fixes #4`, `resolved #5`).
fn closed_issues(body: &str) -> Vec<String> {
    const WORDS: [&str; 9] = [
        "close", "closes", "closed", "fix", "fixes", "fixed", "resolve", "resolves", "resolved",
    ];
    let words: Vec<&str> = body.split_whitespace().collect();
    let mut out = Vec::new();
    for w in words.windows(2) {
        let kw = w[0].trim_end_matches(':').to_ascii_lowercase();
        if WORDS.contains(&kw.as_str()) {
            let n: String = w[1]
                .trim_start_matches('#')
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if w[1].starts_with('#') && !n.is_empty() && !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replys_mark_is_read_back_from_the_end_of_its_comment_only() {
        let body = format!("Done.\n\n{}", marker("0123456789abcdef012345678"));
        assert_eq!(read_marker(&body), Some("0123456789abcdef012345678"));
        assert_eq!(
            read_marker(&format!("{body}\n")),
            Some("0123456789abcdef012345678")
        );
        assert_eq!(read_marker("Done."), None);
        // Quoted in the middle of someone's comment, it is not theirs to claim.
        assert_eq!(read_marker(&format!("> {body}\n\nthanks")), None);
        assert_eq!(read_marker("<!-- flotilla-reply a b -->"), None);
    }

    fn comment(action: &str, who: &str, text: &str) -> Value {
        json!({"action": action, "issue": {"number": 7, "body": "@flotilla do it"},
            "comment": {"id": 11, "body": text, "user": {"login": who}},
            "repository": {"full_name": "acme/app"}, "sender": {"login": who}})
    }

    #[test]
    fn a_new_comment_mentioning_the_bot_triggers() {
        let m = parse_comment(
            "issue_comment",
            &comment("created", "alice", "@flotilla /status"),
            "flotilla[bot]",
        )
        .expect("trigger");
        assert_eq!(m.thread, "acme/app#7");
        assert_eq!(m.text, "/status");
        assert_eq!(m.author, "alice");
        assert_eq!(m.message_id, "comment-11");
    }

    #[test]
    fn edits_own_comments_bodies_and_unmentioned_comments_do_not() {
        let bot = "flotilla[bot]";
        assert!(parse_comment(
            "issue_comment",
            &comment("edited", "alice", "@flotilla hi"),
            bot
        )
        .is_none());
        assert!(parse_comment(
            "issue_comment",
            &comment("deleted", "alice", "@flotilla hi"),
            bot
        )
        .is_none());
        assert!(parse_comment(
            "issue_comment",
            &comment("created", "flotilla[bot]", "@flotilla hi"),
            bot
        )
        .is_none());
        assert!(
            parse_comment("issue_comment", &comment("created", "alice", "hello"), bot).is_none()
        );
        let issue = json!({"action": "opened", "issue": {"number": 7, "body": "@flotilla fix"},
            "repository": {"full_name": "acme/app"}});
        assert!(parse_comment("issues", &issue, bot).is_none());
        let mut rc = comment("created", "bob", "@flotilla[bot] look");
        rc["pull_request"] = json!({"number": 9});
        let m = parse_comment("pull_request_review_comment", &rc, bot).expect("review comment");
        assert_eq!((m.thread.as_str(), m.text.as_str()), ("acme/app#9", "look"));
    }

    #[test]
    fn pr_comments_carry_the_worktree_meta() {
        let v = json!({"action": "created", "issue": {"number": 9, "title": "Fix",
            "body": "Closes #3 and fixes #4", "pull_request": {"url": "x"}},
            "comment": {"id": 1, "body": "@flotilla review", "user": {"login": "a"}},
            "repository": {"full_name": "acme/app", "default_branch": "main",
                "clone_url": "https://github.com/acme/app.git"}});
        let m = parse_comment("issue_comment", &v, "flotilla").expect("trigger");
        assert_eq!(m.meta["kind"], "pr");
        assert_eq!(m.meta["closes"], "3,4");
        assert_eq!(m.meta["base"], "main");
        assert!(m.meta["context"].starts_with("Fix"));
    }

    #[test]
    fn threads_parse() {
        assert_eq!(parse_thread("a/b#12").expect("ok"), ("a/b", 12));
        assert!(parse_thread("ab#12").is_err());
        assert!(parse_thread("a/b#x").is_err());
    }
}
