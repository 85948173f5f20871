//! Flotilla.
pub mod actors;
pub mod store;
