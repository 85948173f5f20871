//! Answering an agent from the chat thread its question went to. A fleet session started
//! with `/spawn` sends its notifications back to that conversation (the `chat` notifier); when
//! it waits for a human (`needs_input`), a plain reply there is the answer, typed into the
//! agent as `flotilla send` would (a short choice such as `1` or `y` as key presses). With
//! several sessions waiting, `/answer <session> <text>` says which.
//!
//! A reply to a notification a Telegram, Slack or Discord notifier posted (the inbox marks it
//! `meta.answers`) answers that notification's session the same way, wherever the session was
//! started; a session that no longer waits gets nothing, and the reply says so. Nor does one
//! that waits on a question asked after that notification was made (the human answered the
//! earlier one elsewhere, and the agent asked again): the reply was meant for a question no
//! longer on screen, and typing it would answer one its author has not read.

use crate::actors::supervisor::messages::SendToSession;
use chrono::{DateTime, Utc};

use crate::store::{ConversationRecord, SessionFilter, SessionId, SessionRecord, SessionState};

use super::action::Action;
use super::ChatContext;

/// The sessions started from `conv` that now wait for a human.
async fn waiting(ctx: &ChatContext, conv: &ConversationRecord) -> Option<Vec<SessionId>> {
    ctx.fleet.as_ref()?;
    let filter = SessionFilter {
        states: vec![SessionState::NeedsInput],
        ..Default::default()
    };
    let list = tokio::time::timeout(
        ctx.actor_timeout,
        crate::read::sessions::list(ctx.store.as_ref(), &filter),
    )
    .await
    .ok()?
    .ok()?;
    let mut mine = Vec::new();
    for s in list {
        let linked = ctx
            .store
            .conversation_for_session(s.id.as_str())
            .await
            .ok()
            .flatten();
        if linked.as_deref() == Some(conv.id.as_str()) {
            mine.push(s.id);
        }
    }
    Some(mine)
}

/// The answer a plain reply gives, when a session started here waits for a human; `None`
/// when none does (the reply is an ordinary chat turn).
pub async fn plain_reply(
    ctx: &ChatContext,
    conv: &ConversationRecord,
    text: &str,
) -> Option<Action> {
    let ids = waiting(ctx, conv).await?;
    match ids.as_slice() {
        [] => None,
        [id] => Some(send(ctx, id.clone(), text).await),
        many => Some(Action::Reply(format!(
            "Several sessions wait for an answer ({}): reply with /answer <session> <text>.",
            many.iter()
                .map(SessionId::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// A reply to a notification about `session`, made at `asked_at` (when the outbox still
/// knows): the answer when the session waits for one that began by then, else a reply saying
/// why nothing was typed into the agent.
pub async fn notification_reply(
    ctx: &ChatContext,
    session: &str,
    asked_at: Option<DateTime<Utc>>,
    text: &str,
) -> Action {
    let id = SessionId(session.to_string());
    let record = tokio::time::timeout(ctx.actor_timeout, ctx.store.load_session(&id)).await;
    match record {
        Ok(Ok(s)) if s.state == SessionState::NeedsInput && asked_before(asked_at, &s) => {
            Action::Reply(format!(
                "{id} now waits on a newer question: {}. Nothing was sent: reply to that \
                 question's message to answer it.",
                s.meta["question"].as_str().unwrap_or("see its screen")
            ))
        }
        Ok(Ok(s)) if s.state == SessionState::NeedsInput => send(ctx, id, text.trim()).await,
        Ok(Ok(s)) => Action::Reply(format!(
            "{id} does not wait for an answer now (it is {}): nothing was sent. \
             Use `flotilla send {id} …` to tell it something anyway.",
            s.state
        )),
        Ok(Err(crate::store::StoreError::NotFound { .. })) => {
            Action::Reply(format!("{id} no longer exists: nothing was sent."))
        }
        Ok(Err(e)) => Action::Fail(format!("cannot read {id}: {e}")),
        Err(_) => Action::Fail("the store did not answer in time".into()),
    }
}

/// Whether the session's current wait began after a notification made at `asked_at`, which
/// then asked another question (the wait's own notification is made in the step that starts
/// it, at the same time).
fn asked_before(asked_at: Option<DateTime<Utc>>, s: &SessionRecord) -> bool {
    matches!((asked_at, s.activity_at), (Some(asked), Some(wait)) if wait > asked)
}

/// `/answer <session> <text>`: answers that session, if it was started here.
pub async fn command(ctx: &ChatContext, conv: &ConversationRecord, args: &[String]) -> Action {
    let (Some(id), true) = (args.first(), args.len() > 1) else {
        return Action::Reply("Usage: /answer <session> <text>".into());
    };
    let ids = waiting(ctx, conv).await.unwrap_or_default();
    match ids.iter().find(|s| s.as_str() == id) {
        Some(s) => send(ctx, s.clone(), &args[1..].join(" ")).await,
        None => Action::Reply(format!(
            "Session {id} does not wait for an answer from this conversation."
        )),
    }
}

async fn send(ctx: &ChatContext, id: SessionId, text: &str) -> Action {
    let Some(fleet) = &ctx.fleet else {
        return Action::Reply("The fleet is not available here.".into());
    };
    let msg = SendToSession {
        id: id.clone(),
        text: text.to_string(),
        allow_restore: false,
        question: None,
    };
    match tokio::time::timeout(ctx.actor_timeout, fleet.send(msg)).await {
        Ok(Ok(Ok(r))) if r.delivered => Action::Reply(format!("Answered {id}: {text}")),
        Ok(Ok(Ok(r))) if r.pending => Action::Reply(format!(
            "Answering {id}: {text} (still being typed; it is typed once, do not send it again)"
        )),
        // Not taken: words that name none of a menu's options are never typed onto it.
        Ok(Ok(Ok(_))) => Action::Reply(format!(
            "Could not answer {id}: the agent did not take \"{text}\". Answer with one of the \
             options on its screen, by its words or its number."
        )),
        Ok(Ok(Err(e))) => Action::Reply(format!("Could not answer {id}: {e}")),
        _ => Action::Fail("the fleet did not answer in time".into()),
    }
}
