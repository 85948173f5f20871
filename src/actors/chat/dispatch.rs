//! One message: what it leads to (a command, a template, the plain-text router, or an answer
//! to a waiting session), and doing that: a reply, or an assistant turn.

use std::sync::Arc;

use super::action::{Action, Ending};
use super::handles::TurnHandles;
use super::jira_repo::{self, JiraRepo};
use super::reply::{final_replies, split_id, turn_reply};
use super::{answers, assistant, commands, inbox, workspace, ChatContext};
use crate::chat::parse::{parse, Parsed};
use crate::chat::template::{execute_now, strip_front_matter, substitute};
use crate::domain::chat::Outcome;
use crate::store::{ChatMessageRecord, ConversationRecord};

/// Handles one stored message of `conversation` and says how it ended, with its final
/// replies.
pub(super) async fn handle_message(
    ctx: &Arc<ChatContext>,
    conversation: &str,
    msg: &ChatMessageRecord,
    resumed: bool,
    handles: &Arc<TurnHandles>,
) -> Ending {
    let mut conv = match ctx.store.get_conversation(conversation).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "conversation missing for a stored message");
            return Outcome::Failed.into();
        }
    };
    if let Some(url) = msg.meta.get(crate::plugins::META_RESPONSE_URL) {
        ctx.reply_addresses.keep(conversation, url, msg.received_at);
    }
    if msg.meta.get("event").map(String::as_str) == Some("closed") {
        workspace::close_thread(ctx, &mut conv).await;
        return Outcome::Done.into();
    }
    if let Some(session) = msg.meta.get(inbox::ANSWERS) {
        let asked_at = msg
            .meta
            .get(inbox::ANSWERS_ASKED_AT)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc));
        let asked = answers::Asked {
            at: asked_at,
            question: msg.meta.get(inbox::ANSWERS_QUESTION).map(String::as_str),
        };
        let action = answers::notification_reply(ctx, session, asked, &msg.body).await;
        return perform(ctx, conv, msg.id, action.resumed(resumed), handles).await;
    }
    let parsed = parse(&msg.body);
    if let Err(ending) = prepare_worktree(ctx, &mut conv, msg, &parsed).await {
        return ending;
    }
    let history = first_turn_history(ctx, conversation, &conv, msg, &parsed).await;
    let context = crate::plugins::chat::history::with_history(
        msg.meta.get("context").map(String::as_str),
        history.as_deref(),
    );
    let action = decide(
        ctx,
        &mut conv,
        (msg, resumed),
        parsed,
        context.as_deref(),
        handles,
    )
    .await;
    perform(ctx, conv, msg.id, action.resumed(resumed), handles).await
}

/// A first turn (no assistant session yet) that reaches the assistant also gets the thread's
/// earlier messages (Discord, Slack; `chat.thread_history`).
async fn first_turn_history(
    ctx: &ChatContext,
    conversation: &str,
    conv: &ConversationRecord,
    msg: &ChatMessageRecord,
    parsed: &Parsed,
) -> Option<String> {
    if conv.resume_id.is_some() || !matches!(parsed, Parsed::Plain(_) | Parsed::Template { .. }) {
        return None;
    }
    let (platform, thread) = split_id(conversation);
    let p = ctx.platforms.get(platform)?;
    crate::plugins::chat::history::first_turn_context(
        p.as_ref(),
        thread,
        &msg.platform_message_id,
        ctx.settings.thread_history,
    )
    .await
}

/// GitHub issue/PR threads work in their own worktree; without one no turn runs (rca
/// scenario 19: no fallback to the main checkout). `/cancel` needs none.
async fn prepare_worktree(
    ctx: &ChatContext,
    conv: &mut ConversationRecord,
    msg: &ChatMessageRecord,
    parsed: &Parsed,
) -> Result<(), Ending> {
    let cancel = matches!(parsed, Parsed::Command { name, .. } if name == "cancel");
    if cancel {
        return Ok(());
    }
    if conv.platform == "jira" {
        return jira_repository(ctx, conv, msg, parsed).await;
    }
    if !msg.meta.contains_key("kind") {
        return Ok(());
    }
    match workspace::ensure_thread_worktree(ctx, conv, &msg.meta).await {
        Ok(()) => Ok(()),
        Err(e) => {
            let text = format!("⚠️ Could not prepare a worktree: {e}");
            Err(ending(ctx, conv, Outcome::Failed, &text))
        }
    }
}

/// A Jira issue's conversation gets its repository from the issue; with none mapped, a
/// message that needs one is answered with how to set it (commands such as `/clone` run).
async fn jira_repository(
    ctx: &ChatContext,
    conv: &mut ConversationRecord,
    msg: &ChatMessageRecord,
    parsed: &Parsed,
) -> Result<(), Ending> {
    match jira_repo::ensure(ctx, conv, &msg.meta).await {
        Ok(JiraRepo::Unchanged) => Ok(()),
        Ok(JiraRepo::Linked(text)) => {
            turn_reply(ctx, &conv.id, &text).await;
            Ok(())
        }
        Ok(JiraRepo::NoneApplies(text)) => {
            if matches!(parsed, Parsed::Plain(_) | Parsed::Template { .. }) {
                Err(ending(ctx, conv, Outcome::Done, &text))
            } else {
                Ok(())
            }
        }
        Err(e) => Err(ending(ctx, conv, Outcome::Failed, &format!("⚠️ {e}"))),
    }
}

/// What the parsed message leads to.
async fn decide(
    ctx: &ChatContext,
    conv: &mut ConversationRecord,
    (msg, resumed): (&ChatMessageRecord, bool),
    parsed: Parsed,
    context: Option<&str>,
    handles: &TurnHandles,
) -> Action {
    match parsed {
        Parsed::Command { name, .. } if name == "cancel" => cancelled(handles),
        Parsed::Command { name, args, rest } => {
            let command = commands::Command {
                name: &name,
                args: &args,
                rest: &rest,
                received_at: msg.received_at,
                resumed,
            };
            commands::run(ctx, conv, command, context).await
        }
        Parsed::Template { name, args } => template(ctx, name, &args, context).await,
        Parsed::Plain(text) => plain(ctx, conv, text, context).await,
    }
}

/// `/cancel`: whether it stopped a turn (the actor cancelled it ahead of the queue).
fn cancelled(handles: &TurnHandles) -> Action {
    let text = if handles.take_cancelled() {
        "⏹ Cancelled the running turn."
    } else {
        "Nothing is running."
    };
    Action::Reply(text.into())
}

/// `/<template> [args]`: the stored template, filled in, as an execute-now prompt.
async fn template(
    ctx: &ChatContext,
    name: String,
    args: &[String],
    context: Option<&str>,
) -> Action {
    match ctx.store.get_chat_template(&name).await {
        Ok(Some(t)) => Action::Prompt {
            prompt: execute_now(&name, &substitute(strip_front_matter(&t.content), args), context),
            command: Some(name),
            fresh: false,
        },
        Ok(None) => Action::Reply(format!(
            "Unknown command: /{name}\n\nType /help for the commands or /templates for the templates."
        )),
        Err(e) => Action::Fail(format!("cannot read templates: {e}")),
    }
}

/// Plain text: an answer to a session that waits, else a prompt (through the `router`
/// template when there is one), else a hint to pick a codebase first.
async fn plain(
    ctx: &ChatContext,
    conv: &ConversationRecord,
    text: String,
    context: Option<&str>,
) -> Action {
    if let Some(answer) = answers::plain_reply(ctx, conv, &text).await {
        return answer;
    }
    if conv.cwd.is_none() && conv.codebase.is_none() && conv.worktree.is_none() {
        return Action::Reply(
            "No codebase configured. Use /clone <repo-url> to add one, or /repos to pick one."
                .into(),
        );
    }
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

/// A message that ends as `outcome` with `text` to tell.
fn ending(ctx: &ChatContext, conv: &ConversationRecord, outcome: Outcome, text: &str) -> Ending {
    Ending {
        outcome,
        replies: final_replies(ctx, &conv.id, text),
    }
}

/// Does what the message leads to.
async fn perform(
    ctx: &Arc<ChatContext>,
    mut conv: ConversationRecord,
    message: i64,
    action: Action,
    handles: &Arc<TurnHandles>,
) -> Ending {
    match action {
        Action::Reply(text) => ending(ctx, &conv, Outcome::Done, &text),
        Action::Fail(text) => ending(ctx, &conv, Outcome::Failed, &format!("⚠️ {text}")),
        Action::Prompt {
            prompt,
            command,
            fresh,
        } => {
            ready_for_prompt(ctx, &mut conv, command, fresh).await;
            assistant::run(ctx, &conv, message, &prompt, handles).await
        }
    }
}

/// Before a prompt: a fresh session if asked, the command recorded, a stale worktree
/// repaired, and the conversation saved when any of that changed it (the message's enqueue
/// already made it "recently updated"; its claim checked the fence).
async fn ready_for_prompt(
    ctx: &ChatContext,
    conv: &mut ConversationRecord,
    command: Option<String>,
    fresh: bool,
) {
    let before = conv.clone();
    if fresh {
        conv.resume_id = None;
    }
    if command.is_some() {
        conv.last_command = command;
    }
    workspace::repair_stale(ctx, conv).await;
    if *conv == before {
        return;
    }
    if let Err(e) = ctx.save_conversation(conv).await {
        tracing::warn!(error = %e, "cannot save conversation state");
    }
}
