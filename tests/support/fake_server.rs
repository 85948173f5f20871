//! The one scaffold every HTTP fake stands on: binds `127.0.0.1:0`, serves the fake's routes
//! with its shared state (`web::Data`, given through the routes), records every request's
//! method and path, and stops the server when dropped. A fake keeps only its wire format.
//!
//! ```ignore
//! let data = web::Data::new(state.clone());
//! let server = FakeServer::start(move |cfg| {
//!     cfg.app_data(data.clone()).default_service(web::to(dispatch));
//! });
//! let url = server.url("/v1");
//! ```

// Benches include it too and use only part of it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use actix_web::dev::{ServerHandle, Service};
use actix_web::{web, App, HttpServer};

/// A request as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path with its query (`/bot123/getUpdates?offset=4`).
    pub path: String,
}

/// A running fake: its address, what it has seen, and its server (stopped on drop).
pub struct FakeServer {
    port: u16,
    handle: ServerHandle,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// The largest request body a fake reads (prompts with whole files inside).
const BODY_LIMIT: usize = 64 << 20;

impl FakeServer {
    /// Serves `routes` on the current actix system, one worker.
    pub fn start<F>(routes: F) -> FakeServer
    where
        F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
    {
        Self::start_with(routes, 1)
    }

    /// [`FakeServer::start`] with `workers` workers (a fake that holds requests open).
    pub fn start_with<F>(routes: F, workers: usize) -> FakeServer
    where
        F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
    {
        let (listener, port) = listen();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let server = server(routes, seen.clone(), listener, workers);
        let handle = server.handle();
        actix_web::rt::spawn(server);
        FakeServer { port, handle, seen }
    }

    /// Serves `routes` on an actix system of its own thread: for a fake whose client blocks
    /// the test's runtime (a CLI the test waits for synchronously).
    pub fn start_on_own_thread<F>(routes: F) -> FakeServer
    where
        F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
    {
        let (listener, port) = listen();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let recorded = seen.clone();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = server(routes, recorded, listener, 1);
                let _ = tx.send(server.handle());
                let _ = server.await;
            });
        });
        let handle = rx.recv().expect("fake server started");
        FakeServer { port, handle, seen }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        // `stop` sends the command before returning its future, so dropping the future stops
        // the server from any thread, inside an actix system or not.
        drop(self.handle.stop(false));
    }
}

/// The `Authorization` value of HTTP Basic auth (RFC 7617): `Basic base64(user:secret)`.
pub fn basic_auth(user: &str, secret: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{secret}");
    let mut out = String::from("Basic ");
    for c in input.as_bytes().chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn listen() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    (listener, port)
}

fn server<F>(
    routes: F,
    seen: Arc<Mutex<Vec<Seen>>>,
    listener: TcpListener,
    workers: usize,
) -> actix_web::dev::Server
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    HttpServer::new(move || {
        let seen = seen.clone();
        App::new()
            .app_data(web::PayloadConfig::default().limit(BODY_LIMIT))
            .app_data(web::JsonConfig::default().limit(BODY_LIMIT))
            .wrap_fn(move |req, srv| {
                let path = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                seen.lock().unwrap_or_else(|p| p.into_inner()).push(Seen {
                    method: req.method().to_string(),
                    path,
                });
                srv.call(req)
            })
            .configure(routes.clone())
    })
    .workers(workers)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)
    .expect("listen")
    .run()
}

#[cfg(test)]
mod tests {
    #[test]
    fn fake_server_basic_auth_is_the_rfc_7617_encoding() {
        use super::basic_auth;
        // RFC 7617 §2's example, and the three padding lengths.
        assert_eq!(
            basic_auth("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(basic_auth("a", "b"), "Basic YTpi");
        assert_eq!(basic_auth("ab", "c"), "Basic YWI6Yw==");
        assert_eq!(basic_auth("ab", "cd"), "Basic YWI6Y2Q=");
    }
}
