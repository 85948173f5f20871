//! Chat bridge throughput: 1,000 conversations × 10 messages through the real inbox,
//! `ChatSupervisor` and `ConversationActor`s with a no-op assistant (answers at once) and an
//! in-memory platform, the durable queue on a SQLite file (WAL), `max_concurrent` 10.
//!
//! Each message is stored by the inbox (the conversation read, or created when new; the
//! insert; the pending read), claimed (`running`), answered (batch mode: a notice, then the answer stored with the `done` status
//! and posted from the store): seven store round trips (the read of the replies left and the
//! delete of the posted one included) and two platform sends per message. Messages are ~120 B
//! of text.
//!
//! Reports messages per second (first receive to the last reply posted) and the queueing
//! overhead: the time from the inbox's receipt to the assistant's turn starting, p50/p99.
//!
//! `FLOTILLA_BENCH_CHAT_CONVERSATIONS` and `FLOTILLA_BENCH_CHAT_MESSAGES` change the counts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::Actor;
use async_trait::async_trait;
use chrono::Utc;
use flotilla::actors::chat::inbox::StoreInbox;
use flotilla::actors::chat::platforms::ChatPlatforms;
use flotilla::actors::chat::{ChatContext, ChatSupervisor};
use flotilla::config::ChatSettings;
use flotilla::plugins::{
    Assistant, ChatInbox, ChatPlatform, Chunk, InboundMessage, PluginResult, TurnRequest,
};
use tokio::sync::mpsc;

type Times = Arc<Mutex<HashMap<String, Instant>>>;

/// Answers every prompt at once and records when its turn started.
struct Noop {
    started: Times,
    notify: tokio::sync::mpsc::UnboundedSender<Instant>,
}

#[async_trait]
impl Assistant for Noop {
    fn kind(&self) -> &'static str {
        "noop"
    }
    async fn turn(&self, r: &TurnRequest, tx: mpsc::Sender<Chunk>) -> PluginResult<()> {
        self.started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(r.prompt.clone(), Instant::now());
        let _ = self.notify.send(Instant::now());
        let _ = tx.send(Chunk::Text { text: "ok".into() }).await;
        let _ = tx.send(Chunk::Result { session_id: None }).await;
        Ok(())
    }
}

/// Counts sends.
struct Counting {
    sent: AtomicUsize,
}

#[async_trait]
impl ChatPlatform for Counting {
    fn name(&self) -> &'static str {
        "test"
    }
    fn max_message_len(&self) -> usize {
        4000
    }
    async fn send(&self, _thread: &str, _text: &str) -> PluginResult<String> {
        Ok(self.sent.fetch_add(1, Ordering::Relaxed).to_string())
    }
    async fn edit(&self, _t: &str, _m: &str, _x: &str) -> PluginResult<()> {
        Ok(())
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let convs = env_usize("FLOTILLA_BENCH_CHAT_CONVERSATIONS", 1000);
    let per = env_usize("FLOTILLA_BENCH_CHAT_MESSAGES", 10);
    let sys = actix::System::new();
    sys.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/bench.db", dir.path().display());
        let store = flotilla::store::open(&url).await.expect("store");
        let settings: ChatSettings = serde_yaml::from_str(
            "max_concurrent: 10\nturn_timeout: 60s\nallow: { test: [bench] }\n",
        )
        .expect("settings");
        let cwd = dir.path().display().to_string();
        for c in 0..convs {
            let mut rec = store
                .upsert_conversation("test", &format!("c{c}"), Utc::now())
                .await
                .expect("conversation");
            rec.cwd = Some(cwd.clone());
            store.update_conversation(&rec, None).await.expect("cwd");
        }
        let started: Times = Arc::default();
        let (ntx, mut nrx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        let platform = Arc::new(Counting {
            sent: AtomicUsize::new(0),
        });
        let mut platforms = ChatPlatforms::default();
        platforms.register(platform.clone());
        let ctx = ChatContext::new(
            store.clone(),
            platforms,
            Arc::new(Noop {
                started: started.clone(),
                notify: ntx,
            }),
            settings.clone(),
            dir.path(),
        );
        let sup = ChatSupervisor::new(Arc::new(ctx)).start();
        let inbox = Arc::new(StoreInbox::new(store.clone(), &settings, sup));
        let total = convs * per;
        let received: Times = Arc::default();
        let t0 = Instant::now();
        // Round-robin over conversations, as many chats talking at once would.
        for i in 0..per {
            let mut batch = Vec::with_capacity(convs);
            for c in 0..convs {
                let inbox = inbox.clone();
                let received = received.clone();
                batch.push(async move {
                    let text = format!(
                        "m{c}-{i}: please look at the failing login test in the auth module and tell me why"
                    );
                    let r = inbox
                        .receive(InboundMessage {
                            platform: "test".into(),
                            thread: format!("c{c}"),
                            message_id: format!("{c}-{i}"),
                            author: "bench".into(),
                            text: text.clone(),
                            ..Default::default()
                        })
                        .await;
                    if r.is_ok() {
                        received
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(text, Instant::now());
                    }
                });
            }
            futures::future::join_all(batch).await;
        }
        let stored = t0.elapsed();
        loop {
            // Done when every message is settled and every stored reply posted.
            if started.lock().map(|s| s.len()).unwrap_or(0) >= total
                && store
                    .conversations_with_pending()
                    .await
                    .is_ok_and(|c| c.is_empty())
            {
                break;
            }
            if t0.elapsed() > Duration::from_secs(600) {
                panic!("not drained after 10 minutes");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = t0.elapsed();
        let rec = received.lock().map(|r| r.clone()).unwrap_or_default();
        let st = started.lock().map(|s| s.clone()).unwrap_or_default();
        let mut waits: Vec<Duration> = rec
            .iter()
            .filter_map(|(k, r)| st.get(k).map(|s| s.saturating_duration_since(*r)))
            .collect();
        waits.sort();
        // The overhead alone: one message at a time into an idle bridge, receipt (stored)
        // to the assistant's turn starting.
        while nrx.try_recv().is_ok() {}
        let mut idle: Vec<Duration> = Vec::new();
        for k in 0..200 {
            let t = Instant::now();
            let r = inbox
                .receive(InboundMessage {
                    platform: "test".into(),
                    thread: format!("c{}", k % convs.max(1)),
                    message_id: format!("idle-{k}"),
                    author: "bench".into(),
                    text: format!("idle {k}"),
                    ..Default::default()
                })
                .await;
            if r.is_err() {
                continue;
            }
            let stored_at = Instant::now();
            if let Some(start) = nrx.recv().await {
                idle.push(start.saturating_duration_since(stored_at));
            }
            let _ = t;
            // Let the message finish (marked done) before the next.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        idle.sort();
        println!(
            "chat: idle bridge, receipt -> turn start over 200 single messages: p50 {:.2?} p99 {:.2?}",
            percentile(&idle, 0.50),
            percentile(&idle, 0.99)
        );
        println!(
            "chat: {convs} conversations x {per} messages = {total} in {:.2?} (all stored after {:.2?})",
            elapsed, stored
        );
        println!(
            "chat: {:.0} messages/s; under load, receipt -> turn start (includes the backlog) p50 {:.2?} p99 {:.2?}; {} platform sends",
            total as f64 / elapsed.as_secs_f64(),
            percentile(&waits, 0.50),
            percentile(&waits, 0.99),
            platform.sent.load(Ordering::Relaxed)
        );
    });
}
