//! The notification outbox.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{placeholders, ReadRows, RowsAffected};
use crate::store::{
    clamp_limit, not_found, NotificationRecord, NotificationStatus, Outbox, StoreError, StoreResult,
};

sql_impl! { #[async_trait] impl Outbox;
    #[tracing::instrument(skip_all)]
    async fn enqueue_notification(&self, n: &NotificationRecord) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let inserted = Self::insert_notification(&mut tx, n).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    #[tracing::instrument(skip_all)]
    async fn due_notifications(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<NotificationRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            notification_columns!(),
            " FROM notifications WHERE status = $1 AND next_attempt_at <= $2 \
             ORDER BY created_at, id LIMIT $3"
        ))
        .bind(NotificationStatus::Pending.as_str())
        .bind(D::ts(now))
        .bind(clamp_limit(limit))
        .fetch_all(&self.read)
        .await?
        .read(Self::notification_from_row)
    }

    #[tracing::instrument(skip_all)]
    async fn update_notification(
        &self,
        id: &str,
        status: NotificationStatus,
        attempts: i64,
        next_attempt_at: DateTime<Utc>,
        last_error: Option<&str>,
    ) -> StoreResult<()> {
        let updated = sqlx::query(
            "UPDATE notifications SET status = $2, attempts = $3, next_attempt_at = $4, \
             last_error = $5, claimed_by = NULL, claimed_until_ms = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(attempts)
        .bind(D::ts(next_attempt_at))
        .bind(last_error)
        .execute(&self.write)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(not_found(format!("notification {id}")));
        }
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn list_notifications(
        &self,
        status: Option<NotificationStatus>,
        limit: i64,
    ) -> StoreResult<Vec<NotificationRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            notification_columns!(),
            " FROM notifications WHERE (CAST($1 AS TEXT) IS NULL OR status = CAST($1 AS TEXT)) \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        ))
        .bind(status.map(NotificationStatus::as_str))
        .bind(clamp_limit(limit))
        .fetch_all(&self.read)
        .await?
        .read(Self::notification_from_row)
    }

    #[tracing::instrument(skip_all)]
    async fn count_notifications(&self) -> StoreResult<Vec<(NotificationStatus, i64)>> {
        sqlx::query("SELECT status, COUNT(*) AS n FROM notifications GROUP BY status")
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(|r| {
                Ok((Self::get_parsed(r, "status")?, Self::get(r, "n")?))
            })
            .collect()
    }

    #[tracing::instrument(skip_all, fields(n = ids.len()))]
    async fn defer_notifications(&self, ids: &[String], until: DateTime<Utc>) -> StoreResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "UPDATE notifications SET next_attempt_at = $1 WHERE status = $2 AND id IN ({})",
            placeholders(2, ids.len())
        );
        let query = sqlx::query(&sql)
            .bind(D::ts(until))
            .bind(NotificationStatus::Pending.as_str());
        let query = ids.iter().fold(query, |q, id| q.bind(id));
        Ok(query.execute(&self.write).await?.rows_affected())
    }

    #[tracing::instrument(skip_all, fields(n = members.len()))]
    async fn fold_into_digest(
        &self,
        digest: &NotificationRecord,
        members: &[String],
    ) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        if !Self::insert_notification(&mut tx, digest).await? {
            tx.rollback().await?;
            return Err(StoreError::Conflict(format!(
                "digest {} could not be written",
                digest.id
            )));
        }
        let mut folded = 0;
        if !members.is_empty() {
            let sql = format!(
                "UPDATE notifications SET status = $1, digest_id = $2 \
                 WHERE status = $3 AND id IN ({})",
                placeholders(3, members.len())
            );
            let query = sqlx::query(&sql)
                .bind(NotificationStatus::Digested.as_str())
                .bind(&digest.id)
                .bind(NotificationStatus::Pending.as_str());
            let query = members.iter().fold(query, |q, id| q.bind(id));
            folded = query.execute(&mut *tx).await?.rows_affected();
        }
        if usize::try_from(folded).ok() != Some(members.len()) {
            // A member is no longer pending (delivered or folded meanwhile): listing it in the
            // digest would send it twice.
            tx.rollback().await?;
            return Err(StoreError::Conflict(format!(
                "only {folded} of {} digest members are pending",
                members.len()
            )));
        }
        tx.commit().await?;
        Ok(folded)
    }
}
