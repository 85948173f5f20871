//! Leases, fenced writes, the command table and the outbox claim (several nodes on one
//! database). Every time is the database clock's ([`Dialect::NOW_MS`]).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Transaction;

use super::{Row, RowsAffected};
use crate::store::{
    clamp_limit, terminal_states, ClusterCommandRecord, CommandStatus, EventRecord, Fence,
    HeldLease, LeaseKind, LeaseStore, NewSession, NotificationRecord, NotificationStatus,
    SessionId, SessionRecord, StoreError, StoreResult, TransitionCommit,
};

/// The channel a queued command is announced on.
pub const COMMANDS_CHANNEL: &str = "flotilla_commands";

/// The channel a conversation's owner is woken on (payload: the conversation id, after
/// [`CANCEL_MARK`] for a `/cancel`).
pub const CHAT_CHANNEL: &str = "flotilla_chat";

/// The channel a freed chat turn slot is announced on.
pub const TURN_SLOTS_CHANNEL: &str = "flotilla_turn_slots";

/// Marks a chat wake-up that carries a `/cancel` (conversation ids never start with it).
const CANCEL_MARK: &str = "!";

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `'a', 'b'` of the terminal states, for queries that leave ended sessions alone (fixed
/// words from our own enum, never input).
fn terminal_list() -> String {
    terminal_states()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

sql_impl! { impl;
    /// Listens on a PostgreSQL NOTIFY `channel` and passes each payload, read by `read`,
    /// to the receiver; `None` on backends without notifications. `recv` reconnects by itself
    /// after a lost connection; a notification lost then is covered by the listener's own
    /// periodic look (the owner's claim, the chat sweep). With a `capacity` of 1 wake-ups
    /// coalesce instead of queueing.
    async fn listen<T: Send + 'static>(
        &self,
        channel: &'static str,
        what: &'static str,
        capacity: usize,
        read: fn(&str) -> T,
    ) -> StoreResult<Option<tokio::sync::mpsc::Receiver<T>>> {
        if !D::NOTIFIES {
            return Ok(None);
        }
        let mut listener = sqlx::postgres::PgListener::connect(&self.url).await?;
        listener.listen(channel).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(n) => {
                        let v = read(n.payload());
                        let sent = match capacity {
                            1 => match tx.try_send(v) {
                                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => Err(()),
                                _ => Ok(()),
                            },
                            _ => tx.send(v).await.map_err(|_| ()),
                        };
                        if sent.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = ?e, "listening for {what} failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if tx.is_closed() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Some(rx))
    }

    /// Refuses (`Fenced`) unless `fence` holds the lease on `(kind, key)`. The check is an
    /// `UPDATE`: it locks the lease row until the caller's transaction ends, so a takeover
    /// waits for this write, or this write sees the takeover's new generation and is refused.
    pub(super) async fn check_fence(
        tx: &mut Transaction<'static, D::Db>,
        kind: LeaseKind,
        key: &str,
        fence: &Fence,
    ) -> StoreResult<()> {
        let held = sqlx::query(
            "UPDATE leases SET generation = generation \
             WHERE kind = $1 AND key = $2 AND owner = $3 AND generation = $4",
        )
        .bind(kind.as_str())
        .bind(key)
        .bind(&fence.owner)
        .bind(fence.generation)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if held == 0 {
            return Err(StoreError::Fenced {
                what: format!("{} {key}", kind.as_str()),
                generation: fence.generation,
            });
        }
        Ok(())
    }

/// `acquire_lease` in the caller's transaction (a session's creation leases it in its own).
    pub(super) async fn acquire_in(
        tx: &mut Transaction<'static, D::Db>,
        kind: LeaseKind,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> StoreResult<Option<HeldLease>> {
        let now = D::NOW_MS;
        let sql = format!(
            "INSERT INTO leases (kind, key, owner, generation, expires_at_ms) \
             VALUES ($1, $2, $3, 1, {now} + $4) \
             ON CONFLICT (kind, key) DO UPDATE SET \
               generation = CASE WHEN leases.owner = excluded.owner \
                 THEN leases.generation ELSE leases.generation + 1 END, \
               owner = excluded.owner, expires_at_ms = excluded.expires_at_ms \
             WHERE leases.owner = excluded.owner OR leases.expires_at_ms < {now} \
             RETURNING kind, key, generation"
        );
        let rows = sqlx::query(&sql)
            .bind(kind.as_str())
            .bind(key)
            .bind(owner)
            .bind(millis(ttl))
            .fetch_all(&mut **tx)
            .await?;
        Ok(Self::held_from_rows(&rows)?.pop())
    }

    fn held_from_rows(rows: &[Row<D>]) -> StoreResult<Vec<HeldLease>> {
        rows.iter()
            .map(|row| {
                let kind: String = Self::get(row, "kind")?;
                Ok(HeldLease {
                    kind: LeaseKind::parse(&kind).ok_or_else(|| {
                        StoreError::Corrupt(format!("unknown lease kind `{kind}`"))
                    })?,
                    key: Self::get(row, "key")?,
                    generation: Self::get(row, "generation")?,
                })
            })
            .collect()
    }
}

sql_impl! { #[async_trait] impl LeaseStore;
    #[tracing::instrument(skip_all, fields(kind = kind.as_str(), key))]
    async fn acquire_lease(
        &self,
        kind: LeaseKind,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> StoreResult<Option<HeldLease>> {
        let mut tx = self.begin_write().await?;
        let held = Self::acquire_in(&mut tx, kind, key, owner, ttl).await?;
        tx.commit().await?;
        Ok(held)
    }

    #[tracing::instrument(skip_all)]
    async fn renew_leases(&self, owner: &str, ttl: Duration) -> StoreResult<Vec<HeldLease>> {
        let sql = format!(
            "UPDATE leases SET expires_at_ms = {} + $2 WHERE owner = $1 \
             RETURNING kind, key, generation",
            D::NOW_MS
        );
        let slots = format!(
            "UPDATE chat_turn_slots SET expires_at_ms = {} + $2 WHERE holder = $1",
            D::NOW_MS
        );
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(millis(ttl))
            .fetch_all(&mut *tx)
            .await?;
        sqlx::query(&slots)
            .bind(owner)
            .bind(millis(ttl))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Self::held_from_rows(&rows)
    }

    #[tracing::instrument(skip_all)]
    async fn take_over_expired(
        &self,
        owner: &str,
        ttl: Duration,
        limit: i64,
    ) -> StoreResult<Vec<HeldLease>> {
        let now = D::NOW_MS;
        let sql = format!(
            "UPDATE leases SET owner = $1, generation = generation + 1, \
               expires_at_ms = {now} + $2 \
             WHERE (kind, key) IN (\
               SELECT kind, key FROM leases l WHERE l.expires_at_ms < {now} AND l.owner <> $1 \
               AND NOT (l.kind = 'session' AND l.key IN \
                 (SELECT id FROM sessions WHERE state IN ({ended}))) \
               ORDER BY l.expires_at_ms LIMIT $3{skip}) \
             RETURNING kind, key, generation",
            ended = terminal_list(),
            skip = D::SKIP_LOCKED,
        );
        // A live session without a lease row: its node died between creating it and
        // leasing it. Only sessions older than a lease time (by this node's clock, as their
        // `created_at` is their node's), so a creation's own lease is never raced.
        let unleased = format!(
            "INSERT INTO leases (kind, key, owner, generation, expires_at_ms) \
             SELECT 'session', s.id, $1, 1, {now} + $2 FROM sessions s \
             WHERE s.state NOT IN ({ended}) AND s.created_at < $3 \
               AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.kind = 'session' AND l.key = s.id) \
             ORDER BY s.created_at LIMIT $4 \
             ON CONFLICT (kind, key) DO NOTHING \
             RETURNING kind, key, generation",
            ended = terminal_list(),
        );
        let cutoff = Utc::now()
            - chrono::Duration::from_std(ttl).unwrap_or_else(|_| chrono::Duration::days(1));
        let mut tx = self.begin_write().await?;
        let mut rows = sqlx::query(&sql)
            .bind(owner)
            .bind(millis(ttl))
            .bind(clamp_limit(limit))
            .fetch_all(&mut *tx)
            .await?;
        rows.extend(
            sqlx::query(&unleased)
                .bind(owner)
                .bind(millis(ttl))
                .bind(D::ts(cutoff))
                .bind(clamp_limit(limit))
                .fetch_all(&mut *tx)
                .await?,
        );
        tx.commit().await?;
        Self::held_from_rows(&rows)
    }

    #[tracing::instrument(skip_all)]
    async fn lease_holder(&self, kind: LeaseKind, key: &str) -> StoreResult<Option<Fence>> {
        let row = sqlx::query("SELECT owner, generation FROM leases WHERE kind = $1 AND key = $2")
            .bind(kind.as_str())
            .bind(key)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| {
            Ok(Fence {
                owner: Self::get(&r, "owner")?,
                generation: Self::get(&r, "generation")?,
            })
        })
        .transpose()
    }

    async fn lease_owners(&self, kind: LeaseKind) -> StoreResult<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT key, owner FROM leases WHERE kind = $1")
            .bind(kind.as_str())
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| Ok((Self::get(r, "key")?, Self::get(r, "owner")?)))
            .collect()
    }

    #[tracing::instrument(skip_all)]
    async fn release_leases(
        &self,
        kind: LeaseKind,
        keys: &[String],
        owner: &str,
    ) -> StoreResult<u64> {
        let mut released = 0;
        let mut tx = self.begin_write().await?;
        for key in keys {
            released +=
                sqlx::query("DELETE FROM leases WHERE kind = $1 AND key = $2 AND owner = $3")
                    .bind(kind.as_str())
                    .bind(key.as_str())
                    .bind(owner)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
        }
        tx.commit().await?;
        Ok(released)
    }

    #[tracing::instrument(skip_all, fields(id = %commit.snapshot.session.id))]
    async fn commit_transition_fenced(
        &self,
        commit: &TransitionCommit,
        fence: &Fence,
    ) -> StoreResult<EventRecord> {
        self.commit_transition_checked(commit, Some(fence)).await
    }

    #[tracing::instrument(skip_all, fields(id = %session))]
    async fn enqueue_command(&self, session: &SessionId, command: &str) -> StoreResult<i64> {
        let sql = format!(
            "INSERT INTO cluster_commands (session_id, command, created_at_ms) \
             VALUES ($1, $2, {}) RETURNING id",
            D::NOW_MS
        );
        let mut tx = self.begin_write().await?;
        let id: i64 = sqlx::query_scalar(&sql)
            .bind(session.as_str())
            .bind(command)
            .fetch_one(&mut *tx)
            .await?;
        if D::NOTIFIES {
            // Delivered at commit, to every listening node.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(COMMANDS_CHANNEL)
                .bind(session.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    #[tracing::instrument(skip_all)]
    async fn claim_commands(
        &self,
        owner: &str,
        limit: i64,
    ) -> StoreResult<Vec<ClusterCommandRecord>> {
        let sql = format!(
            "UPDATE cluster_commands SET status = 'claimed', claimed_by = $1 \
             WHERE id IN (SELECT c.id FROM cluster_commands c WHERE c.status = 'queued' \
               AND c.session_id IN (SELECT key FROM leases WHERE kind = 'session' AND owner = $1) \
               ORDER BY c.id LIMIT $2{}) \
             RETURNING id, session_id, command",
            D::SKIP_LOCKED
        );
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(clamp_limit(limit))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut out = rows
            .iter()
            .map(|r| {
                Ok(ClusterCommandRecord {
                    id: Self::get(r, "id")?,
                    session_id: SessionId(Self::get(r, "session_id")?),
                    command: Self::get(r, "command")?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        out.sort_by_key(|c| c.id);
        Ok(out)
    }

    #[tracing::instrument(skip_all, fields(id))]
    async fn finish_command(&self, id: i64, result: &str) -> StoreResult<()> {
        sqlx::query("UPDATE cluster_commands SET status = 'done', result = $2 WHERE id = $1")
            .bind(id)
            .bind(result)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(id))]
    async fn command_status(&self, id: i64) -> StoreResult<CommandStatus> {
        let row = sqlx::query("SELECT status, result FROM cluster_commands WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: format!("command {id}"),
            })?;
        let status: String = Self::get(&row, "status")?;
        let result: Option<String> = Self::get(&row, "result")?;
        Ok(match (status.as_str(), result) {
            ("done", Some(r)) => CommandStatus::Done(r),
            ("queued", _) => CommandStatus::Queued,
            _ => CommandStatus::Claimed,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn claim_due_notifications(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        hold: Duration,
        limit: i64,
    ) -> StoreResult<Vec<NotificationRecord>> {
        let db_now = D::NOW_MS;
        let sql = format!(
            "UPDATE notifications SET claimed_by = $1, claimed_until_ms = {db_now} + $2 \
             WHERE id IN (SELECT n.id FROM notifications n WHERE n.status = $3 \
               AND n.next_attempt_at <= $4 \
               AND (n.claimed_until_ms IS NULL OR n.claimed_until_ms < {db_now} \
                    OR n.claimed_by = $1) \
               ORDER BY n.created_at, n.id LIMIT $5{skip}) \
             RETURNING {columns}",
            skip = D::SKIP_LOCKED,
            columns = notification_columns!(),
        );
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(millis(hold))
            .bind(NotificationStatus::Pending.as_str())
            .bind(D::ts(now))
            .bind(clamp_limit(limit))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut out = rows
            .iter()
            .map(Self::notification_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    async fn command_wakeups(&self) -> StoreResult<Option<tokio::sync::mpsc::Receiver<()>>> {
        // One pending wake-up is enough: the owner claims every queued command at once.
        self.listen(COMMANDS_CHANNEL, "cluster commands", 1, |_| ())
            .await
    }

    #[tracing::instrument(skip_all, fields(prefix = %new.prefix))]
    async fn create_session_leased(
        &self,
        new: &NewSession,
        owner: &str,
        ttl: Duration,
    ) -> StoreResult<(SessionRecord, EventRecord, HeldLease)> {
        let (session, event, held) = self.create_session_checked(new, Some((owner, ttl))).await?;
        let held = held.ok_or_else(|| StoreError::Fenced {
            what: format!("session {}", session.id),
            generation: 0,
        })?;
        Ok((session, event, held))
    }

    async fn wake_conversation_owner(&self, conversation: &str, cancel: bool) -> StoreResult<()> {
        if !D::NOTIFIES {
            return Ok(());
        }
        let payload = if cancel {
            format!("{CANCEL_MARK}{conversation}")
        } else {
            conversation.to_string()
        };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHAT_CHANNEL)
            .bind(payload)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn conversation_wakeups(
        &self,
    ) -> StoreResult<Option<tokio::sync::mpsc::Receiver<(String, bool)>>> {
        self.listen(CHAT_CHANNEL, "chat wake-ups", 256, |p| {
            match p.strip_prefix(CANCEL_MARK) {
                Some(c) => (c.to_string(), true),
                None => (p.to_string(), false),
            }
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn prepare_turn_slots(&self, owner: &str, cap: usize) -> StoreResult<()> {
        let cap = i64::try_from(cap.max(1)).unwrap_or(i64::MAX);
        let mut tx = self.begin_write().await?;
        for slot in 0..cap {
            sqlx::query(
                "INSERT INTO chat_turn_slots (slot, expires_at_ms) VALUES ($1, 0) \
                 ON CONFLICT (slot) DO NOTHING",
            )
            .bind(slot)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE chat_turn_slots SET holder = NULL, token = NULL, conversation = NULL, \
               expires_at_ms = 0 WHERE holder = $1",
        )
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(conversation))]
    async fn claim_turn_slot(
        &self,
        owner: &str,
        token: &str,
        conversation: &str,
        cap: usize,
        ttl: Duration,
    ) -> StoreResult<Option<i64>> {
        let now = D::NOW_MS;
        // Locked rows are skipped: another node is claiming, renewing or freeing that slot;
        // a freed one wakes the waiters, who try again.
        let sql = format!(
            "UPDATE chat_turn_slots SET holder = $1, token = $2, conversation = $3, \
               expires_at_ms = {now} + $4 \
             WHERE slot IN (SELECT s.slot FROM chat_turn_slots s WHERE s.slot < $5 \
               AND (s.holder IS NULL OR s.expires_at_ms < {now}) \
               ORDER BY s.slot LIMIT 1{skip}) \
             RETURNING slot",
            skip = D::SKIP_LOCKED,
        );
        let mut tx = self.begin_write().await?;
        let slot: Option<i64> = sqlx::query_scalar(&sql)
            .bind(owner)
            .bind(token)
            .bind(conversation)
            .bind(millis(ttl))
            .bind(i64::try_from(cap).unwrap_or(i64::MAX))
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(slot)
    }

    #[tracing::instrument(skip_all)]
    async fn release_turn_slot(&self, token: &str) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let freed = sqlx::query(
            "UPDATE chat_turn_slots SET holder = NULL, token = NULL, conversation = NULL, \
               expires_at_ms = 0 WHERE token = $1",
        )
        .bind(token)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if D::NOTIFIES {
            // Delivered at commit, to every listening node.
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(TURN_SLOTS_CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(freed > 0)
    }

    async fn turn_slots_in_use(&self) -> StoreResult<usize> {
        let sql = format!(
            "SELECT COUNT(*) FROM chat_turn_slots \
             WHERE holder IS NOT NULL AND expires_at_ms >= {}",
            D::NOW_MS
        );
        let n: i64 = sqlx::query_scalar(&sql).fetch_one(&self.read).await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    async fn turn_slot_wakeups(&self) -> StoreResult<Option<tokio::sync::mpsc::Receiver<()>>> {
        // One pending wake-up is enough: a waiter tries for any free slot.
        self.listen(TURN_SLOTS_CHANNEL, "freed chat turn slots", 1, |_| ())
            .await
    }
}
