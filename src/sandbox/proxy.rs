//! The egress proxy of a sandboxed agent: an HTTP/1.1 forward proxy on a Unix socket that
//! connects only to the destinations of an [`AllowList`] and reports every refusal.
//!
//! The sandbox has no network but loopback; the proxy's socket is the only way out.
//! Inside the sandbox, [`bridge`] exposes that socket as a TCP port for
//! `HTTP(S)_PROXY=http://127.0.0.1:3128`, and [`forward`] makes an allowed host service
//! (a model server at `127.0.0.1:PORT`) appear at a local port through a `CONNECT` tunnel.
//!
//! What the proxy speaks, one request per client connection:
//! - `CONNECT host:port`: `200 Connection Established`, then bytes both ways until either side
//!   closes. Idle tunnels are never timed out: model APIs stream answers for minutes.
//! - `GET http://host[:port]/path` (any method): the request is sent on with an origin-form
//!   request line, the URL's authority as `Host`, hop-by-hop headers dropped and
//!   `Connection: close`; its body is copied by its framing (Content-Length or chunked), and
//!   the response is relayed with `Connection: close` until the origin closes. So a client
//!   never reuses the connection for a second request, which would otherwise go to the
//!   first request's host.
//! - Refused destinations get `403` and one call of `on_refused`; allowed but unreachable
//!   ones `502`; malformed requests `400`. A client must send its request head within the
//!   head timeout and every connect has a timeout (both 10 s by default).
//!
//! It does not: resolve names to decide (the allow list matches the name asked for),
//! terminate TLS, or keep connections alive across requests.

mod allow;
mod head;
mod relay;

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;
use tracing::{debug, info, warn};

pub use allow::AllowList;
pub use relay::{bridge, forward, Relay};

use allow::Host;
use head::{read_head, BodyFraming, Destination, HeadError, RequestHead, ResponseHead, Target};

/// The default limit on connecting to an allowed destination.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The default limit on receiving a whole request head from a client.
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the accept loop waits after a failed accept (out of file descriptors, say)
/// before trying again, so that it does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How much of a refused request's body the proxy reads and discards before closing, so
/// the client sees the error answer rather than a reset connection.
const MAX_DRAIN_BYTES: usize = 1024 * 1024;

/// Errors of the egress proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// An `allow_hosts` entry could not be parsed.
    #[error("bad allow_hosts entry {entry:?}: {reason}")]
    BadAllowEntry {
        /// The entry as written.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Something that is not a socket is in the way of the proxy's socket.
    #[error("{path} exists and is not a socket")]
    NotASocket {
        /// The socket path asked for.
        path: PathBuf,
    },
    /// Another process listens on the proxy's socket.
    #[error("{path} is in use by another process")]
    SocketInUse {
        /// The socket path asked for.
        path: PathBuf,
    },
    /// The socket could not be created.
    #[error("cannot listen on {path}")]
    Bind {
        /// The socket path asked for.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A connection the proxy refused.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Refused {
    /// The host the client asked for, normalised (lower case, IPv6 without brackets).
    pub host: String,
    /// The port the client asked for.
    pub port: u16,
    /// Why it was refused.
    pub reason: String,
}

/// Called once per refused request; it runs on the proxy's task, so it must not block
/// (send to a channel or an actor's `do_send`).
pub type OnRefused = Arc<dyn Fn(Refused) + Send + Sync>;

/// The limits of an [`EgressProxy`]; the defaults fit production.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyOptions {
    /// Limit on resolving and connecting to an allowed destination; past it, `502`.
    pub connect_timeout: Duration,
    /// Limit on receiving a client's whole request head; past it, the client is dropped.
    pub head_timeout: Duration,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            head_timeout: DEFAULT_HEAD_TIMEOUT,
        }
    }
}

/// What every connection task needs.
struct Shared {
    allow: AllowList,
    on_refused: OnRefused,
    options: ProxyOptions,
}

/// An HTTP/1.1 forward proxy listening on a Unix socket (mode 0600; the sandbox sees only
/// that socket). Dropping it stops it: the accept loop and every open connection are
/// aborted and the socket file is removed.
pub struct EgressProxy {
    socket: PathBuf,
    /// The socket file's inode, so `Drop` removes only the file this proxy created.
    inode: (u64, u64),
    /// The accept loop; it owns the connection tasks (a `JoinSet`), so aborting it ends them.
    task: JoinHandle<()>,
}

impl EgressProxy {
    /// Starts the proxy on `socket` with the default timeouts. A stale socket file (nobody
    /// listening) is replaced.
    ///
    /// # Errors
    /// `SocketInUse` if a process listens there, `NotASocket` if another file is in the
    /// way, `Bind` if the socket cannot be created.
    pub async fn start(
        socket: &Path,
        allow: AllowList,
        on_refused: OnRefused,
    ) -> Result<EgressProxy, ProxyError> {
        Self::start_with(socket, allow, on_refused, ProxyOptions::default()).await
    }

    /// [`EgressProxy::start`] with chosen limits.
    ///
    /// # Errors
    /// As [`EgressProxy::start`].
    pub async fn start_with(
        socket: &Path,
        allow: AllowList,
        on_refused: OnRefused,
        options: ProxyOptions,
    ) -> Result<EgressProxy, ProxyError> {
        let bind_error = |source| ProxyError::Bind {
            path: socket.to_path_buf(),
            source,
        };
        clear_stale_socket(socket).await?;
        // Bind under a temporary name, restrict it, then move it into place: the socket is
        // never reachable at its real path with a wider mode.
        let dir = socket.parent().unwrap_or(Path::new("."));
        let temporary = dir.join(format!(".egress-{:08x}", rand::random::<u32>()));
        let listener = UnixListener::bind(&temporary).map_err(bind_error)?;
        let placed = std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&temporary, socket))
            .and_then(|()| std::fs::metadata(socket));
        let meta = match placed {
            Ok(meta) => meta,
            Err(e) => {
                let _ = std::fs::remove_file(&temporary);
                return Err(bind_error(e));
            }
        };
        let shared = Arc::new(Shared {
            allow,
            on_refused,
            options,
        });
        info!(socket = %socket.display(), "egress proxy listening");
        Ok(EgressProxy {
            socket: socket.to_path_buf(),
            inode: (meta.dev(), meta.ino()),
            task: tokio::spawn(accept_loop(listener, shared)),
        })
    }

    /// The path of the proxy's Unix socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.task.abort();
        let ours = std::fs::symlink_metadata(&self.socket)
            .is_ok_and(|meta| (meta.dev(), meta.ino()) == self.inode);
        if ours {
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

/// Removes a socket file nobody listens on; refuses to touch anything else.
async fn clear_stale_socket(socket: &Path) -> Result<(), ProxyError> {
    use std::os::unix::fs::FileTypeExt;
    match tokio::fs::symlink_metadata(socket).await {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ProxyError::Bind {
            path: socket.to_path_buf(),
            source,
        }),
        Ok(meta) if !meta.file_type().is_socket() => Err(ProxyError::NotASocket {
            path: socket.to_path_buf(),
        }),
        Ok(_) => match UnixStream::connect(socket).await {
            Ok(_) => Err(ProxyError::SocketInUse {
                path: socket.to_path_buf(),
            }),
            Err(_) => tokio::fs::remove_file(socket)
                .await
                .map_err(|source| ProxyError::Bind {
                    path: socket.to_path_buf(),
                    source,
                }),
        },
    }
}

async fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_client(stream, shared.clone()));
                }
                Err(error) => {
                    warn!(%error, "egress proxy accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Serves one client connection: one request, then close.
async fn serve_client(mut client: UnixStream, shared: Arc<Shared>) {
    let mut buf = BytesMut::with_capacity(4096);
    let head = match timeout(
        shared.options.head_timeout,
        read_head(&mut client, &mut buf),
    )
    .await
    {
        Err(_) => {
            debug!("egress client sent no request head in time; dropped");
            return;
        }
        Ok(Err(HeadError::Closed)) => return,
        Ok(Err(HeadError::TooLarge)) => {
            return refuse(
                client,
                431,
                "Request Header Fields Too Large",
                "request head too large",
                &shared,
            )
            .await
        }
        Ok(Ok(head)) => head,
    };
    let parsed = RequestHead::parse(&head).and_then(|request| {
        let target = Target::of(&request)?;
        let framing = match target {
            Target::Connect(_) => BodyFraming::None,
            Target::Absolute { .. } => BodyFraming::of_request(&request)?,
        };
        Ok((request, target, framing))
    });
    let (request, target, framing) = match parsed {
        Ok(parsed) => parsed,
        Err(reason) => return refuse(client, 400, "Bad Request", reason, &shared).await,
    };
    let destination = target.destination().clone();
    if !shared
        .allow
        .allows_host(&destination.host, destination.port)
    {
        let refused = Refused {
            host: destination.host.bare(),
            port: destination.port,
            reason: "not in allow_hosts".to_string(),
        };
        info!(host = %refused.host, port = refused.port, "egress refused");
        // Report before answering, so the event exists once the client sees the 403.
        (shared.on_refused)(refused);
        let text = format!(
            "flotilla sandbox: {} is not in allow_hosts",
            destination.authority()
        );
        return refuse(client, 403, "Forbidden", &text, &shared).await;
    }
    let upstream = match connect(&destination, shared.options.connect_timeout).await {
        Ok(upstream) => upstream,
        Err(error) => {
            debug!(destination = %destination.authority(), %error, "egress destination unreachable");
            let text = format!(
                "flotilla sandbox: cannot reach {}: {error}",
                destination.authority()
            );
            return refuse(client, 502, "Bad Gateway", &text, &shared).await;
        }
    };
    debug!(destination = %destination.authority(), method = %request.method, "egress allowed");
    let outcome = match target {
        Target::Connect(_) => tunnel(client, buf, upstream).await,
        Target::Absolute {
            host_header,
            origin_form,
            ..
        } => {
            let head = head::upstream_request(&request, &host_header, &origin_form);
            forward_http(client, buf, upstream, head, framing).await
        }
    };
    if let Err(error) = outcome {
        debug!(destination = %destination.authority(), %error, "egress connection ended with an error");
    }
}

/// Resolves and connects within `limit`, trying each address of a name in turn.
async fn connect(destination: &Destination, limit: Duration) -> io::Result<TcpStream> {
    let attempt = async {
        match &destination.host {
            Host::Ip(ip) => TcpStream::connect((*ip, destination.port)).await,
            Host::Name(name) => TcpStream::connect((name.as_str(), destination.port)).await,
        }
    };
    let stream = timeout(limit, attempt)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    // Streamed model answers come in small writes; do not hold them back.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Answers with an error status and a short text body, then closes, after reading (and
/// discarding) what the client still sends, within bounds.
async fn refuse(mut client: UnixStream, status: u16, reason: &str, text: &str, shared: &Shared) {
    let answer = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}\n",
        text.len() + 1
    );
    if client.write_all(answer.as_bytes()).await.is_err() || client.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0u8; 8192];
        let mut total = 0;
        while total < MAX_DRAIN_BYTES {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = timeout(shared.options.head_timeout, drain).await;
}

/// `CONNECT`: confirm, pass on what the client sent early, then pipe both ways.
async fn tunnel(
    mut client: UnixStream,
    early: BytesMut,
    mut upstream: TcpStream,
) -> io::Result<()> {
    client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await?;
    if !early.is_empty() {
        upstream.write_all(&early).await?;
    }
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// One plain HTTP request: head and body upstream, response back, while both run at once
/// (an origin may answer before the body is complete, or send `100 Continue`).
async fn forward_http(
    client: UnixStream,
    early: BytesMut,
    upstream: TcpStream,
    head: Vec<u8>,
    framing: BodyFraming,
) -> io::Result<()> {
    let (client_read, mut client_write) = client.into_split();
    let (upstream_read, mut upstream_write) = upstream.into_split();
    let request = async move {
        upstream_write.write_all(&head).await?;
        let mut body = BufReader::new(std::io::Cursor::new(early).chain(client_read));
        head::copy_body(framing, &mut body, &mut upstream_write).await?;
        // Keep the write half open: some servers treat a half-close as an abort.
        Ok::<_, io::Error>(upstream_write)
    };
    let response = relay_response(upstream_read, &mut client_write);
    tokio::pin!(request, response);
    let mut kept_open = None;
    loop {
        tokio::select! {
            sent = &mut request, if kept_open.is_none() => kept_open = Some(sent?),
            relayed = &mut response => return relayed,
        }
    }
}

/// Relays interim (1xx) heads as they are, the final head with `Connection: close`, then
/// everything until the origin closes.
async fn relay_response<W: AsyncWrite + Unpin>(
    mut upstream: tokio::net::tcp::OwnedReadHalf,
    client: &mut W,
) -> io::Result<()> {
    let mut buf = BytesMut::with_capacity(4096);
    let mut answered = false;
    loop {
        let response = match read_head(&mut upstream, &mut buf).await {
            Ok(head) => ResponseHead::parse(&head).map(|parsed| (head, parsed)),
            Err(_) => Err("the origin closed or sent an oversized head"),
        };
        let (raw, response) = match response {
            Ok(ok) => ok,
            Err(reason) if !answered => {
                let text = format!("flotilla sandbox: bad answer from the origin: {reason}\n");
                let answer = format!(
                    "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
                client.write_all(answer.as_bytes()).await?;
                return client.shutdown().await;
            }
            Err(reason) => return Err(io::Error::new(io::ErrorKind::InvalidData, reason)),
        };
        answered = true;
        // 101 cannot happen: `Upgrade` is hop-by-hop and never sent on.
        if (100..200).contains(&response.status) {
            client.write_all(&raw).await?;
            continue;
        }
        client
            .write_all(&head::downstream_response(&response))
            .await?;
        client.write_all(&buf).await?;
        tokio::io::copy(&mut upstream, client).await?;
        return client.shutdown().await;
    }
}

#[cfg(test)]
mod tests;
