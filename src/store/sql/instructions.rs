//! Instructions for agents, stored before they are typed (intent before effect), and the
//! webhook deliveries' "processed" mark.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{write_err, Conn, Row};
use crate::store::{
    InstructionLog, InstructionRecord, InstructionState, NewInstruction, SessionId, StoreError,
    StoreResult, WebhookDelivery,
};

macro_rules! instruction_columns {
    () => {
        "id, session_id, kind, reaction, body, state, mark, created_at, updated_at"
    };
}

sql_impl! { impl;
    fn instruction_from_row(row: &Row<D>) -> StoreResult<InstructionRecord> {
        fn parse<T>(column: &str, v: Result<T, String>) -> StoreResult<T> {
            v.map_err(|e| StoreError::Corrupt(format!("instructions.{column}: {e}")))
        }
        Ok(InstructionRecord {
            id: Self::get(row, "id")?,
            session_id: SessionId(Self::get(row, "session_id")?),
            kind: parse("kind", Self::get::<String>(row, "kind")?.parse())?,
            reaction: Self::get(row, "reaction")?,
            body: Self::get(row, "body")?,
            state: parse("state", Self::get::<String>(row, "state")?.parse())?,
            mark: Self::get(row, "mark")?,
            created_at: Self::get_ts(row, "created_at")?,
            updated_at: Self::get_ts(row, "updated_at")?,
        })
    }

    /// Inserts `new` as `pending` on `conn` (a transaction of a step, or the write pool's).
    pub(super) async fn insert_instruction(
        conn: &mut Conn<D>,
        new: &NewInstruction,
    ) -> StoreResult<InstructionRecord> {
        let row = sqlx::query(concat!(
            "INSERT INTO instructions (session_id, kind, reaction, body, state, mark, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, NULL, $6, $6) RETURNING ",
            instruction_columns!()
        ))
        .bind(new.session_id.as_str())
        .bind(new.kind.as_str())
        .bind(new.reaction.as_deref())
        .bind(new.body.as_str())
        .bind(InstructionState::Pending.as_str())
        .bind(D::ts(new.at))
        .fetch_one(&mut *conn)
        .await
        .map_err(write_err)?;
        Self::instruction_from_row(&row)
    }

    fn delivery_from_row(row: &Row<D>) -> StoreResult<WebhookDelivery> {
        Ok(WebhookDelivery {
            platform: Self::get(row, "platform")?,
            delivery_id: Self::get(row, "delivery_id")?,
            event: Self::get(row, "event")?,
            payload: Self::get(row, "payload")?,
            received_at: Self::get_ts(row, "received_at")?,
        })
    }

    pub(super) async fn webhook_processed(
        &self,
        platform: &str,
        delivery_id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE webhook_deliveries SET processed_at = $3 \
             WHERE platform = $1 AND delivery_id = $2 AND processed_at IS NULL",
        )
        .bind(platform)
        .bind(delivery_id)
        .bind(D::ts(at))
        .execute(&self.write)
        .await
        .map_err(write_err)?;
        Ok(())
    }

    pub(super) async fn webhooks_unprocessed(
        &self,
        platform: &str,
        limit: i64,
    ) -> StoreResult<Vec<WebhookDelivery>> {
        sqlx::query(
            "SELECT platform, delivery_id, event, payload, received_at FROM webhook_deliveries \
             WHERE platform = $1 AND processed_at IS NULL ORDER BY received_at, delivery_id \
             LIMIT $2",
        )
        .bind(platform)
        .bind(crate::store::clamp_limit(limit))
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(Self::delivery_from_row)
        .collect()
    }
}

sql_impl! { #[async_trait] impl InstructionLog;
    #[tracing::instrument(skip_all, fields(session_id = %new.session_id))]
    async fn queue_instruction(&self, new: &NewInstruction) -> StoreResult<InstructionRecord> {
        let mut tx = self.begin_write().await?;
        let rec = Self::insert_instruction(&mut tx, new).await?;
        tx.commit().await?;
        Ok(rec)
    }

    #[tracing::instrument(skip_all)]
    async fn load_instruction(&self, id: i64) -> StoreResult<InstructionRecord> {
        let row = sqlx::query(concat!(
            "SELECT ",
            instruction_columns!(),
            " FROM instructions WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.read)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: format!("instruction {id}"),
        })?;
        Self::instruction_from_row(&row)
    }

    #[tracing::instrument(skip_all, fields(session_id = %session))]
    async fn open_instructions(&self, session: &SessionId) -> StoreResult<Vec<InstructionRecord>> {
        // Read on the write pool: the caller acts on what it reads and must see its own writes.
        sqlx::query(concat!(
            "SELECT ",
            instruction_columns!(),
            " FROM instructions WHERE session_id = $1 AND state IN ($2, $3) ORDER BY id"
        ))
        .bind(session.as_str())
        .bind(InstructionState::Pending.as_str())
        .bind(InstructionState::Typing.as_str())
        .fetch_all(&self.write)
        .await?
        .iter()
        .map(Self::instruction_from_row)
        .collect()
    }

    #[tracing::instrument(skip_all, fields(id, state = state.as_str()))]
    async fn set_instruction_state(
        &self,
        id: i64,
        state: InstructionState,
        mark: Option<i64>,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let updated = sqlx::query(
            "UPDATE instructions SET state = $2, mark = COALESCE($3, mark), updated_at = $4 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(state.as_str())
        .bind(mark)
        .bind(D::ts(at))
        .execute(&self.write)
        .await
        .map_err(write_err)?;
        if super::RowsAffected::rows_affected(&updated) == 0 {
            return Err(StoreError::NotFound {
                what: format!("instruction {id}"),
            });
        }
        Ok(())
    }
}
