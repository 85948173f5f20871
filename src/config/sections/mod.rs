//! The settings structs, one per config section, mirroring `config/default.yaml`.
//!
//! Every struct denies unknown fields so a typo fails start-up instead of being
//! silently ignored. Defaults live in `config/default.yaml`, not here; the
//! `#[serde(default)]`s only cover entries of user-named maps (a project,
//! an agent, a reaction), which the defaults file cannot pre-fill.
//!
//! | module | sections |
//! |---|---|
//! | `server` | `server`, `cluster`, `database`, `log` |
//! | `project` | `defaults`, `lifecycle`, `agents`, `projects`, `pricing` |
//! | `reactions` | `reactions` and a project's overrides |
//! | `platforms` | `github`, `slack`, `telegram`, `discord`, `jira`, `linear` |
//! | `notifications` | `notifiers`, `routing`, `notifications` (rate limits) |
//! | `chat` | `chat` (assistant, allow-list) |
//!
//! Every struct is re-exported here, so `config::sections::X` paths stay as they were.

mod chat;
mod notifications;
mod platforms;
mod project;
mod reactions;
mod server;

pub use self::chat::*;
pub use self::notifications::*;
pub use self::platforms::*;
pub use self::project::*;
pub use self::reactions::*;
pub use self::server::*;

/// `#[serde(default = "default_true")]`, shared by the sections.
fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::values::{HumanDuration, NotifierKind};

    #[test]
    fn redacts_database_password() {
        assert_eq!(
            redact_url_password("postgres://flo:s3cret@db:5432/flotilla?sslmode=require"),
            "postgres://flo:***@db:5432/flotilla?sslmode=require"
        );
        assert_eq!(
            redact_url_password("sqlite:///tmp/x.db"),
            "sqlite:///tmp/x.db"
        );
        let d = DatabaseSettings {
            url: Some("postgres://u:pw@h/db".into()),
        };
        assert!(!format!("{d:?}").contains("pw"));
    }

    #[test]
    fn notifier_debug_hides_the_url() {
        let n = NotifierSettings {
            kind: NotifierKind::Slack,
            url: Some("https://hooks.slack.com/services/T0/B0/s3cret".into()),
            secret: None,
            channel: None,
            chat_id: None,
        };
        assert!(!format!("{n:?}").contains("s3cret"));
    }

    #[test]
    fn loopback_detection() {
        let mut s = ServerSettings {
            bind: "127.0.0.1".into(),
            port: 1,
            token: None,
            max_body_bytes: 1,
            actor_timeout: HumanDuration::default(),
            body_timeout: HumanDuration::default(),
            max_webhooks_in_flight: 1,
            shutdown_timeout: HumanDuration::default(),
            cli_path: None,
        };
        assert!(s.is_loopback());
        for (bind, loopback) in [
            ("::1", true),
            ("[::1]", true),
            ("localhost", true),
            ("0.0.0.0", false),
            ("192.168.1.2", false),
            ("example.com", false),
        ] {
            s.bind = bind.into();
            assert_eq!(s.is_loopback(), loopback, "{bind}");
        }
        s.bind = "::1".into();
        assert_eq!(s.bind_address(), "[::1]:1");
    }
}
