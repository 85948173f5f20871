//! The egress proxy against real sockets: a Unix-socket proxy in a tempdir, TCP echo and
//! HTTP servers on loopback port 0, and the relays and `curl` in front.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;

/// A deadline for anything a test waits on, so a broken proxy fails the test instead of
/// hanging it.
const DEADLINE: Duration = Duration::from_secs(30);

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    timeout(DEADLINE, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {DEADLINE:?}"))
}

struct Fixture {
    proxy: EgressProxy,
    refused: Arc<Mutex<Vec<Refused>>>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn start(allow: &[String]) -> Fixture {
        Self::start_with(allow, ProxyOptions::default()).await
    }

    async fn start_with(allow: &[String], options: ProxyOptions) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let refused = Arc::new(Mutex::new(Vec::new()));
        let record = refused.clone();
        let on_refused: OnRefused = Arc::new(move |r| record.lock().expect("lock").push(r));
        let allow = AllowList::parse(allow).expect("allow list");
        let proxy =
            EgressProxy::start_with(&dir.path().join("egress.sock"), allow, on_refused, options)
                .await
                .expect("proxy starts");
        Fixture {
            proxy,
            refused,
            _dir: dir,
        }
    }

    fn refused(&self) -> Vec<Refused> {
        self.refused.lock().expect("lock").clone()
    }

    async fn client(&self) -> UnixStream {
        UnixStream::connect(self.proxy.socket())
            .await
            .expect("connect to proxy")
    }

    /// Sends raw bytes as one client and returns everything the proxy answers.
    async fn exchange(&self, request: &str) -> String {
        let mut client = self.client().await;
        client.write_all(request.as_bytes()).await.expect("send");
        read_all(&mut client).await
    }
}

async fn read_all<R: AsyncRead + Unpin>(stream: &mut R) -> String {
    let mut out = Vec::new();
    within("reading to the end", stream.read_to_end(&mut out))
        .await
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

fn allow(entries: &[String]) -> Vec<String> {
    entries.to_vec()
}

/// A TCP echo server; counts the connections it accepted.
async fn echo_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut read, mut write) = stream.into_split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    (address, accepted)
}

/// One request as the origin received it.
#[derive(Debug)]
struct Received {
    head: String,
    body: Vec<u8>,
}

/// A tiny HTTP/1.1 origin: reads one request (body by its framing), reports it, answers
/// `hello from origin` (GET) or `got N bytes` (other methods) with keep-alive headers the
/// proxy must replace, then closes.
async fn http_server() -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr");
    let (report, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let report = report.clone();
            tokio::spawn(async move {
                let mut buf = BytesMut::new();
                let Ok(raw) = read_head(&mut stream, &mut buf).await else {
                    return;
                };
                let Ok(request) = RequestHead::parse(&raw) else {
                    return;
                };
                let framing = BodyFraming::of_request(&request).expect("framing");
                let (read, mut write) = stream.split();
                let mut reader = BufReader::new(std::io::Cursor::new(buf).chain(read));
                let mut body = Vec::new();
                head::copy_body(framing, &mut reader, &mut body)
                    .await
                    .expect("body");
                let text = match request.method.as_str() {
                    "GET" => "hello from origin".to_string(),
                    _ => format!("got {} bytes", body.len()),
                };
                let _ = report.send(Received {
                    head: String::from_utf8_lossy(&raw).into_owned(),
                    body,
                });
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n{text}",
                    text.len()
                );
                let _ = write.write_all(answer.as_bytes()).await;
            });
        }
    });
    (address, received)
}

/// A loopback port nobody listens on: bound but not listening, so connecting is refused
/// and no parallel test can take the port while the socket lives.
fn closed_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let port = socket.local_addr().expect("addr").port();
    (socket, port)
}

/// Reads a response head from a raw stream (what comes after stays unread in `buf`).
async fn response_head(stream: &mut UnixStream, buf: &mut BytesMut) -> String {
    let head = within("a response head", read_head(stream, buf))
        .await
        .expect("a response head");
    String::from_utf8_lossy(&head).into_owned()
}

async fn read_exactly<R: AsyncRead + Unpin>(stream: &mut R, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    within("reading", stream.read_exact(&mut out))
        .await
        .expect("read");
    out
}

#[tokio::test]
async fn connect_tunnels_bytes_both_ways_to_an_allowed_server() {
    let (echo, _) = echo_server().await;
    let fixture = Fixture::start(&allow(&[format!("127.0.0.1:{}", echo.port())])).await;
    let mut client = fixture.client().await;
    client
        .write_all(format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\nearly").as_bytes())
        .await
        .expect("send");
    let mut buf = BytesMut::new();
    assert_eq!(
        response_head(&mut client, &mut buf).await,
        "HTTP/1.1 200 Connection Established\r\n\r\n"
    );
    // Bytes sent right behind the CONNECT head reach the destination too.
    let mut echoed = buf.to_vec();
    echoed.extend(read_exactly(&mut client, 5 - echoed.len()).await);
    assert_eq!(echoed, b"early");
    client.write_all(b"ping").await.expect("send");
    assert_eq!(read_exactly(&mut client, 4).await, b"ping");
    assert!(fixture.refused().is_empty());
}

#[tokio::test(start_paused = true)]
async fn idle_tunnels_are_not_timed_out() {
    let (echo, _) = echo_server().await;
    // No timer but the test's own sleep: loopback I/O is not mistaken for idleness.
    let day = Duration::from_secs(86_400);
    let options = ProxyOptions {
        connect_timeout: day,
        head_timeout: day,
    };
    let fixture =
        Fixture::start_with(&allow(&[format!("127.0.0.1:{}", echo.port())]), options).await;
    let mut client = fixture.client().await;
    client
        .write_all(format!("CONNECT {echo} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut buf = BytesMut::new();
    assert!(response_head(&mut client, &mut buf)
        .await
        .starts_with("HTTP/1.1 200 "));
    tokio::time::sleep(Duration::from_secs(3600)).await;
    client.write_all(b"still there").await.expect("send");
    assert_eq!(read_exactly(&mut client, 11).await, b"still there");
}

#[tokio::test]
async fn connect_to_a_refused_destination_gets_403_and_one_event() {
    let (echo, accepted) = echo_server().await;
    let fixture = Fixture::start(&allow(&["api.anthropic.com:443".into()])).await;
    let answer = fixture
        .exchange(&format!("CONNECT {echo} HTTP/1.1\r\n\r\n"))
        .await;
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
    assert!(
        answer.ends_with(&format!("{echo} is not in allow_hosts\n")),
        "{answer}"
    );
    assert_eq!(
        fixture.refused(),
        vec![Refused {
            host: "127.0.0.1".into(),
            port: echo.port(),
            reason: "not in allow_hosts".into()
        }]
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "no connection was made");

    let answer = fixture
        .exchange("CONNECT API.Anthropic.com.evil.net:443 HTTP/1.1\r\n\r\n")
        .await;
    assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
    assert_eq!(fixture.refused().len(), 2);
    assert_eq!(fixture.refused()[1].host, "api.anthropic.com.evil.net");
}

#[tokio::test]
async fn plain_get_is_forwarded_in_origin_form() {
    let (origin, mut received) = http_server().await;
    let fixture = Fixture::start(&allow(&[format!("127.0.0.1:{}", origin.port())])).await;
    let answer = fixture
        .exchange(&format!(
            "GET http://{origin}/hello?x=1 HTTP/1.1\r\nHost: {origin}\r\nProxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n"
        ))
        .await;
    assert_eq!(
        answer,
        "HTTP/1.1 200 OK\r\nContent-Length: 17\r\nConnection: close\r\n\r\nhello from origin"
    );
    let request = within("the origin", received.recv())
        .await
        .expect("a request");
    assert_eq!(
        request.head,
        format!(
            "GET /hello?x=1 HTTP/1.1\r\nHost: {origin}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        )
    );
    assert!(fixture.refused().is_empty());
}

#[tokio::test]
async fn request_bodies_arrive_whole_by_length_and_chunked() {
    let (origin, mut received) = http_server().await;
    let fixture = Fixture::start(&allow(&[format!("127.0.0.1:{}", origin.port())])).await;

    let answer = fixture
        .exchange(&format!(
            "POST http://{origin}/a HTTP/1.1\r\nHost: {origin}\r\nContent-Length: 11\r\n\r\nhello world"
        ))
        .await;
    assert!(answer.ends_with("got 11 bytes"), "{answer}");
    assert_eq!(
        within("the origin", received.recv())
            .await
            .expect("request")
            .body,
        b"hello world"
    );

    let chunked = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let answer = fixture
        .exchange(&format!(
            "POST http://{origin}/b HTTP/1.1\r\nHost: {origin}\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}"
        ))
        .await;
    assert!(
        answer.ends_with(&format!("got {} bytes", chunked.len())),
        "{answer}"
    );
    let request = within("the origin", received.recv())
        .await
        .expect("request");
    assert!(
        request.head.contains("Transfer-Encoding: chunked\r\n"),
        "{}",
        request.head
    );
    assert_eq!(request.body, chunked.as_bytes());
}

#[tokio::test]
async fn refused_plain_get_gets_403_with_the_default_port() {
    let fixture = Fixture::start(&allow(&["127.0.0.1:1".into()])).await;
    let answer = fixture
        .exchange("GET http://Example.COM/x HTTP/1.1\r\nHost: example.com\r\n\r\n")
        .await;
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
    assert_eq!(
        fixture.refused(),
        vec![Refused {
            host: "example.com".into(),
            port: 80,
            reason: "not in allow_hosts".into()
        }]
    );
}

#[tokio::test]
async fn an_unreachable_allowed_destination_gets_502() {
    let (_closed, port) = closed_port();
    let fixture = Fixture::start(&allow(&[format!("127.0.0.1:{port}")])).await;
    let answer = fixture
        .exchange(&format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n"))
        .await;
    assert!(
        answer.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
        "{answer}"
    );
    let answer = fixture
        .exchange(&format!("GET http://127.0.0.1:{port}/ HTTP/1.1\r\n\r\n"))
        .await;
    assert!(
        answer.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
        "{answer}"
    );
    assert!(fixture.refused().is_empty(), "unreachable is not refused");
}

#[tokio::test]
async fn malformed_requests_get_400_and_no_event() {
    let fixture = Fixture::start(&allow(&["example.com".into()])).await;
    for request in [
        "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        "GET https://example.com/ HTTP/1.1\r\n\r\n",
        "CONNECT example.com HTTP/1.1\r\n\r\n",
        "POST http://example.com/ HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        let answer = fixture.exchange(request).await;
        assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{request:?}: {answer}");
    }
    assert!(fixture.refused().is_empty());
}

/// On real time with a short head timeout: on paused time, the clock could jump to the
/// test's own deadline while the proxy had yet to see the connection (flaky in a full run).
#[tokio::test]
async fn a_client_without_a_complete_head_is_dropped_after_the_head_timeout() {
    let head_timeout = Duration::from_millis(300);
    let options = ProxyOptions {
        head_timeout,
        ..ProxyOptions::default()
    };
    let fixture = Fixture::start_with(&allow(&["example.com".into()]), options).await;
    let mut client = fixture.client().await;
    let started = tokio::time::Instant::now();
    client
        .write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: exa")
        .await
        .expect("send");
    let mut rest = Vec::new();
    let read = within("the drop", client.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(0)),
        "dropped without an answer: {read:?} {rest:?}"
    );
    assert!(started.elapsed() >= head_timeout, "{:?}", started.elapsed());
}

#[tokio::test]
async fn the_socket_is_private_and_drop_removes_it_and_ends_tunnels() {
    let (echo, _) = echo_server().await;
    let fixture = Fixture::start(&allow(&[format!("127.0.0.1:{}", echo.port())])).await;
    let socket = fixture.proxy.socket().to_path_buf();
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let mut client = fixture.client().await;
    client
        .write_all(format!("CONNECT {echo} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut buf = BytesMut::new();
    assert!(response_head(&mut client, &mut buf)
        .await
        .starts_with("HTTP/1.1 200 "));

    let Fixture { proxy, _dir, .. } = fixture;
    drop(proxy);
    assert!(!socket.exists(), "the socket file is gone");
    assert_eq!(
        read_all(&mut client).await,
        "",
        "the open tunnel was closed"
    );
    assert!(UnixStream::connect(&socket).await.is_err());
}

#[tokio::test]
async fn a_stale_socket_is_replaced_but_a_live_one_or_a_file_is_not() {
    let fixture = Fixture::start(&allow(&[])).await;
    let path = fixture.proxy.socket().to_path_buf();
    let list = || AllowList::parse(&[]).expect("empty list");
    let ignore: OnRefused = Arc::new(|_| {});
    let live = EgressProxy::start(&path, list(), ignore.clone()).await;
    assert!(
        matches!(live, Err(ProxyError::SocketInUse { .. })),
        "{:?}",
        live.err()
    );

    let stale = path.with_file_name("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    let replaced = EgressProxy::start(&stale, list(), ignore.clone())
        .await
        .expect("stale socket replaced");
    assert!(UnixStream::connect(replaced.socket()).await.is_ok());

    let file = path.with_file_name("file");
    std::fs::write(&file, "x").expect("write");
    let refused = EgressProxy::start(&file, list(), ignore).await;
    assert!(
        matches!(refused, Err(ProxyError::NotASocket { .. })),
        "{:?}",
        refused.err()
    );
    assert!(file.exists());
}

#[tokio::test]
async fn bridge_and_forward_carry_tcp_through_the_proxy() {
    let (echo, _) = echo_server().await;
    let (origin, _received) = http_server().await;
    let (_closed, refused_port) = closed_port();
    let fixture = Fixture::start(&allow(&[
        format!("127.0.0.1:{}", echo.port()),
        format!("127.0.0.1:{}", origin.port()),
    ]))
    .await;
    let socket = fixture.proxy.socket().to_path_buf();
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("addr");

    let forward = Relay::forward(loopback, socket.clone(), "127.0.0.1", echo.port())
        .await
        .expect("forward binds");
    let forward_addr = forward.local_addr().expect("addr");
    let _forwarding = AbortOnDrop(tokio::spawn(forward.run()));
    let mut tcp = TcpStream::connect(forward_addr).await.expect("connect");
    tcp.write_all(b"through the tunnel").await.expect("send");
    assert_eq!(read_exactly(&mut tcp, 18).await, b"through the tunnel");

    let bridge = Relay::bridge(loopback, socket.clone())
        .await
        .expect("bridge binds");
    let bridge_addr = bridge.local_addr().expect("addr");
    let _bridging = AbortOnDrop(tokio::spawn(bridge.run()));
    let mut tcp = TcpStream::connect(bridge_addr).await.expect("connect");
    tcp.write_all(format!("GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes())
        .await
        .expect("send");
    assert!(read_all(&mut tcp)
        .await
        .ends_with("\r\n\r\nhello from origin"));

    // A refused tunnel closes the client's connection.
    let refusing = Relay::forward(loopback, socket, "127.0.0.1", refused_port)
        .await
        .expect("forward binds");
    let refusing_addr = refusing.local_addr().expect("addr");
    let _refusing = AbortOnDrop(tokio::spawn(refusing.run()));
    let mut tcp = TcpStream::connect(refusing_addr).await.expect("connect");
    let mut rest = Vec::new();
    let read = within("the refused tunnel", tcp.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "nothing but a close: {read:?} {rest:?}");
    assert_eq!(
        fixture.refused(),
        vec![Refused {
            host: "127.0.0.1".into(),
            port: refused_port,
            reason: "not in allow_hosts".into()
        }]
    );
}

#[tokio::test]
async fn forward_accepts_ipv6_and_names_but_not_junk() {
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let proxy = PathBuf::from("/nonexistent");
    for ok in ["::1", "[::1]", "model.internal", "127.0.0.1"] {
        assert!(
            Relay::forward(loopback, proxy.clone(), ok, 80)
                .await
                .is_ok(),
            "{ok}"
        );
    }
    for bad in ["", "a b", "host:80", "[::1"] {
        let err = Relay::forward(loopback, proxy.clone(), bad, 80)
            .await
            .expect_err(bad);
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad}");
    }
}

struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `curl` is whether the proxy speaks HTTP as a real client expects: it is required under
/// `CI=true` and skipped on a machine without it.
fn require_curl() -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("curl").is_file()));
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "curl is required under CI=true but is not installed"
        );
        eprintln!("skipping: curl is not installed");
    }
    found
}

/// Runs curl through `proxy` for `url`; returns (HTTP status, body).
async fn curl(proxy: SocketAddr, extra: &[&str], url: &str) -> (String, String) {
    let mut command = tokio::process::Command::new("curl");
    command
        .args(["--silent", "--show-error", "--max-time", "20"])
        .args(["--proxy", &format!("http://{proxy}")])
        .args(["--write-out", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        // So a NO_PROXY of the environment cannot make curl bypass the proxy.
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .kill_on_drop(true);
    let output = within("curl", command.output()).await.expect("curl runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (status.to_string(), body.to_string())
}

#[tokio::test]
async fn curl_speaks_to_the_proxy_through_the_bridge() {
    if !require_curl() {
        return;
    }
    let (origin, mut received) = http_server().await;
    let (_closed, refused_port) = closed_port();
    let fixture = Fixture::start(&allow(&[format!("127.0.0.1:{}", origin.port())])).await;
    let bridge = Relay::bridge(
        "127.0.0.1:0".parse().expect("addr"),
        fixture.proxy.socket().to_path_buf(),
    )
    .await
    .expect("bridge binds");
    let bridge_addr = bridge.local_addr().expect("addr");
    let _bridging = AbortOnDrop(tokio::spawn(bridge.run()));

    let (status, body) = curl(bridge_addr, &[], &format!("http://{origin}/plain")).await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("200", "hello from origin")
    );
    let request = within("the origin", received.recv())
        .await
        .expect("request");
    assert!(
        request.head.starts_with("GET /plain HTTP/1.1\r\n")
            && request.head.contains("Connection: close\r\n"),
        "came through the proxy: {}",
        request.head
    );

    let (status, body) = curl(
        bridge_addr,
        &["--proxytunnel", "--data-binary", "tunnelled"],
        &format!("http://{origin}/tunnel"),
    )
    .await;
    assert_eq!((status.as_str(), body.as_str()), ("200", "got 9 bytes"));
    let request = within("the origin", received.recv())
        .await
        .expect("request");
    assert!(
        request.head.starts_with("POST /tunnel HTTP/1.1\r\n"),
        "{}",
        request.head
    );

    let (status, body) = curl(
        bridge_addr,
        &[],
        &format!("http://127.0.0.1:{refused_port}/"),
    )
    .await;
    assert_eq!(status, "403");
    assert!(body.contains("is not in allow_hosts"), "{body}");
    assert_eq!(fixture.refused().len(), 1);
}
