//! The egress proxy of a sandboxed agent: an HTTP/1.1 forward proxy on a Unix socket that
//! connects only to the destinations of an [`AllowList`] and reports every refusal.

mod allow;

pub use allow::AllowList;

/// Errors of the egress proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// An `allow_hosts` entry could not be parsed.
    #[error("bad allow_hosts entry {entry:?}: {reason}")]
    BadAllowEntry {
        /// The entry as written.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}
