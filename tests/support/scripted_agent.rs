//! A scripted stand-in for a coding agent, built as a cargo example (`scripted_agent`) so tests
//! can run it wherever a real agent CLI would run, including through the `claude-code` plugin
//! (`command: [path/to/scripted_agent]`).
//!
//! It behaves like Claude Code where Flotilla can observe it:
//! - accepts Claude's flags (value-taking ones are skipped with their value, unknown ones are
//!   ignored, everything after `--` is positional);
//! - reads its task from the last positional argument, else from `$FLOTILLA_PROMPT_FILE`;
//!   resumed (`--resume ID`), the task is the file's and a positional argument is the first
//!   message, handled as if typed in;
//! - writes a Claude-format JSONL log to `$CLAUDE_CONFIG_DIR` or `$HOME/.claude`
//!   `/projects/<cwd with non-alphanumerics as '-'>/<session uuid>.jsonl` (`--resume ID` and
//!   `--session-id ID` pick the file), with timestamps and `message.usage` token counts;
//! - does the work: appends to `scripted-notes.md`, `git commit`s, `git push origin HEAD`;
//! - on a stdin terminal it is a TUI-like line editor: raw mode, bracketed paste enabled, the
//!   draft echoed on its input line (`> `), Enter submits; otherwise it reads lines.
//!
//! Task keywords: `OPEN_PR` opens a pull request for its branch after pushing (a POST to
//! `$SCRIPTED_GITHUB_API/repos/$SCRIPTED_GITHUB_REPO/pulls` with `$SCRIPTED_GITHUB_TOKEN`, as
//! `gh pr create` would); `ASK` asks "Do you want to proceed? (y/n)" and waits for the answer (logged
//! as a pending `AskUserQuestion` tool call, i.e. waiting_input); `IDLE` skips the work and
//! goes quiet; `LATE_LOG` shows the turn's end on screen 3 s before it logs it, drawing
//! nothing then. Messages typed in: `exit N` exits with N, `commit MSG` makes and pushes another
//! commit, `ask again` asks the `ASK` question again, an instruction whose first line ends with "and push." (Flotilla's CI, review and
//! conflict reactions) is obeyed with a fix commit and a push when the task says `FIX`,
//! anything else is logged as a user message and echoed as `got: LINE`.
//! Dependency-free beyond what the crate already uses (libc, serde_json, chrono, uuid).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

const MODEL: &str = "claude-sonnet-4-5-20250929";
/// Claude flags that take a value (skipped together with it).
const VALUE_FLAGS: &[&str] = &[
    "--append-system-prompt",
    "--append-system-prompt-file",
    "--system-prompt",
    "--system-prompt-file",
    "--model",
    "--permission-mode",
    "--resume",
    "-r",
    "--session-id",
    "--settings",
    "--add-dir",
    "--allowed-tools",
    "--allowedTools",
    "--disallowed-tools",
    "--disallowedTools",
    "--mcp-config",
    "--agent",
    "--fallback-model",
    "--output-format",
    "--input-format",
];

struct Args {
    prompt: Option<String>,
    session: Option<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        prompt: None,
        session: None,
    };
    let mut it = std::env::args().skip(1);
    let mut positional = Vec::new();
    while let Some(a) = it.next() {
        if a == "--" {
            positional.extend(it.by_ref());
            break;
        }
        if VALUE_FLAGS.contains(&a.as_str()) {
            let v = it.next();
            if a == "--resume" || a == "-r" || a == "--session-id" {
                args.session = v;
            }
        } else if !a.starts_with('-') {
            positional.push(a);
        }
    }
    args.prompt = positional.pop();
    args
}

/// Claude Code's project directory name for a path.
fn encode(path: &str) -> String {
    path.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// The Claude-format session log.
struct Log {
    file: File,
    session: String,
    cwd: String,
    branch: String,
    parent: Option<String>,
    /// Fix commits made for Flotilla's instructions so far.
    fixes: u32,
}

impl Log {
    fn open(cwd: &Path, session: Option<String>) -> std::io::Result<Log> {
        let base = match std::env::var("CLAUDE_CONFIG_DIR") {
            Ok(d) => PathBuf::from(d),
            Err(_) => PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/tmp".into()))
                .join(".claude"),
        };
        let cwd_s = cwd.to_string_lossy().into_owned();
        let dir = base.join("projects").join(encode(&cwd_s));
        std::fs::create_dir_all(&dir)?;
        let session = session.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{session}.jsonl")))?;
        Ok(Log {
            file,
            session,
            cwd: cwd_s,
            branch: git_out(cwd, &["rev-parse", "--abbrev-ref", "HEAD"]).unwrap_or_default(),
            parent: None,
            fixes: 0,
        })
    }

    fn write(&mut self, ty: &str, message: Value, extra: Value) {
        let uuid = uuid::Uuid::new_v4().to_string();
        let mut v = json!({
            "parentUuid": self.parent,
            "isSidechain": false,
            "userType": "external",
            "cwd": self.cwd,
            "sessionId": self.session,
            "version": "2.0.14",
            "gitBranch": self.branch,
            "type": ty,
            "message": message,
            "uuid": uuid,
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        if let (Some(o), Value::Object(x)) = (v.as_object_mut(), extra) {
            o.extend(x);
        }
        self.parent = Some(uuid);
        let _ = writeln!(self.file, "{v}");
        let _ = self.file.flush();
    }

    fn user(&mut self, text: &str) {
        self.write("user", json!({"role": "user", "content": text}), json!({}));
    }

    fn assistant(&mut self, content: Value, stop_reason: Option<&str>) {
        let out = 20 + content.to_string().len() as u64 / 4;
        let msg = json!({
            "id": format!("msg_{}", uuid::Uuid::new_v4().simple()),
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": {
                "input_tokens": 12,
                "cache_creation_input_tokens": 800,
                "cache_read_input_tokens": 4000,
                "output_tokens": out,
                "service_tier": "standard"
            }
        });
        self.write(
            "assistant",
            msg,
            json!({"requestId": format!("req_{}", uuid::Uuid::new_v4().simple())}),
        );
    }

    /// A tool call and its result.
    fn tool(&mut self, name: &str, input: Value, result: &str) {
        let id = format!("toolu_{}", uuid::Uuid::new_v4().simple());
        self.assistant(
            json!([{"type": "tool_use", "id": id, "name": name, "input": input}]),
            Some("tool_use"),
        );
        self.write(
            "user",
            json!({"role": "user", "content": [{"tool_use_id": id, "type": "tool_result", "content": result, "is_error": false}]}),
            json!({}),
        );
    }
}

fn git_out(cwd: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(cwd)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs git with a fixed identity; returns its combined output and success.
fn git(cwd: &Path, args: &[&str]) -> (bool, String) {
    match Command::new("git")
        .args([
            "-c",
            "user.name=Scripted Agent",
            "-c",
            "user.email=scripted@localhost",
        ])
        .args(args)
        .current_dir(cwd)
        .output()
    {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
            .trim()
            .to_string(),
        ),
        Err(e) => (false, e.to_string()),
    }
}

/// Edits a file, commits and pushes; logs each step as a tool call.
fn commit_and_push(out: &mut Term, log: &mut Log, cwd: &Path, message: &str) {
    let notes = cwd.join("scripted-notes.md");
    let line = format!("- {message}\n");
    let edited = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&notes)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    log.tool(
        "Edit",
        json!({"file_path": notes.to_string_lossy(), "old_string": "", "new_string": line}),
        if edited.is_ok() { "ok" } else { "failed" },
    );
    let (_, added) = git(cwd, &["add", "scripted-notes.md"]);
    let (ok, committed) = git(cwd, &["commit", "-m", message]);
    log.tool(
        "Bash",
        json!({"command": format!("git commit -m {message:?}")}),
        &committed,
    );
    out.line(&format!("commit: {}", if ok { "ok" } else { "failed" }));
    if !ok {
        out.line(&added);
        out.line(&committed);
        return;
    }
    let (ok, pushed) = git(cwd, &["push", "origin", "HEAD"]);
    log.tool("Bash", json!({"command": "git push origin HEAD"}), &pushed);
    out.line(&format!("push: {}", if ok { "ok" } else { "failed" }));
    if !ok {
        out.line(&pushed);
    }
}

/// The terminal: raw mode with bracketed paste when stdin is a tty, plain lines otherwise.
struct Term {
    saved: Option<libc::termios>,
    /// The input line is already drawn (the next read does not draw it again).
    prompted: bool,
}

impl Term {
    fn new() -> Term {
        // SAFETY: isatty/tcgetattr/tcsetattr on fd 0 with a zeroed, then filled, termios.
        unsafe {
            if libc::isatty(0) != 1 {
                return Term {
                    saved: None,
                    prompted: false,
                };
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return Term {
                    saved: None,
                    prompted: false,
                };
            }
            let saved = t;
            t.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
            t.c_iflag &= !(libc::ICRNL | libc::INLCR | libc::IXON);
            t.c_cc[libc::VMIN] = 1;
            t.c_cc[libc::VTIME] = 0;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            print!("\x1b[?2004h");
            let _ = std::io::stdout().flush();
            Term {
                saved: Some(saved),
                prompted: false,
            }
        }
    }

    fn line(&mut self, s: &str) {
        let mut o = std::io::stdout().lock();
        for l in s.lines() {
            let _ = writeln!(o, "{l}");
        }
        let _ = o.flush();
    }

    fn prompt(&mut self) {
        print!("> ");
        let _ = std::io::stdout().flush();
    }

    fn restore(&mut self) {
        if let Some(t) = self.saved.take() {
            print!("\x1b[?2004l");
            let _ = std::io::stdout().flush();
            // SAFETY: restoring the attributes read in `new`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &t);
            }
        }
    }

    fn exit(&mut self, code: i32) -> ! {
        self.restore();
        std::process::exit(code);
    }

    /// The next submitted message, or `None` at end of input.
    fn read_message(&mut self) -> Option<String> {
        if self.saved.is_none() {
            let mut line = String::new();
            return match std::io::stdin().lock().read_line(&mut line) {
                Ok(0) | Err(_) => None,
                Ok(_) => Some(line.trim_end_matches(['\n', '\r']).to_string()),
            };
        }
        if !std::mem::take(&mut self.prompted) {
            self.prompt();
        }
        let mut draft: Vec<u8> = Vec::new();
        let mut in_paste = false;
        let mut stdin = std::io::stdin().lock();
        let mut out = std::io::stdout();
        let mut byte = [0u8; 1];
        let mut next = |stdin: &mut std::io::StdinLock| match stdin.read(&mut byte) {
            Ok(1) => Some(byte[0]),
            _ => None,
        };
        loop {
            let b = next(&mut stdin)?;
            match b {
                0x1b => {
                    // An escape sequence: only bracketed-paste markers matter.
                    let mut seq = Vec::new();
                    if next(&mut stdin)? != b'[' {
                        continue;
                    }
                    loop {
                        let c = next(&mut stdin)?;
                        seq.push(c);
                        if (0x40..=0x7e).contains(&c) {
                            break;
                        }
                    }
                    match seq.as_slice() {
                        b"200~" => in_paste = true,
                        b"201~" => in_paste = false,
                        _ => {}
                    }
                }
                b'\r' | b'\n' if in_paste => {
                    draft.push(b'\n');
                    let _ = out.write_all(b"\r\n");
                }
                b'\r' | b'\n' => {
                    let _ = out.write_all(b"\r\n");
                    let _ = out.flush();
                    return Some(String::from_utf8_lossy(&draft).into_owned());
                }
                0x03 => self.exit(130),
                0x15 => {
                    // Ctrl-U clears the input line, as in readline and the agents' TUIs.
                    for _ in 0..draft.len() {
                        let _ = out.write_all(b"\x08 \x08");
                    }
                    draft.clear();
                }
                0x04 if draft.is_empty() => return None,
                0x7f | 0x08 => {
                    if draft.pop().is_some() {
                        let _ = out.write_all(b"\x08 \x08");
                    }
                }
                b => {
                    draft.push(b);
                    let _ = out.write_all(&[b]);
                }
            }
            let _ = out.flush();
        }
    }
}

/// Opens a PR for the current branch on the GitHub API named by the environment.
fn open_pr(out: &mut Term, log: &mut Log, cwd: &Path, title: &str) {
    let (Ok(api), Ok(repo)) = (
        std::env::var("SCRIPTED_GITHUB_API"),
        std::env::var("SCRIPTED_GITHUB_REPO"),
    ) else {
        out.line("open_pr: SCRIPTED_GITHUB_API and SCRIPTED_GITHUB_REPO are not set");
        return;
    };
    let token = std::env::var("SCRIPTED_GITHUB_TOKEN").unwrap_or_default();
    let branch = git_out(cwd, &["rev-parse", "--abbrev-ref", "HEAD"]).unwrap_or_default();
    let body = json!({"title": title, "head": branch, "base": "main", "body": "Opened by the scripted agent."})
        .to_string();
    let answer = http_post(&api, &format!("/repos/{repo}/pulls"), &token, &body);
    log.tool(
        "Bash",
        json!({"command": format!("gh pr create --title {title:?} --head {branch}")}),
        answer.as_deref().unwrap_or("failed"),
    );
    match answer {
        Ok(a) if a.starts_with("HTTP/1.1 201") => out.line("pr: opened"),
        Ok(a) => out.line(&format!("pr: refused: {}", a.lines().next().unwrap_or(""))),
        Err(e) => out.line(&format!("pr: failed: {e}")),
    }
}

/// A minimal HTTP/1.1 POST to a plain `http://host:port` base (the tests' fake GitHub).
fn http_post(base: &str, path: &str, token: &str, body: &str) -> std::io::Result<String> {
    use std::net::TcpStream;
    let host = base
        .strip_prefix("http://")
        .ok_or_else(|| std::io::Error::other("only http:// bases are supported"))?
        .trim_end_matches('/');
    let mut stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nAccept: application/vnd.github+json\r\nUser-Agent: scripted-agent\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

fn main() {
    let args = parse_args();
    let from_file = std::env::var("FLOTILLA_PROMPT_FILE")
        .ok()
        .and_then(|p| std::fs::read_to_string(p).ok());
    // Resumed with a prompt (`--resume ID -- TEXT`, as Flotilla restarts an agent for
    // instructions): the text is the conversation's next message; the task stays the file's.
    let (prompt, first) = if args.session.is_some() {
        (
            from_file.or_else(|| args.prompt.clone()),
            args.prompt.clone(),
        )
    } else {
        (args.prompt.clone().or(from_file), None)
    };
    let Some(prompt) = prompt else {
        eprintln!("scripted_agent: no prompt (argument or $FLOTILLA_PROMPT_FILE)");
        std::process::exit(2);
    };
    let cwd = std::env::current_dir()
        .and_then(std::fs::canonicalize)
        .unwrap_or_else(|_| PathBuf::from("."));
    let mut term = Term::new();
    let mut log = match Log::open(&cwd, args.session.clone()) {
        Ok(l) => l,
        Err(e) => {
            term.line(&format!("scripted_agent: cannot open the session log: {e}"));
            term.exit(2);
        }
    };
    term.line(&format!("scripted agent, session {}", log.session));
    if args.session.is_some() {
        term.line("resumed");
    } else {
        log.user(&prompt);
    }
    if args.session.is_none() && !prompt.contains("IDLE") {
        log.assistant(json!([{"type": "text", "text": "I'll do the task."}]), None);
        term.line("working");
        let title = prompt
            .lines()
            .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .unwrap_or("work")
            .trim()
            .to_string();
        commit_and_push(&mut term, &mut log, &cwd, &format!("scripted: {title}"));
        if prompt.contains("OPEN_PR") {
            open_pr(&mut term, &mut log, &cwd, &title);
        }
        if prompt.contains("ASK") {
            ask_to_proceed(&mut term, &mut log);
        }
        if prompt.contains("LATE_LOG") {
            // The screen shows the turn's end before the log does, and nothing is drawn when
            // the log catches up (Claude Code on a loaded machine).
            term.line("DONE");
            if term.saved.is_some() {
                term.prompt();
                term.prompted = true;
            }
            std::thread::sleep(std::time::Duration::from_secs(3));
            log.assistant(json!([{"type": "text", "text": "Done."}]), Some("end_turn"));
        } else {
            log.assistant(json!([{"type": "text", "text": "Done."}]), Some("end_turn"));
            term.line("DONE");
        }
    }
    let mut first = first;
    while let Some(msg) = first.take().or_else(|| term.read_message()) {
        if msg.trim().is_empty() {
            continue;
        }
        log.user(&msg);
        let first = msg.lines().next().unwrap_or("").trim().to_string();
        if let Some(code) = first.strip_prefix("exit ") {
            let code = code.trim().parse().unwrap_or(1);
            log.assistant(json!([{"type": "text", "text": "Bye."}]), Some("end_turn"));
            term.line(&format!("exiting {code}"));
            term.exit(code);
        }
        if let Some(m) = first.strip_prefix("commit ") {
            commit_and_push(&mut term, &mut log, &cwd, m.trim());
        } else if first == "ask again" {
            ask_to_proceed(&mut term, &mut log);
        } else if prompt.contains("FIX") && first.ends_with("and push.") {
            let n = log.fixes + 1;
            log.fixes = n;
            commit_and_push(&mut term, &mut log, &cwd, &format!("fix {n}: {first}"));
        } else {
            for l in msg.lines() {
                term.line(&format!("got: {l}"));
            }
        }
        log.assistant(
            json!([{"type": "text", "text": "Noted."}]),
            Some("end_turn"),
        );
    }
    term.exit(0);
}

/// Asks "Do you want to proceed? (y/n)" (a pending `AskUserQuestion` call in the log) and
/// waits for the answer.
fn ask_to_proceed(term: &mut Term, log: &mut Log) {
    let id = format!("toolu_{}", uuid::Uuid::new_v4().simple());
    log.assistant(
        json!([{"type": "tool_use", "id": id, "name": "AskUserQuestion", "input": {"questions": [{"question": "Do you want to proceed?", "header": "Proceed", "options": [{"label": "Yes"}, {"label": "No"}], "multiSelect": false}]}}]),
        Some("tool_use"),
    );
    term.line("Do you want to proceed? (y/n)");
    let answer = term.read_message().unwrap_or_default();
    log.write(
        "user",
        json!({"role": "user", "content": [{"tool_use_id": id, "type": "tool_result", "content": format!("User answered: {answer}")}]}),
        json!({}),
    );
    term.line(&format!("answer: {answer}"));
}
