//! The plugin slots' traits, one file a slot, with the types each one takes and gives; all
//! re-exported from [`crate::plugins`].

mod agent;
mod assistant;
mod chat;
mod notifier;
mod runtime;
mod scm;
mod tracker;
mod workspace;

pub use agent::*;
pub use assistant::*;
pub use chat::*;
pub use notifier::*;
pub use runtime::*;
pub use scm::*;
pub use tracker::*;
pub use workspace::*;
