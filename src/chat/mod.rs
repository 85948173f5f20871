//! The chat bridge's pure logic: no I/O, no actors, no clock.
//!
//! - [`parse`]: tokenizing a message (`"quoted args"`), classifying it as a deterministic
//!   command, a template invocation or plain text.
//! - [`template`]: exact `$1`–`$9` / `$ARGUMENTS` substitution, the execute-now wrapper,
//!   front-matter descriptions, the seeded workflow templates (shipped as Markdown files in
//!   `config/templates/`, compiled in).
//! - [`paths`]: confining paths to the workspace root, validating clone URLs and branch
//!   names, and the reply text helpers (splitting, batch filtering).
//! - [`jira_repos`]: the repository a Jira conversation gets from its issue (strategies in
//!   a fixed order, `jira.repositories`).
//!
//! The actors in `actors::chat` do the I/O these decisions call for.

pub mod jira_repos;
pub mod overview;
pub mod parse;
pub mod paths;
pub mod template;
