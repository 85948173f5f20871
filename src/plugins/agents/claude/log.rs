//! What Claude Code's JSONL session log says: the agent's activity, the tool call it waits on
//! (and the question that puts to a human), and the model API failures it retries or gives
//! up on.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::plugins::activity::{parse_ts, ApiFailure, Reading};

/// Tools whose pending call means Claude is waiting for the human.
pub(super) const ASKING_TOOLS: &[&str] = &["AskUserQuestion", "ExitPlanMode"];

/// Classifies the last meaningful entry of a Claude Code JSONL log (rules in
/// [`activity`](crate::plugins::activity)). `mtime` stands in for entries without a timestamp.
pub fn classify(log: &str, mtime: DateTime<Utc>) -> Option<Reading> {
    let mut earlier = log.lines().rev();
    let reading = |v: Value| classify_entry(&v, mtime).map(|r| (v, r));
    let (entry, last) = earlier
        .by_ref()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(reading)?;
    Some(match last {
        // A turn that ended on an API error may be closed by a summary entry
        // (`turn_duration`): the error it ended on is what the human needs to know.
        Reading::Finished(_) if entry["type"] == "system" => {
            match earlier
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find_map(reading)
            {
                Some((_, failed @ Reading::ApiFailed(..))) => failed,
                _ => last,
            }
        }
        Reading::Working(at) if entry["type"] == "assistant" => {
            Reading::Working(message_began(earlier, &entry, at, mtime))
        }
        other => other,
    })
}

/// When the model's message that `entry` is a part of was first logged, from the `earlier`
/// lines (newest first). Claude Code logs each content block of a message as an entry of its
/// own (same `message.id`), and asks about a call as soon as its block is complete: a later
/// block of the same message (a parallel call) can be logged after the first call's dialog
/// was reported. It is the same response, not work done since the dialog.
pub(super) fn message_began<'a>(
    earlier: impl Iterator<Item = &'a str>,
    entry: &Value,
    at: DateTime<Utc>,
    mtime: DateTime<Utc>,
) -> DateTime<Utc> {
    let Some(id) = entry["message"]["id"].as_str() else {
        return at;
    };
    earlier
        .filter(|l| l.contains(id))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "assistant" && v["message"]["id"].as_str() == Some(id))
        .map(|v| v["timestamp"].as_str().and_then(parse_ts).unwrap_or(mtime))
        .fold(at, DateTime::min)
}

/// The newest model API failure of the current turn (after the last prompt), even when the
/// CLI's retry then succeeded: a failure is recorded however quickly it was recovered from.
pub fn recent_api_failure(log: &str, mtime: DateTime<Utc>) -> Option<ApiFailure> {
    for v in log
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        let at = v["timestamp"].as_str().and_then(parse_ts).unwrap_or(mtime);
        match (v["type"].as_str(), v["subtype"].as_str()) {
            (Some("system"), Some("api_error")) => return Some(api_retry(&v, at)),
            (Some("assistant"), _) if v["isApiErrorMessage"].as_bool() == Some(true) => {
                return Some(api_gave_up(&v["message"], at))
            }
            (Some("user"), _)
                if v["isMeta"].as_bool() != Some(true) && v["message"]["content"].is_string() =>
            {
                return None
            }
            _ => {}
        }
    }
    None
}

/// A `system`/`api_error` entry: a failed model request the CLI retries (`retryAttempt` of
/// `maxRetries`), with the status and the CLI's own words.
pub(super) fn api_retry(v: &Value, at: DateTime<Utc>) -> ApiFailure {
    let e = &v["error"];
    let message = e["formatted"]
        .as_str()
        .or(e["message"].as_str())
        .unwrap_or("unknown error");
    ApiFailure {
        logged_at: at,
        status: e["status"].as_u64().and_then(|s| u16::try_from(s).ok()),
        message: message.to_string(),
        attempt: v["retryAttempt"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok()),
        max_retries: v["maxRetries"].as_u64().and_then(|n| u32::try_from(n).ok()),
    }
}

/// The synthetic assistant message a turn ends with when the CLI gave up on the model API
/// (`isApiErrorMessage`): its text (`API Error: 500 … try again in a moment.`), first sentence.
pub(super) fn api_gave_up(msg: &Value, at: DateTime<Utc>) -> ApiFailure {
    let text = msg["content"]
        .as_array()
        .and_then(|c| c.iter().find_map(|b| b["text"].as_str()))
        .unwrap_or("API Error");
    let first = text.split(". ").next().unwrap_or(text).trim();
    let status = first
        .strip_prefix("API Error: ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse().ok());
    ApiFailure {
        logged_at: at,
        status,
        message: first.to_string(),
        attempt: None,
        max_retries: None,
    }
}

pub(super) fn classify_entry(v: &Value, mtime: DateTime<Utc>) -> Option<Reading> {
    let at = v["timestamp"].as_str().and_then(parse_ts).unwrap_or(mtime);
    match v["type"].as_str()? {
        "permission_request" => Some(Reading::Waiting(at)),
        "progress" => Some(Reading::Working(at)),
        "error" => Some(Reading::Failed(at)),
        "result" => Some(Reading::Finished(at)),
        "user" => {
            if v["isMeta"].as_bool() == Some(true) {
                return None;
            }
            let content = &v["message"]["content"];
            let texts: Vec<&str> = match content {
                Value::String(s) => vec![s.as_str()],
                Value::Array(items) => items.iter().filter_map(|i| i["text"].as_str()).collect(),
                _ => Vec::new(),
            };
            let ended = texts.iter().any(|t| {
                t.starts_with("[Request interrupted by user")
                    || t.starts_with("<command-name>")
                    || t.starts_with("<local-command-stdout>")
            });
            Some(if ended {
                Reading::Finished(at)
            } else {
                // A prompt or a tool result: the model is (or will be) working on it.
                Reading::Working(at)
            })
        }
        "assistant" => {
            let msg = &v["message"];
            if v["isApiErrorMessage"].as_bool() == Some(true) {
                return Some(Reading::ApiFailed(at, api_gave_up(msg, at)));
            }
            if msg["model"].as_str() == Some("<synthetic>") {
                return Some(Reading::Failed(at));
            }
            let items = msg["content"].as_array().cloned().unwrap_or_default();
            let tool = items
                .iter()
                .rev()
                .find(|i| i["type"].as_str() == Some("tool_use"));
            if let Some(tool) = tool {
                let name = tool["name"].as_str().unwrap_or("");
                // Pending (nothing logged after it): asking the human, or running.
                return Some(if ASKING_TOOLS.contains(&name) {
                    Reading::Waiting(at)
                } else {
                    Reading::Working(at)
                });
            }
            match msg["stop_reason"].as_str() {
                Some("end_turn" | "stop_sequence" | "max_tokens" | "refusal") => {
                    Some(Reading::Finished(at))
                }
                _ if items.iter().all(|i| i["type"].as_str() == Some("thinking")) => {
                    Some(Reading::Working(at))
                }
                _ => Some(Reading::Replying(at)),
            }
        }
        "system" => {
            if v["subtype"].as_str() == Some("api_error") {
                return Some(Reading::ApiRetrying(at, api_retry(v, at)));
            }
            if v["level"].as_str() == Some("error") {
                return Some(Reading::Failed(at));
            }
            match v["subtype"].as_str() {
                Some("turn_duration" | "stop_hook_summary") => Some(Reading::Finished(at)),
                _ => None,
            }
        }
        // file-history-snapshot, summary, queue-operation, custom-title…: not activity.
        _ => None,
    }
}

/// The tool call the log ends on, if the last meaningful entry is one that has not been
/// answered: `(name, input)`. Of a response's parallel calls (its blocks are logged as entries
/// of their own, one `message.id`), the first one without a result: Claude Code asks about
/// them in order, so that is the one its dialog shows.
pub fn pending_tool(log: &str) -> Option<(String, Value)> {
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    let last = log
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| classify_entry(v, epoch).is_some())?;
    if last["type"].as_str() != Some("assistant") {
        return None;
    }
    let calls = |entry: &Value| -> Vec<Value> {
        entry["message"]["content"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|i| i["type"].as_str() == Some("tool_use"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    let own = calls(&last);
    let tool = match last["message"]["id"].as_str() {
        Some(id) => {
            let answered = |call: &Value| {
                let Some(c) = call["id"].as_str() else {
                    return false;
                };
                log.lines()
                    .filter(|l| l.contains(c))
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .filter(|v| v["type"] == "user")
                    .any(|v| {
                        v["message"]["content"].as_array().is_some_and(|items| {
                            items.iter().any(|i| i["tool_use_id"].as_str() == Some(c))
                        })
                    })
            };
            log.lines()
                .filter(|l| l.contains(id))
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["type"] == "assistant" && v["message"]["id"].as_str() == Some(id))
                .flat_map(|v| calls(&v))
                .find(|c| !answered(c))
                .or_else(|| own.last().cloned())?
        }
        None => own.last().cloned()?,
    };
    Some((tool["name"].as_str()?.to_string(), tool["input"].clone()))
}

/// What a human is asked to decide about a tool call, as one line: "approve Bash: git push",
/// "Which color? [Red | Blue]", "approve the plan: …".
pub fn waiting_question(name: &str, input: &Value) -> String {
    let s = |k: &str| input.get(k).and_then(Value::as_str).unwrap_or("");
    let cut = |t: &str, n: usize| -> String {
        let one = t.split_whitespace().collect::<Vec<_>>().join(" ");
        if one.chars().count() <= n {
            one
        } else {
            format!("{}…", one.chars().take(n).collect::<String>())
        }
    };
    match name {
        "AskUserQuestion" => {
            let qs: Vec<String> = input["questions"]
                .as_array()
                .map(|qs| {
                    qs.iter()
                        .map(|q| {
                            let opts: Vec<&str> = q["options"]
                                .as_array()
                                .map(|o| o.iter().filter_map(|o| o["label"].as_str()).collect())
                                .unwrap_or_default();
                            format!(
                                "{} [{}]",
                                q["question"].as_str().unwrap_or("choose"),
                                opts.join(" | ")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            if qs.is_empty() {
                "answer the agent's question".into()
            } else {
                cut(&qs.join("; "), 300)
            }
        }
        "ExitPlanMode" => format!("approve the plan: {}", cut(s("plan"), 200)),
        "Bash" => format!("approve Bash: {}", cut(s("command"), 200)),
        "Write" | "Edit" | "MultiEdit" | "Read" => {
            format!("approve {name}: {}", s("file_path"))
        }
        "NotebookEdit" => format!("approve NotebookEdit: {}", s("notebook_path")),
        "WebFetch" => format!("approve WebFetch: {}", s("url")),
        "WebSearch" => format!("approve WebSearch: {}", cut(s("query"), 200)),
        // An MCP tool's too (`approve mcp__probe__echo: {"text":"hi"}`): its dialog on screen
        // words it cut short (`approve mcp__probe__…`, see `dialog.rs`).
        _ => format!("approve {name}: {}", cut(&input.to_string(), 120)),
    }
}
