//! Shapes an assistant turn's chunks into chat messages: a notice at the start (batch mode),
//! edits of one growing message (stream mode), and at the end the rest of the text, the tools
//! used and what the assistant was refused.

use std::sync::Arc;

use super::reply::{edit, replies_for, send};
use super::ChatContext;
use crate::chat::paths::{batch_reply, split_reply};
use crate::config::{ChatReplyMode, PermissionMode};
use crate::plugins::ChatPlatform;
use crate::store::{ChatReply, ConversationRecord};

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

/// Shapes a turn's chunks into chat messages.
pub(super) struct Replier {
    ctx: Arc<ChatContext>,
    conversation: String,
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
    pub(super) fn new(
        ctx: Arc<ChatContext>,
        conv: &ConversationRecord,
        mode: ChatReplyMode,
    ) -> Self {
        let platform = ctx.platforms.get(&conv.platform);
        Replier {
            ctx,
            conversation: conv.id.clone(),
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

    pub(super) async fn start(&mut self) {
        if self.mode == ChatReplyMode::Batch {
            if let Some(p) = self.speaking().await {
                let notice = format!("{} is on the case...", self.ctx.settings.bot_name);
                if let Err(e) = send(p.as_ref(), &self.thread, &notice).await {
                    tracing::warn!(error = %e, "chat notice failed");
                }
            }
        }
    }

    /// The platform to speak on, while this node still owns the conversation (a node that
    /// lost it says nothing more of this turn).
    async fn speaking(&self) -> Option<Arc<dyn ChatPlatform>> {
        let p = self.platform.clone()?;
        if self.ctx.still_owns(&self.conversation).await {
            return Some(p);
        }
        tracing::info!(
            conversation = %self.conversation,
            "the conversation moved to another node: the turn's reply is dropped"
        );
        None
    }

    fn current(&self) -> String {
        self.texts.join("\n\n")
    }

    pub(super) async fn text(&mut self, text: String) {
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
        let due = match &self.streaming {
            None => true,
            Some((_, last)) => now.duration_since(*last) >= interval,
        };
        if !due || self.speaking().await.is_none() {
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
            Some((id, _)) => {
                let id = id.clone();
                match edit(p.as_ref(), &self.thread, &id, &body).await {
                    Ok(()) => {
                        self.streaming = Some((id, now));
                        self.shown = body;
                    }
                    Err(e) => tracing::warn!(error = %e, "chat stream edit failed"),
                }
            }
        }
    }

    pub(super) fn tool(&mut self, summary: String) {
        self.tools.push(summary);
    }

    pub(super) fn denied(&mut self, tool: &str, detail: &str) {
        let line = if detail.is_empty() {
            tool.to_string()
        } else {
            format!("{tool} {detail}")
        };
        if !self.denials.contains(&line) {
            self.denials.push(line);
        }
    }

    /// The turn's final replies, to store with the message's status and post after it: the
    /// whole text (the streamed message's final part as an edit of it), the tools used and
    /// what the assistant was refused.
    pub(super) fn finish(&mut self) -> Vec<ChatReply> {
        let Some(p) = self.platform.clone() else {
            return Vec::new();
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
            return Vec::new();
        }
        let mut parts = split_reply(&body, p.max_message_len()).into_iter();
        let mut replies = Vec::new();
        if let Some((id, _)) = &self.streaming {
            if let Some(first) = parts.next() {
                if first != self.shown {
                    replies.push(ChatReply {
                        body: first,
                        edit_of: Some(id.clone()),
                    });
                }
            }
        }
        replies.extend(parts.map(ChatReply::post));
        replies
    }

    /// `text` as final replies, split under the platform's message limit.
    pub(super) fn posts(&self, text: &str) -> Vec<ChatReply> {
        match &self.platform {
            Some(p) => replies_for(p.as_ref(), text),
            None => Vec::new(),
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
