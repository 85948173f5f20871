//! Agents in a sandbox: [`bwrap`] builds the bubblewrap command that confines one agent,
//! [`proxy`] is the allow-listed egress proxy that is its only way out, and [`exec`] is what
//! runs first inside it (`flotilla sandbox-exec`: limits, network relays, then the agent).

pub mod bwrap;
pub mod exec;
pub mod proxy;
