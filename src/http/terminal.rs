//! `GET /api/v1/sessions/{id}/terminal`: a session's terminal over a WebSocket, for the
//! dashboard's xterm.js.
//!
//! Frames: the server sends the terminal's bytes as **binary** messages, and one text message
//! `{"type":"exit","reason":…}` before it closes. The client sends typed bytes as binary
//! messages (or text that is not a control frame) and control frames as JSON text:
//! `{"type":"resize","cols":…,"rows":…}`, `{"type":"input","data":…}`.
//!
//! What is attached comes from the session's runtime (`Runtime::attach_info`), so this works
//! for every runtime without knowing its internals:
//!
//! - `tmux`: the runtime's attach command (`tmux -L SOCKET attach-session -t NAME`) runs under
//!   a pseudo-terminal owned by this connection; bytes flow both ways and resizes set the
//!   pty's window size (tmux redraws). Closing the socket ends that tmux client only: the
//!   agent's session goes on.
//! - `process`: the agent has no terminal, only a log file and a stdin pipe. The log's tail
//!   and then its new bytes are streamed (woken by the process's one output watcher,
//!   `actors::watch`, no polling loop); typed text is
//!   edited locally (echo, backspace) and each line is delivered with `send_message`, exactly
//!   like `POST /sessions/{id}/send`.
//!
//! Nothing here blocks a thread: the pty descriptor is non-blocking and driven by tokio's
//! reactor, the log follower waits on the shared output watcher, and each connection's relay is its own task, which ends (and kills its
//! attach client) when the socket goes away.

use std::io::{self, ErrorKind};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix::Addr;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use bytes::Bytes;
use serde::Deserialize;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::error::ApiError;
use super::AppState;
use crate::actors::supervisor::messages::SendToSession;
use crate::actors::supervisor::FleetSupervisor;
use crate::actors::watch::{OutputFollow, OutputWatch};
use crate::plugins::AttachInfo;
use crate::store::SessionId;

/// How much of a process log a new viewer sees first.
const LOG_BACKLOG: u64 = 64 * 1024;
/// Largest read from the pty or the log per frame.
const READ_CHUNK: usize = 16 * 1024;
/// Frames buffered towards the socket before the relay waits (back-pressure on the pty).
const OUT_BUFFER: usize = 64;
/// Input buffered towards the pty before the relay stops taking more.
const MAX_PENDING_INPUT: usize = 256 * 1024;
/// Safety net for the log follower: re-check the file this often even without an inotify
/// wake-up (rotation, or a filesystem without inotify).
const LOG_RECHECK: Duration = Duration::from_secs(2);
/// Environment passed to an attach client; everything else (Flotilla's tokens) is dropped.
const ATTACH_ENV: [&str; 6] = ["PATH", "HOME", "USER", "LANG", "TMPDIR", "TMUX_TMPDIR"];

/// What the browser sends, after decoding.
#[derive(Debug, PartialEq)]
pub enum Input {
    /// Typed bytes.
    Data(Bytes),
    /// The terminal's new size.
    Resize {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
}

/// What the relay sends to the browser.
#[derive(Debug)]
enum Output {
    /// Terminal bytes.
    Data(Bytes),
    /// The attachment ended, and why.
    Exit(String),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Control {
    Resize { cols: u16, rows: u16 },
    Input { data: String },
}

/// Decodes a text frame: a JSON control frame, or else typed text.
pub fn decode_text(text: &str) -> Input {
    match serde_json::from_str::<Control>(text) {
        Ok(Control::Resize { cols, rows }) => Input::Resize {
            cols: cols.clamp(2, 1000),
            rows: rows.clamp(2, 1000),
        },
        Ok(Control::Input { data }) => Input::Data(Bytes::from(data)),
        Err(_) => Input::Data(Bytes::copy_from_slice(text.as_bytes())),
    }
}

/// Initial size of a pty before the browser says its own.
#[derive(Debug, Deserialize)]
pub struct TerminalQuery {
    /// Columns.
    pub cols: Option<u16>,
    /// Rows.
    pub rows: Option<u16>,
    /// Browser clients' token (see auth).
    #[allow(dead_code)]
    access_token: Option<String>,
}

/// Opens a session's terminal (see the module docs for the frames).
///
/// # Errors
/// 404 unknown session; 409 when it has no runtime (not started, or ended) or its runtime
/// offers nothing to attach to; 500 when the attach client cannot start.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/terminal", params(("id" = String, Path)),
    responses((status = 101, description = "switching protocols"), (status = 401),
        (status = 404), (status = 409)))]
pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    id: web::Path<String>,
    q: web::Query<TerminalQuery>,
) -> Result<HttpResponse, actix_web::Error> {
    let id = id.into_inner();
    let info = state
        .reads
        .attach(&SessionId(id.clone()))
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::Conflict(format!("session {id} has no runtime yet")))?;
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let (out_tx, out_rx) = mpsc::channel(OUT_BUFFER);
    let size = (q.cols.unwrap_or(80), q.rows.unwrap_or(24));
    // Start the attachment before upgrading, so a failure is a plain HTTP error.
    match attach_kind(&info)? {
        Attach::Pty(argv) => {
            let pty = PtyChild::spawn(&argv, size.0.clamp(2, 1000), size.1.clamp(2, 1000))
                .map_err(|e| {
                    tracing::warn!(error = %e, "terminal attach client did not start");
                    ApiError::Internal(format!("attach client did not start: {e}").into())
                })?;
            actix_web::rt::spawn(relay_pty(pty, in_rx, out_tx));
        }
        Attach::Log(path) => {
            let log = LogFollower::open(&path, &state.output_watch)
                .await
                .map_err(|e| {
                    ApiError::Conflict(format!("session {id} has no output log yet: {e}"))
                })?;
            actix_web::rt::spawn(relay_log(
                log,
                state.supervisor.clone(),
                SessionId(id),
                in_rx,
                out_tx,
            ));
        }
    }
    ws::start(
        TerminalSocket {
            input: in_tx,
            output: Some(out_rx),
            last_seen: Instant::now(),
        },
        &req,
        body,
    )
}

/// How to attach, decided from the runtime's attach info.
enum Attach {
    /// Run this command under a pty.
    Pty(Vec<String>),
    /// Follow this log and deliver lines as messages.
    Log(PathBuf),
}

fn attach_kind(info: &AttachInfo) -> Result<Attach, ApiError> {
    match info.kind.as_str() {
        "process" => Ok(Attach::Log(PathBuf::from(&info.target))),
        _ if !info.command.is_empty() => Ok(Attach::Pty(info.command.clone())),
        other => Err(ApiError::Conflict(format!(
            "runtime kind `{other}` offers no terminal"
        ))),
    }
}

// ---- the WebSocket side ---------------------------------------------------------------------

/// One browser terminal: forwards input to the relay task, output to the browser.
struct TerminalSocket {
    /// To the relay task; dropping it (when this actor stops) ends the relay.
    input: mpsc::UnboundedSender<Input>,
    /// From the relay task, until `started` turns it into a stream.
    output: Option<mpsc::Receiver<Output>>,
    /// For the heartbeat.
    last_seen: Instant,
}

impl Actor for TerminalSocket {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(rx) = self.output.take() {
            ctx.add_stream(ReceiverStream::new(rx));
        }
        super::ws::keep_alive(ctx, |s| s.last_seen);
    }
}

impl StreamHandler<Output> for TerminalSocket {
    fn handle(&mut self, out: Output, ctx: &mut Self::Context) {
        match out {
            Output::Data(b) => ctx.binary(b),
            Output::Exit(reason) => {
                ctx.text(serde_json::json!({"type": "exit", "reason": reason}).to_string());
                ctx.close(Some(ws::CloseCode::Normal.into()));
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for TerminalSocket {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_seen = Instant::now();
        let input = match msg {
            Ok(ws::Message::Binary(b)) => Input::Data(b),
            Ok(ws::Message::Text(t)) => decode_text(&t),
            Ok(ws::Message::Ping(p)) => {
                ctx.pong(&p);
                return;
            }
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
                return;
            }
            Err(_) => {
                ctx.stop();
                return;
            }
            _ => return,
        };
        if self.input.send(input).is_err() {
            ctx.stop();
        }
    }
}

// ---- tmux (or any attach command): a pseudo-terminal ------------------------------------

/// The master side of a pty, non-blocking, driven by tokio's reactor.
pub struct Pty {
    master: AsyncFd<OwnedFd>,
}

/// An attach client running under a pty whose master side we own.
pub struct PtyChild {
    /// The terminal.
    pub pty: Pty,
    /// The client (killed when dropped).
    pub child: tokio::process::Child,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn set_size(fd: RawFd, cols: u16, rows: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: `fd` is an open pty descriptor and `ws` lives across the call.
    cvt(unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) }).map(|_| ())
}

/// Opens a pty pair: (master, slave), both close-on-exec (the child gets the slave through
/// its stdio, which clears the flag on those copies only).
fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: plain syscalls; every descriptor returned is owned right away.
    unsafe {
        let m = cvt(libc::posix_openpt(
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        ))?;
        let master = OwnedFd::from_raw_fd(m);
        cvt(libc::grantpt(m))?;
        cvt(libc::unlockpt(m))?;
        let mut name = [0 as libc::c_char; 128];
        let r = libc::ptsname_r(m, name.as_mut_ptr(), name.len());
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        let s = cvt(libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        ))?;
        let slave = OwnedFd::from_raw_fd(s);
        let flags = cvt(libc::fcntl(m, libc::F_GETFL))?;
        cvt(libc::fcntl(m, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
        Ok((master, slave))
    }
}

impl PtyChild {
    /// Starts `argv` on a new pty of `cols`×`rows`, as a session leader with the pty as its
    /// controlling terminal, with `TERM=xterm-256color` and only [`ATTACH_ENV`] from ours.
    ///
    /// # Errors
    /// When the pty cannot be opened or the program cannot start.
    pub fn spawn(argv: &[String], cols: u16, rows: u16) -> io::Result<PtyChild> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "empty attach command"))?;
        let (master, slave) = open_pty()?;
        set_size(master.as_raw_fd(), cols, rows)?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(
                ATTACH_ENV
                    .iter()
                    .filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))),
            )
            .env("TERM", "xterm-256color")
            .stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave))
            .kill_on_drop(true);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        // `cmd` (holding the parent's slave copies) is dropped here, so the master sees EIO
        // once the child and its descendants close the terminal.
        drop(cmd);
        // SAFETY: `master` is an open pty master owned by the AsyncFd until it is dropped.
        let master = unsafe { AsyncFd::register(master) }.map_err(io::Error::from)?;
        Ok(PtyChild {
            pty: Pty { master },
            child,
        })
    }
}

impl Pty {
    /// Reads what the terminal printed; `Ok(0)` once it is closed.
    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.master.readable().await?;
            match guard.try_io(|fd| {
                // SAFETY: `buf` is valid for `buf.len()` bytes; `fd` is our open master.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }) {
                // Linux reports a closed slave side as EIO.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes some of `data` to the terminal; returns how much.
    async fn write(&self, data: &[u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.master.writable().await?;
            match guard.try_io(|fd| {
                // SAFETY: `data` is valid for `data.len()` bytes; `fd` is our open master.
                let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Sets the terminal's size (the attach client gets SIGWINCH and redraws).
    fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        set_size(self.master.as_raw_fd(), cols, rows)
    }
}

/// Relays between a pty child and the socket until either side ends; then kills the child.
async fn relay_pty(
    pty: PtyChild,
    mut input: mpsc::UnboundedReceiver<Input>,
    out: mpsc::Sender<Output>,
) {
    let PtyChild { pty, mut child } = pty;
    let mut buf = vec![0u8; READ_CHUNK];
    let mut pending: Vec<u8> = Vec::new();
    let reason = loop {
        tokio::select! {
            r = pty.read(&mut buf) => match r {
                Ok(0) => break "terminal closed".to_string(),
                Ok(n) => {
                    if out.send(Output::Data(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                        break String::new();
                    }
                }
                Err(e) => break format!("terminal read failed: {e}"),
            },
            w = pty.write(&pending), if !pending.is_empty() => match w {
                Ok(n) => { pending.drain(..n); }
                Err(e) => break format!("terminal write failed: {e}"),
            },
            i = input.recv(), if pending.len() < MAX_PENDING_INPUT => match i {
                Some(Input::Data(b)) => pending.extend_from_slice(&b),
                Some(Input::Resize { cols, rows }) => {
                    if let Err(e) = pty.resize(cols, rows) {
                        tracing::debug!(error = %e, "terminal resize failed");
                    }
                }
                None => break String::new(),
            },
            status = child.wait() => {
                // Drain what it printed last before saying it exited.
                while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(50), pty.read(&mut buf)).await {
                    if n == 0 || out.send(Output::Data(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                        break;
                    }
                }
                break match status {
                    Ok(s) => format!("attach client exited ({s})"),
                    Err(e) => format!("attach client lost: {e}"),
                };
            }
        }
    };
    let _ = child.start_kill();
    let _ = child.wait().await;
    if !reason.is_empty() {
        let _ = out.send(Output::Exit(reason)).await;
    }
}

// ---- process runtime: follow the log, deliver lines ------------------------------------

/// Streams a growing log file: its tail first, then whatever is appended.
struct LogFollower {
    path: PathBuf,
    file: tokio::fs::File,
    pos: u64,
    /// Wakes on changes, through the process's one output watcher (which the session's own
    /// actor uses too); the path is followed, so a rotated log keeps waking it.
    watch: OutputFollow,
}

impl LogFollower {
    async fn open(path: &Path, watch: &OutputWatch) -> io::Result<LogFollower> {
        // Followed before the first read, so a write right after it still wakes us.
        let follow = watch.follow(path);
        let file = tokio::fs::File::open(path).await?;
        let len = file.metadata().await?.len();
        Ok(LogFollower {
            path: path.to_path_buf(),
            file,
            pos: len.saturating_sub(LOG_BACKLOG),
            watch: follow,
        })
    }

    /// Bytes appended since the last call (the backlog on the first call); empty when none.
    async fn read_new(&mut self) -> io::Result<Vec<u8>> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let len = self.file.metadata().await?.len();
        if len < self.pos {
            // Truncated: start over.
            self.pos = 0;
        }
        if len == self.pos {
            // Replaced (rotated)? Follow the new file.
            if let Ok(m) = tokio::fs::metadata(&self.path).await {
                if m.len() < self.pos || m.len() > len {
                    self.file = tokio::fs::File::open(&self.path).await?;
                    self.pos = 0;
                }
            }
        }
        self.file.seek(io::SeekFrom::Start(self.pos)).await?;
        let mut out = Vec::new();
        (&mut self.file)
            .take((READ_CHUNK * 4) as u64)
            .read_to_end(&mut out)
            .await?;
        self.pos += out.len() as u64;
        Ok(out)
    }

    /// Waits for a change, or `LOG_RECHECK` at most (a filesystem without inotify).
    async fn changed(&self) {
        let _ = tokio::time::timeout(LOG_RECHECK, self.watch.changed()).await;
    }
}

/// A log has bare `\n` line ends (no terminal translated them): xterm needs `\r\n`.
fn crlf(data: &[u8], last_was_cr: &mut bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 16);
    for &b in data {
        if b == b'\n' && !*last_was_cr {
            out.push(b'\r');
        }
        out.push(b);
        *last_was_cr = b == b'\r';
    }
    out
}

/// Line editing for a runtime without a terminal: echoes what is typed, handles backspace
/// and Ctrl-C, drops escape sequences (arrows…), and yields each finished line.
#[derive(Debug, Default)]
pub struct LineEditor {
    line: String,
    /// Inside an escape sequence: skip until its final byte.
    escape: bool,
}

impl LineEditor {
    /// Feeds typed text; returns (bytes to echo, finished lines).
    pub fn feed(&mut self, typed: &str) -> (String, Vec<String>) {
        let mut echo = String::new();
        let mut lines = Vec::new();
        for ch in typed.chars() {
            if self.escape {
                // CSI/SS3 sequences end with a letter or `~`.
                if ch.is_ascii_alphabetic() || ch == '~' {
                    self.escape = false;
                }
                continue;
            }
            match ch {
                '\u{1b}' => self.escape = true,
                '\r' | '\n' => {
                    echo.push_str("\r\n");
                    lines.push(std::mem::take(&mut self.line));
                }
                '\u{7f}' | '\u{8}' => {
                    if self.line.pop().is_some() {
                        echo.push_str("\u{8} \u{8}");
                    }
                }
                '\u{3}' => {
                    self.line.clear();
                    echo.push_str("^C\r\n");
                }
                c if c.is_control() && c != '\t' => {}
                c => {
                    self.line.push(c);
                    echo.push(c);
                }
            }
        }
        (echo, lines)
    }
}

/// Relays a process runtime's log to the socket and typed lines to the agent.
async fn relay_log(
    mut log: LogFollower,
    supervisor: Addr<FleetSupervisor>,
    id: SessionId,
    mut input: mpsc::UnboundedReceiver<Input>,
    out: mpsc::Sender<Output>,
) {
    let mut editor = LineEditor::default();
    let mut last_was_cr = false;
    let reason = 'relay: loop {
        let more = match log.read_new().await {
            Ok(bytes) if !bytes.is_empty() => {
                let data = Bytes::from(crlf(&bytes, &mut last_was_cr));
                if out.send(Output::Data(data)).await.is_err() {
                    break String::new();
                }
                true
            }
            Ok(_) => false,
            Err(e) => break format!("output log unreadable: {e}"),
        };
        tokio::select! {
            // Typing goes first, even while a chatty agent keeps the log growing.
            biased;
            i = input.recv() => match i {
                Some(Input::Data(b)) => {
                    let (echo, lines) = editor.feed(&String::from_utf8_lossy(&b));
                    if !echo.is_empty() && out.send(Output::Data(Bytes::from(echo))).await.is_err() {
                        break String::new();
                    }
                    for text in lines.into_iter().filter(|l| !l.trim().is_empty()) {
                        let r = supervisor
                            .send(SendToSession { id: id.clone(), text, allow_restore: false, question: None })
                            .await;
                        let note = match r {
                            // Pending: stored and still being typed; it will arrive.
                            Ok(Ok(rep)) if rep.delivered || rep.pending => None,
                            Ok(Ok(_)) => Some("not confirmed".to_string()),
                            Ok(Err(e)) => Some(e.to_string()),
                            Err(e) => Some(e.to_string()),
                        };
                        if let Some(note) = note {
                            let msg = format!("\x1b[31m[not delivered: {note}]\x1b[0m\r\n");
                            if out.send(Output::Data(Bytes::from(msg))).await.is_err() {
                                break 'relay String::new();
                            }
                        }
                    }
                }
                // A process has no terminal size.
                Some(Input::Resize { .. }) => {}
                None => break String::new(),
            },
            // More may be waiting: read again at once.
            _ = std::future::ready(()), if more => {}
            _ = log.changed(), if !more => {}
        }
    };
    if !reason.is_empty() {
        let _ = out.send(Output::Exit(reason)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_frames_are_control_frames_or_typed_text() {
        assert_eq!(
            decode_text(r#"{"type":"resize","cols":120,"rows":40}"#),
            Input::Resize {
                cols: 120,
                rows: 40
            }
        );
        assert_eq!(
            decode_text(r#"{"type":"input","data":"ls\r"}"#),
            Input::Data(Bytes::from_static(b"ls\r"))
        );
        assert_eq!(
            decode_text("hello"),
            Input::Data(Bytes::from_static(b"hello"))
        );
    }

    #[test]
    fn the_line_editor_echoes_edits_and_yields_lines() {
        let mut e = LineEditor::default();
        let (echo, lines) = e.feed("helo\u{7f}lo\x1b[Dworld\r");
        assert_eq!(lines, ["helloworld".to_string()]);
        assert!(echo.starts_with("helo\u{8} \u{8}lo"));
        assert!(echo.ends_with("\r\n"));
        let (_, lines) = e.feed("abc\u{3}def\rx");
        assert_eq!(lines, ["def".to_string()]);
        let (_, lines) = e.feed("y\n");
        assert_eq!(lines, ["xy".to_string()]);
    }

    #[test]
    fn bare_line_feeds_become_crlf_across_chunks() {
        let mut cr = false;
        assert_eq!(crlf(b"a\nb\r", &mut cr), b"a\r\nb\r");
        assert_eq!(crlf(b"\nc\n", &mut cr), b"\nc\r\n");
    }

    /// Everything a pty printed so far; waits consume up to the text they waited for, so
    /// output that arrives in one read with earlier output is not lost.
    struct Transcript<'a> {
        pty: &'a Pty,
        seen: String,
    }

    impl Transcript<'_> {
        async fn until(&mut self, want: &str) {
            let mut buf = vec![0u8; 4096];
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(i) = self.seen.find(want) {
                    self.seen.drain(..i + want.len());
                    return;
                }
                let n = tokio::time::timeout_at(deadline, self.pty.read(&mut buf))
                    .await
                    .unwrap_or_else(|_| {
                        panic!("timed out waiting for {want:?}; saw {:?}", self.seen)
                    })
                    .expect("read");
                assert!(
                    n > 0,
                    "terminal closed before {want:?}; saw {:?}",
                    self.seen
                );
                self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }

        /// Reads what is there for a moment (keeps a chatty client from blocking on us).
        async fn drain(&mut self) {
            let mut buf = vec![0u8; 4096];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(50), self.pty.read(&mut buf)).await
            {
                self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    }

    async fn write_all(pty: &Pty, mut rest: &[u8]) {
        while !rest.is_empty() {
            let n = pty.write(rest).await.expect("write");
            rest = &rest[n..];
        }
    }

    #[tokio::test]
    async fn a_pty_child_gets_input_and_sees_its_size_change() {
        let argv: Vec<String> = [
            "sh",
            "-c",
            "stty size; read l; echo \"got:$l\"; stty size; read l",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let PtyChild { pty, child: _child } = PtyChild::spawn(&argv, 100, 30).expect("spawn");
        let mut out = Transcript {
            pty: &pty,
            seen: String::new(),
        };
        out.until("30 100").await;
        pty.resize(132, 43).expect("resize");
        write_all(&pty, b"typed\r").await;
        out.until("got:typed").await;
        out.until("43 132").await;
    }

    #[tokio::test]
    async fn a_log_follower_sends_the_tail_then_appended_bytes() {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("output.log");
        std::fs::write(&path, "first\n").expect("write");
        let watch = OutputWatch::new();
        let mut log = LogFollower::open(&path, &watch).await.expect("open");
        assert_eq!(log.read_new().await.expect("read"), b"first\n");
        let mut f = tokio::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .await
            .expect("append");
        f.write_all(b"second\n").await.expect("write");
        f.flush().await.expect("flush");
        tokio::time::timeout(Duration::from_secs(10), log.changed())
            .await
            .expect("woken");
        assert_eq!(log.read_new().await.expect("read"), b"second\n");
    }

    /// Runs tmux on a private socket; `None` (skip) without tmux, except under CI.
    fn tmux(socket: &str, args: &[&str]) -> Option<std::process::Output> {
        match std::process::Command::new("tmux")
            .args(["-L", socket])
            .args(args)
            .env_remove("TMUX")
            .output()
        {
            Ok(o) => Some(o),
            Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("tmux is required under CI=true")
            }
            Err(_) => {
                eprintln!("skipping: tmux is not installed");
                None
            }
        }
    }

    /// Kills the private tmux server when the test ends, however it ends.
    struct TmuxServer(String);
    impl Drop for TmuxServer {
        fn drop(&mut self) {
            let _ = tmux(&self.0, &["kill-server"]);
        }
    }

    #[tokio::test]
    async fn a_tmux_attach_relays_both_ways_and_resizes_the_client() {
        let socket = format!("flotilla-term-{}", uuid::Uuid::new_v4().simple());
        let Some(made) = tmux(
            &socket,
            &[
                "new-session",
                "-d",
                "-s",
                "agent",
                "-x",
                "80",
                "-y",
                "24",
                "cat",
            ],
        ) else {
            return;
        };
        let _server = TmuxServer(socket.clone());
        assert!(made.status.success(), "{made:?}");
        let argv: Vec<String> = ["tmux", "-L", &socket, "attach-session", "-t", "agent"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let PtyChild { pty, mut child } = PtyChild::spawn(&argv, 100, 30).expect("attach");
        let mut out = Transcript {
            pty: &pty,
            seen: String::new(),
        };
        // Wait until tmux reports the client attached at our size before typing, so the
        // keys go through tmux rather than the pty's own echo.
        let has_client = |size: &'static str| {
            let socket = socket.clone();
            move || {
                let o = tmux(
                    &socket,
                    &["list-clients", "-F", "#{client_width}x#{client_height}"],
                )
                .expect("clients");
                String::from_utf8_lossy(&o.stdout).contains(size)
            }
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let attached = has_client("100x30");
        while !attached() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "tmux client never attached"
            );
            out.drain().await;
        }
        write_all(&pty, b"typed into tmux\r").await;
        // `cat` in the pane echoes the line: it went into the pane through tmux, and the
        // pane's redraw came back out through our pty.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let pane = tmux(&socket, &["capture-pane", "-p", "-t", "agent"]).expect("capture");
            if String::from_utf8_lossy(&pane.stdout).contains("typed into tmux") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the pane never got the keys"
            );
            out.drain().await;
        }
        out.until("typed into tmux").await;

        pty.resize(132, 40).expect("resize");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let resized = has_client("132x40");
        while !resized() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the client never resized"
            );
            out.drain().await;
        }
        child.start_kill().expect("kill the attach client");
        let _ = child.wait().await;
        let alive = tmux(&socket, &["has-session", "-t", "agent"]).expect("has-session");
        assert!(alive.status.success(), "detaching leaves the agent running");
    }
}
