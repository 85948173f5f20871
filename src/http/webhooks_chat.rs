//! The chat platforms' inbound webhooks: `POST /webhooks/slack/events`,
//! `POST /webhooks/slack/commands`, `POST /webhooks/telegram`,
//! `POST /webhooks/discord/interactions`, `POST /webhooks/jira`, plus the GitHub-comment hook
//! [`github_comment`] called from [`super::webhooks::github`].
//!
//! Outside bearer auth: each platform authenticates by its own scheme
//! ([`crate::plugins::chat::verify`]). Order: verify → parse → `ChatInbox::receive` (the
//! message is durably stored) → 2xx. A bad or missing signature, or no secret configured,
//! answers 401 and stores nothing. Without a running chat bridge (`AppState::chat_inbox` is
//! `None`) or when the inbox refuses, the answer is 503 so the platform redelivers later;
//! redeliveries are deduped by the inbox on the platform's message id.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;
use crate::actors::intake::start_once;
use crate::config::{Secret, Settings, TelegramSettings};
use crate::plugins::chat::telegram_api::{BotApi, MovedChats};
use crate::plugins::chat::{discord, github, jira, slack, telegram, verify};
use crate::plugins::{InboundMessage, InboxReceipt};

/// What the chat webhooks need from the settings: secrets and the bots' own identities.
/// `Debug` never shows a secret ([`Secret`] redacts itself).
#[derive(Clone, Debug, Default)]
pub struct ChatWebhookSettings {
    /// `slack.signing_secret`.
    pub slack_signing_secret: Option<Secret>,
    /// `telegram.secret_token`.
    pub telegram_secret_token: Option<Secret>,
    /// `discord.public_key` (hex).
    pub discord_public_key: Option<String>,
    /// `jira.webhook_secret`.
    pub jira_webhook_secret: Option<Secret>,
    /// `jira.bot_account_id`.
    pub jira_bot_account_id: Option<String>,
    /// `github.bot_login`.
    pub github_bot_login: Option<String>,
    /// `slack.require_mention`.
    pub slack_require_mention: bool,
    /// `slack.slash_command`: the command whose text is the bridge's command.
    pub slack_slash_command: String,
    /// `telegram:`, to ask `getMe` for the bot's username once (commands in groups name
    /// their bot: `/cmd@OtherBot` is not ours).
    pub telegram: Option<TelegramSettings>,
    /// The bot's Telegram username, as far as `getMe` told it.
    pub telegram_username: Arc<tokio::sync::Mutex<BotName>>,
    /// Telegram chats that moved (groups upgraded to supergroups): a service message saying
    /// so is recorded here, where the chat adapter and the notifier look.
    pub telegram_moves: MovedChats,
}

impl ChatWebhookSettings {
    /// Picks the chat webhooks' settings out of `settings`.
    pub fn from_settings(settings: &Settings) -> Self {
        ChatWebhookSettings {
            slack_signing_secret: settings.slack.signing_secret.clone(),
            telegram_secret_token: settings.telegram.secret_token.clone(),
            discord_public_key: settings.discord.public_key.clone(),
            jira_webhook_secret: settings.jira.webhook_secret.clone(),
            jira_bot_account_id: settings.jira.bot_account_id.clone(),
            github_bot_login: settings.github.bot_login.clone(),
            slack_require_mention: settings.slack.require_mention,
            slack_slash_command: settings.slack.slash_command.clone(),
            telegram: Some(settings.telegram.clone()),
            telegram_username: Arc::default(),
            telegram_moves: MovedChats::in_memory(),
        }
    }

    /// The same settings, recording Telegram chat moves in `moves` (the app's, kept in the
    /// store).
    pub fn with_telegram_moves(self, moves: MovedChats) -> Self {
        ChatWebhookSettings {
            telegram_moves: moves,
            ..self
        }
    }

    /// The bot's Telegram username, asked of `getMe` at the first update (with a short
    /// timeout, since Telegram waits for our answer) and kept for the process's life. After a
    /// failure every command is taken, and `getMe` is asked again a minute later.
    async fn telegram_username(&self) -> Option<String> {
        let mut name = self.telegram_username.lock().await;
        match &*name {
            BotName::Known(n) => return Some(n.clone()),
            BotName::Failed(at) if at.elapsed() < GET_ME_RETRY => return None,
            _ => {}
        }
        let tg = self.telegram.as_ref()?;
        let api = BotApi::from_settings(tg, GET_ME_TIMEOUT).ok()??;
        match api.get_me().await {
            Ok(n) => {
                *name = BotName::Known(n.clone());
                Some(n)
            }
            Err(e) => {
                tracing::warn!(error = %e, "telegram getMe failed; taking every command");
                *name = BotName::Failed(std::time::Instant::now());
                None
            }
        }
    }
}

/// What the Telegram webhook knows of its bot's username.
#[derive(Debug, Default)]
pub enum BotName {
    /// Not asked yet.
    #[default]
    Unknown,
    /// `getMe`'s answer.
    Known(String),
    /// `getMe` failed then.
    Failed(std::time::Instant),
}

/// Timeout of a `getMe` the Telegram webhook makes.
const GET_ME_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long after a failed `getMe` it is asked again.
const GET_ME_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn secret_bytes(s: &Option<Secret>) -> &[u8] {
    s.as_ref()
        .map(|s| s.expose().as_bytes())
        .unwrap_or_default()
}

fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| ApiError::BadRequest("body is not a JSON object".into()))
}

/// Hands `msg` to the chat inbox and returns once it is stored.
async fn deliver(state: &AppState, msg: InboundMessage) -> Result<InboxReceipt, ApiError> {
    let Some(inbox) = state.chat_inbox.as_ref() else {
        return Err(ApiError::Unavailable(
            "the chat bridge is not running".into(),
        ));
    };
    let platform = msg.platform.clone();
    inbox.receive(msg).await.map_err(|e| {
        tracing::warn!(platform, error = %e, "chat inbox refused a message");
        ApiError::Unavailable("the chat inbox cannot store the message now; retry".into())
    })
}

fn refused(platform: &'static str) -> ApiError {
    tracing::warn!(platform, "chat webhook refused: bad or missing signature");
    ApiError::BadSignature
}

/// `POST /webhooks/slack/events`: the Events API (wire-formats §2.2).
///
/// # Errors
/// 401 for a bad or stale signature, 400 for a body that is not JSON, 503 when the message
/// cannot be stored now (Slack retries).
pub async fn slack_events(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let cfg = &state.chat_webhooks;
    slack_signed(&req, &body, cfg)?;
    match slack::parse_event(&body, cfg.slack_require_mention).map_err(ApiError::BadRequest)? {
        slack::SlackEvent::Challenge(c) => Ok(HttpResponse::Ok().json(json!({"challenge": c}))),
        slack::SlackEvent::Ignored => Ok(HttpResponse::Ok().json(json!({"ok": true}))),
        slack::SlackEvent::Message(m) => {
            let r = deliver(&state, m).await?;
            Ok(HttpResponse::Ok().json(json!({"ok": true, "new": r.new})))
        }
    }
}

/// Slack's v0 signature over the raw body, fresh (events and slash commands alike).
fn slack_signed(req: &HttpRequest, body: &[u8], cfg: &ChatWebhookSettings) -> Result<(), ApiError> {
    let signed = verify::slack(
        secret_bytes(&cfg.slack_signing_secret),
        header(req, "x-slack-request-timestamp"),
        header(req, "x-slack-signature"),
        body,
        chrono::Utc::now().timestamp(),
    );
    if signed {
        Ok(())
    } else {
        Err(refused("slack"))
    }
}

/// `POST /webhooks/slack/commands`: a slash command (Slack's "Implementing slash commands"),
/// a signed `application/x-www-form-urlencoded` POST. Slack shows the user an error unless
/// it gets a 200 within three seconds, so the command is only stored (the same inbox as an
/// Events API message, conversation `slack:{channel}`) and acknowledged with an ephemeral
/// note to the one who typed it; the answer is posted in the channel by `chat.postMessage`
/// like every reply. A command stored already (a POST made again, same `trigger_id`), or
/// from someone not in `chat.allow.slack`, gets an empty 200: Slack shows nothing.
///
/// # Errors
/// 401 for a bad or stale signature, 400 for a form without the command's fields, 503 when
/// the command cannot be stored now.
pub async fn slack_commands(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if slack::is_ssl_check(&body) {
        return Ok(HttpResponse::Ok().finish());
    }
    let cfg = &state.chat_webhooks;
    slack_signed(&req, &body, cfg)?;
    let m = slack::parse_command(&body, &cfg.slack_slash_command).map_err(ApiError::BadRequest)?;
    let r = deliver(&state, m).await?;
    if !r.new {
        return Ok(HttpResponse::Ok().finish());
    }
    let text = match r.position {
        0 => "On it: the answer will be posted in this channel.".to_string(),
        n => format!("Queued ({n} ahead): the answer will be posted in this channel."),
    };
    Ok(HttpResponse::Ok().json(json!({"response_type": "ephemeral", "text": text})))
}

/// `POST /webhooks/telegram`: one `Update` (setWebhook mode, wire-formats §3.3).
///
/// # Errors
/// 401 when `X-Telegram-Bot-Api-Secret-Token` is not `telegram.secret_token`, 400 for a
/// body that is not JSON, 503 when the message (or the chat move a service message
/// announces) cannot be stored now, or the chat moves cannot be read (Telegram retries).
pub async fn telegram(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let cfg = &state.chat_webhooks;
    if !verify::telegram(
        secret_bytes(&cfg.telegram_secret_token),
        header(&req, "x-telegram-bot-api-secret-token"),
    ) {
        return Err(refused("telegram"));
    }
    let update = json_body(&body)?;
    if let Some((from, to)) = telegram::chat_move(&update) {
        cfg.telegram_moves.record(from, to).await.map_err(|e| {
            tracing::warn!(error = %e, "telegram chat move not stored");
            ApiError::Unavailable("the chat move cannot be stored now; retry".into())
        })?;
    }
    let bot = cfg.telegram_username().await;
    if let Some(mut m) = telegram::parse_update_for(&update, bot.as_deref()) {
        // A message from a supergroup a group became joins the group's conversation.
        telegram::mark_moved_from(&mut m, &cfg.telegram_moves)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "telegram chat moves cannot be read");
                ApiError::Unavailable("the chat moves cannot be read now; retry".into())
            })?;
        deliver(&state, m).await?;
    }
    Ok(HttpResponse::Ok().json(json!({"ok": true})))
}

/// `POST /webhooks/discord/interactions`: Ed25519-verified interactions (wire-formats
/// §4.3). PING answers PONG; an application command is stored as `/name args`.
///
/// # Errors
/// 401 for a bad signature (Discord probes with invalid ones), 400 for a body that is not
/// JSON, 503 when the command cannot be stored now.
pub async fn discord_interactions(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let key = state
        .chat_webhooks
        .discord_public_key
        .as_deref()
        .unwrap_or_default();
    if key.is_empty()
        || !verify::discord(
            key,
            header(&req, "x-signature-timestamp"),
            header(&req, "x-signature-ed25519"),
            &body,
        )
    {
        return Err(refused("discord"));
    }
    let v = json_body(&body)?;
    if v["type"].as_i64() == Some(1) {
        return Ok(HttpResponse::Ok().json(json!({"type": 1})));
    }
    let Some(m) = discord::parse_interaction(&v) else {
        return Ok(HttpResponse::Ok().json(
            json!({"type": 4, "data": {"content": "This interaction is not supported.", "flags": 64}}),
        ));
    };
    let r = deliver(&state, m).await?;
    let content = if r.position == 0 {
        "On it.".to_string()
    } else {
        format!("Queued ({} ahead).", r.position)
    };
    Ok(HttpResponse::Ok().json(json!({"type": 4, "data": {"content": content}})))
}

/// `POST /webhooks/jira`: admin webhooks signed with `X-Hub-Signature` (wire-formats §5.1).
/// An issue created or updated for Flotilla (`projects.<name>.intake`) starts one session
/// ([`crate::actors::intake`]); a mentioning comment is a chat message.
/// Without `jira.webhook_secret` every request is refused: an unsigned Jira webhook would
/// let anyone talk to the assistant.
///
/// # Errors
/// 401 for a missing or wrong signature, 400 for a body that is not JSON, 503 when the
/// message cannot be stored now.
pub async fn jira(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let cfg = &state.chat_webhooks;
    if !verify::jira(
        secret_bytes(&cfg.jira_webhook_secret),
        header(&req, "x-hub-signature"),
        &body,
    ) {
        return Err(refused("jira"));
    }
    let v = json_body(&body)?;
    // Issue intake (`jira:issue_created` / `jira:issue_updated`): once per issue.
    if let Some(w) = state.intake.jira(&v) {
        let o = start_once(
            &state.reads,
            &state.supervisor,
            "jira",
            &w.project,
            &w.issue,
        )
        .await?;
        return Ok(HttpResponse::Ok()
            .json(json!({"ok": true, "intake": super::webhooks::intake_json(&o)})));
    }
    let bot = cfg.jira_bot_account_id.as_deref().unwrap_or_default();
    if let Some(m) = jira::parse_webhook(&v, bot) {
        deliver(&state, m).await?;
    }
    Ok(HttpResponse::Ok().json(json!({"ok": true})))
}

/// The GitHub-comment part of `/webhooks/github`, called after the signature is verified
/// and before the delivery is recorded: a new comment mentioning `github.bot_login` is
/// stored in the chat inbox. Doing it before the delivery is recorded means a refused store
/// answers 503 and GitHub's redelivery is not dropped as a duplicate.
///
/// # Errors
/// 503 when the inbox cannot store the message now. Without a running chat bridge the
/// comment is skipped (logged), so lifecycle deliveries never fail for chat's sake.
pub async fn github_comment(
    state: &AppState,
    event: &str,
    delivery: &str,
    body: &[u8],
) -> Result<(), ApiError> {
    let Some(bot) = state
        .chat_webhooks
        .github_bot_login
        .as_deref()
        .filter(|b| !b.is_empty())
    else {
        return Ok(());
    };
    if !matches!(
        event,
        "issue_comment" | "pull_request_review_comment" | "issues" | "pull_request"
    ) {
        return Ok(());
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Ok(());
    };
    if let Some(closed) = github::parse_closed(event, delivery, &v) {
        let Some(inbox) = state.chat_inbox.as_ref() else {
            return Ok(());
        };
        return inbox.thread_closed(closed).await.map(|_| ()).map_err(|e| {
            tracing::warn!(error = %e, "chat inbox refused a GitHub close");
            ApiError::Unavailable("the chat inbox cannot store the close now; retry".into())
        });
    }
    let Some(m) = github::parse_comment(event, &v, bot) else {
        return Ok(());
    };
    if state.chat_inbox.is_none() {
        tracing::warn!("github comment for the chat bridge skipped: the bridge is not running");
        return Ok(());
    }
    deliver(state, m).await.map(|_| ())
}
