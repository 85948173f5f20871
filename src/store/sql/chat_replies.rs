//! Messages' final replies (`chat_replies`), stored as their message is settled and deleted
//! once posted.

use async_trait::async_trait;
use chrono::Utc;

use super::RowsAffected;
use crate::store::{
    not_found, ChatReplies, ChatReply, ChatReplyRecord, ClaimedMessage, Fence, LeaseKind,
    MessageStatus, StoreResult,
};

sql_impl! { #[async_trait] impl ChatReplies;
    #[tracing::instrument(skip_all)]
    async fn settle_chat_message(
        &self,
        conversation: &str,
        id: i64,
        status: MessageStatus,
        replies: &[ChatReply],
        fence: Option<&Fence>,
    ) -> StoreResult<()> {
        let now = Utc::now();
        let started = (status == MessageStatus::Running).then_some(now);
        let finished = matches!(status, MessageStatus::Done | MessageStatus::Failed).then_some(now);
        let mut tx = self.begin_write().await?;
        if let Some(f) = fence {
            Self::check_fence(&mut tx, LeaseKind::Conversation, conversation, f).await?;
        }
        let updated = sqlx::query(
            "UPDATE chat_messages SET status = $2, started_at = COALESCE($3, started_at), \
             finished_at = COALESCE($4, finished_at) WHERE id = $1 AND conversation_id = $5",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(started.map(D::ts))
        .bind(finished.map(D::ts))
        .bind(conversation)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(not_found(format!("chat message {id}")));
        }
        for r in replies {
            sqlx::query(
                "INSERT INTO chat_replies (conversation_id, message_id, body, edit_of, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(conversation)
            .bind(id)
            .bind(&r.body)
            .bind(r.edit_of.as_deref())
            .bind(D::ts(now))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn unsent_chat_replies(&self, conversation: &str) -> StoreResult<Vec<ChatReplyRecord>> {
        let rows = sqlx::query(
            "SELECT id, message_id, body, edit_of, attempts, created_at FROM chat_replies \
             WHERE conversation_id = $1 ORDER BY id",
        )
        .bind(conversation)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ChatReplyRecord {
                    id: Self::get(r, "id")?,
                    message_id: Self::get(r, "message_id")?,
                    reply: ChatReply {
                        body: Self::get(r, "body")?,
                        edit_of: Self::get(r, "edit_of")?,
                    },
                    attempts: Self::get(r, "attempts")?,
                    stored_at: Self::get_ts(r, "created_at")?,
                })
            })
            .collect()
    }

    #[tracing::instrument(skip_all)]
    async fn chat_reply_done(&self, id: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM chat_replies WHERE id = $1")
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// The deletes ride in the claim's write transaction: one commit per message instead of
    /// two on SQLite's single writer.
    #[tracing::instrument(skip_all)]
    async fn claim_after_posting(
        &self,
        conversation: &str,
        posted: &[i64],
        fence: Option<&Fence>,
    ) -> StoreResult<Option<ClaimedMessage>> {
        let mut tx = self.begin_write().await?;
        for id in posted {
            sqlx::query("DELETE FROM chat_replies WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let claimed = Self::claim_in(&mut tx, conversation, fence).await?;
        tx.commit().await?;
        Ok(claimed)
    }

    #[tracing::instrument(skip_all)]
    async fn chat_reply_failed(&self, id: i64) -> StoreResult<i64> {
        let attempts: Option<i64> = sqlx::query_scalar(
            "UPDATE chat_replies SET attempts = attempts + 1 WHERE id = $1 RETURNING attempts",
        )
        .bind(id)
        .fetch_optional(&self.write)
        .await?;
        attempts.ok_or_else(|| not_found(format!("chat reply {id}")))
    }
}
