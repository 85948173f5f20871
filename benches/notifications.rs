//! Outbox throughput: 10,000 pending notifications delivered by the `OutboxActor` through the
//! `webhook` notifier (JSON body, HMAC-SHA256 signature, one HTTP request each) to a local
//! receiver on 127.0.0.1. Reports deliveries per second, from the actor's start until the
//! receiver has every id and the store has no pending row (each delivery's outcome is a
//! separate write).
//!
//! Rows are realistic: a ~200 B message and the context a session step writes (project,
//! reaction, PR URL, branch, state). The store is a SQLite file (WAL), as in the default
//! setup. The rate limit is lifted (this measures the outbox, not the digest policy);
//! `concurrency` is 32 per notifier. Receiver and outbox share this process and its cores.
//!
//! `FLOTILLA_BENCH_NOTIFICATIONS` changes the count.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::Actor;
use actix_web::{web, App, HttpResponse, HttpServer};
use chrono::Utc;
use flotilla::notify::outbox::{OutboxActor, OutboxSettings};
use flotilla::plugins::notifiers::webhook::WebhookNotifier;
use flotilla::plugins::Notifier;
use flotilla::store::{self, NotificationRecord, NotificationStatus, SessionId};

type Seen = web::Data<Arc<Mutex<HashSet<String>>>>;

async fn receive(seen: Seen, body: web::Json<serde_json::Value>) -> HttpResponse {
    if let Some(id) = body["id"].as_str() {
        seen.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string());
    }
    HttpResponse::Ok().finish()
}

fn row(i: usize) -> NotificationRecord {
    let now = Utc::now();
    let session = format!("acme-{}", i % 500 + 1);
    NotificationRecord {
        id: uuid::Uuid::new_v4().to_string(),
        notifier: "hook".into(),
        priority: "urgent".into(),
        event: "agent.exited".into(),
        session_id: Some(SessionId(session.clone())),
        message: format!(
            "The agent exited with status 3 while working on issue ACME-{i}: the build failed \
             after the migration step and the session needs a human to decide what to do next."
        ),
        dedupe_key: format!("hook|{session}|agent.exited|agent-exited|urgent|{i}"),
        dedupe_until: now,
        status: NotificationStatus::Pending,
        attempts: 0,
        next_attempt_at: now,
        created_at: now,
        last_error: None,
        context: serde_json::json!({
            "project": "acme-platform", "reaction": "agent-exited", "escalation": false,
            "pr_url": format!("https://github.com/acme/platform/pull/{}", 1000 + i % 500),
            "branch": format!("flotilla/{session}"), "state": "errored",
        }),
        digest_id: None,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing: skip then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: usize = std::env::var("FLOTILLA_BENCH_NOTIFICATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let sys = actix::System::new();
    sys.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store::open(&format!("sqlite://{}/bench.db", dir.path().display()))
            .await
            .expect("store");
        let t = Instant::now();
        for i in 0..n {
            store.enqueue_notification(&row(i)).await.expect("enqueue");
        }
        eprintln!("seeded {n} notifications in {:?}", t.elapsed());

        let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
        let data = web::Data::new(seen.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/hook", web::post().to(receive))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .expect("bind");
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);

        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let hook: Arc<dyn Notifier> = Arc::new(WebhookNotifier::new(
            client,
            format!("http://127.0.0.1:{port}/hook"),
            Some("bench-secret".into()),
        ));
        let cfg = OutboxSettings {
            max_attempts: 8,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(60),
            poll_interval: Duration::from_millis(50),
            concurrency: 32,
            batch: 1000,
            rate_max: usize::MAX,
            rate_window: Duration::from_secs(1),
        };
        let t = Instant::now();
        let _outbox = OutboxActor::new(
            store.clone(),
            BTreeMap::from([("hook".to_string(), hook)]),
            cfg,
        )
        .start();
        loop {
            let got = seen.lock().unwrap_or_else(|p| p.into_inner()).len();
            if got >= n {
                let pending = store
                    .count_notifications()
                    .await
                    .expect("count")
                    .into_iter()
                    .find(|(s, _)| *s == NotificationStatus::Pending)
                    .map_or(0, |c| c.1);
                if pending == 0 {
                    break;
                }
            }
            if t.elapsed() > Duration::from_secs(600) {
                panic!("only {got} of {n} delivered after 10 minutes");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = t.elapsed();
        println!(
            "notifications: {n} delivered through the outbox in {took:.2?}: {:.0} deliveries/s",
            n as f64 / took.as_secs_f64()
        );
        handle.stop(false).await;
        actix::System::current().stop();
    });
}
