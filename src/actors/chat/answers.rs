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
async fn waiting(ctx: &ChatContext, conv: &ConversationRecord) -> Option<Vec<SessionRecord>> {
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
            mine.push(s);
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
    let sessions = waiting(ctx, conv).await?;
    match sessions.as_slice() {
        [] => None,
        [s] => Some(send(ctx, s.id.clone(), text, question_of(s)).await),
        many => Some(Action::Reply(format!(
            "Several sessions wait for an answer ({}): reply with /answer <session> <text>.",
            many.iter()
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// What the notification a reply answers asked, as far as the outbox still knows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Asked<'a> {
    /// When the notification was made.
    pub at: Option<DateTime<Utc>>,
    /// The question it asked (a needs-input notification's).
    pub question: Option<&'a str>,
}

/// A reply to a notification about `session`, which `asked`: the answer when the session
/// still waits on that question, else a reply saying why nothing was typed into the agent.
pub async fn notification_reply(
    ctx: &ChatContext,
    session: &str,
    asked: Asked<'_>,
    text: &str,
) -> Action {
    let id = SessionId(session.to_string());
    let record = tokio::time::timeout(ctx.actor_timeout, ctx.store.load_session(&id)).await;
    match record {
        // The question goes with the answer: the session refuses it if it now asks another,
        // saying which (`domain::question::still_asks`).
        Ok(Ok(s)) if s.state == SessionState::NeedsInput => match asked.question {
            Some(q) => send(ctx, id, text.trim(), Some(q.to_string())).await,
            None if began_after(asked.at, &s) => Action::Reply(format!(
                "{id} now waits on a newer question: {}. Nothing was sent: reply to that \
                 question's message to answer it.",
                s.meta["question"].as_str().unwrap_or("see its screen")
            )),
            None => send(ctx, id, text.trim(), question_of(&s)).await,
        },
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

/// For a notification that named no question (another kind, or one the outbox no longer
/// holds), made at `at`: whether the waiting session's wait began after it, so it asks
/// something the notification did not (a wait's own notification is made in the step that
/// starts it). Unknown counts as not after, as before the check.
fn began_after(at: Option<DateTime<Utc>>, s: &SessionRecord) -> bool {
    matches!((at, s.activity_at), (Some(at), Some(wait)) if wait > at)
}

/// `/answer <session> <text>`: answers that session, if it was started here.
pub async fn command(ctx: &ChatContext, conv: &ConversationRecord, args: &[String]) -> Action {
    let (Some(id), true) = (args.first(), args.len() > 1) else {
        return Action::Reply("Usage: /answer <session> <text>".into());
    };
    let sessions = waiting(ctx, conv).await.unwrap_or_default();
    match sessions.iter().find(|s| s.id.as_str() == id) {
        Some(s) => send(ctx, s.id.clone(), &args[1..].join(" "), question_of(s)).await,
        None => Action::Reply(format!(
            "Session {id} does not wait for an answer from this conversation."
        )),
    }
}

/// The question a waiting session asks, as it recorded it: what an answer read now answers.
fn question_of(s: &SessionRecord) -> Option<String> {
    s.meta["question"].as_str().map(str::to_string)
}

/// Answers session `id` with `text`; with `question`, only while it still asks that (the
/// confirmation then names it, so the human sees what their answer approved).
async fn send(ctx: &ChatContext, id: SessionId, text: &str, question: Option<String>) -> Action {
    let Some(fleet) = &ctx.fleet else {
        return Action::Reply("The fleet is not available here.".into());
    };
    let to = question
        .as_deref()
        .map(|q| format!(" (to: {q})"))
        .unwrap_or_default();
    let msg = SendToSession {
        id: id.clone(),
        text: text.to_string(),
        allow_restore: false,
        question,
    };
    match tokio::time::timeout(ctx.actor_timeout, fleet.send(msg)).await {
        Ok(Ok(Ok(r))) if r.delivered => Action::Reply(format!("Answered {id}: {text}{to}")),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(question: &str, since: &str) -> SessionRecord {
        serde_json::from_value(serde_json::json!({
            "id": "demo-1", "project": "demo", "state": "needs_input", "reason": null,
            "agent": "claude", "runtime": "tmux", "workspace_kind": "worktree",
            "branch": null, "workspace": null, "pr": null, "issue": null, "prompt": null,
            "runtime_handle": null, "activity": "waiting_input", "activity_at": since,
            "restart_count": 0, "created_at": since, "updated_at": since,
            "meta": {"question": question},
        }))
        .expect("record")
    }

    /// A notification that named no question answers the wait it was made in or a later one,
    /// not one that began after it.
    #[test]
    fn without_its_question_a_notification_is_placed_by_its_time() {
        let t = |s: &str| Some(s.parse::<DateTime<Utc>>().expect("time"));
        let push = waiting("approve Bash: git push", "2026-01-01T10:00:05Z");
        assert!(began_after(t("2026-01-01T10:00:00Z"), &push));
        assert!(!began_after(t("2026-01-01T10:00:05Z"), &push));
        assert!(!began_after(t("2026-01-01T10:00:09Z"), &push));
        assert!(!began_after(None, &push));
    }
}
