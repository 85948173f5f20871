//! Issue intake: which tracker deliveries hand an issue to Flotilla (pure; no I/O).
//!
//! `projects.<name>.intake` names a label and/or an assignee. A GitHub `issues` delivery
//! (`opened`, `labeled`, `assigned`, `reopened`) for the project's `github_repo` whose issue
//! carries the label or is assigned to the assignee asks for a session; so does a Jira
//! `jira:issue_created` / `jira:issue_updated` delivery for the first project with
//! `tracker: jira`. Closed issues never do. At most one session per issue is the caller's
//! job ([`crate::actors::intake::start_once`] records the issue before spawning).

use serde_json::Value;

use crate::config::{Settings, TrackerKind};

/// One project's intake: what hands it an issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntakeRule {
    /// The project the session starts in.
    pub project: String,
    /// `projects.<name>.intake.label` (matched without case).
    pub label: Option<String>,
    /// `projects.<name>.intake.assignee` (matched without case).
    pub assignee: Option<String>,
}

impl IntakeRule {
    fn from_project(name: &str, p: &crate::config::ProjectSettings) -> Option<Self> {
        let clean = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
        let rule = IntakeRule {
            project: name.to_string(),
            label: clean(&p.intake.label),
            assignee: clean(&p.intake.assignee),
        };
        (rule.label.is_some() || rule.assignee.is_some()).then_some(rule)
    }

    /// Whether an issue with these labels and assignees (any of their names) is wanted.
    pub fn wants(&self, labels: &[&str], assignees: &[&str]) -> bool {
        let has = |want: &Option<String>, names: &[&str]| {
            want.as_deref()
                .is_some_and(|w| names.iter().any(|n| n.eq_ignore_ascii_case(w)))
        };
        has(&self.label, labels) || has(&self.assignee, assignees)
    }
}

/// Every project's intake, by tracker.
#[derive(Debug, Clone, Default)]
pub struct Intake {
    /// GitHub projects by `github_repo` (`owner/name`).
    pub github: Vec<(String, IntakeRule)>,
    /// The first project with `tracker: jira` and an intake.
    pub jira: Option<IntakeRule>,
}

/// An issue a delivery hands to a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// The project.
    pub project: String,
    /// The issue id as its tracker names it (`42`, `ENG-7`).
    pub issue: String,
}

fn names<'a>(v: &'a Value, keys: &[&str]) -> Vec<&'a str> {
    keys.iter().filter_map(|k| v[*k].as_str()).collect()
}

impl Intake {
    /// From the projects' `intake` sections.
    pub fn from_settings(settings: &Settings) -> Self {
        let mut out = Intake::default();
        for (name, p) in &settings.projects {
            let Some(rule) = IntakeRule::from_project(name, p) else {
                continue;
            };
            match (p.tracker, &p.github_repo) {
                (Some(TrackerKind::Github), Some(repo)) => out.github.push((repo.clone(), rule)),
                (Some(TrackerKind::Jira), _) if out.jira.is_none() => out.jira = Some(rule),
                _ => {}
            }
        }
        out
    }

    /// The projects polled for labelled GitHub issues: `(project, label)`.
    pub fn github_labels(&self) -> Vec<(String, String)> {
        self.github
            .iter()
            .filter_map(|(_, r)| Some((r.project.clone(), r.label.clone()?)))
            .collect()
    }

    /// The issue a GitHub `issues` delivery hands over, if any.
    pub fn github(&self, event: &str, payload: &Value) -> Option<Wanted> {
        if event != "issues" {
            return None;
        }
        let action = payload["action"].as_str()?;
        if !matches!(action, "opened" | "reopened" | "labeled" | "assigned") {
            return None;
        }
        let issue = &payload["issue"];
        if issue["state"] == "closed" || issue.get("pull_request").is_some() {
            return None;
        }
        let repo = payload["repository"]["full_name"].as_str()?;
        let (_, rule) = self
            .github
            .iter()
            .find(|(r, _)| r.eq_ignore_ascii_case(repo))?;
        let labels: Vec<&str> = issue["labels"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["name"].as_str())
            .collect();
        let assignees: Vec<&str> = issue["assignees"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(std::iter::once(&issue["assignee"]))
            .filter_map(|a| a["login"].as_str())
            .collect();
        let n = issue["number"].as_u64()?;
        rule.wants(&labels, &assignees).then(|| Wanted {
            project: rule.project.clone(),
            issue: n.to_string(),
        })
    }

    /// The issue a Jira `jira:issue_created` / `jira:issue_updated` delivery hands over.
    pub fn jira(&self, payload: &Value) -> Option<Wanted> {
        let rule = self.jira.as_ref()?;
        if !matches!(
            payload["webhookEvent"].as_str(),
            Some("jira:issue_created" | "jira:issue_updated")
        ) {
            return None;
        }
        let issue = &payload["issue"];
        let fields = &issue["fields"];
        if fields["status"]["statusCategory"]["key"] == "done" {
            return None;
        }
        let key = issue["key"].as_str()?;
        let labels: Vec<&str> = fields["labels"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let assignees = names(
            &fields["assignee"],
            &["accountId", "displayName", "emailAddress"],
        );
        rule.wants(&labels, &assignees).then(|| Wanted {
            project: rule.project.clone(),
            issue: key.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn intake() -> Intake {
        let rule = |p: &str| IntakeRule {
            project: p.into(),
            label: Some("flotilla".into()),
            assignee: Some("flotilla-bot".into()),
        };
        Intake {
            github: vec![("acme/widgets".into(), rule("demo"))],
            jira: Some(rule("ops")),
        }
    }

    #[test]
    fn github_issues_labelled_or_assigned_are_wanted_and_others_not() {
        let i = intake();
        let hook = |action: &str, labels: &[&str], assignee: Option<&str>, state: &str| {
            json!({"action": action, "repository": {"full_name": "acme/widgets"},
                "issue": {"number": 7, "state": state,
                    "labels": labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
                    "assignee": assignee.map(|a| json!({"login": a})),
                    "assignees": assignee.map(|a| vec![json!({"login": a})]).unwrap_or_default()}})
        };
        let want = Some(Wanted {
            project: "demo".into(),
            issue: "7".into(),
        });
        assert_eq!(
            i.github("issues", &hook("labeled", &["Flotilla"], None, "open")),
            want
        );
        assert_eq!(
            i.github(
                "issues",
                &hook("assigned", &[], Some("flotilla-bot"), "open")
            ),
            want
        );
        assert_eq!(
            i.github("issues", &hook("labeled", &["bug"], None, "open")),
            None
        );
        assert_eq!(
            i.github("issues", &hook("unlabeled", &["flotilla"], None, "open")),
            None
        );
        assert_eq!(
            i.github("issues", &hook("labeled", &["flotilla"], None, "closed")),
            None
        );
        assert_eq!(
            i.github(
                "issue_comment",
                &hook("labeled", &["flotilla"], None, "open")
            ),
            None
        );
    }

    #[test]
    fn jira_issues_created_or_updated_for_flotilla_are_wanted() {
        let i = intake();
        let hook = |event: &str, labels: &[&str], category: &str| {
            json!({"webhookEvent": event, "issue": {"key": "OPS-3", "fields": {
                "labels": labels, "status": {"statusCategory": {"key": category}},
                "assignee": {"accountId": "5b10a", "displayName": "Someone"}}}})
        };
        assert_eq!(
            i.jira(&hook("jira:issue_updated", &["flotilla"], "indeterminate")),
            Some(Wanted {
                project: "ops".into(),
                issue: "OPS-3".into()
            })
        );
        assert_eq!(i.jira(&hook("jira:issue_updated", &["other"], "new")), None);
        assert_eq!(
            i.jira(&hook("jira:issue_updated", &["flotilla"], "done")),
            None
        );
        assert_eq!(i.jira(&hook("comment_created", &["flotilla"], "new")), None);
    }
}
