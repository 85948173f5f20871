//! `GET /api/v1/events`: the event log as Server-Sent Events, resumable with `Last-Event-ID`
//! (or `?after=`). Each event is sent once, in id order: the feed replays stored events after
//! the resume point, then follows live ones, dropping any it already sent. A client that falls
//! behind the live buffer is caught up from the store, so it never misses an event.
//!
//! Server cost grows with changes, not with clients × sessions: nothing is re-listed.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use utoipa::IntoParams;

use super::error::ApiError;
use super::AppState;
use crate::read::{Feed, ReadModel};
use crate::store::EventRecord;

/// Keep-alive comment interval, so proxies keep the stream open.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Events per store read while catching up.
const PAGE: i64 = 1000;
/// Frames buffered per client before the writer waits.
const CLIENT_BUFFER: usize = 256;

/// Where to resume.
#[derive(Debug, Deserialize, IntoParams)]
pub struct FeedQuery {
    /// Resume after this id (same as the `Last-Event-ID` header, which wins).
    pub after: Option<i64>,
    /// Browser clients' token.
    #[allow(dead_code)]
    access_token: Option<String>,
}

/// The resume point from `Last-Event-ID` or `?after=`.
pub fn resume_point(req: &HttpRequest, q: &FeedQuery) -> Result<i64, ApiError> {
    match req.headers().get("Last-Event-ID") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .ok_or_else(|| ApiError::Invalid {
                field: "Last-Event-ID".into(),
                reason: "must be a non-negative integer".into(),
            }),
        None => Ok(q.after.unwrap_or(0).max(0)),
    }
}

/// One frame of the feed.
pub enum Frame {
    /// An event.
    Event(EventRecord),
    /// Nothing happened for a while.
    Heartbeat,
}

/// Runs a feed into `tx` until the client goes away: backlog, catch-up pages, then live
/// events, each id at most once and in order.
pub async fn pump(
    reads: std::sync::Arc<ReadModel>,
    feed: Feed,
    mut last: i64,
    tx: mpsc::Sender<Frame>,
) {
    let Feed { backlog, mut live } = feed;
    let mut page = backlog;
    loop {
        let n = page.len();
        for e in page {
            if e.id > last {
                last = e.id;
                if tx.send(Frame::Event(e)).await.is_err() {
                    return;
                }
            }
        }
        if (n as i64) < PAGE {
            break;
        }
        page = match reads.events(None, last, PAGE).await {
            Ok(p) => p,
            Err(_) => return,
        };
    }
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.tick().await;
    loop {
        tokio::select! {
            r = live.recv() => match r {
                Ok(e) => {
                    if e.id > last {
                        last = e.id;
                        if tx.send(Frame::Event((*e).clone())).await.is_err() {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind the live buffer: catch up from the store.
                    loop {
                        let p = match reads.events(None, last, PAGE).await {
                            Ok(p) => p,
                            Err(_) => return,
                        };
                        let n = p.len();
                        for e in p {
                            last = e.id;
                            if tx.send(Frame::Event(e)).await.is_err() {
                                return;
                            }
                        }
                        if (n as i64) < PAGE {
                            break;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = beat.tick() => {
                if tx.send(Frame::Heartbeat).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn sse_frame(f: Frame) -> Bytes {
    match f {
        Frame::Heartbeat => Bytes::from_static(b": keep-alive\n\n"),
        Frame::Event(e) => {
            let data = serde_json::to_string(&e).unwrap_or_else(|_| "{}".into());
            Bytes::from(format!(
                "id: {}\nevent: {}\ndata: {}\n\n",
                e.id, e.kind, data
            ))
        }
    }
}

/// Streams events as SSE.
///
/// # Errors
/// 422 for a malformed `Last-Event-ID`.
#[utoipa::path(get, path = "/api/v1/events", params(FeedQuery, ("Last-Event-ID" = Option<i64>, Header)),
    responses((status = 200, content_type = "text/event-stream"), (status = 401), (status = 422)))]
pub async fn stream(
    req: HttpRequest,
    state: web::Data<AppState>,
    q: web::Query<FeedQuery>,
) -> Result<HttpResponse, ApiError> {
    let after = resume_point(&req, &q)?;
    let feed = state.reads.open_feed(after, PAGE).await?;
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    actix_web::rt::spawn(pump(state.reads.clone(), feed, after, tx));
    let body = ReceiverStream::new(rx).map(|f| Ok::<_, actix_web::Error>(sse_frame(f)));
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}
