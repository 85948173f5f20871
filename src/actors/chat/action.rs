//! What a message leads to, as decided by a command, a template or the plain-text router.

/// What a message leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Reply with this text; the message is done.
    Reply(String),
    /// Reply with this text; the message failed.
    Fail(String),
    /// Run the assistant.
    Prompt {
        /// The prompt.
        prompt: String,
        /// The template or command it came from (recorded as the last command).
        command: Option<String>,
        /// Start a fresh assistant session first.
        fresh: bool,
    },
}

impl Action {
    /// The action for a message run again after its turn was cut short (`resumed`): a prompt
    /// says so first ([`crate::chat::template::after_interruption`]); anything else, and any
    /// action of a message run for the first time, is unchanged.
    pub fn resumed(self, resumed: bool) -> Self {
        match self {
            Action::Prompt {
                prompt,
                command,
                fresh,
            } if resumed => Action::Prompt {
                prompt: crate::chat::template::after_interruption(&prompt),
                command,
                fresh,
            },
            other => other,
        }
    }
}

/// How a message ended, with its final replies: stored with the message's status and posted
/// after it (see [`super::delivery`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Ending {
    /// How it ended.
    pub outcome: crate::domain::chat::Outcome,
    /// What is left to tell the user, in order, each under the platform's message limit.
    pub replies: Vec<crate::store::ChatReply>,
}

impl From<crate::domain::chat::Outcome> for Ending {
    /// An ending with nothing to tell (the user was told already, or there is no one to tell).
    fn from(outcome: crate::domain::chat::Outcome) -> Self {
        Ending {
            outcome,
            replies: Vec::new(),
        }
    }
}
