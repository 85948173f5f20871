//! One integration-test binary (fast to link), one module per area.

mod actors;
mod bad_input;
mod cli;
mod crash;
mod dashboard;
mod events;
mod fleet;
mod helpers;
mod metrics;
mod server;
mod sessions;
