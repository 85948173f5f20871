//! `sandbox:` under `projects.<name>` and `agents.<name>` (the agent's fields win, one by one):
//! whether an agent runs in a bubblewrap sandbox, what it may reach and mount, and how much it
//! may use. Resolved per session into a [`Sandbox`]; building the `bwrap` command from it is
//! `crate::sandbox`'s job.

use std::path::PathBuf;

use serde::Deserialize;

use super::values::PermissionMode;

/// Model APIs and package registries an agent needs to work, allowed when `allow_hosts` is
/// not set (the agent's own `*_BASE_URL` hosts are added at launch).
pub const DEFAULT_ALLOW_HOSTS: &[&str] = &[
    "api.anthropic.com:443",
    "api.openai.com:443",
    "registry.npmjs.org:443",
    "pypi.org:443",
    "files.pythonhosted.org:443",
    "index.crates.io:443",
    "static.crates.io:443",
    "github.com:443",
    "api.github.com:443",
    "codeload.github.com:443",
    "objects.githubusercontent.com:443",
];

/// How a sandboxed agent reaches the network.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SandboxNetwork {
    /// No network at all (only the sandbox's own loopback).
    None,
    /// Only the hosts in `allow_hosts`, through Flotilla's egress proxy.
    Proxy,
}

/// An extra path made visible inside the sandbox.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SandboxMount {
    /// Absolute path on the host, mounted at the same place.
    pub path: PathBuf,
    /// Read-write (default read-only).
    #[serde(default)]
    pub writable: bool,
}

/// Resource limits applied to the agent's processes (`setrlimit`, where the kernel allows).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SandboxLimits {
    /// Open processes (RLIMIT_NPROC; counted per real user, so only when not running as root).
    #[serde(default)]
    pub processes: Option<u64>,
    /// Address space per process, MiB (RLIMIT_AS).
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// CPU time per process, seconds (RLIMIT_CPU).
    #[serde(default)]
    pub cpu_seconds: Option<u64>,
}

/// `sandbox:` as written: every field optional, so an agent's entry overrides a project's
/// field by field.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SandboxSettings {
    /// Run agents in the sandbox.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// `none` or `proxy` (default `proxy`).
    #[serde(default)]
    pub network: Option<SandboxNetwork>,
    /// `host:port` (or `*.domain:port`, or a host for ports 80 and 443) reachable through the
    /// proxy; default [`DEFAULT_ALLOW_HOSTS`].
    #[serde(default)]
    pub allow_hosts: Option<Vec<String>>,
    /// Extra paths visible inside.
    #[serde(default)]
    pub mounts: Option<Vec<SandboxMount>>,
    /// The permission mode agents run with inside the sandbox (default `permissionless`: the
    /// sandbox, not a prompt per command, is what keeps the machine safe).
    #[serde(default)]
    pub permission_mode: Option<PermissionMode>,
    /// Resource limits.
    #[serde(default)]
    pub limits: Option<SandboxLimits>,
}

/// The sandbox one session's agent runs in.
#[derive(Clone, Debug, PartialEq)]
pub struct Sandbox {
    /// Network access.
    pub network: SandboxNetwork,
    /// Allowed destinations (proxy mode).
    pub allow_hosts: Vec<String>,
    /// Extra mounts.
    pub mounts: Vec<SandboxMount>,
    /// The agent's permission mode inside.
    pub permission_mode: PermissionMode,
    /// Resource limits.
    pub limits: SandboxLimits,
}

impl SandboxSettings {
    /// `self` with every field `over` sets replaced by `over`'s.
    pub fn overlay(&self, over: &SandboxSettings) -> SandboxSettings {
        SandboxSettings {
            enabled: over.enabled.or(self.enabled),
            network: over.network.or(self.network),
            allow_hosts: over
                .allow_hosts
                .clone()
                .or_else(|| self.allow_hosts.clone()),
            mounts: over.mounts.clone().or_else(|| self.mounts.clone()),
            permission_mode: over.permission_mode.or(self.permission_mode),
            limits: over.limits.clone().or_else(|| self.limits.clone()),
        }
    }

    /// The sandbox to run in, or `None` when it is not enabled.
    pub fn resolve(&self) -> Option<Sandbox> {
        if self.enabled != Some(true) {
            return None;
        }
        Some(Sandbox {
            network: self.network.unwrap_or(SandboxNetwork::Proxy),
            allow_hosts: self
                .allow_hosts
                .clone()
                .unwrap_or_else(|| DEFAULT_ALLOW_HOSTS.iter().map(|h| h.to_string()).collect()),
            mounts: self.mounts.clone().unwrap_or_default(),
            permission_mode: self
                .permission_mode
                .unwrap_or(PermissionMode::Permissionless),
            limits: self.limits.clone().unwrap_or_default(),
        })
    }

    /// Problems with the values, as `(field, reason)` (the caller prefixes its key).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        for (i, h) in self.allow_hosts.iter().flatten().enumerate() {
            if let Err(why) = check_host(h) {
                v.push((format!("allow_hosts[{i}]"), why));
            }
        }
        for (i, m) in self.mounts.iter().flatten().enumerate() {
            if !m.path.is_absolute() {
                v.push((
                    format!("mounts[{i}].path"),
                    "must be an absolute path".into(),
                ));
            }
        }
        if let Some(l) = &self.limits {
            for (k, val) in [
                ("processes", l.processes),
                ("memory_mb", l.memory_mb),
                ("cpu_seconds", l.cpu_seconds),
            ] {
                if val == Some(0) {
                    v.push((format!("limits.{k}"), "must be at least 1".into()));
                }
            }
        }
        v
    }
}

/// `host`, `host:port`, `*.domain[:port]`, `[v6]:port`: no scheme, path or spaces.
fn check_host(h: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{h:?}: {why} (e.g. \"api.anthropic.com:443\")"));
    if h.trim().is_empty() {
        return bad("empty");
    }
    if h.contains("://") || h.contains('/') || h.chars().any(char::is_whitespace) {
        return bad("a host and port, not a URL");
    }
    let port = if let Some(rest) = h.strip_prefix('[') {
        match rest.split_once(']') {
            Some((_, tail)) => tail.strip_prefix(':'),
            None => return bad("unclosed ["),
        }
    } else {
        h.rsplit_once(':').map(|(_, p)| p)
    };
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |p| p == 0) {
            return bad("the port must be 1-65535");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_fields_win_one_by_one_and_off_is_the_default() {
        let project = SandboxSettings {
            enabled: Some(true),
            network: Some(SandboxNetwork::None),
            allow_hosts: Some(vec!["a.example:443".into()]),
            ..Default::default()
        };
        let agent = SandboxSettings {
            network: Some(SandboxNetwork::Proxy),
            ..Default::default()
        };
        let s = project.overlay(&agent).resolve().expect("enabled");
        assert_eq!(s.network, SandboxNetwork::Proxy);
        assert_eq!(s.allow_hosts, vec!["a.example:443".to_string()]);
        assert_eq!(s.permission_mode, PermissionMode::Permissionless);
        let off = SandboxSettings {
            enabled: Some(false),
            ..Default::default()
        };
        assert!(project.overlay(&off).resolve().is_none());
        assert!(SandboxSettings::default().resolve().is_none());
        let defaults = SandboxSettings {
            enabled: Some(true),
            ..Default::default()
        }
        .resolve()
        .expect("on");
        assert!(defaults
            .allow_hosts
            .contains(&"api.anthropic.com:443".to_string()));
    }

    #[test]
    fn bad_values_name_their_field() {
        let s = SandboxSettings {
            allow_hosts: Some(vec![
                "https://api.example.com".into(),
                "ok.example:443".into(),
                "x:0".into(),
                "[::1]:9".into(),
            ]),
            mounts: Some(vec![SandboxMount {
                path: "relative".into(),
                writable: false,
            }]),
            limits: Some(SandboxLimits {
                processes: Some(0),
                ..Default::default()
            }),
            ..Default::default()
        };
        let fields: Vec<String> = s.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "allow_hosts[0]",
                "allow_hosts[2]",
                "mounts[0].path",
                "limits.processes"
            ]
        );
    }
}
