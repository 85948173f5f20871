//! `FleetError`: what went wrong with a fleet request, and how the errors of the store, a
//! session actor, a parsed request and a mailbox become one.

use actix::prelude::*;

use super::request::InvalidField;
use crate::actors::session::SessionError;
use crate::plugins::PluginError;
use crate::store::StoreError;

/// What went wrong with a fleet request, in terms the HTTP layer maps to a status once.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// No session with that id (404).
    #[error("session {id} not found")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// A request field is not acceptable (422).
    #[error("{field}: {reason}")]
    Invalid {
        /// Field name.
        field: String,
        /// Why.
        reason: String,
    },
    /// Not allowed in the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The actor did not answer in time (503).
    #[error("the session is busy; try again")]
    Busy,
    /// Not ready yet (503).
    #[error("not ready: {0}")]
    NotReady(String),
    /// Store failure (500).
    #[error("store error")]
    Store(#[source] StoreError),
    /// Plugin failure (502).
    #[error("plugin error: {0}")]
    Plugin(#[source] PluginError),
}

impl From<StoreError> for FleetError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { what } => FleetError::NotFound {
                id: what.trim_start_matches("session ").to_string(),
            },
            other => FleetError::Store(other),
        }
    }
}

impl From<SessionError> for FleetError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Rejected(m) => FleetError::Conflict(m),
            SessionError::Unprocessable(reason) => FleetError::Invalid {
                field: "merge".into(),
                reason,
            },
            SessionError::NotLoaded => FleetError::Busy,
            SessionError::Store(s) => s.into(),
            SessionError::Plugin(PluginError::NotFound(m)) => FleetError::Conflict(m),
            SessionError::Plugin(p) => FleetError::Plugin(p),
        }
    }
}

impl From<InvalidField> for FleetError {
    fn from(e: InvalidField) -> Self {
        FleetError::Invalid {
            field: e.field.into(),
            reason: e.reason,
        }
    }
}

impl From<MailboxError> for FleetError {
    fn from(_: MailboxError) -> Self {
        FleetError::Busy
    }
}
