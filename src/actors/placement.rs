//! Where a new session runs: its project's own runtime and workspace, or a remote host's
//! (`ssh:<host>`), chosen by [`crate::domain::placement`] for `host: auto`.

/// The runtime and workspace plugins of a new session of `project`: the project's own, or
/// `ssh:<host>` for the host the spawn (`wanted`) or else the project names (`auto`: the
/// least-loaded).
///
/// # Errors
/// (`field`, reason): `host` for the spawn's host, `project` for the project's.
pub fn plugins_for(
    hosts: &crate::plugins::hosts::HostSet,
    project: &crate::actors::fleet::ProjectSpec,
    wanted: Option<String>,
) -> Result<(String, String), (&'static str, String)> {
    let field = if wanted.is_some() { "host" } else { "project" };
    let Some(host) = wanted.or_else(|| project.host.clone()) else {
        return Ok((project.runtime.clone(), project.workspace.clone()));
    };
    let name = hosts.resolve(&host).map_err(|e| (field, e))?;
    let plugin = crate::plugins::hosts::plugin_name(&name);
    Ok((plugin.clone(), plugin))
}
