//! Agents in a sandbox: [`bwrap`] builds the bubblewrap command that confines one agent,
//! [`exec`] is what runs first inside it (`flotilla sandbox-exec`: limits, network bridges,
//! then the agent).

pub mod bwrap;
pub mod exec;
pub mod proxy;
