//! `/api/v1/chat/…`: the chat bridge's counters, and (only with `chat.test_adapter: true`)
//! the HTTP test platform — `POST /api/v1/chat/test/messages` hands a message to the inbox
//! exactly as a platform adapter would; `GET /api/v1/chat/test/replies?thread=` lists what
//! the bridge answered. Bearer auth like the rest of `/api/v1` (rca's test adapter had none).

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::Addr;
use actix_web::web;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::middleware;
use crate::actors::chat::messages::{ChatStats, GetChatStats};
use crate::actors::chat::test_platform::{TestPlatform, TestReply};
use crate::actors::chat::{ChatBridge, ChatSupervisor};
use crate::plugins::{ChatInbox, InboundMessage, InboxReceipt};

/// What the chat routes need.
#[derive(Clone)]
pub struct ChatHttp {
    supervisor: Addr<ChatSupervisor>,
    inbox: Arc<dyn ChatInbox>,
    test: Option<Arc<TestPlatform>>,
}

impl From<&ChatBridge> for ChatHttp {
    fn from(b: &ChatBridge) -> Self {
        ChatHttp {
            supervisor: b.supervisor.clone(),
            inbox: b.inbox.clone(),
            test: b.platforms.test.clone(),
        }
    }
}

/// Registers `/api/v1/chat/…`. Must be configured before `http::routes` (whose `/api/v1`
/// scope would otherwise answer 404 for these paths).
pub fn routes(cfg: &mut web::ServiceConfig, chat: &ChatHttp) {
    let mut scope = web::scope("/api/v1/chat")
        .app_data(web::Data::new(chat.clone()))
        .wrap(actix_web::middleware::from_fn(middleware::require_token))
        .route("/stats", web::get().to(stats));
    if chat.test.is_some() {
        scope = scope
            .route("/test/messages", web::post().to(post_message))
            .route("/test/replies", web::get().to(replies))
            .route("/test/replies", web::delete().to(clear));
    }
    cfg.service(scope);
}

async fn stats(chat: web::Data<ChatHttp>) -> Result<web::Json<ChatStats>, ApiError> {
    Ok(web::Json(chat.supervisor.send(GetChatStats).await?))
}

/// A message for the test platform.
#[derive(Debug, Deserialize)]
pub struct TestMessage {
    /// Thread key.
    pub thread: String,
    /// Text.
    pub text: String,
    /// Author (must be in `chat.allow.test`); default `tester`.
    #[serde(default)]
    pub author: Option<String>,
    /// Platform message id (dedupe); default a fresh UUID.
    #[serde(default)]
    pub message_id: Option<String>,
    /// Platform facts, as `InboundMessage::meta`.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
}

async fn post_message(
    chat: web::Data<ChatHttp>,
    body: web::Json<TestMessage>,
) -> Result<web::Json<InboxReceipt>, ApiError> {
    let m = body.into_inner();
    if m.thread.trim().is_empty() || m.text.trim().is_empty() {
        return Err(ApiError::Invalid {
            field: "thread/text".into(),
            reason: "must not be empty".into(),
        });
    }
    let msg = InboundMessage {
        platform: "test".into(),
        thread: m.thread,
        message_id: m
            .message_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        author: m.author.unwrap_or_else(|| "tester".into()),
        text: m.text,
        meta: m.meta,
    };
    let receipt = chat
        .inbox
        .receive(msg)
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    Ok(web::Json(receipt))
}

/// `?thread=`.
#[derive(Debug, Deserialize)]
pub struct ThreadQuery {
    /// Thread key.
    pub thread: String,
}

/// The replies of a thread.
#[derive(Debug, Serialize)]
pub struct Replies {
    /// Oldest first.
    pub replies: Vec<TestReply>,
}

async fn replies(
    chat: web::Data<ChatHttp>,
    q: web::Query<ThreadQuery>,
) -> Result<web::Json<Replies>, ApiError> {
    let t = chat
        .test
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("the test platform is off".into()))?;
    Ok(web::Json(Replies {
        replies: t.replies(&q.thread),
    }))
}

async fn clear(chat: web::Data<ChatHttp>) -> Result<actix_web::HttpResponse, ApiError> {
    if let Some(t) = &chat.test {
        t.clear();
    }
    Ok(actix_web::HttpResponse::NoContent().finish())
}
