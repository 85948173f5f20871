//! Clone URLs and repository names we accept: pure checks that the chat commands and the
//! configuration's repository maps (`jira.repositories`) share.

/// A clone URL we accept, normalized: `https://host/owner/repo[.git]` (no credentials, no
/// query), `git@github.com:owner/repo` (rewritten to https), or a local `file://` / absolute
/// path to a repository (tests, mirrors). Returns `(url, owner, repo)`.
///
/// # Errors
/// Why the URL is refused.
pub fn validate_clone_url(input: &str) -> Result<(String, String, String), String> {
    let url = input.trim().trim_end_matches('/');
    let url = match url.strip_prefix("git@github.com:") {
        Some(rest) => format!("https://github.com/{rest}"),
        None => url.to_string(),
    };
    let path = if let Some(rest) = url.strip_prefix("https://") {
        let (host_part, path) = rest
            .split_once('/')
            .ok_or("the URL has no repository path")?;
        if host_part.contains('@') {
            return Err("credentials in clone URLs are refused (they would be stored)".into());
        }
        if host_part.is_empty() {
            return Err("the URL has no host".into());
        }
        path.to_string()
    } else if let Some(rest) = url.strip_prefix("file://") {
        rest.to_string()
    } else if url.starts_with('/') {
        url.clone()
    } else {
        return Err("use an https://, git@github.com: or file:// URL".into());
    };
    if url.contains(['?', '#', ' ', '\n']) || url.starts_with('-') {
        return Err("the URL has characters that are not allowed".into());
    }
    let mut parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let repo = parts
        .pop()
        .map(|r| r.trim_end_matches(".git").to_string())
        .ok_or("the URL has no repository name")?;
    let owner = parts.pop().unwrap_or("local").to_string();
    for n in [&owner, &repo] {
        if !valid_name(n) || n == ".." || n == "." {
            return Err(format!("{n:?} is not a valid owner or repository name"));
        }
    }
    Ok((url, owner, repo))
}

/// `[A-Za-z0-9._-]+`, not starting with `-` or `.`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(['-', '.'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
