//! The HTTP edge (actix-web). Handlers parse requests into domain types, send commands to the
//! actors as messages, answer reads from the read side ([`crate::read`], never through an
//! actor), and turn answers into JSON. They never hold a database pool. Routes are exactly
//! those of INTERFACE.md.
//!
//! | module | owns |
//! |---|---|
//! | [`health`] | `/healthz`, `/readyz`, `/metrics` |
//! | [`sessions`] | `/api/v1/sessions…` |
//! | [`events`] | `/api/v1/events` (SSE, resumable with `Last-Event-ID`) |
//! | [`ws`] | `/api/v1/ws` (the same stream over WebSocket) |
//! | [`conversations`] | `/api/v1/conversations…` |
//! | [`chat_test`] | `/api/v1/chat/stats`, the HTTP test platform `/api/v1/chat/test/…` |
//! | [`notifications`] | `/api/v1/notifications` (the outbox, dead letters included) |
//! | [`webhooks`] | `/webhooks/github` (signed by HMAC, outside bearer auth) |
//! | [`webhooks_chat`] | `/webhooks/{slack/events,slack/commands,telegram,discord/interactions,jira}` (chat platforms, each by its own signature) |
//! | [`dashboard`] | `/` and `/assets/*` (the web dashboard, embedded), `/api/v1/board` |
//! | [`terminal`] | `/api/v1/sessions/{id}/terminal` (a session's terminal over WebSocket) |
//! | [`openapi`] | `/api/v1/openapi.json`, generated from the handlers |
//! | [`middleware`] | bearer auth, request metrics and spans |
//! | [`error`] | `ApiError`, the only `ResponseError` |

pub mod chat_test;
pub mod conversations;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod fleet;
pub mod health;
pub mod middleware;
pub mod notifications;
pub mod openapi;
pub mod sessions;
pub mod terminal;
pub mod webhooks;
pub mod webhooks_chat;
pub mod webhooks_linear;
pub mod ws;

use std::time::Duration;

use actix::{Addr, Recipient};
use actix_web::{web, HttpRequest};

use crate::actors::supervisor::FleetSupervisor;
use crate::notify::messages::ListNotifications;

/// Checks an agent's report token for a session id (`(session, token) -> ok`).
pub type ReportTokenCheck = std::sync::Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// Where commands go (spawn, kill, restore, send, merge…).
    pub supervisor: Addr<FleetSupervisor>,
    /// Where reads go (lists, events, output, the board, orphans…).
    pub reads: std::sync::Arc<crate::read::ReadModel>,
    /// The process's one output watcher (the terminal follows process agents' logs with it).
    pub output_watch: std::sync::Arc<crate::actors::watch::OutputWatch>,
    /// The notification outbox (`GET /api/v1/notifications`).
    pub outbox: Recipient<ListNotifications>,
    /// Bearer token required on `/api/v1/*`; `None` only on a loopback bind.
    pub token: Option<String>,
    /// How long to wait for an actor's answer.
    pub actor_timeout: Duration,
    /// Body size limit in bytes.
    pub max_body_bytes: usize,
    /// Lines `GET …/output` answers when the request names none (`lifecycle.output_lines`).
    pub output_lines: usize,
    /// The configured project names (the OpenAPI document lists them as the valid values).
    pub projects: Vec<String>,
    /// The registered agents by name, sorted, with what the spawn preflight checks (the
    /// OpenAPI document lists those that pass as the valid values of a spawn's `agent`).
    pub agents: Vec<(String, Option<crate::preflight::AgentLaunch>)>,
    /// Further tokens accepted on `/api/v1/*` (each project's orchestrator token).
    pub extra_tokens: Vec<String>,
    /// Checks an agent's report token for a session id, in constant time.
    pub check_report_token: ReportTokenCheck,
    /// `github.webhook_secret`; `None` (or empty) refuses every GitHub delivery.
    pub github_webhook_secret: Option<crate::config::Secret>,
    /// `POST /webhooks/linear`'s secret and intake; `None` refuses every Linear delivery.
    pub linear_hook: Option<std::sync::Arc<crate::plugins::trackers::linear_hook::LinearHook>>,
    /// Which GitHub `issues` and Jira issue deliveries hand an issue to a project.
    pub intake: std::sync::Arc<crate::plugins::trackers::intake::Intake>,
    /// The chat bridge's durable inbox; `None` while the bridge is not running (its webhook
    /// routes then answer 503 so the platform redelivers later).
    pub chat_inbox: Option<std::sync::Arc<dyn crate::plugins::ChatInbox>>,
    /// Secrets and bot identities of the chat platforms' webhooks.
    pub chat_webhooks: webhooks_chat::ChatWebhookSettings,
    /// The chat bridge's conversations with their queues (`None`: the stored records only).
    pub chat_conversations: Option<Recipient<crate::actors::chat::messages::GetConversations>>,
}

/// Registers every route on an actix-web `App`.
pub fn routes(cfg: &mut web::ServiceConfig, state: &AppState) {
    let limit = state.max_body_bytes;
    cfg.app_data(web::Data::new(state.clone()))
        .app_data(
            web::JsonConfig::default()
                .limit(limit)
                .error_handler(move |e, _req| error::json_error(e, limit).into()),
        )
        .app_data(web::PayloadConfig::default().limit(limit))
        .app_data(web::QueryConfig::default().error_handler(|e, _req| {
            error::ApiError::Invalid {
                field: "query".into(),
                reason: e.to_string(),
            }
            .into()
        }))
        .app_data(web::PathConfig::default().error_handler(|e, _req| {
            error::ApiError::Invalid {
                field: "path".into(),
                reason: e.to_string(),
            }
            .into()
        }))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        // The page, its assets and the board read are compressed (xterm.js and a board of
        // 1,000 cards shrink several times); the streams are not.
        .service(
            web::resource("/")
                .wrap(actix_web::middleware::Compress::default())
                .route(web::get().to(dashboard::index)),
        )
        .service(
            web::resource("/assets/{path:.*}")
                .wrap(actix_web::middleware::Compress::default())
                .route(web::get().to(dashboard::asset)),
        )
        .service(
            web::scope("/api/v1")
                .wrap(actix_web::middleware::from_fn(middleware::require_token))
                .route("/sessions", web::get().to(sessions::list))
                .route("/sessions", web::post().to(sessions::spawn))
                .route("/sessions/batch", web::post().to(fleet::batch))
                .route("/sessions/{id}", web::get().to(sessions::get))
                .route("/sessions/{id}/send", web::post().to(sessions::send))
                .route("/sessions/{id}/kill", web::post().to(sessions::kill))
                .route("/sessions/{id}/restore", web::post().to(sessions::restore))
                .route("/sessions/{id}/merge", web::post().to(sessions::merge))
                .route("/sessions/{id}/events", web::get().to(sessions::events))
                .route("/sessions/{id}/output", web::get().to(sessions::output))
                .route("/sessions/{id}/attach", web::get().to(fleet::attach))
                .route("/sessions/{id}/terminal", web::get().to(terminal::connect))
                .service(
                    web::resource("/board")
                        .wrap(actix_web::middleware::Compress::default())
                        .route(web::get().to(dashboard::board)),
                )
                .route(
                    "/projects/{project}/orchestrator",
                    web::post().to(fleet::orchestrator),
                )
                .route("/orphans", web::get().to(fleet::orphans))
                .route("/conversations", web::get().to(conversations::list))
                .route("/conversations/{id}", web::get().to(conversations::get))
                .route("/notifications", web::get().to(notifications::list))
                .route("/events", web::get().to(events::stream))
                .route("/ws", web::get().to(ws::connect))
                .route("/openapi.json", web::get().to(openapi::spec)),
        )
        .route("/webhooks/github", web::post().to(webhooks::github))
        .route("/webhooks/linear", web::post().to(webhooks_linear::linear))
        .route(
            "/webhooks/slack/events",
            web::post().to(webhooks_chat::slack_events),
        )
        .route(
            "/webhooks/slack/commands",
            web::post().to(webhooks_chat::slack_commands),
        )
        .route(
            "/webhooks/telegram",
            web::post().to(webhooks_chat::telegram),
        )
        .route(
            "/webhooks/discord/interactions",
            web::post().to(webhooks_chat::discord_interactions),
        )
        .route("/webhooks/jira", web::post().to(webhooks_chat::jira))
        .route(
            "/agent/v1/sessions/{id}/report",
            web::post().to(fleet::report),
        )
        .default_service(web::to(not_found));
}

async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, error::ApiError> {
    // A documented path asked with a method it does not have (TRACE included) is 405 with
    // `Allow`, not 404: the resource exists.
    let allowed = openapi::allowed_methods(req.path());
    if allowed.is_some() || req.method() == actix_web::http::Method::TRACE {
        let allow = allowed.unwrap_or_default().join(", ");
        return Ok(actix_web::HttpResponse::MethodNotAllowed()
            .insert_header((actix_web::http::header::ALLOW, allow))
            .json(serde_json::json!({"error": {"code": "method_not_allowed",
                "message": format!("{} is not allowed on {}", req.method(), req.path())}})));
    }
    Err(error::ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}
