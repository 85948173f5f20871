//! A Jira conversation without a codebase gets one by itself: the repository
//! [`crate::chat::jira_repos::resolve`] picks from the issue (`jira.repositories`), cloned
//! into the workspace like `/clone`. When no strategy applies, a message that needs a
//! codebase is answered with how to set one.

use std::collections::BTreeMap;

use super::commands::{clone_and_use, CloneError};
use super::ChatContext;
use crate::chat::jira_repos::{no_repository_reply, resolve, IssueFacts};
use crate::store::ConversationRecord;

/// What [`ensure`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum JiraRepo {
    /// The conversation already has a codebase or directory, or is not a Jira issue.
    Unchanged,
    /// The mapped repository is now the codebase; the text says which and why.
    Linked(String),
    /// No strategy applies: the text says how to set one.
    NoneApplies(String),
}

/// Gives a Jira conversation with no codebase the repository its issue maps to.
///
/// # Errors
/// The mapped URL was refused or could not be cloned (the caller tells the user).
pub async fn ensure(
    ctx: &ChatContext,
    conv: &mut ConversationRecord,
    meta: &BTreeMap<String, String>,
) -> Result<JiraRepo, String> {
    if conv.platform != "jira"
        || conv.codebase.is_some()
        || conv.cwd.is_some()
        || conv.worktree.is_some()
    {
        return Ok(JiraRepo::Unchanged);
    }
    let Some(facts) = IssueFacts::from_meta(meta) else {
        return Ok(JiraRepo::Unchanged);
    };
    let Some((strategy, url)) = resolve(&ctx.jira_repositories, &facts) else {
        return Ok(JiraRepo::NoneApplies(no_repository_reply(
            &conv.thread,
            &facts.project,
        )));
    };
    match clone_and_use(ctx, conv, &url).await {
        Ok(_) => {}
        Err(CloneError::Refused(e) | CloneError::Failed(e)) => {
            return Err(format!("cannot use {url} ({}): {e}", strategy.describe()));
        }
    }
    ctx.save_conversation(conv)
        .await
        .map_err(|e| format!("cannot save the conversation: {e}"))?;
    let name = conv.codebase.clone().unwrap_or_default();
    tracing::info!(conversation = %conv.id, codebase = %name, ?strategy, "Jira repository mapped");
    Ok(JiraRepo::Linked(format!(
        "Working in {name}, from {}.",
        strategy.describe()
    )))
}
