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
