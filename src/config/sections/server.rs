//! `server:`, `cluster:`, `database:` and `log:`: how the service itself runs.

use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;

use crate::config::values::{HumanDuration, LogFormat, Secret};

/// `server:` — the HTTP listener.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on (an IP address or `localhost`).
    pub bind: String,
    /// Port to listen on; 0 picks a free one (tests).
    pub port: u16,
    /// Bearer token required on `/api/v1/*`. Mandatory when `bind` is not loopback,
    /// because the API can start processes on this machine.
    pub token: Option<Secret>,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// How long the HTTP edge waits for an actor's answer before replying 503.
    pub actor_timeout: HumanDuration,
    /// How long a client may take to send a request body: a slow or stalled body must not
    /// hold a connection (and a file descriptor) for ever.
    pub body_timeout: HumanDuration,
    /// Webhook requests in flight at once: they are unauthenticated until their body has been
    /// read and its signature checked, so they are capped apart from the API.
    pub max_webhooks_in_flight: usize,
    /// Budget for graceful shutdown.
    pub shutdown_timeout: HumanDuration,
    /// The `flotilla` executable agents' hooks run (`flotilla hook …`); `None` = this
    /// executable when it is `flotilla`.
    #[serde(default)]
    pub cli_path: Option<String>,
}

impl ServerSettings {
    /// Whether `bind` only accepts local connections (127.0.0.0/8, `::1`, `localhost`).
    pub fn is_loopback(&self) -> bool {
        let host = self.bind.trim();
        if host.eq_ignore_ascii_case("localhost") {
            return true;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// The base URL a client on this machine uses to reach a server bound here on `port`
    /// (a wildcard bind is reached through loopback).
    pub fn local_url(&self, port: u16) -> String {
        let host = match self.bind.trim() {
            "0.0.0.0" | "" | "localhost" => "127.0.0.1".to_string(),
            "::" | "[::]" => "[::1]".to_string(),
            h if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
            h => h.to_string(),
        };
        format!("http://{host}:{port}")
    }

    /// `host:port` for binding, with brackets around an IPv6 address.
    pub fn bind_address(&self) -> String {
        let host = self.bind.trim();
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// `cluster:` — several nodes on one PostgreSQL database (off while `node_id` is null).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// This node's name, unique among the nodes sharing the database; null = one node that
    /// owns everything (the default, and the only choice on SQLite).
    pub node_id: Option<String>,
    /// How long a lease lasts without renewal: a dead node's sessions are taken over after it.
    pub lease_ttl: HumanDuration,
    /// How often a node renews its leases (one query for all of them) and looks for expired
    /// ones to take over; well under `lease_ttl`.
    pub renew_interval: HumanDuration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            node_id: None,
            lease_ttl: HumanDuration::from_secs(15),
            renew_interval: HumanDuration::from_secs(5),
        }
    }
}

/// `database:` — where sessions and events are stored.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite:…` or `postgres://…`; `None` means the SQLite file in the data dir.
    pub url: Option<String>,
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password (postgres://user:pw@host/db).
        f.debug_struct("DatabaseSettings")
            .field("url", &self.url.as_deref().map(redact_url_password))
            .finish()
    }
}

/// Replaces the password of `scheme://user:password@host…` with `***`.
pub fn redact_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => match authority[..at].find(':') {
            Some(colon) => format!(
                "{}{}:***{}",
                &url[..scheme_end + 3],
                &authority[..colon],
                &rest[at..]
            ),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// `log:` — log output.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A level or an `EnvFilter` directive list (`info,flotilla=debug`).
    pub level: String,
}
