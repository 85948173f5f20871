//! Sessions, their events and webhook deliveries.

use async_trait::async_trait;

use chrono::{DateTime, Utc};

use super::{placeholders, Conn, ReadRows, RowsAffected};
use crate::store::{
    as_text, clamp_limit, not_found, terminal_states, write_err, Activity, EventLog, EventRecord,
    Fence, HeldLease, LeaseKind, NewEvent, NewSession, ReactionTracker, SessionCommands,
    SessionFilter, SessionId, SessionQueries, SessionRecord, SessionSnapshot, SessionState,
    StoreError, StoreResult, TransitionCommit, WebhookDelivery, WebhookLog,
};

sql_impl! { #[async_trait] impl SessionCommands;
    #[tracing::instrument(skip_all, fields(prefix = %new.prefix))]
    async fn create_session(&self, new: &NewSession) -> StoreResult<(SessionRecord, EventRecord)> {
        let (session, event, _) = self.create_session_checked(new, None).await?;
        Ok((session, event))
    }

    #[tracing::instrument(skip_all, fields(id = %commit.snapshot.session.id))]
    async fn commit_transition(&self, commit: &TransitionCommit) -> StoreResult<EventRecord> {
        self.commit_transition_checked(commit, None).await
    }
}

sql_impl! { impl;
    /// `create_session`, and (when `lease` names an owner and a lease time) the new session's
    /// lease in the same transaction (see `leases.rs`).
    pub(super) async fn create_session_checked(
        &self,
        new: &NewSession,
        lease: Option<(&str, std::time::Duration)>,
    ) -> StoreResult<(SessionRecord, EventRecord, Option<HeldLease>)> {
        let mut tx = self.begin_write().await?;
        let number = if new.fixed_id.is_some() {
            // A fixed id (the orchestrator's) is reserved by the primary key alone.
            0
        } else {
            loop {
                let n: i64 = sqlx::query_scalar(
                    "INSERT INTO session_counters (prefix, last_number) VALUES ($1, 1) \
                 ON CONFLICT (prefix) DO UPDATE SET last_number = session_counters.last_number + 1 \
                 RETURNING last_number",
                )
                .bind(&new.prefix)
                .fetch_one(&mut *tx)
                .await?;
                if !new.skip_numbers.contains(&n) {
                    break n;
                }
            }
        };
        let id = match &new.fixed_id {
            Some(fixed) => SessionId(fixed.clone()),
            None => SessionId::new(&new.prefix, number),
        };
        let row = sqlx::query(concat!(
            "INSERT INTO sessions (id, prefix, number, project, state, agent, runtime, \
             workspace_kind, branch, issue, prompt, activity, restart_count, created_at, \
             updated_at, meta) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, $13, $13, $14) RETURNING ",
            session_columns!()
        ))
        .bind(id.as_str())
        .bind(&new.prefix)
        .bind(number)
        .bind(&new.project)
        .bind(SessionState::Spawning.as_str())
        .bind(&new.agent)
        .bind(&new.runtime)
        .bind(&new.workspace_kind)
        .bind(&new.branch)
        .bind(&new.issue)
        .bind(&new.prompt)
        .bind(as_text(&Activity::default()))
        .bind(D::ts(new.at))
        .bind(D::json(&meta_of(new)))
        .fetch_one(&mut *tx)
        .await
        .map_err(write_err)?;
        let session = Self::session_from_row(&row)?;
        let created = NewEvent {
            session_id: Some(id.clone()),
            kind: "session.created".into(),
            data: serde_json::json!({
                "project": new.project,
                "agent": new.agent,
                "state": SessionState::Spawning.as_str(),
            }),
            at: new.at,
        };
        let event = Self::insert_event(&mut tx, &created).await?;
        let held = match lease {
            Some((owner, ttl)) => Some(
                Self::acquire_in(&mut tx, LeaseKind::Session, id.as_str(), owner, ttl)
                    .await?
                    .ok_or_else(|| StoreError::Fenced {
                        what: format!("session {id}"),
                        generation: 0,
                    })?,
            ),
            None => None,
        };
        tx.commit().await?;
        Ok((session, event, held))
    }

    /// One session row, read on `conn`.
    async fn session_on(conn: &mut Conn<D>, id: &SessionId) -> StoreResult<SessionRecord> {
        let row = sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| not_found(format!("session {id}")))?;
        Self::session_from_row(&row)
    }

    /// `commit_transition`, first checking in the same transaction that `fence` (when given)
    /// still holds the session's lease (see `leases.rs`).
    pub(super) async fn commit_transition_checked(
        &self,
        commit: &TransitionCommit,
        fence: Option<&Fence>,
    ) -> StoreResult<EventRecord> {
        let s = &commit.snapshot.session;
        let mut tx = self.begin_write().await?;
        if let Some(f) = fence {
            Self::check_fence(&mut tx, LeaseKind::Session, s.id.as_str(), f).await?;
        }
        let updated = sqlx::query(
            "UPDATE sessions SET project = $2, state = $3, reason = $4, agent = $5, \
             runtime = $6, workspace_kind = $7, branch = $8, workspace = $9, pr_number = $10, \
             pr_url = $11, issue = $12, prompt = $13, runtime_handle = $14, activity = $15, \
             activity_at = $16, restart_count = $17, updated_at = $18, meta = $19 WHERE id = $1",
        )
        .bind(s.id.as_str())
        .bind(&s.project)
        .bind(s.state.as_str())
        .bind(&s.reason)
        .bind(&s.agent)
        .bind(&s.runtime)
        .bind(&s.workspace_kind)
        .bind(&s.branch)
        .bind(&s.workspace)
        .bind(s.pr.as_ref().map(|p| p.number))
        .bind(s.pr.as_ref().map(|p| p.url.as_str()))
        .bind(&s.issue)
        .bind(&s.prompt)
        .bind(s.runtime_handle.as_ref().map(|h| D::json(&h.to_json())))
        .bind(as_text(&s.activity))
        .bind(s.activity_at.map(D::ts))
        .bind(s.restart_count)
        .bind(D::ts(s.updated_at))
        .bind(D::json(&s.meta))
        .execute(&mut *tx)
        .await
        .map_err(write_err)?
        .rows_affected();
        if updated == 0 {
            tx.rollback().await?;
            return Err(not_found(format!("session {}", s.id)));
        }

        sqlx::query("DELETE FROM reaction_trackers WHERE session_id = $1")
            .bind(s.id.as_str())
            .execute(&mut *tx)
            .await?;
        for (reaction, t) in &commit.snapshot.trackers {
            sqlx::query(
                "INSERT INTO reaction_trackers (session_id, reaction, attempts, \
                 first_triggered_at, last_triggered_at, fingerprint, escalated) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(s.id.as_str())
            .bind(reaction)
            .bind(t.attempts)
            .bind(D::ts(t.first_triggered_at))
            .bind(D::ts(t.last_triggered_at))
            .bind(&t.fingerprint)
            .bind(t.escalated)
            .execute(&mut *tx)
            .await
            .map_err(write_err)?;
        }

        sqlx::query("DELETE FROM timers WHERE session_id = $1")
            .bind(s.id.as_str())
            .execute(&mut *tx)
            .await?;
        for (kind, t) in &commit.snapshot.timers {
            sqlx::query("INSERT INTO timers (session_id, kind, deadline) VALUES ($1, $2, $3)")
                .bind(s.id.as_str())
                .bind(kind)
                .bind(D::ts(t.deadline))
                .execute(&mut *tx)
                .await
                .map_err(write_err)?;
        }

        for n in &commit.notifications {
            Self::insert_notification(&mut tx, n).await?;
        }
        for i in &commit.instructions {
            Self::insert_instruction(&mut tx, i).await?;
        }

        let event = Self::insert_event(&mut tx, &commit.event).await?;
        tx.commit().await?;
        Ok(event)
    }
}

sql_impl! { #[async_trait] impl SessionQueries;
    #[tracing::instrument(skip_all)]
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(id = %id))]
    async fn load_session(&self, id: &SessionId) -> StoreResult<SessionRecord> {
        Self::session_on(&mut *self.read.acquire().await?, id).await
    }

    #[tracing::instrument(skip_all, fields(id = %id))]
    async fn load_snapshot(&self, id: &SessionId) -> StoreResult<SessionSnapshot> {
        // One read transaction: the three reads see the same commit.
        let mut tx = self.begin_snapshot().await?;
        let session = Self::session_on(&mut tx, id).await?;
        let trackers = sqlx::query(
            "SELECT reaction, attempts, first_triggered_at, last_triggered_at, fingerprint, \
             escalated FROM reaction_trackers WHERE session_id = $1 ORDER BY reaction",
        )
        .bind(id.as_str())
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| Self::tracker_from_row(r).map(|t| (t.reaction.clone(), t)))
        .collect::<StoreResult<_>>()?;
        let timers =
            sqlx::query("SELECT kind, deadline FROM timers WHERE session_id = $1 ORDER BY kind")
                .bind(id.as_str())
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| Self::timer_from_row(r).map(|t| (t.kind.clone(), t)))
                .collect::<StoreResult<_>>()?;
        tx.commit().await?;
        Ok(SessionSnapshot {
            session,
            trackers,
            timers,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn list_sessions(&self, filter: &SessionFilter) -> StoreResult<Vec<SessionRecord>> {
        let mut sql =
            concat!("SELECT ", session_columns!(), " FROM sessions WHERE 1 = 1").to_string();
        let mut args: Vec<&str> = Vec::new();
        if let Some(project) = &filter.project {
            args.push(project);
            sql.push_str(" AND project = $1");
        }
        if !filter.states.is_empty() {
            let states: Vec<&str> = filter.states.iter().map(|s| s.as_str()).collect();
            sql += &format!(" AND state IN ({})", placeholders(args.len(), states.len()));
            args.extend(states);
        }
        if filter.active_only {
            let terminal: Vec<&str> = terminal_states().map(SessionState::as_str).collect();
            sql += &format!(
                " AND state NOT IN ({})",
                placeholders(args.len(), terminal.len())
            );
            args.extend(terminal);
        }
        sql.push_str(" ORDER BY created_at, number, id");
        let query = args.into_iter().fold(sqlx::query(&sql), |q, a| q.bind(a));
        query.fetch_all(&self.read).await?.read(Self::session_from_row)
    }

    #[tracing::instrument(skip_all)]
    async fn count_by_state(&self) -> StoreResult<Vec<(SessionState, i64)>> {
        let mut counts = sqlx::query("SELECT state, COUNT(*) AS n FROM sessions GROUP BY state")
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(|r| {
                Ok((Self::get_parsed(r, "state")?, Self::get(r, "n")?))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        counts.sort();
        Ok(counts)
    }

    #[tracing::instrument(skip_all)]
    async fn list_trackers(&self) -> StoreResult<Vec<(SessionId, ReactionTracker)>> {
        sqlx::query(
            "SELECT session_id, reaction, attempts, first_triggered_at, last_triggered_at, \
             fingerprint, escalated FROM reaction_trackers ORDER BY session_id, reaction",
        )
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(|r| {
            Ok((
                SessionId(Self::get(r, "session_id")?),
                Self::tracker_from_row(r)?,
            ))
        })
        .collect()
    }
}

sql_impl! { #[async_trait] impl EventLog;
    #[tracing::instrument(skip_all, fields(kind = %event.kind))]
    async fn append_event(&self, event: &NewEvent) -> StoreResult<EventRecord> {
        let mut tx = self.begin_write().await?;
        let record = Self::insert_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(record)
    }

    #[tracing::instrument(skip_all)]
    async fn events_after(&self, after: i64, limit: i64) -> StoreResult<Vec<EventRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after)
        .bind(clamp_limit(limit))
        .fetch_all(&self.read)
        .await?
        .read(Self::event_from_row)
    }

    #[tracing::instrument(skip_all, fields(id = %id))]
    async fn session_events(
        &self,
        id: &SessionId,
        after: i64,
        limit: i64,
    ) -> StoreResult<Vec<EventRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE session_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        ))
        .bind(id.as_str())
        .bind(after)
        .bind(clamp_limit(limit))
        .fetch_all(&self.read)
        .await?
        .read(Self::event_from_row)
    }

    #[tracing::instrument(skip_all)]
    async fn last_event_id(&self) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events")
                .fetch_one(&self.read)
                .await?,
        )
    }

    #[tracing::instrument(skip_all)]
    async fn last_project_event_id(&self, project: &str, kind: &str) -> StoreResult<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT MAX(e.id) FROM events e JOIN sessions s ON s.id = e.session_id \
             WHERE s.project = $1 AND e.kind = $2",
        )
        .bind(project)
        .bind(kind)
        .fetch_one(&self.read)
        .await?)
    }

    #[tracing::instrument(skip_all)]
    async fn latest_session_events(&self) -> StoreResult<Vec<EventRecord>> {
        // One index probe per session (events_session_idx), not a scan of the whole log.
        sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE id IN (SELECT (SELECT MAX(e.id) FROM events e \
             WHERE e.session_id = s.id) FROM sessions s) ORDER BY id"
        ))
        .fetch_all(&self.read)
        .await?
        .read(Self::event_from_row)
    }
}

sql_impl! { #[async_trait] impl WebhookLog;
    #[tracing::instrument(skip_all, fields(platform = %delivery.platform))]
    async fn record_webhook_delivery(&self, delivery: &WebhookDelivery) -> StoreResult<bool> {
        let inserted = sqlx::query(
            "INSERT INTO webhook_deliveries (platform, delivery_id, event, payload, received_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (platform, delivery_id) DO NOTHING",
        )
        .bind(&delivery.platform)
        .bind(&delivery.delivery_id)
        .bind(&delivery.event)
        .bind(&delivery.payload)
        .bind(D::ts(delivery.received_at))
        .execute(&self.write)
        .await
        .map_err(write_err)?
        .rows_affected();
        Ok(inserted == 1)
    }

    #[tracing::instrument(skip_all, fields(platform))]
    async fn mark_webhook_processed(
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

    #[tracing::instrument(skip_all, fields(platform))]
    async fn unprocessed_webhook_deliveries(
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
        .bind(clamp_limit(limit))
        .fetch_all(&self.read)
        .await?
        .read(|row| {
            Ok(WebhookDelivery {
                platform: Self::get(row, "platform")?,
                delivery_id: Self::get(row, "delivery_id")?,
                event: Self::get(row, "event")?,
                payload: Self::get(row, "payload")?,
                received_at: Self::get_ts(row, "received_at")?,
            })
        })
    }
}

/// A new session's meta: its object, or `{}`.
fn meta_of(new: &NewSession) -> serde_json::Value {
    if new.meta.is_object() {
        new.meta.clone()
    } else {
        serde_json::json!({})
    }
}
