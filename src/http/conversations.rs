//! `/api/v1/conversations…`: the chat bridge's conversations.

use actix_web::web;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use super::AppState;
use crate::actors::supervisor::messages::ListConversations;
use crate::store::ConversationRecord;

/// The list answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConversationList {
    /// Conversations, most recent first.
    pub conversations: Vec<ConversationRecord>,
}

/// Lists conversations.
///
/// # Errors
/// 503 when the service is busy.
#[utoipa::path(get, path = "/api/v1/conversations",
    responses((status = 200, body = ConversationList), (status = 401)))]
pub async fn list(state: web::Data<AppState>) -> Result<web::Json<ConversationList>, ApiError> {
    let conversations = state.supervisor.send(ListConversations).await??;
    Ok(web::Json(ConversationList { conversations }))
}

/// One conversation.
///
/// # Errors
/// 404 for an unknown id.
#[utoipa::path(get, path = "/api/v1/conversations/{id}", params(("id" = String, Path)),
    responses((status = 200, body = ConversationRecord), (status = 404)))]
pub async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<web::Json<ConversationRecord>, ApiError> {
    let id = id.into_inner();
    let all = state.supervisor.send(ListConversations).await??;
    all.into_iter()
        .find(|c| c.id == id)
        .map(web::Json)
        .ok_or_else(|| ApiError::NotFound(format!("conversation {id} not found")))
}
