//! Chats a platform gave a new id (`chat_moves`): a Telegram group upgraded to a supergroup.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::store::{write_err, ChatMoves, StoreResult};

sql_impl! { #[async_trait] impl ChatMoves;
    #[tracing::instrument(skip_all, fields(platform))]
    async fn record_chat_move(
        &self,
        platform: &str,
        from: &str,
        to: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO chat_moves (platform, from_chat, to_chat, moved_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (platform, from_chat) DO UPDATE SET \
             to_chat = excluded.to_chat, moved_at = excluded.moved_at",
        )
        .bind(platform)
        .bind(from)
        .bind(to)
        .bind(D::ts(at))
        .execute(&self.write)
        .await
        .map_err(write_err)?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(platform))]
    async fn chat_moved_to(&self, platform: &str, chat: &str) -> StoreResult<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT to_chat FROM chat_moves WHERE platform = $1 AND from_chat = $2",
        )
        .bind(platform)
        .bind(chat)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|(to,)| to))
    }

    #[tracing::instrument(skip_all, fields(platform))]
    async fn chat_moved_from(&self, platform: &str, chat: &str) -> StoreResult<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT from_chat FROM chat_moves WHERE platform = $1 AND to_chat = $2 \
             ORDER BY moved_at DESC, from_chat LIMIT 1",
        )
        .bind(platform)
        .bind(chat)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|(from,)| from))
    }
}
