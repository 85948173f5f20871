//! Fleet requests parsed at the edge (HTTP, chat `/spawn`): a branch name git accepts, a
//! prompt within its size limit, a batch's issue list cleaned of blanks. The supervisor gets
//! these types and never re-checks raw strings; what needs the configuration (does the
//! project exist, is the agent registered) is resolved there.

use super::messages::{BatchSpawnRequest, SpawnRequest};
use crate::plugins::worktree::check_branch_name;

/// Longest prompt accepted in a spawn request, in bytes.
pub const MAX_PROMPT_BYTES: usize = 256 * 1024;

/// A request field that is not acceptable (422 naming the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    /// The field's name in the request.
    pub field: &'static str,
    /// Why it is refused.
    pub reason: String,
}

/// A branch name git accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchName(String);

impl BranchName {
    /// Parses `name`.
    ///
    /// # Errors
    /// `branch` when git would refuse the name.
    pub fn parse(name: String) -> Result<Self, InvalidField> {
        check_branch_name(&name).map_err(|e| InvalidField {
            field: "branch",
            reason: e.to_string(),
        })?;
        Ok(BranchName(name))
    }

    /// The name.
    pub fn into_inner(self) -> String {
        self.0
    }

    /// The name, borrowed.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A task prompt of at most [`MAX_PROMPT_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt(String);

impl Prompt {
    /// Parses `text`.
    ///
    /// # Errors
    /// `prompt` when it is longer than the limit.
    pub fn parse(text: String) -> Result<Self, InvalidField> {
        if text.len() > MAX_PROMPT_BYTES {
            return Err(InvalidField {
                field: "prompt",
                reason: format!("longer than {MAX_PROMPT_BYTES} bytes"),
            });
        }
        Ok(Prompt(text))
    }

    /// The text.
    pub fn into_inner(self) -> String {
        self.0
    }

    /// The text, borrowed.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A spawn request, parsed.
#[derive(Debug, Clone)]
pub struct SpawnOrder {
    /// Project name (resolved against the configuration by the supervisor).
    pub project: String,
    /// Agent override.
    pub agent: Option<String>,
    /// Branch override.
    pub branch: Option<BranchName>,
    /// Tracker issue id.
    pub issue: Option<String>,
    /// Task text.
    pub prompt: Option<Prompt>,
    /// Host override (a name under `hosts:` or `auto`; resolved by the supervisor).
    pub host: Option<String>,
}

impl TryFrom<SpawnRequest> for SpawnOrder {
    type Error = InvalidField;
    fn try_from(r: SpawnRequest) -> Result<Self, InvalidField> {
        Ok(SpawnOrder {
            project: r.project,
            agent: r.agent,
            branch: r.branch.map(BranchName::parse).transpose()?,
            issue: r.issue,
            prompt: r.prompt.map(Prompt::parse).transpose()?,
            host: r.host,
        })
    }
}

/// A batch spawn request, parsed.
#[derive(Debug, Clone)]
pub struct BatchOrder {
    /// Project name.
    pub project: String,
    /// Agent override.
    pub agent: Option<String>,
    /// Extra task text for every session.
    pub prompt: Option<Prompt>,
    /// Issue ids, trimmed, blanks dropped, in request order (duplicates kept: the batch
    /// reports them as skipped).
    pub issues: Vec<String>,
}

impl TryFrom<BatchSpawnRequest> for BatchOrder {
    type Error = InvalidField;
    fn try_from(r: BatchSpawnRequest) -> Result<Self, InvalidField> {
        if r.issues.is_empty() {
            return Err(InvalidField {
                field: "issues",
                reason: "must not be empty".into(),
            });
        }
        Ok(BatchOrder {
            project: r.project,
            agent: r.agent,
            prompt: r.prompt.map(Prompt::parse).transpose()?,
            issues: r
                .issues
                .iter()
                .map(|i| i.trim())
                .filter(|i| !i.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawn(branch: Option<&str>, prompt: Option<String>) -> Result<SpawnOrder, InvalidField> {
        SpawnOrder::try_from(SpawnRequest {
            project: "demo".into(),
            prompt,
            issue: None,
            agent: None,
            branch: branch.map(Into::into),
            host: None,
        })
    }

    #[test]
    fn a_spawn_request_is_parsed_or_names_its_bad_field() {
        let ok = spawn(Some("feat/x"), Some("do it".into())).expect("valid");
        assert_eq!(
            ok.branch.map(BranchName::into_inner).as_deref(),
            Some("feat/x")
        );
        assert_eq!(spawn(Some("a..b"), None).unwrap_err().field, "branch");
        assert_eq!(spawn(Some("has space"), None).unwrap_err().field, "branch");
        let huge = "x".repeat(MAX_PROMPT_BYTES + 1);
        assert_eq!(spawn(None, Some(huge)).unwrap_err().field, "prompt");
        assert!(spawn(None, Some("x".repeat(MAX_PROMPT_BYTES))).is_ok());
    }

    #[test]
    fn a_batch_keeps_its_issues_in_order_without_blanks() {
        let b = |issues: &[&str]| {
            BatchOrder::try_from(BatchSpawnRequest {
                project: "demo".into(),
                issues: issues.iter().map(|s| s.to_string()).collect(),
                agent: None,
                prompt: None,
            })
        };
        assert_eq!(b(&[]).unwrap_err().field, "issues");
        assert_eq!(
            b(&[" 7 ", "", "3", "7"]).expect("ok").issues,
            ["7", "3", "7"]
        );
        assert!(b(&["  "]).expect("blanks only").issues.is_empty());
    }
}
