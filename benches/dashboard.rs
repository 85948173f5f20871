//! Load harness for the dashboard's live board: 1,000 sessions, 10 changes a second, and 100
//! clients, either
//!
//! - **push** (what the dashboard does): each client reads `GET /api/v1/board` once, then
//!   follows `GET /api/v1/ws?after=<cursor>`; every change is one event frame per client, or
//! - **re-list** (agent-orchestrator's dashboard, reference §7): each client re-reads every
//!   session, `GET /api/v1/sessions`, every 5 s (phases spread over the 5 s).
//!
//! It reports the server's CPU time (getrusage of the server process) and the bytes it sent
//! (counted exactly at the clients' sockets: headers, frames, bodies), per second of each run,
//! next to an idle run with the same changes and no clients (the cost of committing changes).
//! The clients run in a child process (this binary re-executed), so their CPU is not counted.
//!
//! Sessions are realistic rows: an ~800 B prompt, a branch, a PR for those in PR states. A
//! change is a committed state-machine step like the real ones (state, reason, the event that
//! caused it, the effects with a ~500 B message to the agent), written and published through
//! the journal exactly as session actors do.
//!
//! Measured on the 2-core dev machine (20 s runs): push 0.021 cores (+0.015 over idle) and
//! 0.43 MiB/s for 100 clients, every client getting all 200 changes (delivery p50 1.9 ms,
//! p99 5.8 ms); re-list 0.229 cores (+0.222) and 22.8 MiB/s: 53x the bytes, 15x the serving
//! CPU. At 3,000 sessions push stays flat (+0.018 cores) while re-listing triples (+0.658).
//!
//! Knobs: `FLOTILLA_BENCH_SESSIONS` (1000), `FLOTILLA_BENCH_CLIENTS` (100),
//! `FLOTILLA_BENCH_RATE` (changes/s, 10), `FLOTILLA_BENCH_SECS` (seconds per run, 20).
//! Run with `cargo bench --bench dashboard`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use actix_web::{App, HttpServer};
use chrono::Utc;
use flotilla::actors::fleet::{Fleet, Plugins, ProjectSpec};
use flotilla::actors::journal::Journal;
use flotilla::actors::supervisor::FleetSupervisor;
use flotilla::http::{self, AppState};
use flotilla::store::{
    self, NewEvent, NewSession, PrRef, SessionSnapshot, SessionState, TransitionCommit,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "bench-token-0123456789";
const ROLE: &str = "FLOTILLA_DASH_BENCH_ROLE";
/// How often a re-listing client re-lists (agent-orchestrator's dashboard: 5 s).
const RELIST_EVERY: Duration = Duration::from_secs(5);

fn env_or<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("push") | Ok("relist") => return clients_main(),
        _ => {}
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing: skip then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    server_main();
}

// ---- the server side ----------------------------------------------------------------------------

/// The states sessions are spread over, and the cycle a changing session goes through.
const SPREAD: [SessionState; 8] = [
    SessionState::Working,
    SessionState::Working,
    SessionState::PrOpen,
    SessionState::CiFailed,
    SessionState::ReviewPending,
    SessionState::Mergeable,
    SessionState::NeedsInput,
    SessionState::Done,
];
const CYCLE: [SessionState; 4] = [
    SessionState::Working,
    SessionState::PrOpen,
    SessionState::CiFailed,
    SessionState::ReviewPending,
];

fn server_main() {
    let sessions: usize = env_or("FLOTILLA_BENCH_SESSIONS", 1000);
    let clients: usize = env_or("FLOTILLA_BENCH_CLIENTS", 100);
    let rate: u64 = env_or("FLOTILLA_BENCH_RATE", 10);
    let secs: u64 = env_or("FLOTILLA_BENCH_SECS", 20);
    let sys = actix::System::new();
    sys.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store::open(&format!("sqlite://{}/bench.db", dir.path().display()))
            .await
            .expect("store");
        let mut projects = BTreeMap::new();
        projects.insert(
            "acme".to_string(),
            ProjectSpec {
                prefix: "acme".into(),
                ..ProjectSpec::simple("acme", dir.path().to_path_buf(), "scripted", "process")
            },
        );
        let journal = Arc::new(Journal::new(store.clone()));
        let fleet = Arc::new(Fleet {
            journal: journal.clone(),
            store: store.clone(),
            plugins: Plugins::default(),
            projects,
            home: dir.path().to_path_buf(),
            max_restarts: 3,
            actor_timeout: Duration::from_secs(60),
            agent_env_passthrough: vec![],
            report_key: vec![7; 32],
            server_url: "http://127.0.0.1:1".into(),
            cli_path: None,
            sandbox: Default::default(),
            spawn_permits: Arc::new(tokio::sync::Semaphore::new(8)),
            lifecycle_order: Default::default(),
            clock: flotilla::clock::Clock::system(),
            output_watch: Arc::new(flotilla::actors::watch::OutputWatch::new()),
            notifications: Default::default(),
        });
        // Started before the sessions exist: it restores none, so no actor runs and the
        // changes below are the only work besides serving.
        let reads = Arc::new(fleet.read_model());
        let output_watch = fleet.output_watch.clone();
        let supervisor = FleetSupervisor::new(fleet, Arc::new(AtomicBool::new(true))).start();

        let t = Instant::now();
        let mut snaps = Vec::with_capacity(sessions);
        for i in 0..sessions {
            let (rec, _) = store
                .create_session(&NewSession {
                    project: "acme".into(),
                    prefix: "acme".into(),
                    agent: "claude-code".into(),
                    runtime: "tmux".into(),
                    workspace_kind: "worktree".into(),
                    branch: None,
                    issue: Some(format!("{}", 1000 + i)),
                    prompt: Some("Implement the feature described in the issue. ".repeat(17)),
                    skip_numbers: vec![],
                    fixed_id: None,
                    meta: serde_json::Value::Null,
                    at: Utc::now(),
                })
                .await
                .expect("create");
            let mut snap = store.load_snapshot(&rec.id).await.expect("load");
            let st = SPREAD[i % SPREAD.len()];
            snap.session.state = st;
            snap.session.branch = Some(format!("session/{}", rec.id));
            snap.session.workspace = Some(format!("/home/dev/.flotilla/worktrees/acme/{}", rec.id));
            if st.has_open_pr() {
                snap.session.pr = Some(PrRef {
                    number: 100 + i as i64,
                    url: format!("https://github.com/acme/app/pull/{}", 100 + i),
                });
            }
            store
                .commit_transition(&step(&snap, SessionState::Spawning, st))
                .await
                .expect("commit");
            snaps.push(snap);
        }
        eprintln!(
            "dashboard bench: seeded {sessions} sessions in {:?}",
            t.elapsed()
        );

        let state = AppState {
            supervisor,
            reads,
            output_watch,
            token: Some(TOKEN.into()),
            actor_timeout: Duration::from_secs(30),
            max_body_bytes: 1 << 20,
            output_lines: 200,
            projects: vec![],
            agents: vec![],
            extra_tokens: vec![],
            check_report_token: Arc::new(|_, _| false),
            github_webhook_secret: None,
            linear_hook: None,
            intake: Default::default(),
            chat_inbox: None,
            chat_conversations: None,
            chat_webhooks: Default::default(),
            outbox: flotilla::notify::outbox::OutboxActor::new(
                store.clone(),
                Default::default(),
                flotilla::notify::outbox::OutboxSettings::from_settings(
                    &flotilla::config::load_with(&flotilla::config::LoadOptions {
                        config_path: None,
                        cwd: dir.path().to_path_buf(),
                        env: Default::default(),
                    })
                    .expect("defaults")
                    .notifications,
                ),
            )
            .start()
            .recipient(),
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = HttpServer::new(move || {
            let st = state.clone();
            App::new()
                .wrap(actix_web::middleware::from_fn(http::middleware::observe))
                .configure(|cfg| http::routes(cfg, &st))
        })
        .listen(listener)
        .expect("listen")
        .workers(2)
        .run();
        let handle = server.handle();
        actix::spawn(server);

        // The changes: `rate` committed steps a second, round-robin over the live sessions.
        let live: Vec<usize> = (0..sessions)
            .filter(|i| CYCLE.contains(&snaps[*i].session.state))
            .collect();
        actix::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
            let mut n = 0usize;
            loop {
                tick.tick().await;
                let i = live[n % live.len()];
                n += 1;
                let snap = &mut snaps[i];
                let from = snap.session.state;
                let at = CYCLE.iter().position(|s| *s == from).unwrap_or(0);
                let to = CYCLE[(at + 1) % CYCLE.len()];
                snap.session.state = to;
                snap.session.updated_at = Utc::now();
                if let Err(e) = journal.commit(&step(snap, from, to)).await {
                    eprintln!("dashboard bench: commit failed: {e}");
                }
            }
        });

        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = measure_idle(Duration::from_secs(secs.min(10))).await;
        let push = run_clients("push", port, clients, secs).await;
        let relist = run_clients("relist", port, clients, secs).await;
        report(sessions, clients, rate, &idle, &push, &relist);
        handle.stop(false).await;
        actix::System::current().stop();
    });
}

/// A committed step from `from` to `to`, shaped like the session machine's.
fn step(snap: &SessionSnapshot, from: SessionState, to: SessionState) -> TransitionCommit {
    let (event, effects) = match to {
        SessionState::CiFailed => (
            serde_json::json!({"type": "ci_failed",
                "summary": "test (ubuntu-latest): failed\n  parser::tests::flaky — assertion failed: left == right\n  https://github.com/acme/app/actions/runs/1234567890/job/987654321".repeat(2),
                "fingerprint": "c0ffee1234567890"}),
            serde_json::json!([{"type": "send_to_agent", "reaction": "ci-failed",
                "message": "CI failed on your PR. Read the failing checks below, fix the cause, push, and say what you changed.\n".repeat(5)}]),
        ),
        SessionState::PrOpen => (
            serde_json::json!({"type": "pr_opened", "pr": snap.session.pr.clone().unwrap_or(PrRef {
                number: 7, url: "https://github.com/acme/app/pull/7".into() })}),
            serde_json::json!([]),
        ),
        SessionState::ReviewPending => (
            serde_json::json!({"type": "review_pending"}),
            serde_json::json!([]),
        ),
        _ => (
            serde_json::json!({"type": "ci_passed"}),
            serde_json::json!([]),
        ),
    };
    TransitionCommit {
        snapshot: snap.clone(),
        event: NewEvent {
            session_id: Some(snap.session.id.clone()),
            kind: "session.transition".into(),
            data: serde_json::json!({"from": from, "to": to, "state": to, "reason": null,
                "event": event, "effects": effects}),
            at: Utc::now(),
        },
        notifications: Vec::new(),
        instructions: Vec::new(),
    }
}

/// What one run measured on the server.
#[derive(Debug, Default)]
struct Run {
    /// Server CPU seconds.
    cpu: f64,
    /// Wall seconds.
    wall: f64,
    /// What the clients reported.
    clients: ClientReport,
}

async fn measure_idle(d: Duration) -> Run {
    let (c0, t0) = (cpu_time(), Instant::now());
    tokio::time::sleep(d).await;
    Run {
        cpu: (cpu_time() - c0).as_secs_f64(),
        wall: t0.elapsed().as_secs_f64(),
        clients: ClientReport::default(),
    }
}

/// Runs the clients in a child process; measures the server from their `ready` to their end.
async fn run_clients(mode: &str, port: u16, clients: usize, secs: u64) -> Run {
    let exe = std::env::current_exe().expect("own path");
    let mode = mode.to_string();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    // The child is read on a plain thread: its pipe is blocking I/O.
    let reader = std::thread::spawn(move || {
        let mut child = Command::new(exe)
            .env(ROLE, &mode)
            .env("FLOTILLA_DASH_BENCH_PORT", port.to_string())
            .env("FLOTILLA_DASH_BENCH_CLIENTS", clients.to_string())
            .env("FLOTILLA_DASH_BENCH_SECS", secs.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("clients start");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut ready = Some(ready_tx);
        let mut report = None;
        for line in out.lines() {
            let line = line.expect("line");
            if line == "ready" {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            } else if let Ok(r) = serde_json::from_str::<ClientReport>(&line) {
                report = Some(r);
            }
        }
        let _ = child.wait();
        report.expect("the clients reported")
    });
    ready_rx.await.expect("clients ready");
    let (c0, t0) = (cpu_time(), Instant::now());
    let clients = loop {
        if reader.is_finished() {
            break reader.join().expect("reader");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Run {
        cpu: (cpu_time() - c0).as_secs_f64(),
        wall: t0.elapsed().as_secs_f64(),
        clients,
    }
}

fn report(sessions: usize, clients: usize, rate: u64, idle: &Run, push: &Run, relist: &Run) {
    let cores = |r: &Run| r.cpu / r.wall.max(1e-9);
    let idle_cores = cores(idle);
    let mib = |b: f64| b / (1024.0 * 1024.0);
    println!(
        "dashboard: {sessions} sessions, {clients} clients, {rate} changes/s; server CPU in cores \
         (CPU s per wall s), bytes the server sent per second"
    );
    println!(
        "dashboard: idle (changes, no clients): {:.3} cores",
        idle_cores
    );
    for (name, r) in [
        ("push (board once + /api/v1/ws)", push),
        ("re-list every 5 s (GET /api/v1/sessions)", relist),
    ] {
        let c = &r.clients;
        println!(
            "dashboard: {name}: {:.3} cores ({:+.3} over idle), {:.3} MiB/s sent, {} requests, {} events delivered",
            cores(r),
            cores(r) - idle_cores,
            mib(c.bytes as f64 / c.secs.max(1e-9)),
            c.requests,
            c.events,
        );
        if c.events > 0 {
            println!(
                "dashboard:   per client {}..{} events (expected ≈ {}), delivery latency p50 {:.1} ms, p99 {:.1} ms; page load (one board read) {:.0} KiB",
                c.min_events,
                c.max_events,
                (rate as f64 * c.secs) as u64,
                c.p50_ms,
                c.p99_ms,
                c.load_bytes as f64 / clients.max(1) as f64 / 1024.0
            );
        }
    }
    let pb = push.clients.bytes as f64 / push.clients.secs.max(1e-9);
    let rb = relist.clients.bytes as f64 / relist.clients.secs.max(1e-9);
    let pc = (cores(push) - idle_cores).max(1e-6);
    let rc = (cores(relist) - idle_cores).max(1e-6);
    println!(
        "dashboard: re-listing costs {:.0}x the bytes and {:.1}x the serving CPU of pushing changes",
        rb / pb.max(1.0),
        rc / pc
    );
}

// ---- the client side (a child process) ------------------------------------------------------------

/// What the clients measured, printed as one JSON line.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct ClientReport {
    /// Seconds measured.
    secs: f64,
    /// Bytes received in the measured window (all of them: headers, frames, bodies).
    bytes: u64,
    /// Bytes of the initial loads (board reads), before the window.
    load_bytes: u64,
    /// HTTP requests answered in the window.
    requests: u64,
    /// Events received in the window.
    events: u64,
    /// Fewest events one client got.
    min_events: u64,
    /// Most events one client got.
    max_events: u64,
    /// Median time from an event's commit to its arrival.
    p50_ms: f64,
    /// 99th percentile of the same.
    p99_ms: f64,
}

/// One client's tally.
#[derive(Default)]
struct Tally {
    bytes: u64,
    load_bytes: u64,
    requests: u64,
    events: u64,
    latencies_ms: Vec<f64>,
}

fn clients_main() {
    let mode = std::env::var(ROLE).unwrap_or_default();
    let port: u16 = env_or("FLOTILLA_DASH_BENCH_PORT", 0);
    let clients: usize = env_or("FLOTILLA_DASH_BENCH_CLIENTS", 100);
    let secs: u64 = env_or("FLOTILLA_DASH_BENCH_SECS", 20);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let addr = format!("127.0.0.1:{port}");
        let start = Arc::new(tokio::sync::Barrier::new(clients + 1));
        // Pages load a few at a time (as people open them), not 100 in the same millisecond.
        let loading = Arc::new(tokio::sync::Semaphore::new(4));
        let mut tasks = Vec::new();
        for i in 0..clients {
            let addr = addr.clone();
            let start = start.clone();
            let loading = loading.clone();
            let mode = mode.clone();
            let phase = RELIST_EVERY.mul_f64(i as f64 / clients as f64);
            tasks.push(tokio::spawn(async move {
                if mode == "push" {
                    push_client(&addr, loading, start, secs).await
                } else {
                    relist_client(&addr, loading, start, phase, secs).await
                }
            }));
        }
        start.wait().await;
        println!("ready");
        let t0 = Instant::now();
        let mut all = Vec::new();
        for t in tasks {
            all.push(t.await.expect("client"));
        }
        let measured = t0.elapsed().as_secs_f64();
        let mut lat: Vec<f64> = all.iter().flat_map(|t| t.latencies_ms.clone()).collect();
        lat.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| {
            if lat.is_empty() {
                0.0
            } else {
                lat[((lat.len() - 1) as f64 * p) as usize]
            }
        };
        let r = ClientReport {
            secs: measured.min(secs as f64),
            bytes: all.iter().map(|t| t.bytes).sum(),
            load_bytes: all.iter().map(|t| t.load_bytes).sum(),
            requests: all.iter().map(|t| t.requests).sum(),
            events: all.iter().map(|t| t.events).sum(),
            min_events: all.iter().map(|t| t.events).min().unwrap_or(0),
            max_events: all.iter().map(|t| t.events).max().unwrap_or(0),
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
        };
        println!("{}", serde_json::to_string(&r).expect("json"));
    });
}

/// Sends one GET on a keep-alive connection and reads the whole answer; returns (bytes, body).
async fn get(conn: &mut TcpStream, path: &str) -> (u64, Vec<u8>) {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {TOKEN}\r\nAccept: application/json\r\n\r\n"
    );
    conn.write_all(req.as_bytes()).await.expect("send");
    let mut buf = Vec::with_capacity(64 * 1024);
    let head_end = loop {
        let mut chunk = [0u8; 16 * 1024];
        let n = conn.read(&mut chunk).await.expect("read");
        assert!(
            n > 0,
            "server closed before answering {path} ({} bytes)",
            buf.len()
        );
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("content-length");
    while buf.len() < head_end + len {
        let mut chunk = vec![0u8; 64 * 1024];
        let n = conn.read(&mut chunk).await.expect("read");
        assert!(n > 0, "server closed");
        buf.extend_from_slice(&chunk[..n]);
    }
    (buf.len() as u64, buf[head_end..].to_vec())
}

/// A dashboard page: one board read, then the event socket from its cursor.
async fn push_client(
    addr: &str,
    loading: Arc<tokio::sync::Semaphore>,
    start: Arc<tokio::sync::Barrier>,
    secs: u64,
) -> Tally {
    let mut t = Tally::default();
    let permit = loading.acquire().await.expect("permit");
    let mut http = TcpStream::connect(addr).await.expect("connect");
    let (n, body) = get(&mut http, "/api/v1/board").await;
    drop(permit);
    t.load_bytes = n;
    let cursor = serde_json::from_slice::<serde_json::Value>(&body).expect("board")["cursor"]
        .as_i64()
        .expect("cursor");
    drop(http);
    let mut ws = TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET /api/v1/ws?after={cursor}&access_token={TOKEN} HTTP/1.1\r\nHost: bench\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    ws.write_all(req.as_bytes()).await.expect("upgrade");
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = ws.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed during the upgrade");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            assert!(buf.starts_with(b"HTTP/1.1 101"), "no upgrade");
            buf.drain(..i + 4);
            break;
        }
    }
    start.wait().await;
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    // Events committed before the window (caught up on connect) are neither counted nor timed.
    let since = Utc::now();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Whole frames in the buffer: server frames are unmasked.
        while buf.len() >= 2 {
            let op = buf[0] & 0x0f;
            let (len, hdr) = match buf[1] & 0x7f {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 if buf.len() >= 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&buf[2..10]);
                    (u64::from_be_bytes(b) as usize, 10)
                }
                126 | 127 => break,
                l => (l as usize, 2),
            };
            if buf.len() < hdr + len {
                break;
            }
            let payload: Vec<u8> = buf[hdr..hdr + len].to_vec();
            buf.drain(..hdr + len);
            match op {
                1 => {
                    let at = serde_json::from_slice::<serde_json::Value>(&payload)
                        .ok()
                        .and_then(|e| chrono::DateTime::parse_from_rfc3339(e["at"].as_str()?).ok())
                        .map(|at| at.with_timezone(&Utc));
                    if let Some(at) = at.filter(|at| *at >= since) {
                        t.events += 1;
                        let us = (Utc::now() - at).num_microseconds().unwrap_or(0);
                        t.latencies_ms.push(us as f64 / 1000.0);
                    }
                }
                9 => {
                    // Pong, masked with a zero key, echoing the ping's payload.
                    let mut pong = vec![0x8a, 0x80 | payload.len() as u8, 0, 0, 0, 0];
                    pong.extend_from_slice(&payload);
                    ws.write_all(&pong).await.expect("pong");
                }
                _ => {}
            }
        }
        match tokio::time::timeout_at(end, ws.read(&mut chunk)).await {
            Err(_) => break,
            Ok(Ok(0)) => panic!("the server closed an event socket"),
            Ok(Ok(n)) => {
                t.bytes += n as u64;
                buf.extend_from_slice(&chunk[..n]);
            }
            Ok(Err(e)) => panic!("event socket: {e}"),
        }
    }
    t
}

/// An agent-orchestrator-style page: every session, every 5 s.
async fn relist_client(
    addr: &str,
    loading: Arc<tokio::sync::Semaphore>,
    start: Arc<tokio::sync::Barrier>,
    phase: Duration,
    secs: u64,
) -> Tally {
    let mut t = Tally::default();
    let permit = loading.acquire().await.expect("permit");
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let (n, _) = get(&mut conn, "/api/v1/sessions").await;
    drop(permit);
    drop(conn);
    start.wait().await;
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut next = tokio::time::Instant::now() + phase;
    t.load_bytes = n;
    loop {
        tokio::time::sleep_until(next).await;
        if tokio::time::Instant::now() >= end {
            break;
        }
        // A new connection each time: the server closes idle keep-alive connections after
        // 5 s, exactly the re-list period.
        let mut conn = TcpStream::connect(addr).await.expect("connect");
        let (n, _) = get(&mut conn, "/api/v1/sessions").await;
        t.bytes += n;
        t.requests += 1;
        next += RELIST_EVERY;
    }
    t
}
