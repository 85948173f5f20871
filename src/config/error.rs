//! [`ConfigError`] and [`ConfigIssue`]: every configuration problem is reported
//! as `key: reason`, one per line, and makes the process exit with code 2.

use std::fmt;

/// One problem with the configuration, tied to the dotted key it concerns
/// (`projects.demo.repo`, `reactions.ci-failed.retries`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted path of the offending key; list items as `key[2]`.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigIssue {
    /// A new issue for `key`.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration could not be read or parsed, or a value had the wrong
    /// shape (unknown key, wrong type, bad duration, unset `${VAR}`). `key` is
    /// `None` when the problem is not tied to a key (unreadable file, YAML syntax).
    #[error("{}", fmt_load(.key, .reason))]
    Load {
        /// Dotted key, when known.
        key: Option<String>,
        /// What went wrong.
        reason: String,
    },
    /// Several load problems found in one pass (each with its key).
    #[error("{}", fmt_issues(.0))]
    LoadMany(Vec<ConfigIssue>),
    /// The configuration parsed but does not make sense (from
    /// `Settings::validate`); all problems at once.
    #[error("{}", fmt_issues(.0))]
    Invalid(Vec<ConfigIssue>),
}

fn fmt_load(key: &Option<String>, reason: &str) -> String {
    match key {
        Some(key) => format!("{key}: {reason}"),
        None => reason.to_string(),
    }
}

fn fmt_issues(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(ConfigIssue::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    /// Process exit code for a bad configuration (`INTERFACE.md`: 2).
    pub fn exit_code(&self) -> i32 {
        2
    }

    /// Every problem as `(key, reason)`; `Load` without a key yields an empty key.
    pub fn issues(&self) -> Vec<ConfigIssue> {
        match self {
            ConfigError::Load { key, reason } => vec![ConfigIssue::new(
                key.clone().unwrap_or_default(),
                reason.clone(),
            )],
            ConfigError::LoadMany(issues) | ConfigError::Invalid(issues) => issues.clone(),
        }
    }

    /// A `Load` error for `issues`: the single-issue form when there is one.
    pub(crate) fn from_load_issues(mut issues: Vec<ConfigIssue>) -> Self {
        if issues.len() == 1 {
            let issue = issues.remove(0);
            ConfigError::Load {
                key: Some(issue.key),
                reason: issue.reason,
            }
        } else {
            ConfigError::LoadMany(issues)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_prints_one_issue_per_line() {
        let e = ConfigError::Invalid(vec![
            ConfigIssue::new("server.token", "required"),
            ConfigIssue::new("chat.max_concurrent", "must be at least 1"),
        ]);
        assert_eq!(
            e.to_string(),
            "server.token: required\nchat.max_concurrent: must be at least 1"
        );
        assert_eq!(e.exit_code(), 2);
        let e = ConfigError::Load {
            key: None,
            reason: "cannot read x".into(),
        };
        assert_eq!(e.to_string(), "cannot read x");
    }
}
