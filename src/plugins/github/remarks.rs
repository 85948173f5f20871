//! What people said on a PR outside inline threads: conversation comments and the bodies of
//! submitted reviews of every state, read with the PR in the same GraphQL request.
//!
//! Left out: empty bodies, pending reviews, bots (their inline threads have their own
//! reaction), the PR's author (the agent opened the PR: its own replies are not feedback)
//! and `github.bot_login` (Flotilla's own comments).

use serde_json::Value;

use crate::plugins::{PrRemark, RemarkKind};

/// Remarks read per PR (the newest).
pub const LAST: usize = 50;

/// The GraphQL selection (inside `PullRequest`).
pub fn fields() -> String {
    format!(
        "author {{ login }} \
         comments(last: {LAST}) {{ nodes {{ databaseId body author {{ login __typename }} }} }} \
         reviews(last: {LAST}) {{ nodes {{ databaseId state body author {{ login __typename }} }} }}"
    )
}

fn is_bot(author: &Value) -> bool {
    author["__typename"] == "Bot"
        || author["login"]
            .as_str()
            .is_some_and(|l| l.ends_with("[bot]"))
}

/// The remarks of a `PullRequest` node worth telling the agent, oldest first per kind.
pub fn read(pr: &Value, bot_login: Option<&str>) -> Vec<PrRemark> {
    let pr_author = pr["author"]["login"].as_str();
    let own = |login: &str| {
        Some(login) == pr_author
            || bot_login.is_some_and(|b| b.trim_start_matches('@').eq_ignore_ascii_case(login))
    };
    let mut out = vec![];
    for (kind, key) in [
        (RemarkKind::Comment, "comments"),
        (RemarkKind::Review, "reviews"),
    ] {
        for n in pr[key]["nodes"].as_array().into_iter().flatten() {
            let author = &n["author"];
            let login = author["login"].as_str().unwrap_or("ghost");
            let body = n["body"].as_str().unwrap_or_default().trim();
            let state = n["state"].as_str().map(str::to_lowercase);
            let Some(id) = n["databaseId"].as_i64() else {
                continue;
            };
            if body.is_empty()
                || is_bot(author)
                || own(login)
                || state.as_deref() == Some("pending")
            {
                continue;
            }
            out.push(PrRemark {
                kind,
                id,
                author: login.to_string(),
                state,
                body: body.to_string(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn github_remarks_keep_people_and_drop_bots_the_agent_and_flotilla() {
        let pr = json!({"author": {"login": "agent"},
            "comments": {"nodes": [
                {"databaseId": 1, "body": "Please rename it.", "author": {"login": "alice", "__typename": "User"}},
                {"databaseId": 2, "body": "Done.", "author": {"login": "agent", "__typename": "User"}},
                {"databaseId": 3, "body": "Coverage 80%", "author": {"login": "codecov", "__typename": "Bot"}},
                {"databaseId": 4, "body": "On it", "author": {"login": "Flotilla-Bot", "__typename": "User"}},
                {"databaseId": 5, "body": "  ", "author": {"login": "bob", "__typename": "User"}}]},
            "reviews": {"nodes": [
                {"databaseId": 9, "state": "COMMENTED", "body": "Nit: spacing.", "author": {"login": "bob", "__typename": "User"}},
                {"databaseId": 10, "state": "PENDING", "body": "draft", "author": {"login": "bob", "__typename": "User"}},
                {"databaseId": 11, "state": "APPROVED", "body": "", "author": {"login": "bob", "__typename": "User"}}]}});
        let r = read(&pr, Some("@flotilla-bot"));
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(
            (r[0].kind, r[0].id, r[0].author.as_str()),
            (RemarkKind::Comment, 1, "alice")
        );
        assert_eq!(
            (r[1].kind, r[1].state.as_deref()),
            (RemarkKind::Review, Some("commented"))
        );
    }
}
