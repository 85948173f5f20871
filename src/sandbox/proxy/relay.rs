//! The in-sandbox ends of the egress proxy: TCP listeners on loopback that carry each
//! connection to the proxy's Unix socket, either unchanged ([`bridge`], for `HTTP_PROXY`)
//! or through a `CONNECT` tunnel to one fixed destination ([`forward`], for a host service
//! that agents expect at a fixed local address).

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tracing::{debug, warn};

use super::allow::parse_authority;
use super::head::{read_head, ResponseHead};

/// Limit on opening the proxy's socket (it is local, so this only guards a wedged proxy).
const PROXY_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Limit on the proxy's answer to `CONNECT`: its own connect timeout plus slack.
const CONNECT_ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the accept loop waits after a failed accept before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What a relay does with each accepted connection.
#[derive(Debug, Clone)]
enum Mode {
    /// Pipe the bytes to the proxy unchanged: the client speaks proxy HTTP itself.
    Bridge,
    /// Open a `CONNECT` tunnel to this `host:port` first (IPv6 in brackets).
    Forward { authority: String },
}

/// A bound in-sandbox relay; [`Relay::local_addr`] is known before [`Relay::run`], so the
/// caller can start the agent only once the port is listening.
#[derive(Debug)]
pub struct Relay {
    listener: TcpListener,
    proxy: PathBuf,
    mode: Mode,
}

impl Relay {
    /// Binds a relay that pipes every connection on `listen` to the proxy socket unchanged.
    ///
    /// # Errors
    /// The bind error.
    pub async fn bridge(listen: SocketAddr, proxy: PathBuf) -> io::Result<Relay> {
        Ok(Relay {
            listener: TcpListener::bind(listen).await?,
            proxy,
            mode: Mode::Bridge,
        })
    }

    /// Binds a relay that tunnels every connection on `listen` to `target_host:target_port`
    /// through the proxy.
    ///
    /// # Errors
    /// `InvalidInput` if the target is not a host name or IP address, or the bind error.
    pub async fn forward(
        listen: SocketAddr,
        proxy: PathBuf,
        target_host: &str,
        target_port: u16,
    ) -> io::Result<Relay> {
        let bare = target_host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(target_host);
        let host = match bare.parse::<std::net::Ipv6Addr>() {
            Ok(v6) => format!("[{v6}]"),
            Err(_) => bare.to_string(),
        };
        let invalid = |reason| io::Error::new(io::ErrorKind::InvalidInput, reason);
        let (host, port) = parse_authority(&host).map_err(invalid)?;
        if port.is_some() {
            return Err(invalid("the target host must not carry a port"));
        }
        Ok(Relay {
            listener: TcpListener::bind(listen).await?,
            proxy,
            mode: Mode::Forward {
                authority: format!("{}:{target_port}", host.for_authority()),
            },
        })
    }

    /// The address the relay listens on.
    ///
    /// # Errors
    /// As `TcpListener::local_addr`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until the future is dropped; each is served on its own task,
    /// aborted when this future is dropped.
    ///
    /// # Errors
    /// None today: accept errors are logged and retried. The `Result` is for the callers'
    /// `?` and for future fatal cases.
    pub async fn run(self) -> io::Result<()> {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((client, _)) => {
                        let proxy = self.proxy.clone();
                        let mode = self.mode.clone();
                        connections.spawn(async move {
                            if let Err(error) = relay(client, proxy, mode).await {
                                debug!(%error, "sandbox relay connection ended with an error");
                            }
                        });
                    }
                    Err(error) => {
                        warn!(%error, "sandbox relay accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    }
}

/// Runs inside the sandbox (which has only loopback): accepts TCP on `listen` (e.g.
/// `127.0.0.1:3128`) and pipes each connection to the proxy's Unix socket `proxy`
/// unchanged, so agents use it via `HTTP(S)_PROXY=http://127.0.0.1:3128`. Returns only on
/// error.
///
/// # Errors
/// The bind error.
pub async fn bridge(listen: SocketAddr, proxy: PathBuf) -> io::Result<()> {
    Relay::bridge(listen, proxy).await?.run().await
}

/// Runs inside the sandbox: accepts TCP on `listen` and, per connection, opens the proxy
/// socket, sends `CONNECT target_host:target_port`, checks for a 200, then pipes; a refused
/// or failed tunnel closes the client connection. So an allowed loopback service of the
/// host (a model server at `127.0.0.1:PORT`) is reachable at the same address inside the
/// sandbox, without proxy settings. Returns only on error.
///
/// # Errors
/// `InvalidInput` for a bad target, or the bind error.
pub async fn forward(
    listen: SocketAddr,
    proxy: PathBuf,
    target_host: String,
    target_port: u16,
) -> io::Result<()> {
    Relay::forward(listen, proxy, &target_host, target_port)
        .await?
        .run()
        .await
}

async fn relay(mut client: TcpStream, proxy: PathBuf, mode: Mode) -> io::Result<()> {
    client.set_nodelay(true)?;
    let mut upstream = tokio::time::timeout(PROXY_CONNECT_TIMEOUT, UnixStream::connect(&proxy))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "proxy socket connect timed out"))??;
    if let Mode::Forward { authority } = mode {
        let early = tokio::time::timeout(
            CONNECT_ANSWER_TIMEOUT,
            open_tunnel(&mut upstream, &authority),
        )
        .await
        .map_err(|_| {
            io::Error::new(io::ErrorKind::TimedOut, "the proxy did not answer CONNECT")
        })??;
        if !early.is_empty() {
            client.write_all(&early).await?;
        }
    }
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// Sends `CONNECT` and reads the answer; any status but 2xx is an error. Returns the bytes
/// that came after the answer's head (the destination may speak first).
async fn open_tunnel(proxy: &mut UnixStream, authority: &str) -> io::Result<BytesMut> {
    let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    proxy.write_all(request.as_bytes()).await?;
    let mut buf = BytesMut::with_capacity(1024);
    let head = read_head(proxy, &mut buf).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the proxy closed before answering CONNECT",
        )
    })?;
    let status = ResponseHead::parse(&head)
        .map_err(|reason| io::Error::new(io::ErrorKind::InvalidData, reason))?
        .status;
    if (200..300).contains(&status) {
        Ok(buf)
    } else {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("the proxy answered CONNECT {authority} with {status}"),
        ))
    }
}
