//! One integration-test binary (fast to link), one module per area.

mod actors;
mod bad_input;
mod cli;
mod crash;
mod events;
mod fleet;
mod fleet_plugins;
mod fleet_tmux;
mod helpers;
mod metrics;
mod notifications;
#[path = "../support/receivers.rs"]
mod receivers;
mod server;
mod sessions;
