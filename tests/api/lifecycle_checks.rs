//! A lifecycle you can trust with a real repository (issue 15): every check counted however
//! many there are, nothing merged on an unknown, refusals answered as refusals, every
//! reviewer heard. The scripted agent on tmux against the fake GitHub, as in `lifecycle.rs`.

use serde_json::json;

use crate::helpers::eventually;
use crate::lifecycle::{events_of, setup, setup_with, setup_yaml, told, REPO};

const MERGE: &str = "PUT /repos/{owner}/{repo}/pulls/{number}/merge";

/// 150 check runs (a CI matrix) named `matrix (NNN)`, `failing` the one that fails, if any.
fn matrix(failing: Option<usize>) -> Vec<(String, &'static str)> {
    (0..150)
        .map(|i| {
            let c = if Some(i) == failing {
                "failure"
            } else {
                "success"
            };
            (format!("matrix ({i:03})"), c)
        })
        .collect()
}

#[actix_web::test]
async fn lifecycle_a_failing_check_past_the_first_page_is_named_and_blocks_the_merge() {
    let Some(l) = setup(true, &[]).await else {
        return;
    };
    let id = l
        .app
        .spawn(json!({"project": "demo", "prompt": "OPEN_PR a CI matrix"}))
        .await;
    let s = l.wait_state(&id, "review_pending", 30).await;
    let pr = s["pr"]["number"].as_i64().expect("pr");
    let branch = s["branch"].as_str().expect("branch").to_string();
    let head = l.head(&branch).expect("pushed");

    // 20 green status contexts, then 150 check runs with one failure far past any first page
    // (REST pages 30 by default, GraphQL at most 100), listed after every status context.
    for i in 0..20 {
        l.gh.add_status(REPO, &head, &format!("ci/status-{i:02}"), "success")
            .await;
    }
    l.gh.add_check_suite(REPO, &head, &matrix(Some(137))).await;
    l.wait_state(&id, "ci_failed", 30).await;
    l.wait_told("Failed check: matrix (137)", 30).await;
    let msg = told(&l.agent_home)
        .into_iter()
        .find(|m| m.contains("Failed check: matrix (137)"))
        .expect("told");
    assert!(!msg.contains("matrix (136)"), "only the failing one: {msg}");

    // An approval while CI is red does not merge; once the failing check is re-run green
    // (every check and status green), it merges, once.
    l.gh.reset_counts();
    l.gh.add_review(REPO, pr, "alice", "APPROVED", "Looks fine.", &[])
        .await;
    eventually(30, "the approval read", || async {
        (l.gh.count("POST /graphql") > 0).then_some(())
    })
    .await;
    assert_eq!(l.gh.count(MERGE), 0, "{:?}", l.gh.counts());
    assert_eq!(l.session(&id).await["state"], "ci_failed");
    assert!(events_of(&l, &id, "merge.ready").await.is_empty());

    l.gh.add_check_suite(REPO, &head, &matrix(None)).await;
    l.wait_state(&id, "merged", 30).await;
    assert_eq!(l.gh.count_status(MERGE, 200), 1, "{:?}", l.gh.counts());
    assert_eq!(l.gh.count(MERGE), 1, "{:?}", l.gh.counts());
    let log = l.gh.git(REPO, &["log", "--format=%s", "-1", "main"]);
    assert!(log.contains(&format!("(#{pr})")), "{log}");
    let ready = events_of(&l, &id, "merge.ready").await;
    assert_eq!(ready.len(), 1, "{ready:?}");
}

#[actix_web::test]
async fn lifecycle_mergeability_still_computing_at_approval_merges_once_it_settles_on_webhooks_only(
) {
    // `setup` turns polling off (`poll_interval: 0s`): only webhooks and the session's own
    // re-checks drive it. GitHub sends no webhook when mergeability settles.
    let Some(l) = setup(true, &[]).await else {
        return;
    };
    let id = l
        .app
        .spawn(json!({"project": "demo", "prompt": "OPEN_PR computing"}))
        .await;
    let s = l.wait_state(&id, "review_pending", 30).await;
    let pr = s["pr"]["number"].as_i64().expect("pr");
    l.gh.compute_mergeability(REPO, pr, std::time::Duration::from_secs(3));
    l.gh.reset_counts();
    l.gh.add_review(REPO, pr, "alice", "APPROVED", "Ship it.", &[])
        .await;
    l.wait_state(&id, "approved", 30).await;
    let merged = l.wait_state(&id, "merged", 30).await;
    assert_eq!(merged["pr"]["number"], pr);
    // Never merged on an unknown: the only merge request was the one that succeeded.
    assert_eq!(l.gh.count(MERGE), 1, "{:?}", l.gh.counts());
    assert_eq!(l.gh.count_status(MERGE, 200), 1, "{:?}", l.gh.counts());
    // It looked again by itself, more than once but not in a tight loop.
    let reads = l.gh.count("POST /graphql");
    assert!(
        (2..=12).contains(&reads),
        "{reads} reads: {:?}",
        l.gh.counts()
    );
}

/// GitHub's answer when branch protection refuses a merge.
const PROTECTED: &str = "Required status check \"deploy\" is expected.";

#[actix_web::test]
async fn lifecycle_a_merge_github_refuses_is_a_409_or_422_with_its_reason_and_an_event() {
    let Some(l) = setup_with(true, &[], false).await else {
        return;
    };
    let id = l
        .app
        .spawn(json!({"project": "demo", "prompt": "OPEN_PR protected"}))
        .await;
    let s = l.wait_state(&id, "review_pending", 30).await;
    let pr = s["pr"]["number"].as_i64().expect("pr");
    l.gh.add_review(REPO, pr, "bob", "APPROVED", "ok", &[])
        .await;
    l.wait_state(&id, "mergeable", 30).await;
    l.gh.refuse_merges(REPO, Some((405, PROTECTED)));
    let (st, v) = l
        .app
        .post(&format!("/api/v1/sessions/{id}/merge"), json!({}))
        .await;
    assert_eq!(st, 409, "{v}");
    let text = v.to_string();
    assert!(text.contains("GitHub refused the merge (405)"), "{v}");
    assert!(text.contains("Required status check"), "{v}");
    let failed = events_of(&l, &id, "merge.failed").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].to_string().contains("Required status check"));
    // GitHub's 422 (the merge method is not allowed here) is a 422 naming the merge.
    l.gh.refuse_merges(
        REPO,
        Some((422, "Merge commits are not allowed on this repository.")),
    );
    let (st, v) = l
        .app
        .post(&format!("/api/v1/sessions/{id}/merge"), json!({}))
        .await;
    assert_eq!(st, 422, "{v}");
    let text = v.to_string();
    assert!(
        text.contains("merge: GitHub refused the merge (422)"),
        "{v}"
    );
    assert!(text.contains("Merge commits are not allowed"), "{v}");
    // Not merged; once the rule is lifted the same call merges.
    assert_ne!(l.session(&id).await["state"], "merged");
    l.gh.refuse_merges(REPO, None);
    let (st, v) = l
        .app
        .post(&format!("/api/v1/sessions/{id}/merge"), json!({}))
        .await;
    assert_eq!(st, 200, "{v}");
    l.wait_state(&id, "merged", 30).await;
}

#[actix_web::test]
async fn lifecycle_a_refused_auto_merge_is_retried_then_told_to_a_human_once() {
    let hooks = crate::receivers::Receivers::start().await;
    let yaml = crate::lifecycle::webhook_notifier(&hooks);
    let env = [
        ("FLOTILLA__GITHUB__POLL_INTERVAL", "1s"),
        ("FLOTILLA__GITHUB__RECONCILE_EVERY", "1"),
    ];
    let Some(l) = setup_yaml(true, &env, true, &yaml).await else {
        return;
    };
    l.gh.refuse_merges(REPO, Some((405, PROTECTED)));
    let id = l
        .app
        .spawn(json!({"project": "demo", "prompt": "OPEN_PR refused"}))
        .await;
    let s = l.wait_state(&id, "review_pending", 30).await;
    let pr = s["pr"]["number"].as_i64().expect("pr");
    l.gh.add_review(REPO, pr, "bob", "APPROVED", "ok", &[])
        .await;
    // `retries` is 2 by default: three refusals, then one notification to a human.
    let told = eventually(60, "the escalation", || async {
        let (_, v) = l.app.get("/api/v1/notifications?limit=1000").await;
        let rows: Vec<serde_json::Value> = v["notifications"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.to_string().contains("Auto-merge failed"))
            .collect();
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert!(
        told[0].to_string().contains("Required status check"),
        "{told:?}"
    );
    let failed = events_of(&l, &id, "merge.failed").await;
    assert_eq!(failed.len(), 3, "{failed:?}");
    // Later polls find it ready again but neither merge nor tell anyone again.
    let polls = l.gh.count("POST /graphql");
    eventually(30, "more polls", || async {
        (l.gh.count("POST /graphql") >= polls + 3).then_some(())
    })
    .await;
    assert_eq!(l.gh.count_status(MERGE, 405), 3, "{:?}", l.gh.counts());
    let (_, v) = l.app.get("/api/v1/notifications?limit=1000").await;
    let n = v["notifications"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|r| r.to_string().contains("Auto-merge failed"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(n, 1, "{v}");
}

#[actix_web::test]
async fn lifecycle_a_conversation_comment_and_a_commented_review_reach_the_agent_once_each() {
    let Some(l) = setup(true, &[]).await else {
        return;
    };
    let id = l
        .app
        .spawn(json!({"project": "demo", "prompt": "OPEN_PR remarks"}))
        .await;
    let s = l.wait_state(&id, "review_pending", 30).await;
    let pr = s["pr"]["number"].as_i64().expect("pr");
    l.gh.add_comment(REPO, pr, "carol", "Please also update the changelog.")
        .await;
    l.gh.add_review(
        REPO,
        pr,
        "dave",
        "COMMENTED",
        "Consider a shorter name.",
        &[],
    )
    .await;
    l.wait_told("Please also update the changelog.", 30).await;
    l.wait_told("Consider a shorter name.", 30).await;
    // The agent's own comment (it opened the PR) and a bot's are not feedback; a later
    // human comment is, and nothing earlier is told again with it.
    l.gh.add_comment(REPO, pr, "agent", "AGENT-SELF-REPLY")
        .await;
    l.gh.add_comment(REPO, pr, "codecov[bot]", "BOT-COVERAGE-REPORT")
        .await;
    l.gh.add_comment(REPO, pr, "carol", "One more thing: the docs.")
        .await;
    l.wait_told("One more thing: the docs.", 30).await;
    let msgs = told(&l.agent_home);
    let count = |needle: &str| msgs.iter().filter(|m| m.contains(needle)).count();
    assert_eq!(count("Please also update the changelog."), 1, "{msgs:#?}");
    assert_eq!(count("Consider a shorter name."), 1, "{msgs:#?}");
    assert_eq!(count("One more thing: the docs."), 1, "{msgs:#?}");
    assert_eq!(count("AGENT-SELF-REPLY"), 0, "{msgs:#?}");
    assert_eq!(count("BOT-COVERAGE-REPORT"), 0, "{msgs:#?}");
    let last = msgs
        .iter()
        .find(|m| m.contains("One more thing"))
        .expect("told");
    assert!(last.contains("Comment by @carol"), "{last}");
    let review = msgs
        .iter()
        .find(|m| m.contains("Consider a shorter name."))
        .expect("told");
    assert!(review.contains("Review by @dave (commented)"), "{review}");
    // One event per batch of new remarks: the first two may arrive together (one event).
    let events = events_of(&l, &id, "review.comments").await.len();
    assert!((2..=3).contains(&events), "{events} review.comments events");
}
