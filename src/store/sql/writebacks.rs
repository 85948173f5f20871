//! Tracker write-back marks (`tracker_writebacks`): each stage of a session's write-back
//! claimed once.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::RowsAffected;
use crate::store::{write_err, StoreResult, WritebackMarks};

sql_impl! { #[async_trait] impl WritebackMarks;
    #[tracing::instrument(skip_all, fields(session_id, stage))]
    async fn claim_writeback(
        &self,
        session_id: &str,
        stage: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let inserted = sqlx::query(
            "INSERT INTO tracker_writebacks (session_id, stage, claimed_at) VALUES ($1, $2, $3) \
             ON CONFLICT (session_id, stage) DO NOTHING",
        )
        .bind(session_id)
        .bind(stage)
        .bind(D::ts(at))
        .execute(&self.write)
        .await
        .map_err(write_err)?
        .rows_affected();
        Ok(inserted == 1)
    }

    #[tracing::instrument(skip_all, fields(session_id, stage))]
    async fn release_writeback(&self, session_id: &str, stage: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM tracker_writebacks WHERE session_id = $1 AND stage = $2")
            .bind(session_id)
            .bind(stage)
            .execute(&self.write)
            .await
            .map_err(write_err)?;
        Ok(())
    }
}
