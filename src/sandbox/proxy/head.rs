//! Just enough HTTP/1.1 for a forward proxy: reading a message head, parsing request and
//! status lines and headers strictly (anything ambiguous is refused, so the proxy and the
//! origin cannot disagree about where a request ends), rewriting hop-by-hop headers, and
//! copying a request body by its framing.

use bytes::BytesMut;
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt,
};

use super::allow::{parse_authority, Host};

/// The largest request or response head the proxy reads.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The longest chunk-size or trailer line of a chunked body.
const MAX_CHUNK_LINE_BYTES: usize = 4 * 1024;

/// Why no head could be read.
#[derive(Debug)]
pub(crate) enum HeadError {
    /// The peer closed (or failed) before the head was complete.
    Closed,
    /// The head is larger than `MAX_HEAD_BYTES`.
    TooLarge,
}

/// Reads from `reader` into `buf` until it holds a whole head (up to and including the empty
/// line), splits the head off and returns it; bytes read past the head stay in `buf`.
pub(crate) async fn read_head<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
) -> Result<BytesMut, HeadError> {
    let mut scanned: usize = 0;
    loop {
        // Re-scan the last three bytes too: the terminator may straddle two reads.
        let from = scanned.saturating_sub(3);
        if let Some(at) = find(&buf[from..], b"\r\n\r\n") {
            return Ok(buf.split_to(from + at + 4));
        }
        scanned = buf.len();
        if buf.len() >= MAX_HEAD_BYTES {
            return Err(HeadError::TooLarge);
        }
        buf.reserve(4096);
        match reader.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(HeadError::Closed),
            Ok(_) => {}
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One header line, split at its colon; the value without surrounding spaces and tabs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) name: String,
    pub(crate) value: Vec<u8>,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestHead {
    pub(crate) method: String,
    pub(crate) target: String,
    /// `HTTP/1.0` or `HTTP/1.1`, as the client wrote it.
    pub(crate) version: String,
    pub(crate) headers: Vec<Header>,
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    pub(crate) status: u16,
    /// The status line as received, without its CRLF.
    pub(crate) status_line: Vec<u8>,
    pub(crate) headers: Vec<Header>,
}

/// Splits a head (ending in CRLF CRLF) into its first line and its headers.
fn split_head(head: &[u8]) -> Result<(&[u8], Vec<Header>), &'static str> {
    let body = head
        .strip_suffix(b"\r\n\r\n")
        .ok_or("the head does not end with an empty line")?;
    let mut lines = split_crlf(body);
    let first = lines.next().ok_or("the head is empty")?;
    let mut headers = Vec::new();
    for line in lines {
        if line.contains(&b'\r') || line.contains(&b'\n') || line.contains(&0) {
            return Err("a header has a bare CR, LF or NUL");
        }
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return Err("folded header lines are not accepted");
        }
        let colon = line
            .iter()
            .position(|b| *b == b':')
            .ok_or("a header line has no colon")?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|b| is_token_byte(*b)) {
            return Err("a header name is empty or not a token");
        }
        headers.push(Header {
            // Token bytes are ASCII, so this cannot fail.
            name: String::from_utf8_lossy(name).into_owned(),
            value: trim_ows(value).to_vec(),
        });
    }
    if first.contains(&b'\r') || first.contains(&b'\n') {
        return Err("the first line has a bare CR or LF");
    }
    Ok((first, headers))
}

fn split_crlf(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(bytes);
    std::iter::from_fn(move || {
        let text = rest?;
        match find(text, b"\r\n") {
            Some(at) => {
                rest = Some(&text[at + 2..]);
                Some(&text[..at])
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_version(text: &str) -> bool {
    text == "HTTP/1.1" || text == "HTTP/1.0"
}

impl RequestHead {
    /// Parses a request head as returned by `read_head`.
    ///
    /// # Errors
    /// A short reason, sent to the client in a 400.
    pub(crate) fn parse(head: &[u8]) -> Result<RequestHead, &'static str> {
        let (line, headers) = split_head(head)?;
        let line = std::str::from_utf8(line).map_err(|_| "the request line is not ASCII")?;
        let mut parts = line.split(' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("the request line is not `METHOD target HTTP/1.1`");
        };
        if method.is_empty() || !method.bytes().all(is_token_byte) {
            return Err("the method is not a token");
        }
        if target.is_empty() || !target.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the request target is empty or has control characters");
        }
        if !is_version(version) {
            return Err("only HTTP/1.0 and HTTP/1.1 are spoken here");
        }
        Ok(RequestHead {
            method: method.to_string(),
            target: target.to_string(),
            version: version.to_string(),
            headers,
        })
    }
}

impl ResponseHead {
    /// Parses a response head as returned by `read_head`.
    ///
    /// # Errors
    /// A short reason (the proxy answers 502).
    pub(crate) fn parse(head: &[u8]) -> Result<ResponseHead, &'static str> {
        let (line, headers) = split_head(head)?;
        let bad = "the status line is not `HTTP/1.1 NNN reason`";
        let version = line.get(..8).ok_or(bad)?;
        let code = line.get(9..12).ok_or(bad)?;
        if !(version == b"HTTP/1.1" || version == b"HTTP/1.0")
            || line.get(8) != Some(&b' ')
            || !code.iter().all(u8::is_ascii_digit)
            || !(line.len() == 12 || line.get(12) == Some(&b' '))
        {
            return Err(bad);
        }
        let status = std::str::from_utf8(code)
            .ok()
            .and_then(|c| c.parse().ok())
            .ok_or(bad)?;
        Ok(ResponseHead {
            status,
            status_line: line.to_vec(),
            headers,
        })
    }
}

/// All values of one header (case-insensitive name).
fn values<'a>(headers: &'a [Header], name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_slice())
}

/// The comma-separated elements of all values of one header, lower-cased, empty ones dropped.
fn list_elements(headers: &[Header], name: &str) -> Vec<String> {
    values(headers, name)
        .flat_map(|v| v.split(|b| *b == b','))
        .map(|e| String::from_utf8_lossy(trim_ows(e)).to_ascii_lowercase())
        .filter(|e| !e.is_empty())
        .collect()
}

/// Where the request's target is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Destination {
    pub(crate) host: Host,
    pub(crate) port: u16,
}

impl Destination {
    /// `host:port` with IPv6 in brackets.
    pub(crate) fn authority(&self) -> String {
        format!("{}:{}", self.host.for_authority(), self.port)
    }
}

/// What the client asked the proxy to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// `CONNECT host:port`: a tunnel.
    Connect(Destination),
    /// `GET http://host[:port]/path`: one plain HTTP request.
    Absolute {
        destination: Destination,
        /// The authority as written in the URL (the new `Host` header).
        host_header: String,
        /// The path and query, at least `/`.
        origin_form: String,
    },
}

impl Target {
    /// Reads the target of a request to a forward proxy.
    ///
    /// # Errors
    /// A short reason, sent to the client in a 400.
    pub(crate) fn of(request: &RequestHead) -> Result<Target, &'static str> {
        if request.method == "CONNECT" {
            let (host, port) = parse_authority(&request.target)?;
            let port = port.ok_or("CONNECT needs host:port")?;
            return Ok(Target::Connect(Destination { host, port }));
        }
        let scheme_end = request
            .target
            .find("://")
            .ok_or("a proxy needs an absolute URL (http://host/path) or CONNECT")?;
        let scheme = &request.target[..scheme_end];
        if !scheme.eq_ignore_ascii_case("http") {
            return Err("only http:// URLs are forwarded; use CONNECT for https");
        }
        let rest = &request.target[scheme_end + 3..];
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        if authority.contains('@') {
            return Err("user information in the URL is not accepted");
        }
        let (host, port) = parse_authority(authority)?;
        let path = path.split('#').next().unwrap_or_default();
        let origin_form = match path.chars().next() {
            Some('/') => path.to_string(),
            _ => format!("/{path}"),
        };
        Ok(Target::Absolute {
            destination: Destination {
                host,
                port: port.unwrap_or(80),
            },
            host_header: authority.to_string(),
            origin_form,
        })
    }

    pub(crate) fn destination(&self) -> &Destination {
        match self {
            Target::Connect(d) | Target::Absolute { destination: d, .. } => d,
        }
    }
}

/// How a request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

impl BodyFraming {
    /// The framing of a request body (RFC 9112 §6.3), refusing the ambiguous cases that
    /// enable request smuggling: both Transfer-Encoding and Content-Length, a
    /// Transfer-Encoding that does not end in `chunked`, differing Content-Lengths.
    ///
    /// # Errors
    /// A short reason, sent to the client in a 400.
    pub(crate) fn of_request(request: &RequestHead) -> Result<BodyFraming, &'static str> {
        let codings = list_elements(&request.headers, "transfer-encoding");
        let lengths: Vec<&[u8]> = values(&request.headers, "content-length").collect();
        if !codings.is_empty() {
            if !lengths.is_empty() {
                return Err("both Transfer-Encoding and Content-Length");
            }
            if codings.last().map(String::as_str) != Some("chunked") {
                return Err("a Transfer-Encoding must end with chunked");
            }
            return Ok(BodyFraming::Chunked);
        }
        let Some(first) = lengths.first() else {
            return Ok(BodyFraming::None);
        };
        if lengths.iter().any(|l| l != first)
            || first.is_empty()
            || !first.iter().all(u8::is_ascii_digit)
        {
            return Err("a bad or repeated Content-Length");
        }
        std::str::from_utf8(first)
            .ok()
            .and_then(|l| l.parse().ok())
            .map(BodyFraming::Length)
            .ok_or("a bad Content-Length")
    }
}

/// Headers meant for one hop only, never passed on, plus whatever `Connection` names.
fn hop_by_hop(headers: &[Header]) -> Vec<String> {
    let mut names: Vec<String> = [
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "upgrade",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for named in list_elements(headers, "connection") {
        // Framing stays: the body is passed through as received.
        if named != "transfer-encoding" && named != "content-length" {
            names.push(named);
        }
    }
    names
}

/// Appends the headers that are not hop-by-hop, then `Connection: close`, then the empty line.
/// `drop_also` names more headers to leave out (lower-case).
fn write_end_to_end(headers: &[Header], drop_also: &[&str], out: &mut Vec<u8>) {
    let hop = hop_by_hop(headers);
    for header in headers {
        let lower = header.name.to_ascii_lowercase();
        if hop.contains(&lower) || drop_also.contains(&lower.as_str()) {
            continue;
        }
        out.extend_from_slice(header.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&header.value);
        out.extend_from_slice(b"\r\n");
    }
    // One request per connection: both ends learn that this connection ends with it.
    out.extend_from_slice(b"Connection: close\r\n\r\n");
}

/// The head to send upstream: origin-form request line, the URL's authority as `Host`
/// (RFC 9112 §3.2.2: a proxy replaces the client's Host), hop-by-hop headers dropped.
pub(crate) fn upstream_request(
    request: &RequestHead,
    host_header: &str,
    origin_form: &str,
) -> Vec<u8> {
    let mut out = format!(
        "{} {} {}\r\nHost: {}\r\n",
        request.method, origin_form, request.version, host_header
    )
    .into_bytes();
    write_end_to_end(&request.headers, &["host"], &mut out);
    out
}

/// The head to send the client: the status line as received, hop-by-hop headers dropped,
/// `Connection: close` added.
pub(crate) fn downstream_response(response: &ResponseHead) -> Vec<u8> {
    let mut out = response.status_line.clone();
    out.extend_from_slice(b"\r\n");
    write_end_to_end(&response.headers, &[], &mut out);
    out
}

/// Copies one request body of the given framing from `reader` to `writer`, bytes unchanged.
///
/// # Errors
/// I/O errors, an early end of the body, or a malformed chunked body.
pub(crate) async fn copy_body<R, W>(
    framing: BodyFraming,
    reader: &mut R,
    writer: &mut W,
) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match framing {
        BodyFraming::None => Ok(()),
        BodyFraming::Length(length) => copy_exactly(length, reader, writer).await,
        BodyFraming::Chunked => copy_chunked(reader, writer).await,
    }
}

async fn copy_exactly<R, W>(length: u64, reader: &mut R, writer: &mut W) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let copied = tokio::io::copy_buf(&mut reader.take(length), writer).await?;
    if copied == length {
        Ok(())
    } else {
        Err(std::io::ErrorKind::UnexpectedEof.into())
    }
}

async fn copy_chunked<R, W>(reader: &mut R, writer: &mut W) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    loop {
        let line = read_crlf_line(reader).await?;
        writer.write_all(&line).await?;
        let size_text = line[..line.len() - 2]
            .split(|b| *b == b';')
            .next()
            .map(trim_ows)
            .unwrap_or_default();
        if size_text.is_empty()
            || size_text.len() > 15
            || !size_text.iter().all(u8::is_ascii_hexdigit)
        {
            return Err(invalid("a bad chunk size"));
        }
        let size = std::str::from_utf8(size_text)
            .ok()
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .ok_or_else(|| invalid("a bad chunk size"))?;
        if size == 0 {
            // Trailer fields, then the empty line that ends the body.
            loop {
                let line = read_crlf_line(reader).await?;
                writer.write_all(&line).await?;
                if line == b"\r\n" {
                    return Ok(());
                }
            }
        }
        copy_exactly(size, reader, writer).await?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf).await?;
        if &crlf != b"\r\n" {
            return Err(invalid("a chunk does not end with CRLF"));
        }
        writer.write_all(&crlf).await?;
    }
}

/// One line ending in CRLF, at most `MAX_CHUNK_LINE_BYTES` long.
async fn read_crlf_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    loop {
        let (done, used) = {
            let available = reader.fill_buf().await?;
            if available.is_empty() {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            match available.iter().position(|b| *b == b'\n') {
                Some(at) => {
                    line.extend_from_slice(&available[..=at]);
                    (true, at + 1)
                }
                None => {
                    line.extend_from_slice(available);
                    (false, available.len())
                }
            }
        };
        reader.consume(used);
        if line.len() > MAX_CHUNK_LINE_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a chunk line is too long",
            ));
        }
        if done {
            break;
        }
    }
    if line.ends_with(b"\r\n") {
        Ok(line)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a chunk line ends without CR",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> Result<RequestHead, &'static str> {
        RequestHead::parse(text.as_bytes())
    }

    #[tokio::test]
    async fn read_head_keeps_the_bytes_after_the_head() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client
            .write_all(b"CONNECT a:1 HTTP/1.1\r\n\r")
            .await
            .expect("write");
        let reading = tokio::spawn(async move {
            let mut buf = BytesMut::new();
            let head = read_head(&mut server, &mut buf).await;
            (head.map(|h| h.to_vec()), buf)
        });
        client.write_all(b"\nearly").await.expect("write");
        let (head, rest) = reading.await.expect("join");
        assert_eq!(head.expect("head"), b"CONNECT a:1 HTTP/1.1\r\n\r\n");
        assert_eq!(&rest[..], b"early");
    }

    #[tokio::test]
    async fn read_head_stops_at_the_size_limit_and_at_eof() {
        let mut big = std::io::Cursor::new(vec![b'a'; MAX_HEAD_BYTES + 10]);
        assert!(matches!(
            read_head(&mut big, &mut BytesMut::new()).await,
            Err(HeadError::TooLarge)
        ));
        let mut short = std::io::Cursor::new(b"GET http://a/ HTTP/1.1\r\n".to_vec());
        assert!(matches!(
            read_head(&mut short, &mut BytesMut::new()).await,
            Err(HeadError::Closed)
        ));
    }

    #[test]
    fn request_heads_parse_strictly() {
        let ok = request(
            "GET http://Example.com:8080/a?b=1#frag HTTP/1.1\r\nHost: x\r\nX-A:  v \r\n\r\n",
        )
        .expect("valid");
        assert_eq!(ok.method, "GET");
        assert_eq!(
            ok.headers[1],
            Header {
                name: "X-A".into(),
                value: b"v".to_vec()
            }
        );
        assert_eq!(
            Target::of(&ok),
            Ok(Target::Absolute {
                destination: Destination {
                    host: Host::Name("example.com".into()),
                    port: 8080
                },
                host_header: "Example.com:8080".into(),
                origin_form: "/a?b=1".into(),
            })
        );
        for bad in [
            "GET http://a/ HTTP/2\r\n\r\n",
            "GET  http://a/ HTTP/1.1\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nX : a\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nX: a\nY: b\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nno colon\r\n\r\n",
            "G(T http://a/ HTTP/1.1\r\n\r\n",
        ] {
            assert!(request(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn targets_are_connect_or_absolute_http() {
        let target = |line: &str| Target::of(&request(&format!("{line}\r\n\r\n")).expect("head"));
        assert_eq!(
            target("CONNECT [::1]:443 HTTP/1.1"),
            Ok(Target::Connect(Destination {
                host: Host::Ip("::1".parse().expect("ip")),
                port: 443
            }))
        );
        let Ok(Target::Absolute {
            destination,
            origin_form,
            ..
        }) = target("GET http://h?q HTTP/1.0")
        else {
            panic!("absolute form")
        };
        assert_eq!((destination.port, origin_form.as_str()), (80, "/?q"));
        for bad in [
            "CONNECT example.com HTTP/1.1",
            "GET / HTTP/1.1",
            "GET https://example.com/ HTTP/1.1",
            "GET http://user:pw@example.com/ HTTP/1.1",
            "GET http://exa_mple com/ HTTP/1.1",
            "GET http://:80/ HTTP/1.1",
        ] {
            assert!(
                request(&format!("{bad}\r\n\r\n"))
                    .and_then(|r| Target::of(&r))
                    .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn body_framing_refuses_ambiguity() {
        let framing = |headers: &str| {
            BodyFraming::of_request(
                &request(&format!("POST http://a/ HTTP/1.1\r\n{headers}\r\n")).expect("head"),
            )
        };
        assert_eq!(framing(""), Ok(BodyFraming::None));
        assert_eq!(framing("Content-Length: 5\r\n"), Ok(BodyFraming::Length(5)));
        assert_eq!(
            framing("content-length: 5\r\nContent-Length: 5\r\n"),
            Ok(BodyFraming::Length(5))
        );
        assert_eq!(
            framing("Transfer-Encoding: gzip, Chunked\r\n"),
            Ok(BodyFraming::Chunked)
        );
        for bad in [
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: 5, 5\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            "Transfer-Encoding: chunked, gzip\r\n",
        ] {
            assert!(framing(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rewritten_heads_drop_hop_by_hop_headers() {
        let req = request(
            "GET http://a:81/p HTTP/1.1\r\nHost: wrong\r\nProxy-Connection: keep-alive\r\nConnection: X-Secret, keep-alive\r\nX-Secret: 1\r\nProxy-Authorization: Basic eA==\r\nAccept: */*\r\n\r\n",
        )
        .expect("head");
        let out = String::from_utf8(upstream_request(&req, "a:81", "/p")).expect("ascii");
        assert_eq!(
            out,
            "GET /p HTTP/1.1\r\nHost: a:81\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        let resp = ResponseHead::parse(b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n")
            .expect("response");
        assert_eq!(resp.status, 200);
        assert_eq!(
            String::from_utf8(downstream_response(&resp)).expect("ascii"),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            ResponseHead::parse(b"HTTP/1.1 204\r\n\r\n").map(|r| r.status),
            Ok(204)
        );
        assert!(ResponseHead::parse(b"HTTP/1.1 2000 OK\r\n\r\n").is_err());
        assert!(ResponseHead::parse(b"SSH-2.0-x\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn chunked_bodies_are_copied_to_their_end_only() {
        let body = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: t\r\n\r\n";
        let mut input = body.to_vec();
        input.extend_from_slice(b"NEXT REQUEST");
        let mut reader = tokio::io::BufReader::new(std::io::Cursor::new(input));
        let mut out = Vec::new();
        copy_body(BodyFraming::Chunked, &mut reader, &mut out)
            .await
            .expect("copy");
        assert_eq!(out, body);
        for bad in [
            &b"x\r\n"[..],
            b"4\r\nWikiXX",
            b"4\nWiki\r\n0\r\n\r\n",
            b"4\r\nWi",
        ] {
            let mut reader = tokio::io::BufReader::new(std::io::Cursor::new(bad.to_vec()));
            assert!(
                copy_body(BodyFraming::Chunked, &mut reader, &mut Vec::new())
                    .await
                    .is_err()
            );
        }
        let mut reader = tokio::io::BufReader::new(std::io::Cursor::new(b"hello world".to_vec()));
        let mut out = Vec::new();
        copy_body(BodyFraming::Length(5), &mut reader, &mut out)
            .await
            .expect("copy");
        assert_eq!(out, b"hello");
        let mut reader = tokio::io::BufReader::new(std::io::Cursor::new(b"hel".to_vec()));
        assert!(
            copy_body(BodyFraming::Length(5), &mut reader, &mut Vec::new())
                .await
                .is_err()
        );
    }
}
