//! The chat bridge's conversations, inbox, templates and codebase commands.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Transaction;

use super::{ReadRows, RowsAffected};
use crate::store::{
    not_found, write_err, ChatActivity, ChatMessageRecord, ChatStore, ChatTemplateRecord,
    ClaimedMessage, ConversationRecord, Fence, LeaseKind, MessageStatus, NotificationPost,
    SessionId, StoreError, StoreResult, TemplateStore, CHAT_TURN_USAGE,
};

sql_impl! { #[async_trait] impl ChatStore;
    #[tracing::instrument(skip_all)]
    async fn upsert_conversation(
        &self,
        platform: &str,
        thread: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<ConversationRecord> {
        let id = format!("{platform}:{thread}");
        // Most messages come to a conversation that exists: read it without the one writer.
        match self.get_conversation(&id).await {
            Err(StoreError::NotFound { .. }) => {}
            found => return found,
        }
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO conversations (id, platform, thread, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&id)
        .bind(platform)
        .bind(thread)
        .bind(D::ts(at))
        .execute(&mut *tx)
        .await
        .map_err(write_err)?;
        let row = sqlx::query(concat!(
            "SELECT ",
            conversation_columns!(),
            " FROM conversations WHERE id = $1"
        ))
        .bind(&id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Self::conversation_from_row(&row)
    }

    #[tracing::instrument(skip_all)]
    async fn list_conversations(&self) -> StoreResult<Vec<ConversationRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            conversation_columns!(),
            " FROM conversations ORDER BY updated_at DESC, id"
        ))
        .fetch_all(&self.read)
        .await?
        .read(Self::conversation_from_row)
    }

    #[tracing::instrument(skip_all)]
    async fn get_conversation(&self, id: &str) -> StoreResult<ConversationRecord> {
        let row = sqlx::query(concat!(
            "SELECT ",
            conversation_columns!(),
            " FROM conversations WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: format!("conversation {id}"),
        })?;
        Self::conversation_from_row(&row)
    }

    #[tracing::instrument(skip_all)]
    async fn conversations_with_worktree(&self, worktree: &str) -> StoreResult<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM conversations WHERE worktree = $1 ORDER BY id")
                .bind(worktree)
                .fetch_all(&self.read)
                .await?,
        )
    }

    #[tracing::instrument(skip_all)]
    async fn conversation_spend(&self, conversation_id: &str) -> StoreResult<f64> {
        Ok(sqlx::query_scalar::<_, f64>(D::CONVERSATION_SPEND_SQL)
            .bind(CHAT_TURN_USAGE)
            .bind(conversation_id)
            .fetch_one(&self.read)
            .await?)
    }

    #[tracing::instrument(skip_all)]
    async fn enqueue_chat_message_with_meta(
        &self,
        conversation_id: &str,
        platform_message_id: &str,
        author: &str,
        body: &str,
        meta: &BTreeMap<String, String>,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<ChatMessageRecord>> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(concat!(
            "INSERT INTO chat_messages (conversation_id, platform_message_id, author, body, \
             status, received_at, meta) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (conversation_id, platform_message_id) DO NOTHING RETURNING ",
            message_columns!()
        ))
        .bind(conversation_id)
        .bind(platform_message_id)
        .bind(author)
        .bind(body)
        .bind(MessageStatus::Queued.as_str())
        .bind(D::ts(at))
        .bind(serde_json::to_string(meta).unwrap_or_else(|_| "{}".into()))
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_foreign_key_violation() => StoreError::NotFound {
                what: format!("conversation {conversation_id}"),
            },
            _ => write_err(e),
        })?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let message = Self::message_from_row(&row)?;
        // A new message is what makes a conversation "recently updated".
        sqlx::query("UPDATE conversations SET updated_at = $2 WHERE id = $1 AND updated_at < $2")
            .bind(conversation_id)
            .bind(D::ts(at))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(message))
    }

    #[tracing::instrument(skip_all)]
    async fn pending_chat_messages(
        &self,
        conversation_id: &str,
    ) -> StoreResult<Vec<ChatMessageRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            " FROM chat_messages WHERE conversation_id = $1 \
             AND status IN ('queued', 'running') ORDER BY id"
        ))
        .bind(conversation_id)
        .fetch_all(&self.read)
        .await?
        .read(Self::message_from_row)
    }

    #[tracing::instrument(skip_all)]
    async fn chat_messages_since(
        &self,
        conversation_id: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<ChatMessageRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            " FROM chat_messages WHERE conversation_id = $1 AND received_at >= $2 ORDER BY id"
        ))
        .bind(conversation_id)
        .bind(D::ts(since))
        .fetch_all(&self.read)
        .await?
        .read(Self::message_from_row)
    }

    #[tracing::instrument(skip_all)]
    async fn update_conversation(
        &self,
        c: &ConversationRecord,
        fence: Option<&Fence>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        if let Some(f) = fence {
            Self::check_fence(&mut tx, LeaseKind::Conversation, &c.id, f).await?;
        }
        let updated = sqlx::query(
            "UPDATE conversations SET resume_id = $2, cwd = $3, codebase = $4, worktree = $5, \
             last_command = $6, updated_at = $7 WHERE id = $1",
        )
        .bind(&c.id)
        .bind(&c.resume_id)
        .bind(&c.cwd)
        .bind(&c.codebase)
        .bind(&c.worktree)
        .bind(&c.last_command)
        .bind(D::ts(Utc::now()))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(not_found(format!("conversation {}", c.id)));
        }
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn set_resume_id(
        &self,
        conversation_id: &str,
        resume_id: Option<&str>,
        fence: Option<&Fence>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        if let Some(f) = fence {
            Self::check_fence(&mut tx, LeaseKind::Conversation, conversation_id, f).await?;
        }
        let updated =
            sqlx::query("UPDATE conversations SET resume_id = $2, updated_at = $3 WHERE id = $1")
                .bind(conversation_id)
                .bind(resume_id)
                .bind(D::ts(Utc::now()))
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if updated == 0 {
            return Err(not_found(format!("conversation {conversation_id}")));
        }
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn chat_activity(&self) -> StoreResult<ChatActivity> {
        let latest = sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            " FROM chat_messages WHERE id IN \
             (SELECT MAX(id) FROM chat_messages GROUP BY conversation_id) ORDER BY id"
        ))
        .fetch_all(&self.read)
        .await?
        .read(Self::message_from_row)?;
        let pending: Vec<(String, i64)> = sqlx::query_as(
            "SELECT conversation_id, COUNT(*) FROM chat_messages \
             WHERE status IN ('queued', 'running') GROUP BY conversation_id",
        )
        .fetch_all(&self.read)
        .await?;
        Ok(ChatActivity {
            latest,
            pending: pending.into_iter().collect(),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn conversations_with_pending(&self) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT conversation_id FROM chat_messages WHERE status IN ('queued', 'running') \
             UNION SELECT conversation_id FROM chat_replies ORDER BY conversation_id",
        )
        .fetch_all(&self.read)
        .await?)
    }

    #[tracing::instrument(skip_all)]
    async fn link_session_to_conversation(
        &self,
        session_id: &str,
        conversation_id: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO chat_session_links (session_id, conversation_id) VALUES ($1, $2) \
             ON CONFLICT (session_id) DO UPDATE SET conversation_id = excluded.conversation_id",
        )
        .bind(session_id)
        .bind(conversation_id)
        .execute(&self.write)
        .await
        .map_err(write_err)?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn conversation_for_session(&self, session_id: &str) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT conversation_id FROM chat_session_links WHERE session_id = $1",
        )
        .bind(session_id)
        .fetch_optional(&self.read)
        .await?)
    }

    #[tracing::instrument(skip_all)]
    async fn record_notification_post(&self, post: &NotificationPost) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO notification_posts \
             (platform, post_key, chat, session_id, notification_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (platform, post_key) DO UPDATE SET \
             chat = excluded.chat, session_id = excluded.session_id, \
             notification_id = excluded.notification_id, created_at = excluded.created_at",
        )
        .bind(post.platform.as_str())
        .bind(post.key.as_str())
        .bind(post.chat.as_str())
        .bind(post.session_id.as_str())
        .bind(post.notification_id.as_str())
        .bind(D::ts(post.created_at))
        .execute(&self.write)
        .await
        .map_err(write_err)?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn notification_post(
        &self,
        platform: &str,
        key: &str,
    ) -> StoreResult<Option<NotificationPost>> {
        let row = sqlx::query(
            "SELECT p.platform, p.post_key, p.chat, p.session_id, p.notification_id, \
             p.created_at, n.created_at AS notified_at, n.context AS notified_context \
             FROM notification_posts p LEFT JOIN notifications n ON n.id = p.notification_id \
             WHERE p.platform = $1 AND p.post_key = $2",
        )
        .bind(platform)
        .bind(key)
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| {
            Ok(NotificationPost {
                platform: Self::get(&r, "platform")?,
                key: Self::get(&r, "post_key")?,
                chat: Self::get(&r, "chat")?,
                session_id: SessionId(Self::get(&r, "session_id")?),
                notification_id: Self::get(&r, "notification_id")?,
                created_at: Self::get_ts(&r, "created_at")?,
                notified_at: Self::get_opt_ts(&r, "notified_at")?,
                notified_question: Self::get::<Option<D::Json>>(&r, "notified_context")?
                    .map(|c| D::read_json("notified_context", c))
                    .transpose()?
                    .and_then(|c| c["question"].as_str().map(str::to_string)),
            })
        })
        .transpose()
    }
}

sql_impl! { #[async_trait] impl TemplateStore;
    #[tracing::instrument(skip_all)]
    async fn upsert_chat_template(&self, t: &ChatTemplateRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO chat_templates (name, description, content, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET \
             description = excluded.description, content = excluded.content, \
             updated_at = excluded.updated_at",
        )
        .bind(&t.name)
        .bind(&t.description)
        .bind(&t.content)
        .bind(D::ts(t.updated_at))
        .execute(&self.write)
        .await
        .map_err(write_err)?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn get_chat_template(&self, name: &str) -> StoreResult<Option<ChatTemplateRecord>> {
        sqlx::query(
            "SELECT name, description, content, updated_at FROM chat_templates WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.read)
        .await?
        .read(Self::template_from_row)
    }

    #[tracing::instrument(skip_all)]
    async fn list_chat_templates(&self) -> StoreResult<Vec<ChatTemplateRecord>> {
        sqlx::query(
            "SELECT name, description, content, updated_at FROM chat_templates ORDER BY name",
        )
        .fetch_all(&self.read)
        .await?
        .read(Self::template_from_row)
    }

    #[tracing::instrument(skip_all)]
    async fn delete_chat_template(&self, name: &str) -> StoreResult<bool> {
        Ok(sqlx::query("DELETE FROM chat_templates WHERE name = $1")
            .bind(name)
            .execute(&self.write)
            .await?
            .rows_affected()
            == 1)
    }

    #[tracing::instrument(skip_all)]
    async fn add_codebase_commands(
        &self,
        codebase: &str,
        commands: &BTreeMap<String, String>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        for (name, path) in commands {
            sqlx::query(
                "INSERT INTO chat_codebase_commands (codebase, name, path) VALUES ($1, $2, $3) \
                 ON CONFLICT (codebase, name) DO UPDATE SET path = excluded.path",
            )
            .bind(codebase)
            .bind(name)
            .bind(path)
            .execute(&mut *tx)
            .await
            .map_err(write_err)?;
        }
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn codebase_commands(&self, codebase: &str) -> StoreResult<BTreeMap<String, String>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, path FROM chat_codebase_commands WHERE codebase = $1 ORDER BY name",
        )
        .bind(codebase)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.into_iter().collect())
    }
}

sql_impl! { impl;
    /// The claim of [`ChatReplies::claim_after_posting`] inside `tx`: the fence check, then
    /// one conditional `UPDATE` (`queued` → `running`). On PostgreSQL the fence check locks
    /// the conversation's lease row, so claims of one conversation (and its takeover) run one
    /// after another.
    ///
    /// [`ChatReplies::claim_after_posting`]: crate::store::ChatReplies::claim_after_posting
    pub(super) async fn claim_in(
        tx: &mut Transaction<'static, D::Db>,
        conversation: &str,
        fence: Option<&Fence>,
    ) -> StoreResult<Option<ClaimedMessage>> {
        if let Some(f) = fence {
            Self::check_fence(tx, LeaseKind::Conversation, conversation, f).await?;
        }
        // The status literals match the partial index's predicate.
        let head = sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            " FROM chat_messages WHERE conversation_id = $1 \
             AND status IN ('queued', 'running') ORDER BY id LIMIT 1"
        ))
        .bind(conversation)
        .fetch_optional(&mut **tx)
        .await?
        .read(Self::message_from_row)?;
        let Some(head) = head else {
            return Ok(None);
        };
        let owner = fence.map(|f| f.owner.as_str());
        let generation = fence.map(|f| f.generation);
        if head.status == MessageStatus::Running {
            // Its turn was interrupted (a crash, a dead owner): run it again, now ours.
            sqlx::query(
                "UPDATE chat_messages SET claimed_by = $2, claim_generation = $3 WHERE id = $1",
            )
            .bind(head.id)
            .bind(owner)
            .bind(generation)
            .execute(&mut **tx)
            .await?;
            return Ok(Some(ClaimedMessage {
                message: head,
                resumed: true,
            }));
        }
        let claimed = sqlx::query(concat!(
            "UPDATE chat_messages SET status = 'running', started_at = $2, claimed_by = $3, \
             claim_generation = $4 WHERE id = $1 AND status = 'queued' RETURNING ",
            message_columns!()
        ))
        .bind(head.id)
        .bind(D::ts(Utc::now()))
        .bind(owner)
        .bind(generation)
        .fetch_optional(&mut **tx)
        .await?
        .read(Self::message_from_row)?;
        // Nothing claimed: another claimer won the message between the read and the update
        // (only possible without a fence); the caller's next claim reads the next one.
        Ok(claimed.map(|message| ClaimedMessage {
            message,
            resumed: false,
        }))
    }
}
