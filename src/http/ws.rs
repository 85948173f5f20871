//! `GET /api/v1/ws`: the event stream of [`super::events`] over a WebSocket (one JSON text
//! message per event), resumable with `?after=`. Pings every 15 s; a client silent for 45 s
//! is dropped.

use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::error::ApiError;
use super::events::{pump, resume_point, FeedQuery, Frame};
use super::AppState;

/// How often the server pings.
const PING_EVERY: Duration = Duration::from_secs(15);
/// A client that answers nothing for this long is dropped.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(45);

/// Pings the client every [`PING_EVERY`] and stops the socket once the client has been silent
/// for [`CLIENT_TIMEOUT`] (`last_seen`: when it was last heard). Every WebSocket here runs it.
pub(super) fn keep_alive<A>(ctx: &mut ws::WebsocketContext<A>, last_seen: fn(&A) -> Instant)
where
    A: Actor<Context = ws::WebsocketContext<A>>,
{
    ctx.run_interval(PING_EVERY, move |act, ctx| {
        if last_seen(act).elapsed() > CLIENT_TIMEOUT {
            ctx.stop();
        } else {
            ctx.ping(b"");
        }
    });
}

/// One WebSocket client of the event stream.
struct EventSocket {
    frames: Option<mpsc::Receiver<Frame>>,
    last_seen: Instant,
}

impl Actor for EventSocket {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(rx) = self.frames.take() {
            ctx.add_stream(ReceiverStream::new(rx));
        }
        keep_alive(ctx, |s| s.last_seen);
    }
}

impl StreamHandler<Frame> for EventSocket {
    fn handle(&mut self, f: Frame, ctx: &mut Self::Context) {
        if let Frame::Event(e) = f {
            if let Ok(s) = serde_json::to_string(&e) {
                ctx.text(s);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for EventSocket {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_seen = Instant::now();
        match msg {
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Err(_) => ctx.stop(),
            _ => {}
        }
    }
}

/// Upgrades to a WebSocket carrying the event stream.
///
/// # Errors
/// 422 for a bad resume point; the upgrade's own errors otherwise.
#[utoipa::path(get, path = "/api/v1/ws", params(FeedQuery),
    responses((status = 101, description = "switching protocols"), (status = 401)))]
pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    q: web::Query<FeedQuery>,
) -> Result<HttpResponse, actix_web::Error> {
    let after = resume_point(&req, &q)?;
    let feed = state
        .reads
        .open_feed(after, 1000)
        .await
        .map_err(ApiError::from)?;
    let (tx, rx) = mpsc::channel(256);
    actix_web::rt::spawn(pump(state.reads.clone(), feed, after, tx));
    ws::start(
        EventSocket {
            frames: Some(rx),
            last_seen: Instant::now(),
        },
        &req,
        body,
    )
}
