//! `hosts:` — machines agents may run on over SSH, by name.
//!
//! ```yaml
//! hosts:
//!   build-1:
//!     ssh: agent@build-1.internal           # the SSH destination (user@host or a Host alias)
//!     port: 22                              # optional
//!     workdir: /srv/flotilla                # worktrees, logs and prompts live under it
//!     capacity: 8                           # most live sessions placed on it
//!     identity_file: /etc/flotilla/id_ed25519  # optional (else ssh's own configuration)
//!     known_hosts: /etc/flotilla/known_hosts   # optional (else ~/.ssh/known_hosts)
//! ```
//!
//! `destination` and `work_dir` are accepted as other spellings of `ssh` and `workdir`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// The word a project's or a spawn's `host` takes to let Flotilla place the session on the
/// least-loaded host.
pub const AUTO: &str = "auto";

/// One `hosts.<name>` entry.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostSettings {
    /// The SSH destination (`user@host`, `host`, or a `Host` alias of ssh's configuration).
    #[serde(alias = "destination")]
    pub ssh: String,
    /// SSH port; ssh's own default (or configuration) when absent.
    #[serde(default)]
    pub port: Option<u16>,
    /// Directory on the host under which Flotilla keeps repositories, worktrees, pane logs
    /// and prompts (absolute).
    #[serde(alias = "work_dir")]
    pub workdir: PathBuf,
    /// Most live sessions Flotilla places on the host (at least 1).
    #[serde(default = "default_capacity")]
    pub capacity: u32,
    /// Private key to log in with (`ssh -i`); absent: ssh's own configuration and agent.
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
    /// Known-hosts file holding the host's key (`UserKnownHostsFile`); absent: ssh's default.
    /// The host key is always checked (`StrictHostKeyChecking=yes`).
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
}

fn default_capacity() -> u32 {
    4
}

/// Whether `name` can name a host: `[A-Za-z0-9_-]+` and not the placement word.
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name != AUTO
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Every problem of the `hosts:` section, as (`key`, reason).
pub fn problems(hosts: &BTreeMap<String, HostSettings>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, h) in hosts {
        let key = format!("hosts.{name}");
        if !is_host_name(name) {
            out.push((
                key.clone(),
                format!("host name must match [A-Za-z0-9_-]+ and not be `{AUTO}`"),
            ));
        }
        let d = h.ssh.trim();
        if d.is_empty() {
            out.push((format!("{key}.ssh"), "must not be empty".into()));
        } else if d.starts_with('-') || d.chars().any(|c| c.is_whitespace() || c.is_control()) {
            out.push((
                format!("{key}.ssh"),
                "must be user@host or a host name (no leading `-`, no spaces)".into(),
            ));
        }
        if !h.workdir.is_absolute() {
            out.push((format!("{key}.workdir"), "must be an absolute path".into()));
        }
        if h.capacity == 0 {
            out.push((format!("{key}.capacity"), "must be at least 1".into()));
        }
        if h.port == Some(0) {
            out.push((format!("{key}.port"), "must be 1-65535".into()));
        }
        for (field, path) in [
            ("identity_file", &h.identity_file),
            ("known_hosts", &h.known_hosts),
        ] {
            if let Some(p) = path {
                if !p.is_file() {
                    out.push((
                        format!("{key}.{field}"),
                        format!("{} does not exist or is not a file", p.display()),
                    ));
                }
            }
        }
    }
    out
}

/// Checks a `host` value (a project's or a spawn's): `auto` or a configured host.
///
/// # Errors
/// A reason naming the known hosts.
pub fn check_host_ref(hosts: &BTreeMap<String, HostSettings>, name: &str) -> Result<(), String> {
    if name == AUTO {
        if hosts.is_empty() {
            return Err(format!("`{AUTO}` needs at least one entry under `hosts:`"));
        }
        return Ok(());
    }
    if hosts.contains_key(name) {
        return Ok(());
    }
    let known: Vec<&str> = hosts.keys().map(String::as_str).collect();
    Err(format!(
        "unknown host `{name}` (configured: {}; or `{AUTO}`)",
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(dest: &str, dir: &str, capacity: u32) -> HostSettings {
        HostSettings {
            ssh: dest.into(),
            port: None,
            workdir: dir.into(),
            capacity,
            identity_file: None,
            known_hosts: None,
        }
    }

    #[test]
    fn every_problem_names_its_key() {
        let mut hosts = BTreeMap::new();
        hosts.insert("ok".to_string(), host("me@box", "/srv/f", 2));
        hosts.insert("bad name".to_string(), host("-oProxyCommand=x", "rel", 0));
        let keys: Vec<String> = problems(&hosts).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "hosts.bad name",
                "hosts.bad name.ssh",
                "hosts.bad name.workdir",
                "hosts.bad name.capacity"
            ]
        );
        assert!(check_host_ref(&hosts, "ok").is_ok());
        assert!(check_host_ref(&hosts, AUTO).is_ok());
        let e = check_host_ref(&hosts, "nope").unwrap_err();
        assert!(e.contains("unknown host `nope`"), "{e}");
        assert!(check_host_ref(&BTreeMap::new(), AUTO).is_err());
    }
}
