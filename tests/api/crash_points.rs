//! Exactly one driver per session through any crash: the real server is killed with `kill -9`
//! at 20 random points (delays drawn from a logged seed; `CRASH_SEED=N` replays a run) during
//! 200 spawns and sends, for the process and the tmux runtime, with the scripted stand-in agent
//! (idle, echoing each message it receives as `got: …`). After the final restart: no session
//! lost or duplicated, none with two live agents, none errored while its agent lives, and no
//! instruction lost (every send answered 200 arrived) or delivered twice (none arrived twice).
//!
//! Also here: the targeted tests of the four findings (a launch adopted instead of started
//! twice, an interrupted instruction finished once, a stored webhook processed at start-up, a
//! restore and a kill of one session serialized).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::fleet_plugins::scripted_agent_path;
use crate::helpers::*;
use crate::server::*;

/// Crash points per run.
const CRASHES: usize = 20;
/// Spawns and sends per run, in all.
const OPERATIONS: usize = 200;
/// Sessions spawned per run (the other operations are sends).
const SPAWNS: usize = 30;
/// Longest random delay before a kill, in milliseconds (after the round's first answer).
const MAX_DELAY_MS: u64 = 1500;
/// Longest wait for a round's first answer before the delay starts anyway, in seconds.
const FIRST_ANSWER_S: u64 = 3;

/// A small deterministic generator (xorshift64*): the seed alone replays a run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn seed() -> u64 {
    std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        })
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .expect("client")
}

/// POST; `None` when the server died under the request.
async fn post(base: &str, path: &str, body: Value) -> Option<(u16, Value)> {
    let r = client()
        .post(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .ok()?;
    let st = r.status().as_u16();
    Some((st, r.json().await.unwrap_or(Value::Null)))
}

async fn get(base: &str, path: &str) -> Value {
    client()
        .get(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

/// Live (non-zombie) processes whose environment names each session: its agents (only this
/// test's: those whose `HOME` is `agent_home`; other tests run agents of the same ids).
fn live_agents(agent_home: &Path) -> HashMap<String, Vec<i32>> {
    let home = format!("HOME={}", agent_home.display());
    let mut out: HashMap<String, Vec<i32>> = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(p.path().join("environ")) else {
            continue;
        };
        if !env.split(|b| *b == 0).any(|v| v == home.as_bytes()) {
            continue;
        }
        let Some(id) = env
            .split(|b| *b == 0)
            .find_map(|v| v.strip_prefix(b"FLOTILLA_SESSION_ID".as_slice()))
            .and_then(|v| v.strip_prefix(b"=".as_slice()))
        else {
            continue;
        };
        if alive(pid) {
            out.entry(String::from_utf8_lossy(id).into_owned())
                .or_default()
                .push(pid);
        }
    }
    out
}

/// Everything the agents printed, per session: the process runtime's output logs and the tmux
/// pane logs.
fn outputs(home: &Path) -> HashMap<String, String> {
    let mut out = HashMap::new();
    if let Ok(dirs) = std::fs::read_dir(home.join("runtime")) {
        for d in dirs.flatten() {
            let id = d.file_name().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(d.path().join("output.log")).unwrap_or_default();
            out.insert(id, text);
        }
    }
    if let Ok(logs) = std::fs::read_dir(home.join("tmux")) {
        for l in logs.flatten() {
            let name = l.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".log") {
                let text = String::from_utf8_lossy(&std::fs::read(l.path()).unwrap_or_default())
                    .into_owned();
                out.insert(id.to_string(), text);
            }
        }
    }
    out
}

/// How many times the agent printed `got: TOKEN` as a line of its own.
fn received(text: &str, token: &str) -> usize {
    let line = format!("got: {token}");
    text.lines()
        .filter(|l| l.trim_end_matches('\r').trim_end() == line)
        .count()
}

/// A scratch home whose agent is the scripted stand-in, on `runtime`.
fn scratch(runtime: &str) -> (Scratch, PathBuf) {
    let agent = scripted_agent_path();
    let agents = format!(
        "  scripted: {{ kind: command, command: [\"{}\"] }}\n",
        agent.display()
    );
    let extra = format!("    runtime: {runtime}\n");
    let s = Scratch::with_agents(tempfile::tempdir().expect("tempdir"), &agents, &extra);
    let agent_home = s.dir.path().join("agent-home");
    std::fs::create_dir_all(&agent_home).expect("agent home");
    (s, agent_home)
}

/// Starts the server on a port free now: while a killed server is down, its port is free for
/// anything on a busy machine to take (an outgoing connection's ephemeral port, another test's
/// server), and a restart on it then fails with "Address already in use".
async fn start(s: &Scratch, agent_home: &Path) -> ServerProc {
    let (dir, home, cfg, port) = (
        s.dir.path().to_path_buf(),
        s.home.clone(),
        s.cfg.clone(),
        free_port(),
    );
    let agent_home = agent_home.to_string_lossy().into_owned();
    let started = tokio::spawn(async move {
        // At `info`: the log says what each restart restored and adopted.
        let env = [
            ("HOME", agent_home.as_str()),
            ("FLOTILLA__LOG__LEVEL", "info"),
        ];
        ServerProc::start_with_env(&dir, &home, &cfg, port, &env).await
    })
    .await;
    match started {
        Ok(server) => server,
        Err(e) => {
            // The server's own words say why it did not come up.
            let log = std::fs::read_to_string(s.dir.path().join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "server did not start ({e}); its log ends:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

/// Stops the test's tmux server with the test.
struct TmuxServer(String);

impl Drop for TmuxServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.0, "kill-server"])
            .output();
    }
}

/// A send: the session, its unique token, and the server's answer (`None`: it died first).
type Send = (String, String, Option<(u16, Value)>);

/// What one operation did.
enum Op {
    Spawn {
        prompt: String,
        answer: Option<(u16, Value)>,
    },
    Send {
        id: String,
        token: String,
        answer: Option<(u16, Value)>,
    },
}

async fn crash_points(runtime: &str) {
    if !require_tool("git") || !require_tool("tail") || (runtime == "tmux" && !require_tool("tmux"))
    {
        return;
    }
    let seed = seed();
    eprintln!("crash_points({runtime}): CRASH_SEED={seed}");
    let mut rng = Rng::new(seed);
    let (s, agent_home) = scratch(runtime);
    let _tmux = TmuxServer(flotilla::app::tmux_socket(&s.home));
    let mut server = start(&s, &agent_home).await;
    let mut base = server.address.clone();

    let mut spawns: Vec<(String, Option<(u16, Value)>)> = Vec::new();
    let mut sends: Vec<Send> = Vec::new();
    let per_round = OPERATIONS / CRASHES;
    let spawns_per_round = SPAWNS.div_ceil(CRASHES);
    let mut spawned = 0;
    for round in 0..CRASHES {
        // The sessions that run now take this round's sends.
        let list = get(&base, "/api/v1/sessions").await;
        let working: Vec<String> = list["sessions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["state"] == "working")
            .filter_map(|v| v["id"].as_str().map(str::to_string))
            .collect();
        let mut tasks = Vec::new();
        let answered = Arc::new(AtomicUsize::new(0));
        for i in 0..per_round {
            let spawn = spawned < SPAWNS && (i < spawns_per_round || working.is_empty());
            let base = base.clone();
            let done = answered.clone();
            if spawn {
                spawned += 1;
                let prompt = format!("IDLE spawn-{spawned}");
                tasks.push(tokio::spawn(async move {
                    let answer = post(
                        &base,
                        "/api/v1/sessions",
                        json!({"project": "demo", "prompt": prompt}),
                    )
                    .await;
                    done.fetch_add(usize::from(answer.is_some()), Ordering::SeqCst);
                    Op::Spawn { prompt, answer }
                }));
            } else if working.is_empty() {
                continue;
            } else {
                let id = working[rng.below(working.len() as u64) as usize].clone();
                let token = format!("note-{round}-{i}");
                tasks.push(tokio::spawn(async move {
                    let answer = post(
                        &base,
                        &format!("/api/v1/sessions/{id}/send"),
                        json!({"message": token}),
                    )
                    .await;
                    done.fetch_add(usize::from(answer.is_some()), Ordering::SeqCst);
                    Op::Send { id, token, answer }
                }));
            }
        }
        // The crash point: a random moment while the operations run, counted from the round's
        // first answer, so that a loaded machine (slow sends) still lets some through.
        let first = tokio::time::Instant::now() + std::time::Duration::from_secs(FIRST_ANSWER_S);
        while answered.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < first {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(rng.below(MAX_DELAY_MS))).await;
        server.kill9();
        for t in tasks {
            match t.await.expect("task") {
                Op::Spawn { prompt, answer } => spawns.push((prompt, answer)),
                Op::Send { id, token, answer } => sends.push((id, token, answer)),
            }
        }
        server = start(&s, &agent_home).await;
        base = server.address.clone();
    }

    // Every session settles on its running agent.
    let sessions: Vec<Value> = eventually(60, "every session started", || async {
        let list = get(&base, "/api/v1/sessions").await;
        let all = list["sessions"].as_array().cloned().unwrap_or_default();
        all.iter().all(|v| v["state"] != "spawning").then_some(all)
    })
    .await;
    for v in &sessions {
        assert_eq!(
            v["state"], "working",
            "every session runs (seed {seed}): {v}"
        );
    }
    let by_prompt: BTreeMap<String, Vec<String>> =
        sessions.iter().fold(BTreeMap::new(), |mut m, v| {
            m.entry(v["prompt"].as_str().unwrap_or("").to_string())
                .or_default()
                .push(v["id"].as_str().unwrap_or("").to_string());
            m
        });
    let mut lost = 0;
    for (prompt, answer) in &spawns {
        let created = matches!(answer, Some((201, _)));
        let found = by_prompt.get(prompt).map(Vec::len).unwrap_or(0);
        assert!(
            found <= 1,
            "duplicated session for {prompt}: {:?}",
            by_prompt[prompt]
        );
        if created && found == 0 {
            lost += 1;
        }
    }
    assert_eq!(lost, 0, "sessions lost (seed {seed})");

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let agents = loop {
        let agents = live_agents(&agent_home);
        let wrong: Vec<(&str, usize)> = sessions
            .iter()
            .map(|v| v["id"].as_str().unwrap_or(""))
            .map(|id| (id, agents.get(id).map(Vec::len).unwrap_or(0)))
            .filter(|(_, n)| *n != 1)
            .collect();
        if wrong.is_empty() {
            break agents;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "sessions without exactly one live agent (seed {seed}): {wrong:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    for (id, pids) in &agents {
        assert!(
            pids.len() <= 1,
            "{id} has two live agents {pids:?} (seed {seed})"
        );
        let v = get(&base, &format!("/api/v1/sessions/{id}")).await;
        assert_ne!(
            v["state"], "errored",
            "{id} errored while its agent lives (seed {seed})"
        );
    }

    // Every send answered 200 arrived once; none arrived twice.
    let ok: Vec<&Send> = sends
        .iter()
        .filter(|(_, _, a)| matches!(a, Some((200, v)) if v["delivered"] == true))
        .collect();
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, a) in &sends {
        let k = match a {
            Some((st, v)) => format!("{st} {}", v["error"]["message"].as_str().unwrap_or("")),
            None => "no answer".into(),
        };
        *answers.entry(k).or_default() += 1;
    }
    assert!(
        ok.len() >= OPERATIONS / 4,
        "too few sends got through to test anything: {} (seed {seed}); answers {answers:?}",
        ok.len()
    );
    let outs = eventually(30, "every confirmed send received", || async {
        let outs = outputs(&s.home);
        ok.iter()
            .all(|(id, token, _)| {
                received(outs.get(id).map(String::as_str).unwrap_or(""), token) >= 1
            })
            .then_some(outs)
    })
    .await;
    for (id, token, answer) in &sends {
        let n = received(outs.get(id).map(String::as_str).unwrap_or(""), token);
        assert!(
            n <= 1,
            "{token} delivered {n} times to {id} (answer {answer:?}, seed {seed})"
        );
    }
    let answered = sends.iter().filter(|(_, _, a)| a.is_some()).count();
    eprintln!(
        "crash_points({runtime}): {} spawns ({} created), {} sends ({} answered, {} delivered), {} sessions",
        spawns.len(),
        spawns.iter().filter(|(_, a)| matches!(a, Some((201, _)))).count(),
        sends.len(),
        answered,
        ok.len(),
        sessions.len()
    );
    // How the launches a crash interrupted ended: adopted by `find` after the restart, or by
    // the runtime's own start (a start that found its session's agent already running).
    let log = std::fs::read_to_string(s.dir.path().join("server.log")).unwrap_or_default();
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    eprintln!(
        "crash_points({runtime}): {} launches adopted after a restart, {} starts adopted a running agent",
        count("adopting the agent started before the crash"),
        count("adopted instead of starting another")
    );
    drop(server);
}

#[actix_web::test]
async fn kill_dash_nine_at_random_points_process_runtime_keeps_one_driver_per_session() {
    crash_points("process").await;
}

#[actix_web::test]
async fn kill_dash_nine_at_random_points_tmux_runtime_keeps_one_driver_per_session() {
    crash_points("tmux").await;
}

/// The scratch's SQLite database, opened beside the stopped server.
async fn db(s: &Scratch) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let url = format!("sqlite://{}/flotilla.db", s.home.display());
    sqlx::SqliteConnection::connect(&url)
        .await
        .expect("open db")
}

/// A timestamp as the SQLite store writes it.
fn ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

/// Spawns one idle session and waits until it works; returns its id.
async fn one_working(base: &str) -> String {
    let (st, v) = post(
        base,
        "/api/v1/sessions",
        json!({"project": "demo", "prompt": "IDLE"}),
    )
    .await
    .expect("spawn");
    assert_eq!(st, 201, "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    eventually(30, "working", || async {
        (get(base, &format!("/api/v1/sessions/{id}")).await["state"] == "working").then_some(())
    })
    .await;
    id
}

/// Finding 1: a crash between starting an agent and saving its handle. The row is put back
/// to what such a crash leaves (spawning, spawn deadline armed, launch intent, no handle)
/// while the agent runs on; the restart adopts that agent instead of starting a second one
/// (process), or failing on "tmux session already exists" (tmux).
async fn launch_is_adopted(runtime: &str) {
    if !require_tool("git") || !require_tool("tail") || (runtime == "tmux" && !require_tool("tmux"))
    {
        return;
    }
    let (s, agent_home) = scratch(runtime);
    let _tmux = TmuxServer(flotilla::app::tmux_socket(&s.home));
    let mut server = start(&s, &agent_home).await;
    let id = one_working(&server.address).await;
    let before = live_agents(&agent_home);
    assert_eq!(before.get(&id).map(Vec::len), Some(1), "{before:?}");
    server.kill9();
    {
        let mut c = db(&s).await;
        let intent = ts(chrono::Utc::now() - chrono::Duration::minutes(1));
        sqlx::query(
            "UPDATE sessions SET runtime_handle = NULL, state = 'spawning', \
             meta = json_set(meta, '$.launch_at', $1) WHERE id = $2",
        )
        .bind(&intent)
        .bind(&id)
        .execute(&mut c)
        .await
        .expect("update");
        sqlx::query("DELETE FROM timers WHERE session_id = $1")
            .bind(&id)
            .execute(&mut c)
            .await
            .expect("timers");
        sqlx::query(
            "INSERT INTO timers (session_id, kind, deadline) VALUES ($1, 'spawn_timeout', $2)",
        )
        .bind(&id)
        .bind(ts(chrono::Utc::now() + chrono::Duration::minutes(5)))
        .execute(&mut c)
        .await
        .expect("timer");
    }
    let server = start(&s, &agent_home).await;
    let base = server.address.clone();
    let v = eventually(30, "adopted", || async {
        let v = get(&base, &format!("/api/v1/sessions/{id}")).await;
        (v["state"] != "spawning").then_some(v)
    })
    .await;
    assert_eq!(v["state"], "working", "adopted, not errored: {v}");
    let after = live_agents(&agent_home);
    assert_eq!(
        after.get(&id),
        before.get(&id),
        "the same one agent runs: {after:?}"
    );
    drop(server);
}

#[actix_web::test]
async fn a_crash_between_start_and_saving_the_handle_adopts_the_process_agent() {
    launch_is_adopted("process").await;
}

#[actix_web::test]
async fn a_crash_between_start_and_saving_the_handle_adopts_the_tmux_agent() {
    launch_is_adopted("tmux").await;
}

/// Finding 2: a crash while an instruction was being typed. The store says "typing" from a
/// mark, and the agent's input holds half of it (the process runtime's journal, the tmux
/// pane's input line); after the restart it arrives exactly once and whole, and the next one
/// is not typed onto the half line.
async fn interrupted_instruction_is_finished_once(runtime: &str) {
    if !require_tool("git") || !require_tool("tail") || (runtime == "tmux" && !require_tool("tmux"))
    {
        return;
    }
    let (s, agent_home) = scratch(runtime);
    let socket = flotilla::app::tmux_socket(&s.home);
    let _tmux = TmuxServer(socket.clone());
    let mut server = start(&s, &agent_home).await;
    let id = one_working(&server.address).await;
    let (st, v) = post(
        &server.address,
        &format!("/api/v1/sessions/{id}/send"),
        json!({"message": "before"}),
    )
    .await
    .expect("send");
    assert_eq!((st, &v["delivered"]), (200, &json!(true)), "{v}");
    server.kill9();
    let text = "finish-me-once";
    let mark = match runtime {
        "process" => {
            let journal = s.home.join("runtime").join(&id).join("stdin.log");
            let mark = std::fs::metadata(&journal).expect("journal").len();
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&journal)
                .expect("open");
            f.write_all(b"finish-").expect("half");
            mark
        }
        _ => {
            let log = s.home.join("tmux").join(format!("{id}.log"));
            let mark = std::fs::metadata(&log).expect("log").len();
            let out = std::process::Command::new("tmux")
                .args([
                    "-L",
                    &socket,
                    "send-keys",
                    "-t",
                    &format!("={id}:"),
                    "-l",
                    "finish-",
                ])
                .output()
                .expect("tmux");
            assert!(out.status.success(), "{out:?}");
            mark
        }
    };
    {
        let mut c = db(&s).await;
        let now = ts(chrono::Utc::now());
        sqlx::query(
            "INSERT INTO instructions (session_id, kind, body, state, mark, created_at, updated_at) \
             VALUES ($1, 'message', $2, 'typing', $3, $4, $4)",
        )
        .bind(&id)
        .bind(text)
        .bind(mark as i64)
        .bind(&now)
        .execute(&mut c)
        .await
        .expect("instruction");
    }
    let server = start(&s, &agent_home).await;
    let base = server.address.clone();
    let (st, v) = post(
        &base,
        &format!("/api/v1/sessions/{id}/send"),
        json!({"message": "after"}),
    )
    .await
    .expect("send after");
    assert_eq!((st, &v["delivered"]), (200, &json!(true)), "{v}");
    let out = eventually(30, "both received", || async {
        let outs = outputs(&s.home);
        let o = outs.get(&id).cloned().unwrap_or_default();
        (received(&o, text) >= 1 && received(&o, "after") >= 1).then_some(o)
    })
    .await;
    assert_eq!(received(&out, text), 1, "whole and once: {out}");
    assert_eq!(received(&out, "after"), 1, "{out}");
    assert_eq!(received(&out, "before"), 1, "{out}");
    assert!(
        !out.contains("got: finish-finish"),
        "not typed onto the half line: {out}"
    );
    drop(server);
}

#[actix_web::test]
async fn an_instruction_interrupted_by_a_crash_is_finished_once_process() {
    interrupted_instruction_is_finished_once("process").await;
}

#[actix_web::test]
async fn an_instruction_interrupted_by_a_crash_is_finished_once_tmux() {
    interrupted_instruction_is_finished_once("tmux").await;
}

/// Finding 3: with `github.poll_interval: 0s`, a delivery recorded (answered 2xx) but never
/// handed over because of a crash is processed at the next start-up.
#[actix_web::test]
async fn a_stored_unprocessed_webhook_is_processed_at_start_up() {
    if !require_tool("git") {
        return;
    }
    let (s, agent_home) = scratch("process");
    let mut server = start(&s, &agent_home).await;
    server.kill9();
    {
        let mut c = db(&s).await;
        let payload = json!({"action": "opened", "number": 7,
            "repository": {"full_name": "acme/demo"},
            "pull_request": {"number": 7, "head": {"ref": "feat/x", "sha": "abc"}}});
        sqlx::query(
            "INSERT INTO webhook_deliveries (platform, delivery_id, event, payload, received_at) \
             VALUES ('github', 'lost-1', 'pull_request', $1, $2)",
        )
        .bind(payload.to_string())
        .bind(ts(chrono::Utc::now()))
        .execute(&mut c)
        .await
        .expect("delivery");
    }
    let server = ServerProc::start_with_env(
        s.dir.path(),
        &s.home,
        &s.cfg,
        free_port(),
        &[
            ("HOME", &agent_home.to_string_lossy()),
            ("FLOTILLA__GITHUB__POLL_INTERVAL", "0s"),
        ],
    )
    .await;
    let base = server.address.clone();
    eventually(30, "the delivery processed", || async {
        let mut c = db(&s).await;
        let (at,): (Option<String>,) = sqlx::query_as(
            "SELECT processed_at FROM webhook_deliveries WHERE delivery_id = 'lost-1'",
        )
        .fetch_one(&mut c)
        .await
        .expect("row");
        at.map(|_| ())
    })
    .await;
    let metrics = client()
        .get(format!("{base}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("flotilla_github_webhooks_total{")
                && l.contains("pull_request")
                && l.ends_with(" 1")),
        "handed to the fleet once: {metrics}"
    );
    drop(server);
}

/// Finding 4: a restore and a kill of one session at the same moment run one after the other:
/// never "spawning but has no actor", never an errored session.
#[actix_web::test]
async fn a_restore_and_a_kill_at_the_same_moment_are_serialized() {
    let app = spawn_app().await;
    let id = app.spawn(json!({"project": "demo", "prompt": "x"})).await;
    app.wait_state(&id, "working").await;
    let (st, v) = app
        .post(&format!("/api/v1/sessions/{id}/kill"), json!({}))
        .await;
    assert_eq!(st, 200, "{v}");
    app.wait_state(&id, "killed").await;
    for _ in 0..5 {
        let (restore, kill) = (
            format!("/api/v1/sessions/{id}/restore"),
            format!("/api/v1/sessions/{id}/kill"),
        );
        let (r, k) = tokio::join!(app.post(&restore, json!({})), app.post(&kill, json!({})));
        for (st, v) in [&r, &k] {
            assert!(
                *st == 200 || (*st == 409 && !v.to_string().contains("no actor")),
                "restore {r:?} kill {k:?}"
            );
        }
        let (_, v) = app.get(&format!("/api/v1/sessions/{id}")).await;
        assert_ne!(v["state"], "errored", "{v}");
        // Whatever the order, one more kill leaves it killed.
        let (st, v) = app
            .post(&format!("/api/v1/sessions/{id}/kill"), json!({}))
            .await;
        assert_eq!(st, 200, "{v}");
        let v = app.wait_state(&id, "killed").await;
        assert_ne!(v["reason"], "spawn_failed", "{v}");
    }
}
