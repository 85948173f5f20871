//! The domain: what a session is and how its lifecycle runs, as pure data and functions.
//!
//! Nothing here does I/O, holds an actor address or reads config: `actors`, `notify`, `store`,
//! `plugins` and `http` depend on this module, and it depends on none of them.
//!
//! - [`session`]: a session's id, state, activity, PR, its row and the snapshot the machine
//!   steps (row, reaction trackers, timers).
//! - [`machine`]: `step(snapshot, event, policy)`, the session state machine; its events and
//!   the effects it asks for.
//! - [`policy`]: the reaction table and thresholds a machine runs under; notification
//!   [`policy::Priority`]; the host variables an agent inherits ([`policy::BASE_ENV`]).
//! - [`keys`]: reaction and timer keys as types (stored as the same text as ever).
//! - [`runtime_handle`]: what a runtime persists about the agent it started (part of the row).
//! - [`pr`]: a pull request as the lifecycle sees it (status, CI, review feedback).
//! - [`pr_events`]: turns an observed PR into machine events.
//! - [`exit_status`]: an agent's exit status, a death by signal as the shell's 128 + N.
//! - [`question`]: whether two wordings (one cut short, `…`) name one question.
//! - [`chat`]: a chat conversation's assistant turn as a step function (budget, slot, turn,
//!   timeout, cancel, cap reached) and its replies.

pub mod chat;
pub mod clone_url;
pub mod exit_status;
pub mod keys;
pub mod machine;
pub mod placement;
pub mod policy;
pub mod pr;
pub mod pr_events;
pub mod question;
pub mod runtime_handle;
pub mod session;
