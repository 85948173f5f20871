//! Instructions for agents, stored before they are typed (intent before effect).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{not_found, write_err, Conn, ReadRows, Row, RowsAffected};
use crate::store::{
    InstructionLog, InstructionRecord, InstructionState, NewInstruction, SessionId, StoreResult,
};

macro_rules! instruction_columns {
    () => {
        "id, session_id, kind, reaction, body, state, mark, created_at, updated_at"
    };
}

sql_impl! { impl;
    fn instruction_from_row(row: &Row<D>) -> StoreResult<InstructionRecord> {
        Ok(InstructionRecord {
            id: Self::get(row, "id")?,
            session_id: SessionId(Self::get(row, "session_id")?),
            kind: Self::get_parsed(row, "kind")?,
            reaction: Self::get(row, "reaction")?,
            body: Self::get(row, "body")?,
            state: Self::get_parsed(row, "state")?,
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
        .ok_or_else(|| not_found(format!("instruction {id}")))?;
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
        .read(Self::instruction_from_row)
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
        .map_err(write_err)?
        .rows_affected();
        if updated == 0 {
            return Err(not_found(format!("instruction {id}")));
        }
        Ok(())
    }
}
