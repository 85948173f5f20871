//! Which repository a Jira conversation works in, from its issue (`jira.repositories`).
//!
//! The webhook's issue is reduced to [`IssueFacts`] (carried in the message's meta, keys
//! [`META_PROJECT`], [`META_COMPONENTS`], [`META_LABELS`], [`META_URLS`]); [`resolve`] tries
//! the strategies of [`Strategy`] in their declared order and the first that applies wins.

use std::collections::BTreeMap;

use crate::config::JiraRepositories;

/// Meta key: the issue's project key.
pub const META_PROJECT: &str = "jira_project";
/// Meta key: the issue's component names, one per line.
pub const META_COMPONENTS: &str = "jira_components";
/// Meta key: the issue's labels, one per line.
pub const META_LABELS: &str = "jira_labels";
/// Meta key: repository URLs found in the description, one per line, in order.
pub const META_URLS: &str = "jira_repo_urls";

/// How the repository was found, in the order they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// `jira.repositories.components`: the first of the issue's components with an entry.
    Component,
    /// `jira.repositories.labels`: the first of the issue's labels with an entry.
    Label,
    /// `jira.repositories.projects`: the issue's project key.
    Project,
    /// A repository URL in the issue's description (`jira.repositories.description_hosts`).
    Description,
    /// `jira.repositories.default`.
    Default,
}

impl Strategy {
    /// What the reply says about how the repository was chosen.
    pub fn describe(self) -> &'static str {
        match self {
            Strategy::Component => "the issue's component (jira.repositories.components)",
            Strategy::Label => "the issue's label (jira.repositories.labels)",
            Strategy::Project => "the issue's project (jira.repositories.projects)",
            Strategy::Description => "the repository URL in the issue's description",
            Strategy::Default => "the default (jira.repositories.default)",
        }
    }
}

/// What of a Jira issue the mapping reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IssueFacts {
    /// Project key (`ABC`).
    pub project: String,
    /// Component names, in the issue's order.
    pub components: Vec<String>,
    /// Labels, in the issue's order.
    pub labels: Vec<String>,
    /// Candidate repository URLs from the description, in order of appearance.
    pub urls: Vec<String>,
}

impl IssueFacts {
    /// The facts as message meta entries (empty ones left out).
    pub fn into_meta(self, meta: &mut BTreeMap<String, String>) {
        let mut put = |k: &str, v: String| {
            if !v.is_empty() {
                meta.insert(k.to_string(), v);
            }
        };
        put(META_PROJECT, self.project);
        put(META_COMPONENTS, self.components.join("\n"));
        put(META_LABELS, self.labels.join("\n"));
        put(META_URLS, self.urls.join("\n"));
    }

    /// The facts back from message meta; `None` when it holds no Jira issue.
    pub fn from_meta(meta: &BTreeMap<String, String>) -> Option<Self> {
        let project = meta.get(META_PROJECT)?.clone();
        let lines = |k: &str| -> Vec<String> {
            meta.get(k)
                .map(|v| v.lines().map(str::to_string).collect())
                .unwrap_or_default()
        };
        Some(IssueFacts {
            project,
            components: lines(META_COMPONENTS),
            labels: lines(META_LABELS),
            urls: lines(META_URLS),
        })
    }
}

/// The repository (a clone URL) for an issue and how it was found, or `None`.
pub fn resolve(cfg: &JiraRepositories, facts: &IssueFacts) -> Option<(Strategy, String)> {
    let lookup = |map: &BTreeMap<String, String>, name: &str| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let first = |map: &BTreeMap<String, String>, names: &[String]| {
        names.iter().find_map(|n| lookup(map, n))
    };
    if let Some(u) = first(&cfg.components, &facts.components) {
        return Some((Strategy::Component, u));
    }
    if let Some(u) = first(&cfg.labels, &facts.labels) {
        return Some((Strategy::Label, u));
    }
    if let Some(u) = lookup(&cfg.projects, &facts.project) {
        return Some((Strategy::Project, u));
    }
    let listed = |u: &&String| {
        let host = u.trim_start_matches("https://").split('/').next();
        host.is_some_and(|h| {
            cfg.description_hosts
                .iter()
                .any(|l| l.eq_ignore_ascii_case(h))
        })
    };
    if let Some(u) = facts.urls.iter().find(listed) {
        return Some((Strategy::Description, u.clone()));
    }
    cfg.default.clone().map(|u| (Strategy::Default, u))
}

/// What could be repository URLs in `text`: `https://<host>/<owner>/<repo>` (anything after
/// the repository — `/pull/3`, `/tree/main` — dropped, `.git` too), in order, without
/// repeats, at most [`MAX_URLS`]. [`resolve`] takes those on a listed host.
pub fn repository_urls(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for word in text.split(|c: char| c.is_whitespace() || "<>()[]|\"'".contains(c)) {
        let Some(rest) = word.strip_prefix("https://") else {
            continue;
        };
        let mut parts = rest.split('/');
        let (Some(host), Some(owner), Some(repo)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if host.is_empty() || host.contains('@') {
            continue;
        }
        let repo = repo
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .trim_end_matches(['.', ',', ';', ':'])
            .trim_end_matches(".git");
        if !super::paths::valid_name(owner) || !super::paths::valid_name(repo) {
            continue;
        }
        let url = format!("https://{}/{owner}/{repo}", host.to_ascii_lowercase());
        if !out.contains(&url) {
            out.push(url);
        }
        if out.len() == MAX_URLS {
            break;
        }
    }
    out
}

/// Most description URLs carried to the conversation.
pub const MAX_URLS: usize = 20;

/// The reply when no strategy applies: how to set a repository.
pub fn no_repository_reply(issue: &str, project: &str) -> String {
    format!(
        "No repository for {issue}. Type /clone <repo-url> here to pick one, or map it in the \
         configuration: jira.repositories.projects.{project} (or .components.<name>, \
         .labels.<name>, or jira.repositories.default) set to the repository's clone URL. A \
         repository URL in the issue's description works too."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> JiraRepositories {
        let m = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        JiraRepositories {
            components: m("Backend", "https://github.com/acme/api"),
            labels: m("web", "https://github.com/acme/web"),
            projects: m("ABC", "https://github.com/acme/abc"),
            description_hosts: vec!["github.com".into()],
            default: Some("https://github.com/acme/main".into()),
        }
    }

    fn facts(components: &[&str], labels: &[&str], urls: &[&str]) -> IssueFacts {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        IssueFacts {
            project: "ABC".into(),
            components: v(components),
            labels: v(labels),
            urls: v(urls),
        }
    }

    #[test]
    fn strategies_apply_in_their_documented_order() {
        let c = cfg();
        let pick = |f: &IssueFacts| resolve(&c, f).map(|(s, _)| s);
        let d = "https://github.com/acme/desc";
        assert_eq!(
            pick(&facts(&["backend"], &["web"], &[d])),
            Some(Strategy::Component)
        );
        assert_eq!(
            pick(&facts(&["other"], &["WEB"], &[d])),
            Some(Strategy::Label)
        );
        assert_eq!(pick(&facts(&[], &["x"], &[d])), Some(Strategy::Project));
        let mut other = facts(&[], &[], &[d]);
        other.project = "XYZ".into();
        assert_eq!(
            resolve(&c, &other),
            Some((Strategy::Description, d.to_string()))
        );
        other.urls.clear();
        assert_eq!(pick(&other), Some(Strategy::Default));
        let none = JiraRepositories::default();
        assert_eq!(resolve(&none, &other), None);
    }

    #[test]
    fn description_urls_are_repositories_on_listed_hosts() {
        let text = "See https://example.com/a/b and https://github.com/acme/web/pull/3, \
                    (https://GitHub.com/acme/web.git) https://github.com/acme \
                    https://github.com/x/y?tab=1";
        let urls = repository_urls(text);
        assert_eq!(
            urls,
            vec![
                "https://example.com/a/b",
                "https://github.com/acme/web",
                "https://github.com/x/y"
            ]
        );
        let mut f = facts(&[], &[], &[]);
        f.project = "XYZ".into();
        f.urls = urls;
        let mut c = cfg();
        c.default = None;
        assert_eq!(
            resolve(&c, &f),
            Some((Strategy::Description, "https://github.com/acme/web".into()))
        );
        c.description_hosts.clear();
        assert_eq!(resolve(&c, &f), None);
    }

    #[test]
    fn facts_survive_the_meta_round_trip() {
        let f = facts(&["A b", "C"], &["l1"], &["https://github.com/a/b"]);
        let mut meta = BTreeMap::new();
        f.clone().into_meta(&mut meta);
        assert_eq!(IssueFacts::from_meta(&meta), Some(f));
        assert_eq!(IssueFacts::from_meta(&BTreeMap::new()), None);
    }
}
