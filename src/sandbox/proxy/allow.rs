//! The allow list: which `host:port` destinations the egress proxy may connect to.
//!
//! Matching is on the name the client asked for (lower-cased, one trailing dot dropped),
//! never on what it resolves to, so a client cannot reach a host by spelling it differently
//! (`127.1`, `2130706433` and `LOCALHOST.` are names, and only match themselves). IP literals
//! compare as addresses, so `[0:0::1]` matches an entry `[::1]:9000`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ProxyError;

/// A destination host as a client or an allow-list entry names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Host {
    /// A DNS name, lower-cased, without a trailing dot.
    Name(String),
    /// An IPv4 or IPv6 literal (IPv6 written in brackets).
    Ip(IpAddr),
}

impl Host {
    /// The host as it goes into an authority (`[::1]` for IPv6) and into `connect`.
    pub(crate) fn for_authority(&self) -> String {
        match self {
            Host::Name(name) => name.clone(),
            Host::Ip(IpAddr::V4(ip)) => ip.to_string(),
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
        }
    }

    /// The host as `Refused` reports it and as `connect` resolves it (no brackets).
    pub(crate) fn bare(&self) -> String {
        match self {
            Host::Name(name) => name.clone(),
            Host::Ip(ip) => ip.to_string(),
        }
    }
}

/// Parses `host`, `host:port`, `[v6]` or `[v6]:port`. The host is checked and normalised;
/// a port, when present, must be 1..=65535.
///
/// # Errors
/// A short reason, for the caller to wrap with the text it came from.
pub(crate) fn parse_authority(text: &str) -> Result<(Host, Option<u16>), &'static str> {
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or("`[` without a closing `]`")?;
        let ip: Ipv6Addr = inside
            .parse()
            .map_err(|_| "not an IPv6 address inside `[]`")?;
        let port = match after {
            "" => None,
            _ => Some(parse_port(
                after.strip_prefix(':').ok_or("junk after `]`")?,
            )?),
        };
        return Ok((Host::Ip(IpAddr::V6(ip)), port));
    }
    let (host, port) = match text.split_once(':') {
        None => (text, None),
        Some((_, p)) if p.contains(':') => {
            return Err("IPv6 addresses must be written in brackets, as [::1]:443")
        }
        Some((h, p)) => (h, Some(parse_port(p)?)),
    };
    Ok((parse_host(host)?, port))
}

fn parse_port(text: &str) -> Result<u16, &'static str> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the port is not a number");
    }
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err("the port must be 1..=65535"),
        Ok(port) => Ok(port),
    }
}

fn parse_host(text: &str) -> Result<Host, &'static str> {
    if let Ok(ip) = text.parse::<Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    if name.is_empty() {
        return Err("the host is empty");
    }
    if name.len() > 253 {
        return Err("the host name is longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("a label of the host name is empty or longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("the host name has a character other than a-z, 0-9, `-`, `_` and `.`");
        }
    }
    Ok(Host::Name(name))
}

/// Which hosts one entry covers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// Exactly this host.
    Exact(Host),
    /// Any name strictly below this domain (`*.npmjs.org`: `registry.npmjs.org`, not
    /// `npmjs.org` itself). Stored with its leading dot, `.npmjs.org`.
    Below(String),
}

/// Which ports one entry covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ports {
    /// The port written in the entry.
    One(u16),
    /// No port written: plain HTTP and HTTPS, 80 and 443.
    Web,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    host: HostPattern,
    ports: Ports,
}

/// The destinations the egress proxy may connect to, parsed once from `allow_hosts`:
/// `"api.anthropic.com:443"`, `"*.npmjs.org:443"` (any subdomain, not the domain itself),
/// `"registry.npmjs.org"` (ports 80 and 443), `"127.0.0.1:8080"`, `"[::1]:9000"`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<Entry>,
}

impl AllowList {
    /// Parses `allow_hosts` entries (surrounding whitespace ignored).
    ///
    /// # Errors
    /// `ProxyError::BadAllowEntry` naming the first bad entry and what is wrong with it.
    pub fn parse(entries: &[String]) -> Result<AllowList, ProxyError> {
        let entries = entries
            .iter()
            .map(|raw| {
                parse_entry(raw.trim()).map_err(|reason| ProxyError::BadAllowEntry {
                    entry: raw.clone(),
                    reason,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(AllowList { entries })
    }

    /// Whether a client may connect to `host:port`. `host` is what the client asked for
    /// (a name, an IPv4 literal, or an IPv6 literal with or without brackets); case and one
    /// trailing dot do not matter. Nothing is resolved. An unparsable host is not allowed.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => v6
                .parse::<Ipv6Addr>()
                .ok()
                .map(|ip| Host::Ip(IpAddr::V6(ip))),
            None => match host.parse::<Ipv6Addr>() {
                Ok(ip) => Some(Host::Ip(IpAddr::V6(ip))),
                Err(_) => parse_host(host).ok(),
            },
        };
        host.is_some_and(|host| self.allows_host(&host, port))
    }

    /// `allows` for an already parsed host.
    pub(crate) fn allows_host(&self, host: &Host, port: u16) -> bool {
        self.entries.iter().any(|entry| {
            let port_ok = match entry.ports {
                Ports::One(p) => p == port,
                Ports::Web => port == 80 || port == 443,
            };
            let host_ok = match (&entry.host, host) {
                (HostPattern::Exact(want), got) => want == got,
                (HostPattern::Below(suffix), Host::Name(name)) => {
                    name.len() > suffix.len() && name.ends_with(suffix.as_str())
                }
                (HostPattern::Below(_), Host::Ip(_)) => false,
            };
            port_ok && host_ok
        })
    }

    /// Whether the list allows nothing at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn parse_entry(text: &str) -> Result<Entry, &'static str> {
    if text.is_empty() {
        return Err("the entry is empty");
    }
    if text.contains("://") || text.contains('/') {
        return Err("write host or host:port, without a scheme or path");
    }
    let (pattern_text, wildcard) = match text.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (text, false),
    };
    if pattern_text.contains('*') {
        return Err("`*` may only stand alone as the first label, as in *.example.com");
    }
    let (host, port) = parse_authority(pattern_text)?;
    let ports = port.map_or(Ports::Web, Ports::One);
    let host = match (wildcard, host) {
        (false, host) => HostPattern::Exact(host),
        (true, Host::Ip(_)) => return Err("`*.` cannot precede an IP address"),
        (true, Host::Name(domain)) => {
            // `*.com` would let the agent reach most of the internet.
            if !domain.contains('.') {
                return Err("`*.` needs a domain of at least two labels, as in *.example.com");
            }
            HostPattern::Below(format!(".{domain}"))
        }
    };
    Ok(Entry { host, ports })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        let owned: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        AllowList::parse(&owned).expect("valid allow list")
    }

    #[test]
    fn matching_follows_the_entries() {
        let allow = list(&[
            "api.anthropic.com:443",
            "*.npmjs.org:443",
            "registry.yarnpkg.com",
            "127.0.0.1:8080",
            "[::1]:9000",
            " Pypi.Org.:443 ",
        ]);
        let table: &[(&str, u16, bool)] = &[
            ("api.anthropic.com", 443, true),
            ("API.Anthropic.COM", 443, true),
            ("api.anthropic.com.", 443, true),
            ("api.anthropic.com", 80, false),
            ("anthropic.com", 443, false),
            ("evil-api.anthropic.com", 443, false),
            ("api.anthropic.com.evil.net", 443, false),
            ("registry.npmjs.org", 443, true),
            ("a.b.npmjs.org", 443, true),
            ("REGISTRY.NPMJS.ORG", 443, true),
            ("npmjs.org", 443, false),
            ("evilnpmjs.org", 443, false),
            ("registry.npmjs.org", 80, false),
            ("registry.yarnpkg.com", 80, true),
            ("registry.yarnpkg.com", 443, true),
            ("registry.yarnpkg.com", 8080, false),
            ("127.0.0.1", 8080, true),
            ("127.0.0.1", 8081, false),
            ("127.1", 8080, false),
            ("2130706433", 8080, false),
            ("localhost", 8080, false),
            ("::1", 9000, true),
            ("[::1]", 9000, true),
            ("[0:0:0:0:0:0:0:1]", 9000, true),
            ("[::1]", 9001, false),
            ("[::2]", 9000, false),
            ("pypi.org", 443, true),
            ("", 443, false),
            ("bad host", 443, false),
            ("[::1", 9000, false),
        ];
        for &(host, port, want) in table {
            assert_eq!(allow.allows(host, port), want, "{host}:{port}");
        }
    }

    #[test]
    fn an_empty_list_allows_nothing() {
        let allow = list(&[]);
        assert!(allow.is_empty());
        assert!(!allow.allows("example.com", 443));
    }

    #[test]
    fn bad_entries_are_refused_by_name() {
        let bad = [
            "",
            "   ",
            "https://api.anthropic.com",
            "api.anthropic.com/v1",
            "api.anthropic.com:0",
            "api.anthropic.com:65536",
            "api.anthropic.com:https",
            "api.anthropic.com:",
            "::1",
            "::1:9000",
            "[::1",
            "[::1]9000",
            "[not-v6]:80",
            "*",
            "*.com",
            "*.*.example.com",
            "a*.example.com",
            "*.127.0.0.1:80",
            "exa mple.com",
            "example..com",
            "ex@mple.com",
        ];
        for entry in bad {
            match AllowList::parse(&[entry.to_string()]) {
                Err(ProxyError::BadAllowEntry {
                    entry: named,
                    reason,
                }) => {
                    assert_eq!(named, entry);
                    assert!(!reason.is_empty());
                }
                other => panic!("{entry:?} was accepted: {other:?}"),
            }
        }
        let err = AllowList::parse(&["ok.example.com".into(), "bad:port".into()])
            .expect_err("the second entry is bad");
        assert!(err.to_string().contains("bad:port"), "{err}");
    }

    #[test]
    fn authorities_parse_with_and_without_ports() {
        assert_eq!(
            parse_authority("Example.COM:8443"),
            Ok((Host::Name("example.com".into()), Some(8443)))
        );
        assert_eq!(
            parse_authority("[::1]"),
            Ok((Host::Ip("::1".parse().expect("ip")), None))
        );
        assert_eq!(
            parse_authority("10.0.0.1:80"),
            Ok((Host::Ip("10.0.0.1".parse().expect("ip")), Some(80)))
        );
        let v6 = parse_authority("[::1]:443").expect("v6").0;
        assert_eq!(v6.for_authority(), "[::1]");
        assert_eq!(v6.bare(), "::1");
    }
}
