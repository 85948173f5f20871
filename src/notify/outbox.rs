//! The [`OutboxActor`]: delivers the notification outbox.
//!
//! Notifications are rows written in the same transaction as the step that caused them (see
//! `routing`). This actor reads the due ones (on a short interval, and at once when a session
//! actor wakes it after a commit), hands each to its notifier, and records the outcome:
//!
//! - **delivered**: done; the delivery latency (creation → delivery) is observed;
//! - **retried**: a retriable failure (5xx, 429, timeout, unreachable) with attempts left comes
//!   back after an exponential backoff, or after the service's `Retry-After` if that is longer
//!   (capped by `max_retry_after`); a `Retry-After` also pauses the whole channel that long;
//! - **failed**: the dead letter — a permanent refusal, or the retry budget spent. It stays in
//!   the table, visible through `GET /api/v1/notifications?status=failed` and the metrics.
//! - **superseded**: not sent — a page held back (by the rate limit, for a retry, or read late)
//!   asking a question the session no longer waits on by the time its channel can take it
//!   ([`super::still_due`]). Nor does it go into a digest.
//!
//! Delivery is at least once: a row stays `pending` until its outcome is written, so after a
//! crash (even mid-request) it is sent again with the **same id**, which receivers dedupe on.
//!
//! Per notifier ("channel"): at most `concurrency` deliveries in flight, and at most
//! `rate_limit.max` messages per sliding `rate_limit.window`. A channel out of messages defers
//! its due rows until it frees up; when more rows are due than it may send, the surplus is
//! **folded** into one digest: a new outbox row listing them, written together with their
//! change to `digested` in one transaction, then delivered like any other row (so a digest
//! survives a crash with a stable id too). A flapping session thus costs a channel a few
//! messages per window, never one per flap.
//!
//! Rows read from the store are *claimed* (in memory) until their outcome is written, so a
//! poll never hands one out twice. A poll whose read was under way when a claim was released
//! may have read the row before its outcome was written, so it skips rows released meanwhile.
//! The actor owns no SQL: everything goes through the `Store`.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::messages::{ListNotifications, WakeOutbox};
use super::still_due::still_due;
use crate::clock::Clock;
use crate::config::NotificationsSettings;
use crate::plugins::{Notification, Notifier, PostedMessage};
use crate::store::{
    NotificationPost, NotificationRecord, NotificationStatus, SharedStore, StoreError,
};
use crate::tasks::to_completion_or_panic;
use crate::telemetry::METRICS;

/// The event of a digest row.
pub const DIGEST_EVENT: &str = "notifications.digest";

/// Added to a deferral, so that when the rows are due again the channel's window has surely
/// moved on (the store's time and the channel's are read at slightly different moments).
const DEFER_MARGIN: Duration = Duration::from_millis(25);

/// The outbox's knobs, from `notifications:`.
#[derive(Debug, Clone)]
pub struct OutboxSettings {
    /// Attempts before dead-lettering.
    pub max_attempts: u32,
    /// First retry delay (doubled per attempt).
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Longest `Retry-After` honoured.
    pub max_retry_after: Duration,
    /// Poll interval.
    pub poll_interval: Duration,
    /// Deliveries in flight per notifier.
    pub concurrency: usize,
    /// Rows read per poll.
    pub batch: usize,
    /// Messages per notifier per window.
    pub rate_max: usize,
    /// The rate window.
    pub rate_window: Duration,
}

impl OutboxSettings {
    /// From the validated `notifications:` section.
    pub fn from_settings(n: &NotificationsSettings) -> Self {
        OutboxSettings {
            max_attempts: n.max_attempts.max(1),
            backoff_initial: n.backoff_initial.get(),
            backoff_max: n.backoff_max.get(),
            max_retry_after: n.max_retry_after.get(),
            poll_interval: n.poll_interval.get(),
            concurrency: n.concurrency.max(1),
            batch: n.batch.max(1),
            rate_max: usize::try_from(n.rate_limit.max)
                .unwrap_or(usize::MAX)
                .max(1),
            rate_window: n.rate_limit.window.get(),
        }
    }

    /// The delay after failed attempt number `attempt` (1-based): `backoff_initial` doubled
    /// per earlier attempt, at most `backoff_max`.
    pub fn backoff(&self, attempt: i64) -> Duration {
        let doublings = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        self.backoff_initial
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(self.backoff_max)
    }

    /// [`Self::backoff`] with "equal jitter": half of it fixed, the other half scaled by
    /// `unit` (in `0..=1`). Receivers that failed for everyone at once (an outage, a restart)
    /// then don't get every retry back in the same instant.
    pub fn jittered(&self, attempt: i64, unit: f64) -> Duration {
        let full = self.backoff(attempt);
        let half = full / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// One notifier and its delivery state.
struct Channel {
    notifier: Arc<dyn Notifier>,
    /// Claimed rows waiting for a slot, oldest first (digests go to the front).
    queue: VecDeque<NotificationRecord>,
    /// Deliveries under way.
    in_flight: usize,
    /// When each message of the current rate window went out.
    sent: VecDeque<DateTime<Utc>>,
    /// Set by a `Retry-After`: nothing goes out before.
    paused_until: Option<DateTime<Utc>>,
    /// A digest is being written; the channel waits for it.
    folding: bool,
}

/// What one delivery attempt came to.
struct Attempted {
    notifier: String,
    id: String,
    outcome: &'static str,
    pause: Option<Duration>,
}

/// Delivers the outbox. See the module docs.
pub struct OutboxActor {
    store: SharedStore,
    cfg: OutboxSettings,
    channels: BTreeMap<String, Channel>,
    /// Ids read from the store whose outcome is not written yet.
    claimed: HashSet<String>,
    /// A poll's store read is under way.
    polling: bool,
    /// Claims released while that read was under way: it may have read them stale.
    released_during_poll: HashSet<String>,
    /// Someone asked for a poll while one was under way: poll again after it.
    poll_again: bool,
    /// Several nodes share the outbox: rows are claimed in the database as this node for this
    /// long before delivery, so each is delivered by one node (see `src/actors/cluster/`).
    claim_as: Option<(String, Duration)>,
    /// The time polls, retries, deferrals and rate windows read.
    clock: Clock,
    /// When this outbox started: a row written before may have been under way in a process
    /// that stopped mid-delivery.
    started_at: DateTime<Utc>,
}

impl OutboxActor {
    /// An outbox delivering through `notifiers` (by configured name).
    pub fn new(
        store: SharedStore,
        notifiers: BTreeMap<String, Arc<dyn Notifier>>,
        cfg: OutboxSettings,
    ) -> Self {
        let channels = notifiers
            .into_iter()
            .map(|(name, notifier)| {
                METRICS.register_notifier(&name);
                (
                    name,
                    Channel {
                        notifier,
                        queue: VecDeque::new(),
                        in_flight: 0,
                        sent: VecDeque::new(),
                        paused_until: None,
                        folding: false,
                    },
                )
            })
            .collect();
        OutboxActor {
            store,
            cfg,
            channels,
            claimed: HashSet::new(),
            polling: false,
            released_during_poll: HashSet::new(),
            poll_again: false,
            claim_as: None,
            clock: Clock::system(),
            started_at: DateTime::<Utc>::MAX_UTC,
        }
    }

    /// Reads `clock` (the application's) instead of the system clock.
    pub fn on_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Claims due rows in the database as `node` for `hold` instead of reading them (several
    /// nodes on one database).
    pub fn claiming_as(mut self, node: Option<(String, Duration)>) -> Self {
        self.claim_as = node;
        self
    }

    /// Reads the due rows (coalescing concurrent requests) and dispatches them.
    fn poll(&mut self, ctx: &mut Context<Self>) {
        if self.polling {
            self.poll_again = true;
            return;
        }
        self.polling = true;
        let store = self.store.clone();
        let batch = i64::try_from(self.cfg.batch).unwrap_or(i64::MAX);
        let claim_as = self.claim_as.clone();
        let now = self.clock.now();
        let fut = to_completion_or_panic(async move {
            let due = match claim_as {
                Some((node, hold)) => store.claim_due_notifications(&node, now, hold, batch).await,
                None => store.due_notifications(now, batch).await,
            };
            let counts = store.count_notifications().await;
            (due, counts)
        });
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            act.polling = false;
            let Some((due, counts)) = res else {
                return;
            };
            match counts {
                Ok(counts) => {
                    let of = |s| counts.iter().find(|(st, _)| *st == s).map_or(0, |c| c.1);
                    METRICS.outbox_depth.set(of(NotificationStatus::Pending));
                    METRICS.dead_letters.set(of(NotificationStatus::Failed));
                }
                Err(e) => tracing::warn!(error = ?e, "counting the outbox failed"),
            }
            let stale = std::mem::take(&mut act.released_during_poll);
            match due {
                Ok(rows) => {
                    for r in rows {
                        if !stale.contains(&r.id) && act.claimed.insert(r.id.clone()) {
                            act.enqueue(r, ctx);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = ?e, "reading the outbox failed"),
            }
            act.dispatch(ctx);
            if std::mem::take(&mut act.poll_again) {
                act.poll(ctx);
            }
        }));
    }

    /// Ends a claim: the row's outcome (or deferral, or folding) is written.
    fn release(&mut self, id: &str) {
        self.claimed.remove(id);
        if self.polling {
            self.released_during_poll.insert(id.to_string());
        }
    }

    fn enqueue(&mut self, r: NotificationRecord, ctx: &mut Context<Self>) {
        match self.channels.get_mut(&r.notifier) {
            Some(ch) if r.event == DIGEST_EVENT => ch.queue.push_front(r),
            Some(ch) => ch.queue.push_back(r),
            None => {
                // Written under an older configuration: nobody can deliver it.
                let reason = format!("notifier {} is not configured", r.notifier);
                let store = self.store.clone();
                let id = r.id.clone();
                let now = self.clock.now();
                let fut = to_completion_or_panic(async move {
                    let res = store
                        .update_notification(
                            &r.id,
                            NotificationStatus::Failed,
                            r.attempts,
                            now,
                            Some(&reason),
                        )
                        .await;
                    (r, res)
                });
                ctx.spawn(fut.into_actor(self).map(move |res, act, _ctx| {
                    act.release(&id);
                    let Some((r, res)) = res else {
                        return;
                    };
                    if let Err(e) = res {
                        tracing::warn!(error = ?e, id = %r.id, "dead-lettering failed");
                    } else {
                        METRICS.notification(&r.notifier, "failed", 1);
                        tracing::warn!(id = %r.id, notifier = %r.notifier, "notification dead-lettered: notifier not configured");
                    }
                }));
            }
        }
    }

    /// Hands queued rows to their notifiers as slots allow; folds or defers the rest.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        let names: Vec<String> = self
            .channels
            .iter()
            .filter(|(_, c)| !c.queue.is_empty() && !c.folding)
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            self.dispatch_channel(&name, ctx);
        }
    }

    fn dispatch_channel(&mut self, name: &str, ctx: &mut Context<Self>) {
        let now = self.clock.now();
        let (rate_max, window, concurrency) = (
            self.cfg.rate_max,
            self.cfg.rate_window,
            self.cfg.concurrency,
        );
        let Some(ch) = self.channels.get_mut(name) else {
            return;
        };
        while ch.sent.front().is_some_and(|t| after(*t, window) <= now) {
            ch.sent.pop_front();
        }
        // Paused by a Retry-After, or out of messages for this window: wait it out.
        let free_at = match ch.paused_until.filter(|p| *p > now) {
            Some(p) => Some(p),
            None if ch.sent.len() >= rate_max => ch.sent.front().map(|t| after(*t, window)),
            None => None,
        };
        if let Some(at) = free_at {
            let rows: Vec<NotificationRecord> = ch.queue.drain(..).collect();
            self.defer(rows, at, ctx);
            return;
        }
        let available = rate_max - ch.sent.len();
        if ch.queue.len() > available {
            // More due than the window allows: the oldest go alone while slots last, save one
            // for a digest of the rest.
            let digests = ch.queue.iter().filter(|r| r.event == DIGEST_EVENT).count();
            let alone = available.saturating_sub(digests).saturating_sub(1);
            let singles: Vec<usize> = ch
                .queue
                .iter()
                .enumerate()
                .filter(|(_, r)| r.event != DIGEST_EVENT)
                .map(|(i, _)| i)
                .skip(alone)
                .collect();
            if singles.len() >= 2 {
                // Remove from the back, so earlier indices stay valid.
                let mut members: Vec<NotificationRecord> = Vec::with_capacity(singles.len());
                for i in singles.iter().rev() {
                    members.extend(ch.queue.remove(*i));
                }
                members.reverse();
                ch.folding = true;
                self.fold(name.to_string(), members, ctx);
                return;
            }
        }
        let mut go = Vec::new();
        while ch.in_flight < concurrency && ch.sent.len() < rate_max {
            let Some(r) = ch.queue.pop_front() else {
                break;
            };
            ch.in_flight += 1;
            ch.sent.push_back(now);
            go.push((ch.notifier.clone(), r));
        }
        for (notifier, r) in go {
            self.deliver(name.to_string(), notifier, r, ctx);
        }
    }

    /// Moves rows' next attempt to when their channel frees up, then releases them.
    fn defer(&mut self, rows: Vec<NotificationRecord>, at: DateTime<Utc>, ctx: &mut Context<Self>) {
        if rows.is_empty() {
            return;
        }
        let now = self.clock.now();
        let until = after(at.max(now), DEFER_MARGIN);
        let ids: Vec<String> = rows.into_iter().map(|r| r.id).collect();
        let store = self.store.clone();
        let fut = to_completion_or_panic({
            let ids = ids.clone();
            async move { store.defer_notifications(&ids, until).await }
        });
        ctx.spawn(fut.into_actor(self).map(move |res, act, _ctx| {
            if let Some(Err(e)) = res {
                tracing::warn!(error = ?e, "deferring rate-limited notifications failed");
            }
            for id in &ids {
                act.release(id);
            }
        }));
    }

    /// Writes a digest of `members` (and marks them digested), then queues it first. Members
    /// no longer due ([`still_due`]) are superseded instead; none left, no digest.
    fn fold(&mut self, name: String, members: Vec<NotificationRecord>, ctx: &mut Context<Self>) {
        let ids: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
        let store = self.store.clone();
        let now = self.clock.now();
        let fut = to_completion_or_panic({
            let name = name.clone();
            async move {
                let mut live = Vec::with_capacity(members.len());
                for m in members {
                    if still_due(store.as_ref(), &m).await {
                        live.push(m);
                    } else {
                        supersede(store.as_ref(), &name, &m, now).await;
                    }
                }
                if live.is_empty() {
                    return None;
                }
                let digest = digest_of(&name, &live, now);
                let ids: Vec<String> = live.into_iter().map(|m| m.id).collect();
                let res = store.fold_into_digest(&digest, &ids).await;
                Some((digest, res))
            }
        });
        ctx.spawn(
            fut.into_actor(self)
                .map(move |done, act, ctx| {
                    for id in &ids {
                        act.release(id);
                    }
                    let Some(ch) = act.channels.get_mut(&name) else {
                        return;
                    };
                    ch.folding = false;
                    let Some(done) = done else {
                        return;
                    };
                    match done {
                        Some((digest, Ok(n))) => {
                            METRICS.notification(&name, "digested", n);
                            tracing::info!(notifier = %name, folded = n, digest = %digest.id, "notifications folded into a digest");
                            act.claimed.insert(digest.id.clone());
                            ch.queue.push_front(digest);
                        }
                        // They stay pending; the next poll reads them again.
                        Some((_, Err(e))) => tracing::warn!(error = ?e, notifier = %name, "writing a digest failed"),
                        None => {}
                    }
                    act.dispatch(ctx);
                }),
        );
    }

    fn deliver(
        &mut self,
        name: String,
        notifier: Arc<dyn Notifier>,
        r: NotificationRecord,
        ctx: &mut Context<Self>,
    ) {
        let store = self.store.clone();
        let cfg = self.cfg.clone();
        let id = r.id.clone();
        let notifier_name = name.clone();
        let clock = self.clock.clone();
        let started_at = self.started_at;
        let fut = to_completion_or_panic(async move {
            let held = held(&r, clock.now());
            if held && !still_due(store.as_ref(), &r).await {
                supersede(store.as_ref(), &name, &r, clock.now()).await;
                return Attempted {
                    notifier: name,
                    id: r.id,
                    outcome: "superseded",
                    pause: None,
                };
            }
            let mut n = to_notification(&r);
            // Retried, read late, or written before this process: an earlier attempt may have
            // posted it (a takeover reads a row late: its claim outlived `LATE`).
            n.may_be_posted = held || r.created_at < started_at;
            let result = notifier.notify(&n).await;
            let now = clock.now();
            if let (Ok(Some(posted)), Some(session)) = (&result, &r.session_id) {
                remember_post(store.as_ref(), posted, session, &r.id, now).await;
            }
            let attempts = r.attempts + 1;
            let (status, next, error, outcome, pause) = match &result {
                Ok(_) => (NotificationStatus::Delivered, now, None, "delivered", None),
                Err(e) => {
                    let wait = e.retry_after().map(|d| d.min(cfg.max_retry_after));
                    let err = Some(e.to_string());
                    if e.is_retriable() && attempts < i64::from(cfg.max_attempts) {
                        let delay = cfg
                            .jittered(attempts, rand::random::<f64>())
                            .max(wait.unwrap_or_default());
                        let next = after(now, delay);
                        (NotificationStatus::Pending, next, err, "retried", wait)
                    } else {
                        (NotificationStatus::Failed, now, err, "failed", wait)
                    }
                }
            };
            let saved = store
                .update_notification(&r.id, status, attempts, next, error.as_deref())
                .await;
            match (&saved, outcome) {
                (Err(e), _) => {
                    // The row stays pending with its old attempt count: it is sent again later
                    // (at least once), and the receiver dedupes on its id.
                    tracing::error!(error = ?e, id = %r.id, "recording a delivery outcome failed");
                }
                (Ok(()), "delivered") => {
                    let secs = (now - r.created_at).to_std().unwrap_or_default();
                    METRICS
                        .notification_delivery
                        .with_label_values(&[&name])
                        .observe(secs.as_secs_f64());
                }
                (Ok(()), "retried") => {
                    tracing::warn!(notifier = %name, id = %r.id, attempts, error = error.as_deref().unwrap_or(""), next = %next, "notification delivery failed; will retry");
                }
                (Ok(()), _) => {
                    tracing::error!(notifier = %name, id = %r.id, attempts, error = error.as_deref().unwrap_or(""), "notification dead-lettered");
                }
            }
            if saved.is_ok() {
                METRICS.notification(&name, outcome, 1);
            }
            Attempted {
                notifier: name,
                id: r.id,
                outcome,
                pause,
            }
        });
        ctx.spawn(fut.into_actor(self).map(move |a, act, ctx| {
            // A task that died (a panicking plugin) leaves the row pending: it is retried.
            let a = a.unwrap_or(Attempted {
                notifier: notifier_name,
                id,
                outcome: "retried",
                pause: None,
            });
            act.finished(a, ctx)
        }));
    }

    fn finished(&mut self, a: Attempted, ctx: &mut Context<Self>) {
        self.release(&a.id);
        if let Some(ch) = self.channels.get_mut(&a.notifier) {
            ch.in_flight = ch.in_flight.saturating_sub(1);
            if a.outcome == "superseded" {
                // Nothing went out: the slot it took is given back.
                ch.sent.pop_back();
            }
            if let (Some(p), true) = (a.pause, a.outcome != "delivered") {
                let until = after(self.clock.now(), p);
                ch.paused_until = Some(ch.paused_until.map_or(until, |u| u.max(until)));
            }
        }
        self.dispatch(ctx);
        if self
            .channels
            .values()
            .all(|c| c.queue.is_empty() && !c.folding)
        {
            // Caught up with what was read: look for more (a backlog is read in batches).
            self.poll(ctx);
        }
    }
}

/// `t` plus `d` (the end of time rather than an overflow).
fn after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Whether `r` could not go at once: held back by the rate limit, waiting for a retry, or
/// read late (the outbox was down). Only such a row is looked at again before it goes: a page
/// made a moment ago asks what the session asks.
fn held(r: &NotificationRecord, now: DateTime<Utc>) -> bool {
    r.attempts > 0 || r.next_attempt_at > r.created_at || now - r.created_at > LATE
}

/// How old a row read for the first time may be before it counts as held back.
const LATE: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

/// Marks `r` superseded: not sent, its question no longer waits (see [`still_due`]). A failure
/// to record it leaves the row pending: looked at again, and not sent then either.
async fn supersede(
    store: &dyn crate::store::Store,
    notifier: &str,
    r: &NotificationRecord,
    now: DateTime<Utc>,
) {
    let saved = store
        .update_notification(
            &r.id,
            NotificationStatus::Superseded,
            r.attempts,
            now,
            Some(super::still_due::SUPERSEDED),
        )
        .await;
    match saved {
        Ok(()) => {
            METRICS.notification(notifier, "superseded", 1);
            tracing::info!(notifier, id = %r.id, "page not sent: its question no longer waits");
        }
        Err(e) => tracing::warn!(error = ?e, id = %r.id, "recording a superseded page failed"),
    }
}

/// Records where a session's notification landed, so a reply to it answers the session
/// (`actors::chat::answers`). A failure only costs that: the delivery stands.
async fn remember_post(
    store: &dyn crate::store::Store,
    posted: &PostedMessage,
    session: &crate::store::SessionId,
    notification: &str,
    at: chrono::DateTime<Utc>,
) {
    let post = NotificationPost {
        platform: posted.platform.clone(),
        key: posted.key.clone(),
        chat: posted.chat.clone(),
        session_id: session.clone(),
        notification_id: notification.to_string(),
        created_at: at,
        notified_at: None,
        notified_question: None,
    };
    if let Err(e) = store.record_notification_post(&post).await {
        tracing::warn!(error = ?e, id = %notification, "recording where a notification was posted failed");
    }
}

/// What a notifier gets: the row with its context unpacked.
pub fn to_notification(r: &NotificationRecord) -> Notification {
    let c = &r.context;
    let s = |k: &str| c[k].as_str().map(str::to_string);
    Notification {
        id: r.id.clone(),
        priority: r.priority.clone(),
        event: r.event.clone(),
        session: r.session_id.as_ref().map(|s| s.to_string()),
        message: r.message.clone(),
        project: s("project"),
        reaction: s("reaction"),
        escalation: c["escalation"].as_bool().unwrap_or(false),
        pr_url: s("pr_url"),
        state: s("state"),
        created_at: r.created_at.to_rfc3339(),
        items: serde_json::from_value(c["items"].clone()).unwrap_or_default(),
        may_be_posted: false,
    }
}

fn rank(priority: &str) -> u8 {
    match priority {
        "urgent" => 0,
        "action" => 1,
        "warning" => 2,
        _ => 3,
    }
}

/// A digest row for `notifier` standing for `members`: the highest priority among them, their
/// session when they share one, and the members themselves as `context.items`.
pub fn digest_of(
    notifier: &str,
    members: &[NotificationRecord],
    now: DateTime<Utc>,
) -> NotificationRecord {
    let now = crate::domain::machine::micros(now);
    let id = uuid::Uuid::new_v4().to_string();
    let priority = members
        .iter()
        .map(|m| m.priority.as_str())
        .min_by_key(|p| rank(p))
        .unwrap_or("info")
        .to_string();
    let sessions: BTreeSet<_> = members.iter().map(|m| m.session_id.clone()).collect();
    let session_id = match sessions.into_iter().collect::<Vec<_>>().as_slice() {
        [one] => one.clone(),
        _ => None,
    };
    let items: Vec<Notification> = members.iter().map(to_notification).collect();
    NotificationRecord {
        id: id.clone(),
        notifier: notifier.to_string(),
        priority,
        event: DIGEST_EVENT.to_string(),
        session_id,
        message: format!(
            "{} notifications held back by the rate limit of {notifier}",
            members.len()
        ),
        dedupe_key: format!("digest|{id}"),
        dedupe_until: now,
        status: NotificationStatus::Pending,
        attempts: 0,
        next_attempt_at: now,
        created_at: now,
        last_error: None,
        context: json!({ "items": items }),
        digest_id: None,
    }
}

impl Actor for OutboxActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.started_at = self.clock.now();
        // Rows left pending by a crash are due already: deliver them first.
        self.poll(ctx);
        self.poll_after_interval(ctx);
    }
}

impl OutboxActor {
    /// Polls every `poll_interval` on the clock (a test advancing it polls at once).
    fn poll_after_interval(&mut self, ctx: &mut Context<Self>) {
        let wait = self.clock.sleep(self.cfg.poll_interval);
        ctx.spawn(wait.into_actor(self).map(|(), act, ctx| {
            act.poll(ctx);
            act.poll_after_interval(ctx);
        }));
    }
}

impl Handler<WakeOutbox> for OutboxActor {
    type Result = ();
    fn handle(&mut self, _msg: WakeOutbox, ctx: &mut Self::Context) {
        self.poll(ctx);
    }
}

impl Handler<ListNotifications> for OutboxActor {
    type Result = ResponseFuture<Result<Vec<NotificationRecord>, StoreError>>;
    fn handle(&mut self, msg: ListNotifications, _ctx: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        Box::pin(async move {
            to_completion_or_panic(
                async move { store.list_notifications(msg.status, msg.limit).await },
            )
            .await
            // Only at shutdown: the runtime dropped the task.
            .unwrap_or(Err(StoreError::Database(sqlx::Error::PoolClosed)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SessionId;

    fn cfg() -> OutboxSettings {
        OutboxSettings {
            max_attempts: 5,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            concurrency: 2,
            batch: 10,
            rate_max: 5,
            rate_window: Duration::from_secs(60),
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let c = cfg();
        let secs: Vec<u64> = (1..=6).map(|a| c.backoff(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 10, 10]);
        assert_eq!(c.backoff(0).as_secs(), 1);
        assert_eq!(c.backoff(i64::MAX).as_secs(), 10);
    }

    #[test]
    fn jitter_keeps_at_least_half_of_the_backoff_and_never_more() {
        let c = cfg();
        assert_eq!(c.jittered(3, 0.0), Duration::from_secs(2));
        assert_eq!(c.jittered(3, 1.0), Duration::from_secs(4));
        assert_eq!(c.jittered(3, 0.5), Duration::from_secs(3));
        assert_eq!(c.jittered(3, 7.0), Duration::from_secs(4), "clamped");
    }

    #[test]
    fn only_a_row_that_could_not_go_at_once_is_looked_at_again() {
        let fresh = row("a", "urgent", "demo-1");
        let now = fresh.created_at;
        assert!(!held(&fresh, now));
        assert!(!held(&fresh, now + chrono::TimeDelta::seconds(9)));
        assert!(
            held(&fresh, now + chrono::TimeDelta::seconds(11)),
            "read late"
        );
        let retried = NotificationRecord {
            attempts: 1,
            ..fresh.clone()
        };
        assert!(held(&retried, now));
        let deferred = NotificationRecord {
            next_attempt_at: now + chrono::TimeDelta::seconds(60),
            ..fresh
        };
        assert!(held(&deferred, now));
    }

    fn row(id: &str, priority: &str, session: &str) -> NotificationRecord {
        let now = Utc::now();
        NotificationRecord {
            id: id.into(),
            notifier: "ops".into(),
            priority: priority.into(),
            event: "agent.waiting_input".into(),
            session_id: Some(SessionId(session.into())),
            message: format!("message {id}"),
            dedupe_key: id.into(),
            dedupe_until: now,
            status: NotificationStatus::Pending,
            attempts: 0,
            next_attempt_at: now,
            created_at: now,
            last_error: None,
            context: json!({"project": "demo", "reaction": "agent-needs-input",
                "pr_url": "https://x/pull/1", "escalation": true}),
            digest_id: None,
        }
    }

    #[test]
    fn a_digest_lists_its_members_at_their_highest_priority() {
        let d = digest_of(
            "ops",
            &[row("a", "info", "demo-1"), row("b", "urgent", "demo-1")],
            Utc::now(),
        );
        assert_eq!(d.event, DIGEST_EVENT);
        assert_eq!(d.priority, "urgent");
        assert_eq!(d.session_id, Some(SessionId("demo-1".into())));
        let n = to_notification(&d);
        assert!(n.is_digest());
        let ids: Vec<&str> = n.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(n.items[0].pr_url.as_deref(), Some("https://x/pull/1"));
        assert!(n.items[0].escalation);
        let mixed = digest_of(
            "ops",
            &[row("a", "info", "demo-1"), row("b", "info", "demo-2")],
            Utc::now(),
        );
        assert_eq!(mixed.session_id, None);
    }

    /// A notifier that panics on every call, as a plugin with a bug would.
    struct Panicking(tokio::sync::mpsc::UnboundedSender<String>);

    #[async_trait::async_trait]
    impl Notifier for Panicking {
        fn kind(&self) -> &'static str {
            "panicking"
        }
        async fn notify(
            &self,
            n: &Notification,
        ) -> crate::plugins::PluginResult<Option<PostedMessage>> {
            let _ = self.0.send(n.id.clone());
            panic!("a notifier's bug");
        }
    }

    /// A notifier that reports what it delivers, and whether it was told it may have been
    /// posted before.
    struct Recording(tokio::sync::mpsc::UnboundedSender<(String, bool)>);

    #[async_trait::async_trait]
    impl Notifier for Recording {
        fn kind(&self) -> &'static str {
            "recording"
        }
        async fn notify(
            &self,
            n: &Notification,
        ) -> crate::plugins::PluginResult<Option<PostedMessage>> {
            let _ = self.0.send((n.id.clone(), n.may_be_posted));
            Ok(None)
        }
    }

    #[actix_rt::test]
    async fn a_notifiers_panic_leaves_its_row_pending_and_the_outbox_delivering() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::open(&format!("sqlite://{}/o.db", dir.path().display()))
            .await
            .expect("store");
        let (bugs, mut bugged) = tokio::sync::mpsc::unbounded_channel();
        let (sent, mut delivered) = tokio::sync::mpsc::unbounded_channel();
        let notifiers: BTreeMap<String, Arc<dyn Notifier>> = BTreeMap::from([
            (
                "buggy".to_string(),
                Arc::new(Panicking(bugs)) as Arc<dyn Notifier>,
            ),
            (
                "ops".to_string(),
                Arc::new(Recording(sent)) as Arc<dyn Notifier>,
            ),
        ]);
        let outbox = OutboxActor::new(store.clone(), notifiers, cfg()).start();
        let wait = Duration::from_secs(30);

        let mut first = row("a", "urgent", "demo-1");
        first.notifier = "buggy".into();
        assert!(store.enqueue_notification(&first).await.expect("enqueue"));
        outbox.send(WakeOutbox).await.expect("outbox alive");
        let called = tokio::time::timeout(wait, bugged.recv())
            .await
            .expect("buggy called");
        assert_eq!(called.as_deref(), Some("a"));

        // Before the outbox caught a plugin's panic, the panic stopped the actor here.
        assert!(store
            .enqueue_notification(&row("b", "urgent", "demo-2"))
            .await
            .expect("enqueue"));
        outbox
            .send(WakeOutbox)
            .await
            .expect("outbox alive after the panic");
        let got = tokio::time::timeout(wait, delivered.recv())
            .await
            .expect("ops called");
        assert_eq!(got.map(|(id, _)| id).as_deref(), Some("b"));
        let rows = outbox
            .send(ListNotifications {
                status: None,
                limit: 10,
            })
            .await
            .expect("outbox alive")
            .expect("listed");
        let status = |id: &str| rows.iter().find(|r| r.id == id).map(|r| r.status);
        assert_eq!(
            status("a"),
            Some(NotificationStatus::Pending),
            "left to retry"
        );
    }

    #[actix_rt::test]
    async fn a_row_written_before_the_outbox_started_may_have_been_posted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::open(&format!("sqlite://{}/o.db", dir.path().display()))
            .await
            .expect("store");
        let (sent, mut delivered) = tokio::sync::mpsc::unbounded_channel();
        let notifiers: BTreeMap<String, Arc<dyn Notifier>> = BTreeMap::from([(
            "ops".to_string(),
            Arc::new(Recording(sent)) as Arc<dyn Notifier>,
        )]);
        let wait = Duration::from_secs(30);
        // Left pending by a process that stopped: written a moment before this outbox started.
        let mut left = row("left", "urgent", "demo-1");
        left.created_at -= chrono::TimeDelta::seconds(1);
        left.next_attempt_at = left.created_at;
        assert!(store.enqueue_notification(&left).await.expect("enqueue"));
        let outbox = OutboxActor::new(store.clone(), notifiers, cfg()).start();
        let got = tokio::time::timeout(wait, delivered.recv())
            .await
            .expect("delivered");
        assert_eq!(got, Some(("left".to_string(), true)));

        assert!(store
            .enqueue_notification(&row("new", "urgent", "demo-2"))
            .await
            .expect("enqueue"));
        outbox.send(WakeOutbox).await.expect("outbox alive");
        let got = tokio::time::timeout(wait, delivered.recv())
            .await
            .expect("delivered");
        assert_eq!(got, Some(("new".to_string(), false)), "a first attempt");
    }
}
