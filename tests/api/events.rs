//! The event stream over SSE and WebSocket: replay from `Last-Event-ID`, live events, no
//! duplicates, no gaps.

use std::time::Duration;

use flotilla::cli::client::parse_sse;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::helpers::*;

/// An open SSE connection.
pub struct Sse {
    res: reqwest::Response,
    buf: String,
}

impl Sse {
    /// Connects to `base` resuming after `after` (None: no header).
    pub async fn open(base: &str, after: Option<i64>) -> Sse {
        let mut r = crate::helpers::http_client()
            .get(format!("{base}/api/v1/events"))
            .bearer_auth(TOKEN);
        if let Some(a) = after {
            r = r.header("Last-Event-ID", a.to_string());
        }
        let res = r.send().await.expect("sse connects");
        assert_eq!(res.status(), 200);
        Sse {
            res,
            buf: String::new(),
        }
    }

    /// Reads events until `done` says stop (deadline 30 s).
    pub async fn read_until(&mut self, mut done: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !done(&got) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let chunk = tokio::time::timeout(left, self.res.chunk())
                .await
                .expect("events arrive before the deadline")
                .expect("stream ok")
                .expect("stream open");
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
            for (id, data) in parse_sse(&mut self.buf) {
                let v: Value = serde_json::from_str(&data).expect("json event");
                assert_eq!(id, v["id"].as_i64(), "SSE id matches the event id");
                got.push(v);
            }
        }
        got
    }
}

pub fn ids(events: &[Value]) -> Vec<i64> {
    events.iter().filter_map(|e| e["id"].as_i64()).collect()
}

#[actix_web::test]
async fn sse_replays_after_last_event_id_then_streams_live_without_duplicates() {
    let app = spawn_app().await;
    let a = app
        .spawn(json!({"project": "demo", "agent": "quick"}))
        .await;
    app.wait_state(&a, "done").await;
    let mut all = Sse::open(&app.address, None).await;
    let first = all.read_until(|e| e.len() >= 4).await;
    assert_eq!(ids(&first), vec![1, 2, 3, 4]);
    // Resume in the middle: only what came after.
    let mut resumed = Sse::open(&app.address, Some(2)).await;
    let b = app
        .spawn(json!({"project": "demo", "agent": "quick"}))
        .await;
    app.wait_state(&b, "done").await;
    let got = resumed.read_until(|e| e.len() >= 6).await;
    assert_eq!(ids(&got), vec![3, 4, 5, 6, 7, 8]);
    assert_eq!(got[2]["kind"], "session.created");
    assert_eq!(got[2]["session_id"], b.as_str());
    // The first connection gets the live ones too, once each.
    let more = all.read_until(|e| e.len() >= 4).await;
    assert_eq!(ids(&more), vec![5, 6, 7, 8]);
}

#[actix_web::test]
async fn a_malformed_last_event_id_is_rejected() {
    let app = spawn_app().await;
    let r = app
        .req(reqwest::Method::GET, "/api/v1/events")
        .header("Last-Event-ID", "abc")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 422);
}

#[actix_web::test]
async fn the_websocket_streams_the_same_events() {
    let app = spawn_app().await;
    let a = app
        .spawn(json!({"project": "demo", "agent": "quick"}))
        .await;
    app.wait_state(&a, "done").await;
    let url = format!(
        "{}/api/v1/ws?after=2&access_token={TOKEN}",
        app.address.replace("http://", "ws://")
    );
    let (_res, mut ws) = awc::Client::new()
        .ws(url)
        .connect()
        .await
        .expect("ws connects");
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got.len() < 2 {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = tokio::time::timeout(left, ws.next())
            .await
            .expect("frames before the deadline")
            .expect("open")
            .expect("frame ok");
        if let awc::ws::Frame::Text(t) = frame {
            let v: Value = serde_json::from_slice(&t).expect("json");
            got.push(v);
        }
    }
    assert_eq!(ids(&got), vec![3, 4]);
    let r = awc::Client::new()
        .ws(format!(
            "{}/api/v1/ws",
            app.address.replace("http://", "ws://")
        ))
        .connect()
        .await;
    assert!(r.is_err(), "no token, no socket");
}
