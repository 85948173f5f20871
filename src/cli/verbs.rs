//! What each verb does.

use std::io::Write;

use chrono::Utc;
use clap::CommandFactory;
use serde_json::{json, Value};

use super::client::{parse_sse, Client, ClientError};
use super::{Cli, Command, EXIT_FAILED, EXIT_USAGE};
use crate::app::{Application, StartError};
use crate::config::{self, init, Settings};
use crate::http::sessions::{ActionResult, SendResult, SessionDetail, SessionList};
use crate::preflight::{Check, Status};
use crate::telemetry::{init_tracing, LogFormat};

/// Runs a parsed command line.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "flotilla",
                &mut std::io::stdout(),
            );
            0
        }
        Command::Init { force } => init_here(force),
        Command::Report {
            state,
            ref note,
            ref pr_url,
            pr_number,
        } => report(state, note.clone(), pr_url.clone(), pr_number),
        Command::Serve => serve(cli.config, cli.log_format),
        Command::Hook { agent } => hook(agent),
        // Before anything starts a thread: it forks.
        Command::SandboxExec {
            proxy,
            bridge,
            forward,
            processes,
            memory_mb,
            cpu_seconds,
            command,
        } => crate::sandbox::exec::run(crate::sandbox::exec::ExecOptions {
            proxy,
            bridge,
            forward,
            processes,
            memory_mb,
            cpu_seconds,
            command,
        }),
        // Before anything starts a thread, like `sandbox-exec`.
        Command::TurnGuard {
            parent,
            alive,
            within_ms,
            command,
        } => crate::plugins::assistants::guard_exec::run(
            crate::plugins::assistants::guard_exec::GuardOptions {
                parent,
                alive,
                within_ms,
                command,
            },
        ),
        Command::Doctor { json } => doctor(cli.config, json),
        ref other => {
            // A client run by an agent (orchestrator, `report`) has the server and a token in
            // its environment and must not trip over the repo's config and its ${VARS}.
            let settings = match load_valid(cli.config.clone()) {
                Ok(s) => s,
                Err(_) if cli.server.is_some() && cli.token.is_some() => {
                    match config::load_with(&config::LoadOptions {
                        config_path: None,
                        cwd: std::env::temp_dir().join("flotilla-no-config"),
                        env: Default::default(),
                    }) {
                        Ok(s) => s,
                        Err(e) => {
                            eprintln!("flotilla: {e}");
                            return EXIT_USAGE;
                        }
                    }
                }
                Err(code) => return code,
            };
            init_tracing(cli.log_format.unwrap_or(LogFormat::Text), "warn");
            let server = cli
                .server
                .clone()
                .unwrap_or_else(|| settings.server.local_url(settings.server.port));
            let token = cli.token.clone().or_else(|| {
                settings
                    .server
                    .token
                    .as_ref()
                    .map(|t| t.expose().to_string())
            });
            let client = match Client::new(&server, token) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("flotilla: {e}");
                    return EXIT_FAILED;
                }
            };
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("flotilla: {e}");
                    return EXIT_FAILED;
                }
            };
            match rt.block_on(client_verb(other, &client, &settings)) {
                Ok(()) => 0,
                Err(Failure::Usage(m)) => {
                    eprintln!("flotilla: {m}");
                    EXIT_USAGE
                }
                Err(Failure::Client(e)) => {
                    eprintln!("flotilla: {e}");
                    EXIT_FAILED
                }
            }
        }
    }
}

fn load_valid(path: Option<std::path::PathBuf>) -> Result<Settings, i32> {
    let settings = config::load(path).and_then(|s| s.validate().map(|_| s));
    settings.map_err(|e| {
        eprintln!("flotilla: invalid configuration:\n{e}");
        e.exit_code()
    })
}

fn serve(path: Option<std::path::PathBuf>, format: Option<LogFormat>) -> i32 {
    let settings = match load_valid(path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let fmt = format.unwrap_or(match settings.log.format {
        config::LogFormat::Json => LogFormat::Json,
        config::LogFormat::Text => LogFormat::Text,
    });
    init_tracing(fmt, &settings.log.level);
    let home = config::data_dir();
    let system = actix::System::new();
    system.block_on(async move {
        match Application::build(settings, home).await {
            Ok(app) => match app.run_until_stopped().await {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!(error = %e, "server failed");
                    EXIT_FAILED
                }
            },
            Err(StartError::Config(m)) => {
                eprintln!("flotilla: invalid configuration:\n{m}");
                EXIT_USAGE
            }
            Err(e) => {
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg.push_str(&format!(": {s}"));
                    src = s.source();
                }
                eprintln!("flotilla: {msg}");
                EXIT_FAILED
            }
        }
    })
}

/// `flotilla doctor`: every preflight check, one line each (or JSON); exit 1 on a failure.
fn doctor(path: Option<std::path::PathBuf>, json: bool) -> i32 {
    let settings = match load_valid(path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flotilla: {e}");
            return EXIT_FAILED;
        }
    };
    let checks = rt.block_on(crate::preflight::doctor::Doctor::current().run(&settings));
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    if json {
        print_json(&json!({"ok": !failed, "checks": checks}));
    } else {
        print!("{}", doctor_report(&checks));
    }
    if failed {
        EXIT_FAILED
    } else {
        0
    }
}

/// The checks as lines: `status  name  detail`, the fix indented under a problem, and a
/// summary.
fn doctor_report(checks: &[Check]) -> String {
    let width = checks
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!(
            "{:<4}  {:<width$}  {}\n",
            c.status.label(),
            c.name,
            c.detail
        ));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("{:<4}  {:<width$}  fix: {fix}\n", "", ""));
        }
    }
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    let (fails, warns) = (count(Status::Fail), count(Status::Warn));
    out.push_str(&match (fails, warns) {
        (0, 0) => "all checks passed\n".to_string(),
        (0, w) => format!("no failures; {w} warning(s)\n"),
        (f, w) => format!("{f} failure(s), {w} warning(s): fix the FAIL lines before spawning\n"),
    });
    out
}

fn init_here(force: bool) -> i32 {
    let cwd = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("flotilla: {e}");
            return EXIT_FAILED;
        }
    };
    let info = match init::detect_repo(&cwd) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("flotilla: {e}");
            return EXIT_USAGE;
        }
    };
    let token = init::generate_token();
    let path = init::default_config_path(&info.root);
    match init::write_config(&path, &init::render_config(&info, &token), force) {
        Ok(()) => {
            println!("wrote {}", path.display());
            println!("project `{}`; API token saved in server.token", info.name);
            println!("next: flotilla serve   (then: flotilla spawn --prompt \"…\")");
            0
        }
        Err(e) => {
            eprintln!("flotilla: {e}");
            EXIT_FAILED
        }
    }
}

enum Failure {
    Usage(String),
    Client(ClientError),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Client(e)
    }
}

fn print_json(v: &impl serde::Serialize) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("flotilla: {e}"),
    }
}

fn age(t: chrono::DateTime<Utc>) -> String {
    let s = (Utc::now() - t).num_seconds().max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn table(list: &SessionList) -> String {
    let mut rows = vec![[
        "ID".to_string(),
        "PROJECT".into(),
        "STATE".into(),
        "ACTIVITY".into(),
        "BRANCH".into(),
        "PR".into(),
        "COST".into(),
        "AGE".into(),
    ]];
    for s in &list.sessions {
        rows.push([
            s.id.clone(),
            s.project.clone(),
            s.state.to_string(),
            serde_json::to_value(s.activity)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            s.branch.clone().unwrap_or_else(|| "-".into()),
            s.pr.as_ref()
                .map(|p| format!("#{}", p.number))
                .unwrap_or_else(|| "-".into()),
            s.meta["usage"]["cost_usd"]
                .as_f64()
                .map(|c| format!("${c:.2}"))
                .unwrap_or_else(|| "-".into()),
            age(s.created_at),
        ]);
    }
    let mut widths = [0usize; 8];
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

async fn client_verb(cmd: &Command, c: &Client, settings: &Settings) -> Result<(), Failure> {
    match cmd {
        Command::Status {
            orphans: true,
            json,
            ..
        } => {
            let v: serde_json::Value = c.get("/api/v1/orphans").await?;
            if *json {
                print_json(&v);
            } else {
                let list = v["orphans"].as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    println!("no orphans");
                }
                for o in list {
                    println!(
                        "{:<10} {}  ({})",
                        o["kind"].as_str().unwrap_or(""),
                        o["name"].as_str().unwrap_or(""),
                        o["detail"].as_str().unwrap_or("")
                    );
                }
            }
        }
        Command::Status {
            project,
            state,
            json,
            ..
        } => {
            let mut q = Vec::new();
            if let Some(p) = project {
                q.push(format!("project={p}"));
            }
            if let Some(s) = state {
                q.push(format!("state={s}"));
            }
            let path = format!("/api/v1/sessions?{}", q.join("&"));
            let list: SessionList = c.get(&path).await?;
            if *json {
                print_json(&list);
            } else if list.sessions.is_empty() {
                println!("no sessions");
            } else {
                print!("{}", table(&list));
            }
        }
        Command::Spawn {
            project,
            prompt,
            issue,
            agent,
            branch,
            host,
            json,
            no_wait,
        } => {
            let project = project_or_only(project, settings)?;
            let body = json!({"project": project, "prompt": prompt, "issue": issue,
                "agent": agent, "branch": branch, "host": host});
            let mut s: SessionDetail = c.post("/api/v1/sessions", &body).await?;
            if !*no_wait {
                s = wait_started(c, &s.session.id).await?;
            }
            if *json {
                print_json(&s);
            } else {
                println!("{} {}", s.session.id, s.session.state);
            }
            if s.session.state == crate::store::SessionState::Errored {
                return Err(Failure::Client(ClientError::Decode(format!(
                    "session {} failed to start: {}",
                    s.session.id,
                    s.session.reason.unwrap_or_default()
                ))));
            }
        }
        Command::BatchSpawn {
            project,
            issues,
            file,
            agent,
            json,
        } => {
            let project = project_or_only(project, settings)?;
            let mut all = issues.clone();
            if let Some(f) = file {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", f.display())))?;
                all.extend(
                    text.lines()
                        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
                        .filter(|l| !l.is_empty()),
                );
            }
            if all.is_empty() {
                return Err(Failure::Usage("no issues given".into()));
            }
            let r: crate::http::fleet::BatchResult = c
                .post(
                    "/api/v1/sessions/batch",
                    &json!({"project": project, "issues": all, "agent": agent}),
                )
                .await?;
            for sk in &r.skipped {
                eprintln!(
                    "skipped {}: {}{}",
                    sk.issue,
                    sk.reason,
                    sk.session
                        .as_ref()
                        .map(|s| format!(" ({s})"))
                        .unwrap_or_default()
                );
            }
            let ids: Vec<String> = r.spawned.iter().map(|s| s.session.id.clone()).collect();
            let done = progress(c, &ids, !*json).await?;
            if *json {
                print_json(&json!({"spawned": done, "skipped": r.skipped}));
            } else {
                for s in &done {
                    println!(
                        "{} {} {}",
                        s.session.id,
                        s.session.state,
                        s.session.issue.clone().unwrap_or_default()
                    );
                }
            }
            if done
                .iter()
                .any(|s| s.session.state == crate::store::SessionState::Errored)
            {
                return Err(Failure::Client(ClientError::Decode(
                    "some sessions failed to start".into(),
                )));
            }
        }
        Command::Start { project, no_attach } => {
            let project = project_or_only(project, settings)?;
            let r: crate::http::fleet::OrchestratorResult = c
                .post(
                    &format!("/api/v1/projects/{project}/orchestrator"),
                    &json!({}),
                )
                .await?;
            let id = r.session.session.id.clone();
            println!(
                "{id} {} ({})",
                r.session.session.state,
                if r.created {
                    "started"
                } else {
                    "already running"
                }
            );
            if !*no_attach {
                wait_started(c, &id).await?;
                attach(c, &id).await?;
            }
        }
        Command::Attach { session } => attach(c, session).await?,
        Command::Send {
            session,
            question,
            message,
        } => {
            let mut body = json!({"message": message.join(" ")});
            if let Some(q) = question {
                body["question"] = json!(q);
            }
            let r: SendResult = c
                .post(&format!("/api/v1/sessions/{session}/send"), &body)
                .await?;
            if r.delivered {
                println!("delivered to {}", r.session);
            } else if r.pending {
                println!(
                    "queued for {}: still being typed (do not send it again)",
                    r.session
                );
            } else {
                println!("sent to {} but delivery was not confirmed", r.session);
            }
        }
        Command::Kill { session } | Command::Restore { session } | Command::Merge { session } => {
            let verb = match cmd {
                Command::Kill { .. } => "kill",
                Command::Restore { .. } => "restore",
                _ => "merge",
            };
            let r: ActionResult = c
                .post(&format!("/api/v1/sessions/{session}/{verb}"), &json!({}))
                .await?;
            match (&r.message, r.changed) {
                (Some(m), false) => println!("{m}"),
                _ => println!("{} {}", r.session.session.id, r.session.session.state),
            }
        }
        Command::Logs {
            session,
            after,
            no_follow,
            json,
        } => logs(c, session.as_deref(), *after, *no_follow, *json).await?,
        Command::Serve
        | Command::Doctor { .. }
        | Command::Init { .. }
        | Command::Completions { .. }
        | Command::Report { .. }
        | Command::SandboxExec { .. }
        | Command::TurnGuard { .. }
        | Command::Hook { .. } => {}
    }
    Ok(())
}

fn print_event(v: &Value, json: bool) {
    if json {
        println!("{v}");
        return;
    }
    let data = &v["data"];
    let mut line = format!(
        "{:>6} {} {:<12} {}",
        v["id"],
        v["at"].as_str().unwrap_or(""),
        v["session_id"].as_str().unwrap_or("-"),
        v["kind"].as_str().unwrap_or("")
    );
    if let (Some(f), Some(t)) = (data["from"].as_str(), data["to"].as_str()) {
        if f != t {
            line.push_str(&format!(" {f} → {t}"));
        }
    }
    if let Some(r) = data["reason"].as_str() {
        line.push_str(&format!(" ({r})"));
    }
    println!("{line}");
    let _ = std::io::stdout().flush();
}

async fn logs(
    c: &Client,
    session: Option<&str>,
    after: i64,
    no_follow: bool,
    json: bool,
) -> Result<(), Failure> {
    if no_follow {
        let path = match session {
            Some(s) => format!("/api/v1/sessions/{s}/events?after={after}&limit=5000"),
            None => {
                return Err(Failure::Usage("--no-follow needs a session id".into()));
            }
        };
        let v: Value = c.get(&path).await?;
        for e in v["events"].as_array().cloned().unwrap_or_default() {
            print_event(&e, json);
        }
        return Ok(());
    }
    let mut res = c.events(after).await?;
    let mut buf = String::new();
    loop {
        let chunk = match res.chunk().await {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(()),
            Err(e) => {
                return Err(Failure::Client(ClientError::Decode(format!(
                    "event stream broke: {e}"
                ))))
            }
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        for (_id, data) in parse_sse(&mut buf) {
            let Ok(v) = serde_json::from_str::<Value>(&data) else {
                continue;
            };
            if session.is_some_and(|s| v["session_id"].as_str() != Some(s)) {
                continue;
            }
            print_event(&v, json);
        }
    }
}

fn project_or_only(project: &Option<String>, settings: &Settings) -> Result<String, Failure> {
    match project {
        Some(p) => Ok(p.clone()),
        None if settings.projects.len() == 1 => {
            Ok(settings.projects.keys().next().cloned().unwrap_or_default())
        }
        None => Err(Failure::Usage(
            "--project is required when the config has zero or several projects".into(),
        )),
    }
}

/// How long the CLI waits for an agent to start.
const START_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Waits until the session has left `spawning`.
async fn wait_started(c: &Client, id: &str) -> Result<SessionDetail, Failure> {
    progress(c, &[id.to_string()], false)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Failure::Client(ClientError::Decode("session vanished".into())))
}

/// Waits until every session has left `spawning`, drawing a progress bar on stderr. Follows
/// the event stream rather than polling, so it returns as soon as the last agent runs: each
/// session's newest event so far is read first, then its state, then the stream from that
/// point on (a change after the read arrives on the stream; one before shows in the state).
async fn progress(c: &Client, ids: &[String], bar: bool) -> Result<Vec<SessionDetail>, Failure> {
    let deadline = tokio::time::Instant::now() + START_WAIT;
    let mut cursor = i64::MAX;
    let mut pending = std::collections::BTreeSet::new();
    for id in ids {
        let v: Value = c
            .get(&format!("/api/v1/sessions/{id}/events?after=0&limit=1000"))
            .await?;
        let last = v["events"]
            .as_array()
            .and_then(|e| e.last())
            .and_then(|e| e["id"].as_i64())
            .unwrap_or(0);
        cursor = cursor.min(last);
        let d: SessionDetail = c.get(&format!("/api/v1/sessions/{id}")).await?;
        if d.session.state == crate::store::SessionState::Spawning {
            pending.insert(id.clone());
        }
    }
    draw_progress(bar, ids.len() - pending.len(), ids.len());
    if !pending.is_empty() {
        let timeout = || {
            Failure::Client(ClientError::Decode(
                "timed out waiting for agents to start".into(),
            ))
        };
        let mut res = c.events(cursor).await?;
        let mut buf = String::new();
        while !pending.is_empty() {
            let chunk = match tokio::time::timeout_at(deadline, res.chunk()).await {
                Err(_) => return Err(timeout()),
                Ok(Ok(Some(b))) => b,
                Ok(Ok(None)) => {
                    return Err(Failure::Client(ClientError::Decode(
                        "the event stream ended before the agents started".into(),
                    )))
                }
                Ok(Err(e)) => {
                    return Err(Failure::Client(ClientError::Decode(format!(
                        "event stream broke: {e}"
                    ))))
                }
            };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            for (_id, data) in parse_sse(&mut buf) {
                let Ok(v) = serde_json::from_str::<Value>(&data) else {
                    continue;
                };
                if left_spawning(&v) {
                    if let Some(s) = v["session_id"].as_str() {
                        pending.remove(s);
                    }
                }
            }
            draw_progress(bar, ids.len() - pending.len(), ids.len());
        }
    }
    let mut all = Vec::with_capacity(ids.len());
    for id in ids {
        all.push(
            c.get::<SessionDetail>(&format!("/api/v1/sessions/{id}"))
                .await?,
        );
    }
    Ok(all)
}

/// Whether an event is a session's move out of `spawning`.
fn left_spawning(event: &Value) -> bool {
    let to = event["data"]["to"].as_str();
    to.is_some_and(|t| t != "spawning") && event["data"]["from"].as_str() != to
}

/// The progress bar of a batch: `started` of `total` have left `spawning`.
fn draw_progress(bar: bool, started: usize, total: usize) {
    if !bar || total == 0 {
        return;
    }
    let width = 30;
    let filled = started * width / total;
    eprint!(
        "\r[{}{}] {started}/{total} started",
        "#".repeat(filled),
        ".".repeat(width - filled),
    );
    if started == total {
        eprintln!();
    }
}

/// Replaces this process with the session's attach command (e.g. `tmux attach`).
async fn attach(c: &Client, id: &str) -> Result<(), Failure> {
    use std::os::unix::process::CommandExt;
    let a: crate::plugins::AttachInfo = c.get(&format!("/api/v1/sessions/{id}/attach")).await?;
    let Some((program, args)) = a.command.split_first() else {
        return Err(Failure::Usage(format!(
            "session {id} cannot be attached to"
        )));
    };
    let err = std::process::Command::new(program).args(args).exec();
    Err(Failure::Usage(format!("cannot run {program}: {err}")))
}

/// Largest hook event read from stdin.
const MAX_HOOK_EVENT: u64 = 1024 * 1024;

/// `flotilla hook <agent>`: an agent's hook event on stdin, reported as a state when it means
/// one. Exits 0 whatever happens (a hook's failure must not block the agent); problems go to
/// stderr.
fn hook(agent: super::HookAgent) -> i32 {
    use std::io::Read;
    if agent == super::HookAgent::Aider {
        // Aider runs its notifications command as it starts waiting for the human, before it
        // prints a question, with the terminal as stdin: nothing to read. Its turn is over
        // (idle); the screen tells whether the wait is a question (needs input).
        if let Err((_, why)) = send_report(
            crate::domain::machine::ReportedState::Waiting,
            Some("aider waits for input".into()),
            None,
            None,
            true,
        ) {
            eprintln!("flotilla hook: the report failed: {why}");
        }
        return 0;
    }
    let mut text = String::new();
    if let Err(e) = std::io::stdin()
        .take(MAX_HOOK_EVENT)
        .read_to_string(&mut text)
    {
        eprintln!("flotilla hook: cannot read the event: {e}");
        return 0;
    }
    let Ok(event) = serde_json::from_str::<Value>(&text) else {
        eprintln!("flotilla hook: the event is not JSON");
        return 0;
    };
    let question = match agent {
        super::HookAgent::ClaudeCode => claude_hook_question(&event),
        super::HookAgent::Aider => None,
    };
    if let Some(q) = question {
        let note = crate::plugins::activity::mask_secrets(&q);
        // Nothing on stdout: the agent reads a hook's stdout as its decision.
        if let Err((_, why)) = send_report(
            crate::domain::machine::ReportedState::NeedsInput,
            Some(note),
            None,
            None,
            true,
        ) {
            eprintln!("flotilla hook: the report failed: {why}");
        }
    }
    0
}

/// What a Claude Code hook event asks of the human, if it asks anything: a permission dialog
/// (`PermissionRequest`, with the tool and its input) or a notification that it waits for
/// something else (e.g. an elicitation dialog; not the idle reminder after a finished turn,
/// which the log already shows, nor the permission prompt's own notification).
pub fn claude_hook_question(event: &Value) -> Option<String> {
    use crate::plugins::agents::claude::{plan, waiting_question};
    match event["hook_event_name"].as_str()? {
        "PermissionRequest" => {
            let name = event["tool_name"].as_str().unwrap_or("a tool");
            let input = &event["tool_input"];
            Some(match hook_plan(name, event) {
                Some(plan) => waiting_question(name, &plan::with_plan(input, &plan)),
                None => waiting_question(name, input),
            })
        }
        "Notification" => match event["notification_type"].as_str() {
            // A permission prompt's notification repeats the PermissionRequest already
            // reported (in vaguer words, and later): taken as a new question it would notify
            // twice.
            Some("idle_prompt" | "auth_success" | "permission_prompt") => None,
            _ => event["message"]
                .as_str()
                .filter(|m| !m.trim().is_empty())
                .map(str::to_string),
        },
        _ => None,
    }
}

/// The plan of a plan approval that names none (Claude Code 2.1): read through the session's
/// transcript, whose path the event gives.
fn hook_plan(tool: &str, event: &Value) -> Option<String> {
    use crate::plugins::agents::claude::plan;
    use std::io::{Read, Seek, SeekFrom};
    if !plan::lacks_plan(tool, &event["tool_input"]) {
        return None;
    }
    let log_path = std::path::Path::new(event["transcript_path"].as_str()?);
    let mut f = std::fs::File::open(log_path).ok()?;
    let len = f.metadata().ok()?.len();
    let tail = crate::plugins::activity::TAIL_BYTES;
    f.seek(SeekFrom::Start(len.saturating_sub(tail))).ok()?;
    let mut bytes = Vec::new();
    f.take(tail).read_to_end(&mut bytes).ok()?;
    plan::read_plan_blocking(log_path, &String::from_utf8_lossy(&bytes))
}

/// `flotilla report`: what an agent runs to tell Flotilla its state.
fn report(
    state: crate::domain::machine::ReportedState,
    note: Option<String>,
    pr_url: Option<String>,
    pr_number: Option<i64>,
) -> i32 {
    match send_report(state, note, pr_url, pr_number, false) {
        Ok(v) => {
            println!(
                "{} {}",
                v["session"].as_str().unwrap_or(""),
                v["state"].as_str().unwrap_or("")
            );
            0
        }
        Err((code, message)) => {
            eprintln!("flotilla: {message}");
            code
        }
    }
}

/// Posts an agent's report with the session's own token; the server's answer, or the exit
/// code and why.
fn send_report(
    state: crate::domain::machine::ReportedState,
    note: Option<String>,
    pr_url: Option<String>,
    pr_number: Option<i64>,
    hook: bool,
) -> Result<Value, (i32, String)> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (Some(id), Some(token), Some(server)) = (
        var("FLOTILLA_SESSION_ID"),
        var("FLOTILLA_REPORT_TOKEN"),
        var("FLOTILLA_SERVER"),
    ) else {
        return Err((
            EXIT_USAGE,
            "report must run inside a Flotilla session (FLOTILLA_SESSION_ID, \
             FLOTILLA_REPORT_TOKEN and FLOTILLA_SERVER are not all set)"
                .into(),
        ));
    };
    let failed = |e: &dyn std::fmt::Display| (EXIT_FAILED, e.to_string());
    let client = Client::new(&server, Some(token)).map_err(|e| failed(&e))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failed(&e))?;
    let body = json!({"state": state, "note": note, "pr_url": pr_url, "pr_number": pr_number, "hook": hook});
    let path = format!("/agent/v1/sessions/{id}/report");
    rt.block_on(async {
        let mut waits = REPORT_RETRIES.iter();
        loop {
            match client.post::<Value>(&path, &body).await {
                // A server busy or briefly out of reach (a tunnel from a host, a restart)
                // gets the report again: a lost `needs_input` leaves a human unasked. Twice
                // the same report is one (the session already is what it says).
                Err(e) if transient(&e) => match waits.next() {
                    Some(wait) => tokio::time::sleep(*wait).await,
                    None => return Err(failed(&e)),
                },
                other => return other.map_err(|e| failed(&e)),
            }
        }
    })
}

/// The waits before the second and later tries of a report (a hook's report holds its agent
/// up: a few seconds at most).
const REPORT_RETRIES: [std::time::Duration; 2] = [
    std::time::Duration::from_millis(300),
    std::time::Duration::from_secs(1),
];

/// Whether a failed call may succeed if tried again: the server out of reach, or answering
/// that it is busy or its gateway failed.
fn transient(e: &ClientError) -> bool {
    match e {
        ClientError::Unreachable { .. } => true,
        ClientError::Api { status, .. } => matches!(status.as_u16(), 502..=504),
        ClientError::Decode(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_busy_or_unreachable_server_has_a_report_tried_again() {
        let api = |status: u16| ClientError::Api {
            status: reqwest::StatusCode::from_u16(status).expect("status"),
            message: "m".into(),
        };
        assert!(transient(&api(503)) && transient(&api(502)) && transient(&api(504)));
        // A refusal stays one: the token, the session, the state said no.
        assert!(!transient(&api(401)) && !transient(&api(404)) && !transient(&api(409)));
        assert!(!transient(&ClientError::Decode("x".into())));
        // Nothing listening (port 9 of this machine: discard, not served here).
        let client = Client::new("http://127.0.0.1:9", None).expect("client");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let down = rt
            .block_on(client.get::<Value>("/healthz"))
            .expect_err("nobody listens");
        assert!(transient(&down), "{down}");
    }

    /// Hook events as Claude Code 2.1 sends them on stdin (fields we do not read trimmed).
    #[test]
    fn claude_hook_events_become_questions_and_idle_reminders_do_not() {
        let permission = json!({
            "hook_event_name": "PermissionRequest",
            "tool_name": "Bash",
            "tool_input": {"command": "git push origin HEAD", "description": "Push"},
        });
        assert_eq!(
            claude_hook_question(&permission).as_deref(),
            Some("approve Bash: git push origin HEAD")
        );
        let ask = json!({
            "hook_event_name": "Notification",
            "notification_type": "elicitation_dialog",
            "message": "Claude needs your input",
        });
        assert_eq!(
            claude_hook_question(&ask).as_deref(),
            Some("Claude needs your input")
        );
        let repeat = json!({
            "hook_event_name": "Notification",
            "notification_type": "permission_prompt",
            "message": "Claude needs your permission to use Bash",
        });
        assert_eq!(claude_hook_question(&repeat), None);
        let idle = json!({
            "hook_event_name": "Notification",
            "notification_type": "idle_prompt",
            "message": "Claude is waiting for your input",
        });
        assert_eq!(claude_hook_question(&idle), None);
        assert_eq!(
            claude_hook_question(&json!({"hook_event_name": "Stop"})),
            None
        );
        assert_eq!(claude_hook_question(&json!({})), None);
    }
}
