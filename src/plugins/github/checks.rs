//! CI from every check: GraphQL roll-up contexts (paged, 100 a page), the roll-up's own state,
//! and `github.ignore_checks`.
//!
//! A PR's CI is the worst of what the listed checks say and (when nothing is ignored) what
//! GitHub's roll-up says, so a check that was not listed (a page that failed to load) still
//! keeps a red PR red. Pending (`PENDING`, `EXPECTED`, queued or running) blocks like failing.

use serde_json::Value;

use crate::plugins::CheckInfo;

/// Contexts per GraphQL page (GitHub's maximum for `first`).
pub const PAGE: usize = 100;
/// Pages followed at most per PR (10,000 checks), so a broken cursor cannot loop for ever.
pub const MAX_PAGES: usize = 100;

/// The selection of one roll-up context (check run or status context).
pub const CONTEXT_FIELDS: &str = "__typename \
      ... on CheckRun { name status conclusion detailsUrl } \
      ... on StatusContext { context state targetUrl }";

/// Checks that never count (exact names or `*` patterns).
#[derive(Debug, Clone, Default)]
pub struct IgnoreList(Vec<String>);

impl IgnoreList {
    /// From `github.ignore_checks`.
    pub fn new(patterns: &[String]) -> Self {
        IgnoreList(
            patterns
                .iter()
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
        )
    }

    /// Whether nothing is ignored (then GitHub's roll-up state is trusted too).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `name` is ignored.
    pub fn ignores(&self, name: &str) -> bool {
        self.0.iter().any(|p| glob(p, name))
    }

    /// `checks` without the ignored ones.
    pub fn keep(&self, checks: Vec<CheckInfo>) -> Vec<CheckInfo> {
        checks
            .into_iter()
            .filter(|c| !self.ignores(&c.name))
            .collect()
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || !name.ends_with(last) || name.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// One roll-up context node as a [`CheckInfo`].
pub fn context(c: &Value) -> CheckInfo {
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    if c["__typename"] == "StatusContext" {
        let state = s("state").to_lowercase();
        let open = state == "pending" || state == "expected";
        CheckInfo {
            name: s("context"),
            status: if open { "in_progress" } else { "completed" }.into(),
            conclusion: (!open).then_some(state),
            url: c["targetUrl"].as_str().map(str::to_string),
        }
    } else {
        CheckInfo {
            name: s("name"),
            status: s("status").to_lowercase(),
            conclusion: c["conclusion"].as_str().map(str::to_lowercase),
            url: c["detailsUrl"].as_str().map(str::to_string),
        }
    }
}

/// The nodes of a `contexts` connection and its next cursor, if there is another page.
pub fn page(connection: &Value) -> (Vec<CheckInfo>, Option<String>) {
    let nodes = connection["nodes"]
        .as_array()
        .map(|n| n.iter().map(context).collect())
        .unwrap_or_default();
    let next = (connection["pageInfo"]["hasNextPage"] == true)
        .then(|| {
            connection["pageInfo"]["endCursor"]
                .as_str()
                .map(str::to_string)
        })
        .flatten();
    (nodes, next)
}

/// `passing`/`failing`/`pending`/`none` from a set of checks.
pub fn state_of(checks: &[CheckInfo]) -> &'static str {
    if checks.is_empty() {
        "none"
    } else if checks.iter().any(CheckInfo::failed) {
        "failing"
    } else if checks.iter().any(|c| c.status != "completed") {
        "pending"
    } else {
        "passing"
    }
}

fn rank(state: &str) -> u8 {
    match state {
        "failing" => 3,
        "pending" => 2,
        "passing" => 1,
        _ => 0,
    }
}

/// GitHub's `StatusState` of the roll-up in our words.
fn rollup_word(rollup: &str) -> &'static str {
    match rollup {
        "FAILURE" | "ERROR" => "failing",
        "PENDING" | "EXPECTED" => "pending",
        "SUCCESS" => "passing",
        _ => "none",
    }
}

/// CI of a PR: the worst of the (kept) checks and, when nothing is ignored, the roll-up state.
pub fn combined(checks: &[CheckInfo], rollup: Option<&str>, ignore: &IgnoreList) -> &'static str {
    let listed = state_of(checks);
    match rollup {
        Some(r) if ignore.is_empty() && rank(rollup_word(r)) > rank(listed) => rollup_word(r),
        _ => listed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(name: &str, conclusion: Option<&str>) -> CheckInfo {
        CheckInfo {
            name: name.into(),
            status: if conclusion.is_some() {
                "completed"
            } else {
                "in_progress"
            }
            .into(),
            conclusion: conclusion.map(str::to_string),
            url: None,
        }
    }

    #[test]
    fn github_ignore_patterns_match_names_and_globs() {
        let i = IgnoreList::new(&[
            "codecov/*".into(),
            "lint".into(),
            "*-flaky".into(),
            " ".into(),
        ]);
        assert!(i.ignores("codecov/patch"));
        assert!(i.ignores("lint"));
        assert!(i.ignores("e2e-flaky"));
        assert!(!i.ignores("lint-strict"));
        assert!(!i.ignores("unit"));
        assert!(glob("a*b*c", "aXXbYYc") && !glob("a*b*c", "aXXc") && !glob("ab*ba", "aba"));
        assert!(IgnoreList::new(&[]).is_empty());
    }

    #[test]
    fn github_the_rollup_keeps_an_unlisted_failure_red_unless_checks_are_ignored() {
        let green = vec![check("a", Some("success"))];
        let none = IgnoreList::default();
        assert_eq!(combined(&green, Some("FAILURE"), &none), "failing");
        assert_eq!(combined(&green, Some("EXPECTED"), &none), "pending");
        assert_eq!(combined(&green, Some("SUCCESS"), &none), "passing");
        assert_eq!(combined(&[], None, &none), "none");
        let some = IgnoreList::new(&["b".into()]);
        let kept = some.keep(vec![
            check("a", Some("success")),
            check("b", Some("failure")),
        ]);
        assert_eq!(combined(&kept, Some("FAILURE"), &some), "passing");
        let pending = vec![check("a", Some("success")), check("c", None)];
        assert_eq!(combined(&pending, Some("FAILURE"), &some), "pending");
    }

    #[test]
    fn github_a_contexts_page_gives_its_nodes_and_cursor() {
        let c = json!({"pageInfo": {"hasNextPage": true, "endCursor": "Y3Vyc29yOjEwMA=="},
            "nodes": [{"__typename": "StatusContext", "context": "ci/x", "state": "EXPECTED", "targetUrl": null},
                      {"__typename": "CheckRun", "name": "t", "status": "COMPLETED", "conclusion": "TIMED_OUT", "detailsUrl": "d"}]});
        let (nodes, next) = page(&c);
        assert_eq!(next.as_deref(), Some("Y3Vyc29yOjEwMA=="));
        assert_eq!(nodes[0].status, "in_progress");
        assert!(nodes[1].failed());
        let last = json!({"pageInfo": {"hasNextPage": false, "endCursor": "x"}, "nodes": []});
        assert_eq!(page(&last).1, None);
    }
}
