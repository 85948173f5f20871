//! Thread history as context for a conversation's first turn (Discord, Slack): the earlier
//! messages of the thread the conversation started in, so the assistant does not start
//! blind. Bounded to the newest `chat.thread_history` messages, each cut to
//! [`MAX_MESSAGE_CHARS`]; shown oldest first (the order people read them).
//!
//! Reading history is best effort: a platform error or timeout gives no context, never a
//! failed turn.

use std::time::Duration;

use crate::plugins::{ChatPlatform, HistoryMessage};

/// Longest a history read may take.
pub const HISTORY_TIMEOUT: Duration = Duration::from_secs(10);
/// Characters kept of each earlier message.
pub const MAX_MESSAGE_CHARS: usize = 1_000;

/// The context block for up to `limit` messages of `thread` before `before`, or `None`
/// (no history, `limit` 0, or the platform could not be read).
pub async fn first_turn_context(
    p: &dyn ChatPlatform,
    thread: &str,
    before: &str,
    limit: usize,
) -> Option<String> {
    if limit == 0 {
        return None;
    }
    match tokio::time::timeout(HISTORY_TIMEOUT, p.history(thread, before, limit)).await {
        Ok(Ok(h)) => format_history(&h, limit),
        Ok(Err(e)) => {
            tracing::warn!(platform = p.name(), error = %e, "thread history unavailable");
            None
        }
        Err(_) => {
            tracing::warn!(platform = p.name(), "thread history timed out");
            None
        }
    }
}

/// `newest_first` (as platforms answer) as a prompt block: the newest `limit`, oldest first.
pub fn format_history(newest_first: &[HistoryMessage], limit: usize) -> Option<String> {
    let kept: Vec<&HistoryMessage> = newest_first
        .iter()
        .filter(|m| !m.text.trim().is_empty())
        .take(limit)
        .collect();
    if kept.is_empty() {
        return None;
    }
    let mut out = format!(
        "Earlier messages in this thread ({} most recent, oldest first):\n",
        kept.len()
    );
    for m in kept.iter().rev() {
        let who = if m.bot {
            format!("{} (bot)", m.author)
        } else {
            m.author.clone()
        };
        let text: String = m.text.chars().take(MAX_MESSAGE_CHARS).collect();
        let cut = if m.text.chars().count() > MAX_MESSAGE_CHARS {
            " […]"
        } else {
            ""
        };
        out.push_str(&format!(
            "- {who}: {}{cut}\n",
            text.trim().replace('\n', "\n  ")
        ));
    }
    Some(out.trim_end().to_string())
}

/// `context` (a platform's own, e.g. an issue body) followed by `history`, either optional.
pub fn with_history(context: Option<&str>, history: Option<&str>) -> Option<String> {
    match (context.filter(|c| !c.trim().is_empty()), history) {
        (Some(c), Some(h)) => Some(format!("{c}\n\n{h}")),
        (Some(c), None) => Some(c.to_string()),
        (None, Some(h)) => Some(h.to_string()),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(author: &str, text: &str) -> HistoryMessage {
        HistoryMessage {
            author: author.into(),
            bot: author == "Flotilla",
            text: text.into(),
        }
    }

    #[test]
    fn keeps_the_newest_and_shows_them_oldest_first() {
        let newest_first = vec![m("ann", "three"), m("Flotilla", "two"), m("bob", "one")];
        let h = format_history(&newest_first, 2).expect("history");
        assert!(h.starts_with("Earlier messages in this thread (2 most recent"));
        let (two, three) = (h.find("two").expect("two"), h.find("three").expect("three"));
        assert!(two < three, "{h}");
        assert!(!h.contains("one"));
        assert!(h.contains("Flotilla (bot): two"));
        assert_eq!(format_history(&[], 5), None);
        let long = "x".repeat(MAX_MESSAGE_CHARS + 10);
        let h = format_history(&[m("ann", &long)], 5).expect("history");
        assert!(h.ends_with("[…]"));
    }

    #[test]
    fn context_and_history_join() {
        assert_eq!(with_history(None, None), None);
        assert_eq!(
            with_history(Some("c"), Some("h")).as_deref(),
            Some("c\n\nh")
        );
        assert_eq!(with_history(Some(" "), Some("h")).as_deref(), Some("h"));
    }
}
