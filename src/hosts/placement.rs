//! Placement: with `host: auto`, a session goes to the reachable host with the lowest share
//! of its capacity in use (live sessions / capacity), ties to the first by name; a full host
//! takes none.

/// One host's load as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Load {
    /// Host name.
    pub host: String,
    /// Live sessions on it.
    pub live: usize,
    /// Its `capacity`.
    pub capacity: usize,
    /// Whether it can be reached (or has not been tried yet).
    pub reachable: bool,
}

/// The least-loaded host with room, if any.
pub fn least_loaded(loads: &[Load]) -> Option<&str> {
    loads
        .iter()
        .filter(|l| l.reachable && l.live < l.capacity)
        // live/capacity compared as fractions without floating point: a/b < c/d ⇔ ad < cb.
        .min_by(|a, b| (a.live * b.capacity).cmp(&(b.live * a.capacity)))
        .map(|l| l.host.as_str())
}

/// The runtime and workspace plugins of a new session of `project`: the project's own, or
/// `ssh:<host>` for the host the spawn (`wanted`) or else the project names (`auto`: the
/// least-loaded).
///
/// # Errors
/// (`field`, reason): `host` for the spawn's host, `project` for the project's.
pub fn plugins_for(
    hosts: &super::HostSet,
    project: &crate::actors::fleet::ProjectSpec,
    wanted: Option<String>,
) -> Result<(String, String), (&'static str, String)> {
    let field = if wanted.is_some() { "host" } else { "project" };
    let Some(host) = wanted.or_else(|| project.host.clone()) else {
        return Ok((project.runtime.clone(), project.workspace.clone()));
    };
    let setup = &project.setup;
    if !setup.copy.is_empty() || !setup.symlinks.is_empty() || !setup.post_create.is_empty() {
        return Err((
            field,
            format!(
                "project {} has a workspace setup, which remote hosts do not support yet",
                project.name
            ),
        ));
    }
    let name = hosts.resolve(&host).map_err(|e| (field, e))?;
    let plugin = super::plugin_name(&name);
    Ok((plugin.clone(), plugin))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(host: &str, live: usize, capacity: usize, reachable: bool) -> Load {
        Load {
            host: host.into(),
            live,
            capacity,
            reachable,
        }
    }

    #[test]
    fn the_lowest_share_of_capacity_wins_and_full_or_lost_hosts_take_none() {
        let l = [load("a", 2, 4, true), load("b", 2, 8, true)];
        assert_eq!(least_loaded(&l), Some("b"));
        let l = [load("a", 0, 1, true), load("b", 0, 8, true)];
        assert_eq!(least_loaded(&l), Some("a"), "ties go to the first");
        let l = [load("a", 1, 1, true), load("b", 0, 8, false)];
        assert_eq!(least_loaded(&l), None);
        assert_eq!(least_loaded(&[]), None);
    }
}
