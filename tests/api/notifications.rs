//! Notifications end to end: the real app (and, for the crash, the real binary) delivering to
//! the fake Slack, Discord, Telegram and webhook receivers of `tests/support/receivers.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use actix::Addr;
use flotilla::actors::supervisor::{ApplyTo, FleetSupervisor};
use flotilla::app::Application;
use flotilla::config::{load_with, LoadOptions};
use flotilla::domain::machine::EventKind;
use flotilla::store::{PrRef, SessionId};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::receivers::*;
use crate::server::*;

/// Fast outbox timings for tests (`extra` may override nothing else in `notifications`).
const FAST: &str = "poll_interval: 100ms, backoff_initial: 100ms, backoff_max: 2s, timeout: 5s";

/// Starts the in-process app and keeps its supervisor (to feed sessions events).
async fn start(backend: Backend, extra: &str) -> Option<(TestApp, Addr<FleetSupervisor>)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let repo = make_repo(dir.path());
    let db = match backend {
        Backend::Sqlite => format!("sqlite://{}/flotilla.db", home.display()),
        Backend::Postgres => fresh_pg_url().await?,
    };
    let cfg = write_config(dir.path(), &repo, &db, ECHO_AGENT, extra);
    let settings = load_with(&LoadOptions {
        config_path: Some(cfg),
        cwd: dir.path().to_path_buf(),
        env: Default::default(),
    })
    .expect("config loads");
    settings.validate().expect("config valid");
    let clock = flotilla::clock::ManualClock::new();
    let app = Application::build_with_clock(settings, home.clone(), clock.clock())
        .await
        .expect("app builds");
    let supervisor = app.supervisor();
    let address = format!("http://127.0.0.1:{}", app.port());
    let store = app.store();
    let handle = app.spawn();
    let t = TestApp {
        address,
        client: crate::helpers::http_client(),
        store,
        repo,
        home,
        clock,
        _handle: handle,
        _dir: dir,
    };
    t.wait_ready().await;
    Some((t, supervisor))
}

async fn apply(sup: &Addr<FleetSupervisor>, id: &str, event: EventKind) {
    sup.send(ApplyTo {
        id: SessionId(id.into()),
        event,
    })
    .await
    .expect("mailbox")
    .expect("applied");
}

/// The outbox as the API shows it.
async fn outbox(app: &TestApp, query: &str) -> Vec<Value> {
    let (s, v) = app.get(&format!("/api/v1/notifications{query}")).await;
    assert_eq!(s, 200, "{v}");
    v["notifications"].as_array().cloned().unwrap_or_default()
}

/// Waits until the outbox holds `n` rows and none is pending; returns them.
async fn settled(app: &TestApp, n: usize, secs: u64) -> Vec<Value> {
    eventually(secs, &format!("{n} notifications settled"), || async {
        let rows = outbox(app, "?limit=1000").await;
        (rows.len() == n && rows.iter().all(|r| r["status"] != "pending")).then_some(rows)
    })
    .await
}

/// [`settled`], moving the app's clock `step` forward while waiting: retries, `Retry-After`
/// pauses and rate windows pass without their real time.
async fn settled_advancing(app: &TestApp, n: usize, step: Duration) -> Vec<Value> {
    eventually_advancing(
        &app.clock,
        step,
        30,
        &format!("{n} notifications settled"),
        || async {
            let rows = outbox(app, "?limit=1000").await;
            (rows.len() == n && rows.iter().all(|r| r["status"] != "pending")).then_some(rows)
        },
    )
    .await
}

/// The time between two hits, on the app's clock.
fn between(earlier: &Hit, later: &Hit) -> Duration {
    (later.at - earlier.at).to_std().unwrap_or_default()
}

fn text_of(h: &Hit) -> String {
    h.body.to_string()
}

fn config_all(r: &Receivers) -> String {
    format!(
        "{services}notifiers:
  slack: {{ kind: slack, channel: C0FLOTILLA }}
  slackhook: {{ kind: slack, url: \"{b}/slack/hooks/T000/B000/XXXX\" }}
  discord: {{ kind: discord, channel: \"1100\" }}
  dischook: {{ kind: discord, url: \"{b}/discord/webhooks/1200/tok\" }}
  telegram: {{ kind: telegram, chat_id: \"-1001234\" }}
  hook: {{ kind: webhook, url: \"{hook}\", secret: \"{WEBHOOK_SECRET}\" }}
routing:
  urgent: [slack, slackhook, telegram, hook]
  action: [discord, dischook, hook]
defaults: {{ notifiers: [hook] }}
notifications: {{ {FAST} }}
",
        services = r.service_yaml(),
        b = r.base,
        hook = r.webhook_url(),
    )
}

async fn routed_notifications_reach_each_receiver_once(backend: Backend) {
    let r = Receivers::start().await;
    let Some((app, sup)) = start(backend, &config_all(&r)).await else {
        return;
    };
    // An action notification: a working session whose PR becomes mergeable.
    let working = app
        .spawn(json!({"project": "demo", "prompt": "work"}))
        .await;
    app.wait_state(&working, "working").await;
    let pr_url = "https://github.com/acme/widgets/pull/7";
    apply(
        &sup,
        &working,
        EventKind::PrOpened {
            pr: PrRef {
                number: 7,
                url: pr_url.into(),
            },
        },
    )
    .await;
    apply(&sup, &working, EventKind::MergeReady).await;
    // An urgent one: an agent exiting with status 3.
    let failed = app
        .spawn(json!({"project": "demo", "agent": "failing"}))
        .await;
    app.wait_state(&failed, "errored").await;

    let rows = settled(&app, 7, 30).await;
    assert!(rows.iter().all(|r| r["status"] == "delivered"), "{rows:?}");
    let mut routed: BTreeMap<(String, String), usize> = BTreeMap::new();
    for row in &rows {
        *routed
            .entry((
                row["priority"].as_str().unwrap_or("").into(),
                row["notifier"].as_str().unwrap_or("").into(),
            ))
            .or_default() += 1;
    }
    let expected: BTreeMap<(String, String), usize> = [
        ("urgent", "slack"),
        ("urgent", "slackhook"),
        ("urgent", "telegram"),
        ("urgent", "hook"),
        ("action", "discord"),
        ("action", "dischook"),
        ("action", "hook"),
    ]
    .into_iter()
    .map(|(p, n)| ((p.to_string(), n.to_string()), 1))
    .collect();
    assert_eq!(routed, expected, "priority routing");

    // Every receiver got exactly what was routed to it, once, in its own wire format.
    for (target, n) in [
        (Target::Slack, 1),
        (Target::SlackHook, 1),
        (Target::Telegram, 1),
        (Target::Discord, 1),
        (Target::DiscordHook, 1),
        (Target::Webhook, 2),
    ] {
        let got = r.delivered(target);
        assert_eq!(got.len(), n, "{target:?}: {got:?}");
        assert_eq!(r.hits(target).len(), n, "{target:?}: no failed attempts");
    }
    let slack = text_of(&r.delivered(Target::Slack)[0]);
    assert!(slack.contains(&failed) && slack.contains("exited with status 3"));
    assert!(
        slack.contains("A human is needed now"),
        "what is asked: {slack}"
    );
    assert_eq!(r.delivered(Target::Slack)[0].body["channel"], "C0FLOTILLA");
    assert!(r.delivered(Target::Slack)[0].body["blocks"].is_array());
    let tg = &r.delivered(Target::Telegram)[0].body;
    assert_eq!(tg["chat_id"], json!(-1001234));
    assert_eq!(tg["parse_mode"], "MarkdownV2");
    let discord = &r.delivered(Target::Discord)[0].body;
    assert!(discord["content"].as_str().unwrap_or("").contains(pr_url));
    assert!(discord["content"].as_str().unwrap_or("").contains(&working));
    assert_eq!(discord["allowed_mentions"], json!({"parse": []}));
    assert!(discord["nonce"].as_str().is_some_and(|n| n.len() <= 25));
    assert!(text_of(&r.delivered(Target::DiscordHook)[0]).contains(pr_url));

    // The webhook body has the INTERFACE fields, a valid signature (else the fake answers
    // 401) and the ids of the outbox rows.
    let hooks = r.delivered(Target::Webhook);
    let by_priority: BTreeMap<String, &Value> = hooks
        .iter()
        .map(|h| {
            (
                h.body["priority"].as_str().unwrap_or("").to_string(),
                &h.body,
            )
        })
        .collect();
    let urgent = by_priority["urgent"];
    assert_eq!(urgent["session"], failed.as_str());
    assert_eq!(urgent["event"], "agent.exited");
    assert_eq!(urgent["reaction"], "agent-exited");
    let action = by_priority["action"];
    assert_eq!(action["session"], working.as_str());
    assert_eq!(action["event"], "merge.ready");
    assert_eq!(action["pr_url"], pr_url);
    let hook_ids: BTreeSet<&str> = rows
        .iter()
        .filter(|r| r["notifier"] == "hook")
        .filter_map(|r| r["id"].as_str())
        .collect();
    let received: BTreeSet<String> = r.webhook_ids().keys().cloned().collect();
    assert_eq!(
        hook_ids,
        received.iter().map(String::as_str).collect(),
        "receivers dedupe on the outbox id"
    );
}

#[actix_web::test]
async fn fake_slack_discord_telegram_and_webhook_each_get_each_routed_notification_once() {
    routed_notifications_reach_each_receiver_once(Backend::Sqlite).await;
}

#[actix_web::test]
async fn routed_notifications_reach_each_receiver_once_on_postgres() {
    routed_notifications_reach_each_receiver_once(Backend::Postgres).await;
}

/// One webhook notifier for every priority but info: these tests count the notifications
/// of failing agents, and all-complete (info) has its own test.
fn hook_only(r: &Receivers, notifier: &str, notifications: &str) -> String {
    format!(
        "{services}notifiers:
  {notifier}: {{ kind: webhook, url: \"{hook}\", secret: \"{WEBHOOK_SECRET}\" }}
routing: {{ urgent: [{notifier}], action: [{notifier}], warning: [{notifier}] }}
notifications: {{ {FAST}{notifications} }}
",
        services = r.service_yaml(),
        hook = r.webhook_url(),
    )
}

#[actix_web::test]
async fn a_receiver_answering_500_then_429_gets_the_notification_after_the_wait_once() {
    let r = Receivers::start().await;
    r.script(
        Target::Webhook,
        &[Scripted::ServerError, Scripted::RateLimited(1.0)],
    );
    let (app, _sup) = start(Backend::Sqlite, &hook_only(&r, "hook", ""))
        .await
        .expect("app");
    r.use_clock(app.clock.clock());
    let id = app
        .spawn(json!({"project": "demo", "agent": "failing"}))
        .await;
    // The app's clock runs ahead in 250 ms steps: a retry that ignored the 1 s wait would
    // come a step or two after the 429.
    let rows = settled_advancing(&app, 1, Duration::from_millis(250)).await;
    assert_eq!(rows[0]["status"], "delivered");
    assert_eq!(rows[0]["attempts"], 3);
    assert_eq!(rows[0]["session"], id.as_str());

    let hits = r.hits(Target::Webhook);
    let statuses: Vec<u16> = hits.iter().map(|h| h.status).collect();
    assert_eq!(statuses, [500, 429, 200]);
    let waited = between(&hits[1], &hits[2]);
    assert!(
        waited >= Duration::from_secs(1),
        "Retry-After: 1 was honoured (waited {waited:?}; the backoff alone is 200ms)"
    );
    assert_eq!(r.webhook_ids().values().copied().collect::<Vec<_>>(), [1]);
}

#[actix_web::test]
async fn discord_and_telegram_rate_limit_bodies_are_honoured() {
    let r = Receivers::start().await;
    // Discord's body says 0.6 s (its header rounds up to 1); Telegram's says 1 s.
    r.script(Target::Discord, &[Scripted::RateLimited(0.6)]);
    r.script(Target::Telegram, &[Scripted::RateLimited(1.0)]);
    let extra = format!(
        "{}notifiers:
  discord: {{ kind: discord, channel: \"1100\" }}
  telegram: {{ kind: telegram, chat_id: \"42\" }}
routing: {{ urgent: [discord, telegram], action: [discord, telegram], warning: [discord, telegram] }}
notifications: {{ {FAST} }}
",
        r.service_yaml()
    );
    let (app, _sup) = start(Backend::Sqlite, &extra).await.expect("app");
    r.use_clock(app.clock.clock());
    app.spawn(json!({"project": "demo", "agent": "failing"}))
        .await;
    // 100 ms steps: ignoring the bodies' waits would retry after the 100 ms backoff.
    let rows = settled_advancing(&app, 2, Duration::from_millis(100)).await;
    assert!(rows
        .iter()
        .all(|r| r["status"] == "delivered" && r["attempts"] == 2));
    for (target, min) in [(Target::Discord, 600), (Target::Telegram, 1000)] {
        let hits = r.hits(target);
        assert_eq!(
            hits.iter().map(|h| h.status).collect::<Vec<_>>(),
            [429, 200],
            "{target:?}"
        );
        let waited = between(&hits[0], &hits[1]);
        assert!(
            waited >= Duration::from_millis(min),
            "{target:?} waited {waited:?}"
        );
    }
}

/// Flaps a working session between `needs_input` and `working` `n` times: each entry into
/// `needs_input` is an urgent `agent-needs-input` notification.
async fn flap(app: &TestApp, sup: &Addr<FleetSupervisor>, n: usize) -> String {
    let id = app
        .spawn(json!({"project": "demo", "prompt": "work"}))
        .await;
    app.wait_state(&id, "working").await;
    for _ in 0..n {
        apply(sup, &id, EventKind::AgentWaitingInput { question: None }).await;
        apply(sup, &id, EventKind::AgentActive).await;
    }
    id
}

#[actix_web::test]
async fn a_session_flapping_50_times_in_a_minute_produces_one_digest_not_50_messages() {
    let r = Receivers::start().await;
    // Deduplication off, so the rate limit alone has to keep the channel quiet: one message
    // per 10 s window.
    let (app, sup) = start(
        Backend::Sqlite,
        &hook_only(
            &r,
            "hook",
            ", dedupe_window: 0s, rate_limit: { max: 1, window: 10s }",
        ),
    )
    .await
    .expect("app");
    let clock = app.clock.clock();
    let started = clock.now();
    let id = flap(&app, &sup, 50).await;
    assert!(
        clock.now() - started < chrono::Duration::seconds(10),
        "flapped within the window"
    );
    // 50 notifications, then one digest row carrying 49 of them once the window moved on
    // (on the app's clock, 1 s per step).
    let rows = settled_advancing(&app, 51, Duration::from_secs(1)).await;
    let count = |status: &str| rows.iter().filter(|r| r["status"] == status).count();
    assert_eq!((count("delivered"), count("digested")), (2, 49), "{rows:?}");
    let digest = rows
        .iter()
        .find(|r| r["event"] == "notifications.digest")
        .expect("a digest row");
    assert!(rows
        .iter()
        .filter(|r| r["status"] == "digested")
        .all(|r| r["digest_id"] == digest["id"]));

    let posts = r.delivered(Target::Webhook);
    assert_eq!(posts.len(), 2, "one message, then one digest: {posts:?}");
    assert_eq!(posts[0].body["event"], "agent.waiting_input");
    assert_eq!(posts[0].body["session"], id.as_str());
    let d = &posts[1].body;
    assert_eq!(d["event"], "notifications.digest");
    assert_eq!(d["session"], id.as_str());
    assert_eq!(d["priority"], "urgent");
    let items = d["items"].as_array().expect("items");
    assert_eq!(items.len(), 49);
    // Every notification reached the human exactly once: alone or in the digest.
    let mut seen: Vec<&str> = items.iter().filter_map(|i| i["id"].as_str()).collect();
    seen.extend(posts[0].body["id"].as_str());
    let unique: BTreeSet<&str> = seen.iter().copied().collect();
    assert_eq!(unique.len(), 50);
    assert_eq!(seen.len(), 50);
    let flapped: BTreeSet<&str> = rows
        .iter()
        .filter(|r| r["event"] == "agent.waiting_input")
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(unique, flapped);
}

#[actix_web::test]
async fn a_flapping_session_is_deduplicated_to_one_message_within_the_window() {
    let r = Receivers::start().await;
    let (app, sup) = start(Backend::Sqlite, &hook_only(&r, "hook", ""))
        .await
        .expect("app");
    let id = flap(&app, &sup, 50).await;
    let rows = settled(&app, 1, 30).await;
    assert_eq!(rows[0]["session"], id.as_str());
    assert_eq!(rows[0]["status"], "delivered");
    // The session's event log still records all 50 requests to notify.
    let (_, ev) = app
        .get(&format!("/api/v1/sessions/{id}/events?limit=1000"))
        .await;
    let asked = ev["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "agent.waiting_input")
        .count();
    assert_eq!(asked, 50);
    assert_eq!(r.delivered(Target::Webhook).len(), 1);
}

#[actix_web::test]
async fn dead_letters_are_listed_and_counted_in_metrics() {
    let r = Receivers::start().await;
    r.script(
        Target::Webhook,
        &[Scripted::ServerError, Scripted::ServerError],
    );
    let (app, _sup) = start(
        Backend::Sqlite,
        &hook_only(&r, "deadhook", ", max_attempts: 2"),
    )
    .await
    .expect("app");
    let first = app
        .spawn(json!({"project": "demo", "agent": "failing"}))
        .await;
    let rows = settled(&app, 1, 30).await;
    assert_eq!(
        rows[0]["status"], "failed",
        "dead-lettered after 2 attempts"
    );
    assert_eq!(rows[0]["attempts"], 2);
    assert!(rows[0]["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("500")));
    let failed = outbox(&app, "?status=failed").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["session"], first.as_str());
    assert!(outbox(&app, "?status=delivered").await.is_empty());
    let (s, v) = app.get("/api/v1/notifications?status=lost").await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["code"], "invalid");
    let (s, _) = app.get("/api/v1/notifications?limit=0").await;
    assert_eq!(s, 422);

    // The next one goes through.
    app.spawn(json!({"project": "demo", "agent": "failing"}))
        .await;
    let rows = settled(&app, 2, 30).await;
    assert_eq!(rows[0]["status"], "delivered");

    let text = app.metrics().await;
    for line in [
        "flotilla_notifications_total{notifier=\"deadhook\",outcome=\"failed\"} 1",
        "flotilla_notifications_total{notifier=\"deadhook\",outcome=\"retried\"} 1",
        "flotilla_notifications_total{notifier=\"deadhook\",outcome=\"delivered\"} 1",
        "flotilla_notification_delivery_seconds_bucket{notifier=\"deadhook\"",
        "flotilla_notification_outbox_depth",
        "flotilla_notification_dead_letters",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    let (_, spec) = app.get("/api/v1/openapi.json").await;
    assert!(spec["paths"]["/api/v1/notifications"].is_object());
}

#[actix_web::test]
async fn kill_dash_nine_during_delivery_then_every_notification_arrives_once() {
    if !require_tool("git") {
        return;
    }
    let r = Receivers::start().await;
    // The receiver holds requests: deliveries are under way when the server dies.
    r.hold(Target::Webhook);
    let extra = hook_only(
        &r,
        "hook",
        ", concurrency: 2, rate_limit: { max: 1000, window: 1m }",
    );
    let s = Scratch::new(&extra);
    let mut server = ServerProc::start(s.dir.path(), &s.home, &s.cfg, s.port).await;
    let client = crate::helpers::http_client();
    let total = 6;
    for _ in 0..total {
        let resp = client
            .post(format!("{}/api/v1/sessions", server.address))
            .bearer_auth(TOKEN)
            .json(&json!({"project": "demo", "agent": "failing"}))
            .send()
            .await
            .expect("spawn");
        assert_eq!(resp.status().as_u16(), 201);
    }
    let sessions = format!("{}/api/v1/sessions", server.address);
    eventually(60, "every session errored", || async {
        let v: Value = client
            .get(&sessions)
            .bearer_auth(TOKEN)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let all = v["sessions"].as_array()?;
        (all.len() == total && all.iter().all(|s| s["state"] == "errored")).then_some(())
    })
    .await;
    eventually(30, "deliveries under way", || async {
        (r.in_flight(Target::Webhook) == 2).then_some(())
    })
    .await;
    server.kill9();
    // The held requests are answered now, to a dead server: it never learns they arrived.
    r.release(Target::Webhook);

    let server = ServerProc::start(s.dir.path(), &s.home, &s.cfg, s.port).await;
    let list = || async {
        let v: Value = client
            .get(format!(
                "{}/api/v1/notifications?limit=1000",
                server.address
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        v["notifications"].as_array().cloned().unwrap_or_default()
    };
    let rows = eventually(
        60,
        "every notification delivered after the restart",
        || async {
            let rows = list().await;
            (rows.len() == total && rows.iter().all(|r| r["status"] == "delivered")).then_some(rows)
        },
    )
    .await;
    let ids: BTreeSet<String> = rows
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect();
    let received = r.webhook_ids();
    assert_eq!(
        received.keys().cloned().collect::<BTreeSet<_>>(),
        ids,
        "every notification reached the receiver"
    );
    // At least once on the wire, exactly once after the receiver's dedupe on `id`: only the
    // deliveries in flight at the kill (`concurrency` = 2 of them) may have come twice.
    let repeated: Vec<_> = received.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.len() <= 2, "{repeated:?}");
    assert!(received.values().all(|n| *n <= 2), "{received:?}");
    assert_eq!(r.delivered(Target::Webhook).len(), total + repeated.len());
}

#[actix_web::test]
async fn bad_notifier_config_exits_2_naming_the_key() {
    for (extra, key) in [
        (
            "notifiers: { ops: { kind: desktop } }\nrouting: { urgent: [ops, pager] }\ndefaults: { notifiers: [ops] }\n",
            "routing.urgent",
        ),
        (
            "notifiers: { ops: { kind: webhook, url: \"ftp://hooks.example.com\" } }\ndefaults: { notifiers: [ops] }\n",
            "notifiers.ops.url",
        ),
        (
            "notifiers: { ops: { kind: desktop } }\nrouting: { urgent: [ops], action: [ops], info: [ops] }\n",
            "routing.warning",
        ),
        (
            "notifiers: { ops: { kind: desktop } }\ndefaults: { notifiers: [ops] }\nnotifications: { rate_limit: { max: 0, window: 1m } }\n",
            "notifications.rate_limit.max",
        ),
    ] {
        let s = Scratch::new(extra);
        let cfg = s.cfg.display().to_string();
        let out = cli(s.dir.path(), &s.home, &["serve", "--config", &cfg]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra}: {stderr}");
        assert!(stderr.contains(key), "{key} named for {extra}: {stderr}");
    }
}

/// ao scenario 15: `all-complete` fires once when every session of the project is terminal,
/// and again only after a session became active (here: was restored) since.
#[actix_web::test]
async fn all_complete_fires_once_and_again_only_after_a_session_became_active() {
    let r = Receivers::start().await;
    let yaml = format!(
        "{services}notifiers:
  hook: {{ kind: webhook, url: \"{hook}\", secret: \"{WEBHOOK_SECRET}\" }}
defaults: {{ notifiers: [hook] }}
notifications: {{ {FAST} }}
",
        services = r.service_yaml(),
        hook = r.webhook_url(),
    );
    let Some((app, _sup)) = start(Backend::Sqlite, &yaml).await else {
        return;
    };
    let a = app.spawn(json!({"project": "demo", "prompt": "one"})).await;
    let b = app.spawn(json!({"project": "demo", "prompt": "two"})).await;
    app.wait_state(&a, "working").await;
    app.wait_state(&b, "working").await;

    kill(&app, &a).await;
    // One session is still working: nothing yet (the event log is the witness).
    assert_eq!(all_complete_events(&app).await, 0);
    kill(&app, &b).await;

    let first = eventually(30, "one all-complete delivered", || async {
        let rows = all_complete_rows(&app).await;
        (rows.len() == 1 && rows[0]["status"] == "delivered").then_some(rows)
    })
    .await;
    let message = first[0]["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.starts_with("All 2 sessions of demo are complete: 2 killed."),
        "{message}"
    );
    assert!(message.contains(&format!("- {a} killed")), "{message}");
    assert_eq!(all_complete_events(&app).await, 1);

    // Killing a killed session changes nothing and fires nothing. A restored session is
    // active again; when it ends, all-complete fires a second time.
    app.post(&format!("/api/v1/sessions/{a}/kill"), json!({}))
        .await;
    let (s, v) = app
        .post(&format!("/api/v1/sessions/{a}/restore"), json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    app.wait_state(&a, "working").await;
    kill(&app, &a).await;
    let rows = eventually(30, "a second all-complete delivered", || async {
        let rows = all_complete_rows(&app).await;
        (rows.len() == 2 && rows.iter().all(|r| r["status"] == "delivered")).then_some(rows)
    })
    .await;
    assert_ne!(rows[0]["id"], rows[1]["id"]);
    assert_eq!(all_complete_events(&app).await, 2);
    let hooks: Vec<Hit> = r
        .delivered(Target::Webhook)
        .into_iter()
        .filter(|h| h.body["event"] == "summary.all_complete")
        .collect();
    assert_eq!(hooks.len(), 2, "{hooks:?}");
    assert_eq!(hooks[0].body["priority"], "info");
}

async fn kill(app: &TestApp, id: &str) {
    let (s, v) = app
        .post(&format!("/api/v1/sessions/{id}/kill"), json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    app.wait_state(id, "killed").await;
}

async fn all_complete_rows(app: &TestApp) -> Vec<Value> {
    outbox(app, "?limit=1000")
        .await
        .into_iter()
        .filter(|n| n["event"] == "summary.all_complete")
        .collect()
}

async fn all_complete_events(app: &TestApp) -> usize {
    app.store
        .events_after(0, 10_000)
        .await
        .expect("events")
        .iter()
        .filter(|e| e.kind == "summary.all_complete")
        .count()
}

/// A Slack channel notification carries its mark in the message's metadata. A first attempt
/// reads nothing; one after an attempt that may have posted (a retry, a row left by a process
/// that stopped mid-delivery) reads the channel and posts only when its mark is not there.
#[actix_web::test]
async fn slack_notifier_a_notification_that_may_have_been_posted_is_posted_once() {
    use crate::fake_slack::FakeSlack;
    use flotilla::plugins::notifiers::slack::{SlackNotifier, Target as SlackTarget};
    use flotilla::plugins::{Notification, Notifier};

    let sl = FakeSlack::start("xoxb-test", &["C1"]).await;
    let target = SlackTarget::Channel {
        api_url: sl.api_url.clone(),
        token: "xoxb-test".into(),
        channel: "C1".into(),
    };
    let client = reqwest::Client::new();
    let n = SlackNotifier::new(client, target, Duration::from_secs(10)).expect("notifier");
    let note = Notification {
        id: "n1".into(),
        priority: "urgent".into(),
        event: "agent.exited".into(),
        session: Some("demo-1".into()),
        message: "demo-1 exited with status 3".into(),
        created_at: chrono::Utc::now().to_rfc3339(),
        ..Notification::default()
    };
    let first = n.notify(&note).await.expect("posted").expect("where");
    assert_eq!(sl.posted().len(), 1);
    assert_eq!(
        sl.calls("conversations.history"),
        0,
        "a first attempt reads nothing"
    );
    let meta = sl.posted()[0].metadata.clone().expect("metadata");
    assert_eq!(meta["event_type"], "flotilla_notification");

    let again = Notification {
        may_be_posted: true,
        ..note.clone()
    };
    let repeat = n.notify(&again).await.expect("found").expect("where");
    assert_eq!(repeat, first, "the earlier post stands");
    assert_eq!(sl.posted().len(), 1, "{:?}", sl.posted());
    assert_eq!(sl.calls("conversations.history"), 1);

    let other = Notification {
        id: "n2".into(),
        ..again
    };
    let posted = n.notify(&other).await.expect("posted").expect("where");
    assert_ne!(posted, first);
    assert_eq!(sl.posted().len(), 2, "another notification is posted");
}

/// End to end, across a restart: a Slack notification posted by a server killed (`-9`) before
/// it recorded the delivery is found in the channel by the next server, not posted again.
#[actix_web::test]
async fn a_slack_notification_posted_before_a_kill_dash_nine_is_not_posted_again() {
    use crate::fake_slack::FakeSlack;
    if !require_tool("git") {
        return;
    }
    let sl = FakeSlack::start("xoxb-test", &["C1"]).await;
    let extra = format!(
        "slack: {{ api_url: \"{api}\", bot_token: xoxb-test }}
notifiers:
  ops: {{ kind: slack, channel: C1 }}
routing: {{ urgent: [ops], action: [ops], warning: [ops] }}
notifications: {{ {FAST} }}
",
        api = sl.api_url
    );
    let s = Scratch::new(&extra);
    let mut server = ServerProc::start(s.dir.path(), &s.home, &s.cfg, s.port).await;
    let client = crate::helpers::http_client();
    let resp = client
        .post(format!("{}/api/v1/sessions", server.address))
        .bearer_auth(TOKEN)
        .json(&json!({"project": "demo", "agent": "failing"}))
        .send()
        .await
        .expect("spawn");
    assert_eq!(resp.status().as_u16(), 201);
    let list = |address: String| {
        let client = client.clone();
        async move {
            let v: Value = client
                .get(format!("{address}/api/v1/notifications?limit=100"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            v["notifications"].as_array().cloned()
        }
    };
    let rows = eventually(60, "the notification delivered", || async {
        let rows = list(server.address.clone()).await?;
        (!rows.is_empty() && rows.iter().all(|r| r["status"] == "delivered")).then_some(rows)
    })
    .await;
    let posts = sl.posted().len();
    assert_eq!(posts, rows.len(), "{:?}", sl.posted());
    server.kill9();

    // As a kill between the post and its record leaves them: pending, never attempted.
    {
        use sqlx::ConnectOptions;
        let mut db = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(s.home.join("flotilla.db"))
            .connect()
            .await
            .expect("db");
        sqlx::query("UPDATE notifications SET status = 'pending', attempts = 0")
            .execute(&mut db)
            .await
            .expect("left pending");
    }
    let server = ServerProc::start(s.dir.path(), &s.home, &s.cfg, s.port).await;
    eventually(60, "delivered again after the restart", || async {
        let rows = list(server.address.clone()).await?;
        rows.iter()
            .all(|r| r["status"] == "delivered")
            .then_some(())
    })
    .await;
    assert!(sl.calls("conversations.history") >= 1, "the channel read");
    assert_eq!(sl.posted().len(), posts, "{:?}", sl.posted());
}
