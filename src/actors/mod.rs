//! Actors.
pub mod session;
