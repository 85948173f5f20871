//! A scripted stand-in for `claude -p --output-format stream-json`, built as a cargo example
//! (`scripted_assistant`) so the chat tests can run it as the `claude` assistant
//! (`chat.assistant: { kind: claude, command: [path/to/scripted_assistant] }`).
//!
//! It prints Claude's stream-json: a `system/init` line with the session id (the `--resume`
//! id when given, else a fresh one), `assistant` lines, and a `result` line with the session
//! id. Every run appends two JSON lines to `$SCRIPTED_LOG` (if set): `start` (argv, cwd,
//! prompt, resume id, pid) when it begins and `end` when it finished normally.
//!
//! Prompt keywords:
//! - `FAIL`: writes an error to stderr and exits 3 (no result);
//! - `TOOLS`: answers "Plan:", a `Bash ls` tool call, then "Done" (scenario 13);
//! - `WAIT:<path>`: waits (up to 120 s) until the file `<path>` exists before answering;
//! - `SLEEP:<secs>`: sleeps that long before answering (cancel and timeout tests);
//! - `ENV`: answers with the names of its environment variables (scrubbing tests);
//! - `REFUSED`: answers "Tried.", then ends like a real CLI that was refused a tool and ran
//!   out of turns: a `result` with subtype `error_max_turns`, `is_error`, a
//!   `permission_denials` entry (Bash `make deploy`) and `total_cost_usd` 0.25, exit 0.
//!
//! - `RUNNING:<dir>`: counts the turns running at once: the run keeps a file `<dir>/<pid>`
//!   (holding its parent's pid: the Flotilla node's turn guard, which dies with the node, or
//!   the node itself) while it runs, and its `start` and `end`
//!   log lines carry `running`, the number of such files whose node is alive (orphans of a
//!   node killed with `kill -9` do not count). Counted after its own file is written and
//!   before it is removed, so of any runs that overlap, the first to end sees them all.
//! - `NOCOST`: the `result` reports tokens (10 in, 5 out) and no cost;
//! - `MODEL:<name>`: the model `system/init` names (default `scripted-model`).
//!
//! Otherwise it answers `echo: <prompt>`.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

fn log(event: &str, extra: serde_json::Value) {
    if let Ok(path) = std::env::var("SCRIPTED_LOG") {
        let mut line = json!({ "event": event, "pid": std::process::id() });
        if let (Some(o), Some(e)) = (line.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                o.insert(k.clone(), v.clone());
            }
        }
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            // One write(2) per line: concurrent runs (and orphans of a killed server) append
            // to the same file, and `writeln!` may split a line into several writes.
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
}

/// Whether process `pid` is alive (not gone, not a zombie).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|st| {
            st.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Runs in `dir` whose node is alive.
fn running(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_to_string(e.path()).is_ok_and(|parent| alive(parent.trim()))
                })
                .count()
        })
        .unwrap_or(0)
}

fn emit(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn word_after<'a>(prompt: &'a str, key: &str) -> Option<&'a str> {
    let i = prompt.find(key)?;
    prompt[i + key.len()..].split_whitespace().next()
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let mut prompt: Option<String> = None;
    let mut resume: Option<String> = None;
    let mut i = 1;
    while i < argv.len() {
        match argv[i].as_str() {
            "-p" | "--print" => {
                if let Some(next) = argv.get(i + 1).filter(|a| !a.starts_with("--")) {
                    prompt = Some(next.clone());
                    i += 1;
                }
            }
            "--resume" => {
                resume = argv.get(i + 1).cloned();
                i += 1;
            }
            "--output-format" | "--permission-mode" | "--model" => i += 1,
            _ => {}
        }
        i += 1;
    }
    let prompt = prompt.unwrap_or_else(|| {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut s);
        s
    });
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let counted = word_after(&prompt, "RUNNING:").map(|dir| {
        let dir = Path::new(dir).to_path_buf();
        let _ = std::fs::create_dir_all(&dir);
        let me = dir.join(std::process::id().to_string());
        let _ = std::fs::write(&me, std::os::unix::process::parent_id().to_string());
        (dir, me)
    });
    let now_running = || counted.as_ref().map(|(dir, _)| running(dir));
    log(
        "start",
        json!({ "argv": argv, "cwd": cwd, "prompt": prompt, "resume": resume,
            "running": now_running() }),
    );
    let finish = || {
        let line = json!({ "prompt": prompt, "running": now_running() });
        if let Some((_, me)) = &counted {
            let _ = std::fs::remove_file(me);
        }
        log("end", line);
    };
    let session = resume.clone().unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("sess-{}-{nanos}", std::process::id())
    });
    let model = word_after(&prompt, "MODEL:").unwrap_or("scripted-model");
    emit(
        json!({"type": "system", "subtype": "init", "session_id": session, "cwd": cwd, "model": model}),
    );
    if prompt.contains("FAIL") {
        if let Some((_, me)) = &counted {
            let _ = std::fs::remove_file(me);
        }
        eprintln!("scripted failure: the model is unavailable");
        std::process::exit(3);
    }
    if let Some(path) = word_after(&prompt, "WAIT:") {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !Path::new(path).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if let Some(secs) = word_after(&prompt, "SLEEP:").and_then(|s| s.parse::<u64>().ok()) {
        std::thread::sleep(Duration::from_secs(secs));
    }
    let say = |text: &str| {
        emit(json!({"type": "assistant", "session_id": session,
            "message": {"role": "assistant", "content": [{"type": "text", "text": text}]}}));
    };
    if prompt.contains("TOOLS") {
        say("Plan:");
        emit(json!({"type": "assistant", "session_id": session,
            "message": {"role": "assistant", "content": [
                {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "ls"}}]}}));
        say("Done");
    } else if prompt.contains("REFUSED") {
        say("Tried.");
        emit(
            json!({"type": "result", "subtype": "error_max_turns", "is_error": true,
            "session_id": session, "total_cost_usd": 0.25,
            "usage": {"input_tokens": 10, "output_tokens": 5},
            "permission_denials": [{"tool_name": "Bash", "tool_use_id": "t9",
                "tool_input": {"command": "make deploy"}}]}),
        );
        finish();
        return;
    } else if prompt.contains("ENV") {
        let mut names: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
        names.sort();
        say(&format!("env: {}", names.join(",")));
    } else {
        say(&format!("echo: {}", prompt.trim()));
    }
    let mut result = json!({"type": "result", "subtype": "success", "is_error": false,
        "result": "ok", "session_id": session});
    if prompt.contains("NOCOST") {
        // Tokens without a cost: Flotilla prices them at the init model.
        result["usage"] = json!({"input_tokens": 10, "output_tokens": 5});
    }
    emit(result);
    finish();
}
