//! `/api/v1/conversations…`: the chat bridge's conversations.

use actix_web::web;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use super::AppState;
use crate::actors::chat::messages::GetConversations;
use crate::actors::chat::scheduler::Standing;
use crate::chat::overview::{overview, ConversationView};
use crate::store::{ChatActivity, ConversationRecord};

/// The list answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConversationList {
    /// Conversations, most recently active first, with their queued messages, newest message
    /// and place in line for a turn.
    pub conversations: Vec<ConversationView>,
}

/// Lists conversations.
///
/// # Errors
/// 503 when the chat bridge is busy; 500 when the store cannot be read.
#[utoipa::path(get, path = "/api/v1/conversations",
    responses((status = 200, body = ConversationList), (status = 401)))]
pub async fn list(state: web::Data<AppState>) -> Result<web::Json<ConversationList>, ApiError> {
    let conversations = match &state.chat_conversations {
        Some(chat) => chat
            .send(GetConversations)
            .await?
            .map_err(crate::actors::supervisor::FleetError::from)?,
        // No bridge running: the records, nothing waiting.
        None => overview(
            state.reads.conversations().await?,
            &ChatActivity::default(),
            &Standing::default(),
        ),
    };
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
    let all = state.reads.conversations().await?;
    all.into_iter()
        .find(|c| c.id == id)
        .map(web::Json)
        .ok_or_else(|| ApiError::NotFound(format!("conversation {id} not found")))
}
