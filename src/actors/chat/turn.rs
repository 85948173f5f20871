//! Processing one conversation's messages: the drain loop, the dispatch of a message to a
//! command or an assistant turn, the turn itself (slot, timeout, cancel, resume id) and the
//! replies (stream or batch).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use super::commands::{self, Action};
use super::spend;
use super::workspace;
use super::ChatContext;
use crate::chat::parse::{parse, Parsed};
use crate::chat::paths::{batch_reply, split_reply};
use crate::chat::template::{execute_now, strip_front_matter, substitute};
use crate::config::{ChatReplyMode, PermissionMode};
use crate::plugins::{ChatPlatform, Chunk, PluginError, TurnRequest, TurnUsage};
use crate::store::{ChatMessageRecord, ConversationRecord, MessageStatus, NewEvent, StoreError};
use crate::telemetry::METRICS;

/// Attempts at writing a message's final status before the drain gives up (and retries the
/// whole drain later, which would re-run the message: avoided while the store answers).
const STATUS_ATTEMPTS: u32 = 5;
/// Longest a platform call may take.
const PLATFORM_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts at a platform call that failed with a retriable error (rate limits).
const PLATFORM_ATTEMPTS: u32 = 5;

/// The running turn's cancel switch, shared between the actor (which gets `/cancel` ahead of
/// the queue) and the drain loop.
#[derive(Default)]
pub struct TurnHandles {
    current: Mutex<Option<Arc<Notify>>>,
    cancelled: AtomicBool,
}

impl TurnHandles {
    /// Cancels the running (or slot-waiting) turn, if any. Idempotent.
    pub fn cancel(&self) {
        if let Ok(cur) = self.current.lock() {
            if let Some(n) = cur.as_ref() {
                n.notify_one();
                self.cancelled.store(true, Ordering::SeqCst);
            }
        }
    }

    fn begin(&self) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
        if let Ok(mut cur) = self.current.lock() {
            *cur = Some(n.clone());
        }
        n
    }

    fn end(&self) {
        if let Ok(mut cur) = self.current.lock() {
            *cur = None;
        }
    }

    /// Whether a `/cancel` stopped a turn since the last call (and resets it).
    fn take_cancelled(&self) -> bool {
        self.cancelled.swap(false, Ordering::SeqCst)
    }
}

/// How one message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered.
    Done,
    /// The assistant or a command failed (the user was told).
    Failed,
    /// The turn ran past `chat.turn_timeout` and was killed.
    Timeout,
    /// `/cancel` killed the turn.
    Cancelled,
}

impl Outcome {
    fn status(self) -> MessageStatus {
        match self {
            Outcome::Done => MessageStatus::Done,
            _ => MessageStatus::Failed,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Failed => "failed",
            Outcome::Timeout => "timeout",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// Processes the conversation's pending messages, oldest first, until none is left.
///
/// # Errors
/// The store failed (the actor drains again later).
pub async fn drain(
    ctx: Arc<ChatContext>,
    conversation: String,
    handles: Arc<TurnHandles>,
) -> Result<(), StoreError> {
    loop {
        let Some(msg) = ctx.store.next_chat_message(&conversation).await? else {
            return Ok(());
        };
        if msg.status == MessageStatus::Running {
            tracing::info!(
                message = msg.id,
                "re-running a message a restart interrupted"
            );
        } else {
            ctx.store
                .set_chat_message_status(msg.id, MessageStatus::Running)
                .await?;
        }
        let outcome = handle_message(&ctx, &conversation, &msg, &handles).await;
        METRICS
            .chat_turns
            .with_label_values(&[outcome.label()])
            .inc();
        let mut attempt = 0;
        loop {
            match ctx
                .store
                .set_chat_message_status(msg.id, outcome.status())
                .await
            {
                Ok(()) => break,
                Err(e) if attempt + 1 < STATUS_ATTEMPTS => {
                    attempt += 1;
                    tracing::warn!(attempt, error = %e, "cannot record a chat message's status");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Splits `{platform}:{thread}`.
pub fn split_id(conversation: &str) -> (&str, &str) {
    conversation.split_once(':').unwrap_or((conversation, ""))
}

/// `text` split under `p`'s message limit.
pub fn split_reply_for(p: &dyn ChatPlatform, text: &str) -> Vec<String> {
    split_reply(text, p.max_message_len())
}

/// Sends `text` to a conversation (split under the platform's limit), logging failures.
pub async fn reply_to(ctx: &ChatContext, conversation: &str, text: &str) {
    let (platform, thread) = split_id(conversation);
    let Some(p) = ctx.platforms.get(platform) else {
        tracing::warn!(
            platform,
            "no chat platform registered under that name: reply dropped"
        );
        return;
    };
    for part in split_reply(text, p.max_message_len()) {
        if let Err(e) = send(p.as_ref(), thread, &part).await {
            tracing::warn!(platform, error = %e, "chat reply failed");
            return;
        }
    }
}

/// One platform send, with a timeout and waits on rate limits.
async fn send(p: &dyn ChatPlatform, thread: &str, text: &str) -> Result<String, PluginError> {
    retry(|| p.send(thread, text)).await
}

async fn edit(p: &dyn ChatPlatform, thread: &str, id: &str, text: &str) -> Result<(), PluginError> {
    retry(|| p.edit(thread, id, text)).await
}

async fn retry<T, F, Fut>(mut f: F) -> Result<T, PluginError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, PluginError>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let r = match tokio::time::timeout(PLATFORM_TIMEOUT, f()).await {
            Ok(r) => r,
            Err(_) => Err(PluginError::Timeout {
                what: "chat platform call".into(),
                after: PLATFORM_TIMEOUT,
            }),
        };
        match r {
            Err(e) if e.is_retriable() && attempt < PLATFORM_ATTEMPTS => {
                let wait = e
                    .retry_after()
                    .unwrap_or(Duration::from_millis(500 * u64::from(attempt)))
                    .min(Duration::from_secs(60));
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}

async fn handle_message(
    ctx: &Arc<ChatContext>,
    conversation: &str,
    msg: &ChatMessageRecord,
    handles: &Arc<TurnHandles>,
) -> Outcome {
    let mut conv = match ctx.store.get_conversation(conversation).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "conversation missing for a stored message");
            return Outcome::Failed;
        }
    };
    if msg.meta.get("event").map(String::as_str) == Some("closed") {
        workspace::close_thread(ctx, &mut conv).await;
        return Outcome::Done;
    }
    let parsed = parse(&msg.body);
    // GitHub issue/PR threads work in their own worktree; without one no turn runs (rca
    // scenario 19: no fallback to the main checkout).
    if msg.meta.contains_key("kind")
        && !matches!(parsed, Parsed::Command { ref name, .. } if name == "cancel")
    {
        if let Err(e) = workspace::ensure_thread_worktree(ctx, &mut conv, &msg.meta).await {
            reply_to(
                ctx,
                conversation,
                &format!("⚠️ Could not prepare a worktree: {e}"),
            )
            .await;
            return Outcome::Failed;
        }
    }
    // A first turn (no assistant session yet) that reaches the assistant also gets the
    // thread's earlier messages (Discord, Slack; `chat.thread_history`).
    let history = match (&parsed, conv.resume_id.is_none()) {
        (Parsed::Plain(_) | Parsed::Template { .. }, true) => {
            let (platform, thread) = split_id(conversation);
            match ctx.platforms.get(platform) {
                Some(p) => {
                    crate::plugins::chat::history::first_turn_context(
                        p.as_ref(),
                        thread,
                        &msg.platform_message_id,
                        ctx.settings.thread_history,
                    )
                    .await
                }
                None => None,
            }
        }
        _ => None,
    };
    let context = crate::plugins::chat::history::with_history(
        msg.meta.get("context").map(String::as_str),
        history.as_deref(),
    );
    let context = context.as_deref();
    let action = match parsed {
        Parsed::Command { name, args, rest } => {
            if name == "cancel" {
                let text = if handles.take_cancelled() {
                    "⏹ Cancelled the running turn."
                } else {
                    "Nothing is running."
                };
                Action::Reply(text.into())
            } else {
                commands::run(ctx, &mut conv, &name, &args, &rest, context).await
            }
        }
        Parsed::Template { name, args } => match ctx.store.get_chat_template(&name).await {
            Ok(Some(t)) => Action::Prompt {
                prompt: execute_now(&name, &substitute(strip_front_matter(&t.content), &args), context),
                command: Some(name),
                fresh: false,
            },
            Ok(None) => Action::Reply(format!(
                "Unknown command: /{name}\n\nType /help for the commands or /templates for the templates."
            )),
            Err(e) => Action::Fail(format!("cannot read templates: {e}")),
        },
        Parsed::Plain(text) => {
            if let Some(answer) = super::answers::plain_reply(ctx, &conv, &text).await {
                answer
            } else if conv.cwd.is_none() && conv.codebase.is_none() && conv.worktree.is_none() {
                Action::Reply(
                    "No codebase configured. Use /clone <repo-url> to add one, or /repos to pick one."
                        .into(),
                )
            } else {
                match ctx.store.get_chat_template("router").await {
                    Ok(Some(t)) => Action::Prompt {
                        prompt: substitute(strip_front_matter(&t.content), &[text]),
                        command: Some("router".into()),
                        fresh: false,
                    },
                    _ => Action::Prompt {
                        prompt: match context {
                            Some(c) if !c.trim().is_empty() => format!("{c}\n\n---\n\n{text}"),
                            _ => text,
                        },
                        command: None,
                        fresh: false,
                    },
                }
            }
        }
    };
    match action {
        Action::Reply(text) => {
            reply_to(ctx, conversation, &text).await;
            Outcome::Done
        }
        Action::Fail(text) => {
            reply_to(ctx, conversation, &format!("⚠️ {text}")).await;
            Outcome::Failed
        }
        Action::Prompt {
            prompt,
            command,
            fresh,
        } => {
            if fresh {
                conv.resume_id = None;
            }
            if command.is_some() {
                conv.last_command = command;
            }
            workspace::repair_stale(ctx, &mut conv).await;
            if let Err(e) = ctx.store.update_conversation(&conv).await {
                tracing::warn!(error = %e, "cannot save conversation state");
            }
            let budget = ctx.settings.budget_usd;
            if let (Some(spent), Some(max)) = (
                spend::over_budget(&ctx.store, conversation, budget).await,
                budget,
            ) {
                tracing::info!(conversation, spent, max, "chat budget spent: turn refused");
                reply_to(ctx, conversation, &spend::refusal(spent, max)).await;
                return Outcome::Done;
            }
            run_assistant(ctx, &conv, msg.id, &prompt, handles).await
        }
    }
}

/// The directory a turn runs in: the worktree, else the cwd, else the workspace root.
pub fn turn_dir(ctx: &ChatContext, conv: &ConversationRecord) -> std::path::PathBuf {
    conv.worktree
        .as_ref()
        .or(conv.cwd.as_ref())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| ctx.workspace.clone())
}

async fn run_assistant(
    ctx: &Arc<ChatContext>,
    conv: &ConversationRecord,
    message: i64,
    prompt: &str,
    handles: &Arc<TurnHandles>,
) -> Outcome {
    let conversation = conv.id.clone();
    let cancel = handles.begin();
    let queued_ctx = ctx.clone();
    let queued_id = conversation.clone();
    let slot_wait = ctx
        .scheduler
        .acquire(&conversation, &conv.platform, move |pos| {
            let max = queued_ctx.settings.max_concurrent;
            actix::spawn(async move {
                reply_to(
                    &queued_ctx,
                    &queued_id,
                    &format!(
                        "⏳ All {max} assistant slots are busy; you are number {pos} in the queue."
                    ),
                )
                .await;
            });
        });
    let slot = tokio::select! {
        biased;
        _ = cancel.notified() => {
            handles.end();
            reply_to(ctx, &conversation, "⏹ Cancelled before it started.").await;
            return Outcome::Cancelled;
        }
        s = slot_wait => s,
    };
    let request = TurnRequest {
        cwd: turn_dir(ctx, conv),
        prompt: prompt.to_string(),
        resume_id: conv.resume_id.clone(),
    };
    let mode = ctx
        .settings
        .reply_modes
        .get(&conv.platform)
        .copied()
        .unwrap_or_default();
    let mut replier = Replier::new(ctx.clone(), conv, mode);
    replier.start().await;
    let (tx, mut rx) = mpsc::channel::<Chunk>(64);
    let turn = ctx.assistant.turn(&request, tx);
    let store = ctx.store.clone();
    let id = conversation.clone();
    let mut usage: Option<TurnUsage> = None;
    let mut last_session: Option<String> = conv.resume_id.clone();
    let consume = async {
        while let Some(c) = rx.recv().await {
            match c {
                Chunk::Text { text } => replier.text(text).await,
                Chunk::ToolUse { summary } => replier.tool(summary),
                Chunk::Denied { tool, detail } => {
                    tracing::info!(conversation = %id, tool = %tool, "the assistant was refused a tool");
                    replier.denied(&tool, &detail);
                }
                Chunk::Usage(u) => usage = Some(u),
                Chunk::Session { session_id }
                | Chunk::Result {
                    session_id: Some(session_id),
                } => {
                    // Saved at once: a cancelled or crashed turn can still be resumed.
                    if last_session.as_deref() != Some(&session_id) {
                        if let Err(e) = store.set_resume_id(&id, Some(&session_id)).await {
                            tracing::warn!(error = %e, "cannot save the resume id");
                        }
                        last_session = Some(session_id);
                    }
                }
                Chunk::Result { session_id: None } => {}
            }
        }
    };
    let timeout = ctx.settings.turn_timeout.get();
    let work = async { tokio::join!(turn, consume).0 };
    let outcome = tokio::select! {
        biased;
        _ = cancel.notified() => Err(Outcome::Cancelled),
        _ = tokio::time::sleep(timeout) => Err(Outcome::Timeout),
        r = work => Ok(r),
    };
    handles.end();
    drop(slot);
    // Whether this turn's spend is recorded: only then can it have reached the budget.
    let recorded = match usage {
        Some(u) => record_usage(ctx, conv, message, last_session.as_deref(), u).await,
        None => false,
    };
    let result = match outcome {
        Ok(Ok(())) => {
            replier.finish().await;
            Outcome::Done
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "assistant turn failed");
            replier.finish().await;
            reply_to(
                ctx,
                &conversation,
                &format!(
                    "⚠️ The assistant failed: {}. If this keeps happening, /reset starts a fresh session.",
                    safe_error(&e)
                ),
            )
            .await;
            Outcome::Failed
        }
        Err(Outcome::Timeout) => {
            replier.finish().await;
            reply_to(
                ctx,
                &conversation,
                &format!(
                    "⏱ The turn took longer than {} and was stopped.",
                    humantime::format_duration(timeout)
                ),
            )
            .await;
            Outcome::Timeout
        }
        Err(other) => {
            replier.finish().await;
            reply_to(ctx, &conversation, "⏹ Cancelled.").await;
            other
        }
    };
    let budget = ctx.settings.budget_usd;
    if recorded {
        if let (Some(spent), Some(max)) = (
            spend::over_budget(&ctx.store, &conversation, budget).await,
            budget,
        ) {
            reply_to(ctx, &conversation, &spend::crossed(spent, max)).await;
        }
    }
    result
}

/// Records what a turn cost as a `chat.turn_usage` event: the assistant's own cost, else its
/// tokens priced from the `pricing:` table ([`spend::price_turn`]), with `cost_source` and,
/// for a model without a price, `unpriced_models`. The event log is where a conversation's
/// spend is summed (`chat.budget_usd`). Returns whether the event was written.
async fn record_usage(
    ctx: &ChatContext,
    conv: &ConversationRecord,
    message: i64,
    session: Option<&str>,
    u: TurnUsage,
) -> bool {
    let Some(journal) = &ctx.journal else {
        tracing::debug!("no journal: a chat turn's usage is not recorded");
        return false;
    };
    let priced = spend::price_turn(&ctx.prices, ctx.settings.assistant.model.as_deref(), u);
    if !priced.unpriced_models.is_empty() {
        tracing::warn!(models = ?priced.unpriced_models, "a chat turn's model has no price: its cost is unknown (add it under pricing:)");
    }
    let mut data = serde_json::json!({
        "conversation": conv.id,
        "message": message,
        "assistant": ctx.assistant.kind(),
        "command": conv.last_command,
        "session": session,
        "usage": priced.usage,
        "cost_source": priced.cost_source,
    });
    if !priced.unpriced_models.is_empty() {
        data["unpriced_models"] = serde_json::json!(priced.unpriced_models);
    }
    let event = NewEvent {
        session_id: None,
        kind: TURN_USAGE_EVENT.into(),
        data,
        at: chrono::Utc::now(),
    };
    match journal.append(&event).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "cannot record a chat turn's usage");
            false
        }
    }
}

/// The event kind of a chat turn's usage.
pub const TURN_USAGE_EVENT: &str = crate::store::CHAT_TURN_USAGE;

/// What the user is told about the tools the assistant was refused: each tool and what it
/// tried, the mode that refused it, and who can change that.
pub fn denial_notice(kind: &str, mode: PermissionMode, denials: &[String]) -> String {
    let who = match kind {
        "claude" => "Claude",
        "codex" => "Codex",
        _ => "The assistant",
    };
    let mut out = format!("🚫 {who} was not allowed to:");
    for d in denials {
        out.push_str("\n• ");
        out.push_str(d);
    }
    let hint = match mode {
        PermissionMode::Default | PermissionMode::Suggest => format!(
            "The operator's permission mode is `{mode}`, which keeps chat turns read-only: ask \
             them to allow edits (chat.assistant.permission_mode: auto-edit)."
        ),
        PermissionMode::AutoEdit => "The operator's permission mode is `auto-edit`: file edits \
             are allowed, commands that change things are not. Run it yourself, or ask the \
             operator to allow more."
            .to_string(),
        PermissionMode::Permissionless => {
            "The assistant refused it although the permission mode is `permissionless`.".into()
        }
    };
    out.push_str("\n\n");
    out.push_str(&hint);
    out
}

/// What of an assistant error the user may see: short, and nothing that looks like a secret.
fn safe_error(e: &PluginError) -> String {
    let text = match e {
        PluginError::Command { status, stderr, .. } => {
            let first = stderr.lines().last().unwrap_or("").trim();
            if first.is_empty() {
                format!("it exited with {status}")
            } else {
                first.to_string()
            }
        }
        other => other.to_string(),
    };
    let lower = text.to_lowercase();
    if text.chars().count() > 200
        || ["password", "token", "secret", "key=", "authorization"]
            .iter()
            .any(|w| lower.contains(w))
    {
        "see the server log".into()
    } else {
        text
    }
}

/// Shapes a turn's chunks into chat messages.
struct Replier {
    ctx: Arc<ChatContext>,
    platform: Option<Arc<dyn ChatPlatform>>,
    thread: String,
    mode: ChatReplyMode,
    texts: Vec<String>,
    tools: Vec<String>,
    /// Tools the assistant was refused, as "Tool detail".
    denials: Vec<String>,
    /// Stream mode: the message being edited and the time of its last edit.
    streaming: Option<(String, tokio::time::Instant)>,
    shown: String,
}

impl Replier {
    fn new(ctx: Arc<ChatContext>, conv: &ConversationRecord, mode: ChatReplyMode) -> Self {
        let platform = ctx.platforms.get(&conv.platform);
        Replier {
            ctx,
            platform,
            thread: conv.thread.clone(),
            mode,
            texts: Vec::new(),
            tools: Vec::new(),
            denials: Vec::new(),
            streaming: None,
            shown: String::new(),
        }
    }

    async fn start(&mut self) {
        if self.mode == ChatReplyMode::Batch {
            if let Some(p) = &self.platform {
                let notice = format!("{} is on the case...", self.ctx.settings.bot_name);
                if let Err(e) = send(p.as_ref(), &self.thread, &notice).await {
                    tracing::warn!(error = %e, "chat notice failed");
                }
            }
        }
    }

    fn current(&self) -> String {
        self.texts.join("\n\n")
    }

    async fn text(&mut self, text: String) {
        self.texts.push(text);
        if self.mode != ChatReplyMode::Stream {
            return;
        }
        let Some(p) = self.platform.clone() else {
            return;
        };
        let now = tokio::time::Instant::now();
        let interval = self.ctx.settings.stream_interval.get();
        let body = self.current();
        if body.chars().count() > p.max_message_len() {
            // Too long to edit in place: the rest goes out at the end.
            return;
        }
        match &self.streaming {
            None => match send(p.as_ref(), &self.thread, &body).await {
                Ok(id) => {
                    self.streaming = Some((id, now));
                    self.shown = body;
                }
                Err(e) => tracing::warn!(error = %e, "chat stream send failed"),
            },
            Some((id, last)) if now.duration_since(*last) >= interval => {
                let id = id.clone();
                match edit(p.as_ref(), &self.thread, &id, &body).await {
                    Ok(()) => {
                        self.streaming = Some((id, now));
                        self.shown = body;
                    }
                    Err(e) => tracing::warn!(error = %e, "chat stream edit failed"),
                }
            }
            Some(_) => {}
        }
    }

    fn tool(&mut self, summary: String) {
        self.tools.push(summary);
    }

    fn denied(&mut self, tool: &str, detail: &str) {
        let line = if detail.is_empty() {
            tool.to_string()
        } else {
            format!("{tool} {detail}")
        };
        if !self.denials.contains(&line) {
            self.denials.push(line);
        }
    }

    async fn finish(&mut self) {
        let Some(p) = self.platform.clone() else {
            return;
        };
        let mut body = batch_reply(&self.texts, &self.tools);
        if !self.denials.is_empty() {
            let a = &self.ctx.settings.assistant;
            let notice = denial_notice(&a.kind, a.permission_mode, &self.denials);
            body = if body.trim().is_empty() {
                notice
            } else {
                format!("{body}\n\n{notice}")
            };
        }
        if body.trim().is_empty() {
            return;
        }
        let parts = split_reply(&body, p.max_message_len());
        let mut rest = parts.as_slice();
        if let Some((id, _)) = &self.streaming {
            if let Some((first, tail)) = parts.split_first() {
                if *first != self.shown {
                    if let Err(e) = edit(p.as_ref(), &self.thread, id, first).await {
                        tracing::warn!(error = %e, "chat stream edit failed");
                    }
                }
                rest = tail;
            }
        }
        for part in rest {
            if let Err(e) = send(p.as_ref(), &self.thread, part).await {
                tracing::warn!(error = %e, "chat reply failed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denial_notice_names_each_refusal_the_mode_and_the_way_out() {
        let n = denial_notice(
            "claude",
            PermissionMode::Default,
            &["Bash `echo hi > x.txt`".into(), "Write /w/y.txt".into()],
        );
        assert!(n.starts_with("🚫 Claude was not allowed to:"), "{n}");
        assert!(
            n.contains("• Bash `echo hi > x.txt`\n• Write /w/y.txt"),
            "{n}"
        );
        assert!(n.contains("permission mode is `default`"), "{n}");
        assert!(n.contains("permission_mode: auto-edit"), "{n}");
        let n = denial_notice("command", PermissionMode::AutoEdit, &["Bash `make`".into()]);
        assert!(n.starts_with("🚫 The assistant was not allowed to:"), "{n}");
        assert!(n.contains("`auto-edit`"), "{n}");
    }
}
