//! Write-back (issue 15 item 5): a session started from an issue comments on it with the PR
//! link and moves it along when its PR opens and when it merges — GitHub labels, Linear and
//! Jira workflow states — each write once; a write the tracker refuses is an event on the
//! session and the lifecycle goes on. Real loop: scripted agent on tmux, fake GitHub PRs.

use serde_json::{json, Value};

use crate::fake_trackers::FakeTrackers;
use crate::helpers::eventually;
use crate::lifecycle::{events_of, setup_yaml, Loop, REPO};

/// Spawns a session for `issue` whose agent opens a PR; waits until the PR is open.
async fn open(l: &Loop, issue: &str) -> (String, String, i64) {
    let id = l
        .app
        .spawn(json!({"project": "demo", "issue": issue, "prompt": "OPEN_PR write back"}))
        .await;
    let s = l.wait_state(&id, "review_pending", 60).await;
    let url = s["pr"]["url"].as_str().expect("pr url").to_string();
    let n = s["pr"]["number"].as_i64().expect("pr number");
    (id, url, n)
}

/// Approves and merges the session's PR through the API; waits for `merged`.
async fn merge(l: &Loop, id: &str, pr: i64) {
    l.gh.add_review(REPO, pr, "bob", "APPROVED", "ok", &[])
        .await;
    l.wait_state(id, "mergeable", 60).await;
    let (st, v) = l
        .app
        .post(&format!("/api/v1/sessions/{id}/merge"), json!({}))
        .await;
    assert_eq!(st, 200, "{v}");
    l.wait_state(id, "merged", 60).await;
}

/// Waits until the session has `n` events of `kind`; returns them.
async fn wait_events(l: &Loop, id: &str, kind: &str, n: usize) -> Vec<Value> {
    eventually(30, &format!("{n} {kind} events"), || async {
        let e = events_of(l, id, kind).await;
        (e.len() >= n).then_some(e)
    })
    .await
}

#[actix_web::test]
async fn tracker_writeback_github_comments_the_pr_link_and_moves_labels_on_open_and_merge() {
    let yaml = "    tracker: github\n    writeback:\n      opened: { add_labels: [in-review] }\n      merged: { add_labels: [done], remove_labels: [in-review, flotilla] }\n";
    let Some(l) = setup_yaml(true, &[], false, yaml).await else {
        return;
    };
    let n =
        l.gh.create_issue(REPO, "Paginate the export", "It stops at 1000 rows.");
    l.gh.label_issue(REPO, n, "flotilla").await;
    let (id, url, pr) = open(&l, &n.to_string()).await;
    let comments = eventually(30, "the PR link on the issue", || async {
        let c = l.gh.issue_comments(REPO, n);
        (!c.is_empty()
            && l.gh
                .issue_labels(REPO, n)
                .contains(&"in-review".to_string()))
        .then_some(c)
    })
    .await;
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert!(comments[0].1.contains(&url), "{comments:?}");
    assert_eq!(l.gh.issue_labels(REPO, n), ["flotilla", "in-review"]);
    merge(&l, &id, pr).await;
    wait_events(&l, &id, "tracker.written_back", 4).await;
    let comments = l.gh.issue_comments(REPO, n);
    assert_eq!(comments.len(), 2, "one comment per stage: {comments:?}");
    assert!(
        comments[1].1.contains("merged") && comments[1].1.contains(&url),
        "{comments:?}"
    );
    assert_eq!(l.gh.issue_labels(REPO, n), ["done"]);
    assert!(events_of(&l, &id, "tracker.writeback_failed")
        .await
        .is_empty());
}

/// A loop whose project tracks issues in `tracker` on the fake trackers.
async fn tracked_loop(t: &FakeTrackers, tracker: &str, opened: &str, merged: &str) -> Option<Loop> {
    let yaml = format!(
        "    tracker: {tracker}\n    writeback:\n      opened: {{ state: \"{opened}\" }}\n      merged: {{ state: \"{merged}\" }}\n"
    );
    let linear = format!("{}/graphql", t.url);
    let env = [
        ("FLOTILLA__LINEAR__API_URL", linear.as_str()),
        ("FLOTILLA__LINEAR__API_KEY", "lin_api_key"),
        ("FLOTILLA__JIRA__BASE_URL", t.url.as_str()),
        ("FLOTILLA__JIRA__EMAIL", "dev@acme.test"),
        ("FLOTILLA__JIRA__API_TOKEN", "jira-token"),
    ];
    setup_yaml(true, &env, false, &yaml).await
}

#[actix_web::test]
async fn tracker_writeback_linear_comments_and_moves_the_workflow_state_on_open_and_merge() {
    let t = FakeTrackers::start("lin_api_key", "dev@acme.test", "jira-token").await;
    t.add_linear(
        "ENG-9",
        "Cache the config",
        "Per request is slow.",
        "dev/eng-9-cache",
        &[],
    );
    let Some(l) = tracked_loop(&t, "linear", "In Review", "Done").await else {
        return;
    };
    let (id, url, pr) = open(&l, "ENG-9").await;
    eventually(30, "ENG-9 in review with the PR link", || async {
        (t.linear_state_of("ENG-9") == "In Review" && !t.linear_comments("ENG-9").is_empty())
            .then_some(())
    })
    .await;
    assert!(t.linear_comments("ENG-9")[0].contains(&url));
    merge(&l, &id, pr).await;
    eventually(30, "ENG-9 done", || async {
        (t.linear_state_of("ENG-9") == "Done").then_some(())
    })
    .await;
    wait_events(&l, &id, "tracker.written_back", 4).await;
    let comments = t.linear_comments("ENG-9");
    assert_eq!(comments.len(), 2, "{comments:?}");
    assert!(comments[1].contains("merged"), "{comments:?}");
}

#[actix_web::test]
async fn tracker_writeback_jira_comments_in_adf_and_transitions_on_open_and_merge() {
    let t = FakeTrackers::start("lin_api_key", "dev@acme.test", "jira-token").await;
    t.add_jira(
        "OPS-5",
        "Rotate the signing key",
        json!({"type": "doc", "version": 1, "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": "Before Friday."}]}]}),
        &[],
    );
    let Some(l) = tracked_loop(&t, "jira", "In Review", "Done").await else {
        return;
    };
    let (id, url, pr) = open(&l, "OPS-5").await;
    eventually(30, "OPS-5 in review with the PR link", || async {
        (t.jira_status_of("OPS-5") == "In Review" && !t.jira_comments("OPS-5").is_empty())
            .then_some(())
    })
    .await;
    assert!(t.jira_comments("OPS-5")[0].to_string().contains(&url));
    merge(&l, &id, pr).await;
    eventually(30, "OPS-5 done", || async {
        (t.jira_status_of("OPS-5") == "Done").then_some(())
    })
    .await;
    wait_events(&l, &id, "tracker.written_back", 4).await;
    assert_eq!(t.jira_comments("OPS-5").len(), 2);
}

/// A state the workflow does not have: the move fails as an event naming it, the comment is
/// still made once, and the session goes on to merge.
#[actix_web::test]
async fn tracker_writeback_a_refused_move_is_an_event_and_the_lifecycle_goes_on() {
    let t = FakeTrackers::start("lin_api_key", "dev@acme.test", "jira-token").await;
    t.add_jira("OPS-6", "Flaky", json!(null), &[]);
    let Some(l) = tracked_loop(&t, "jira", "Shipped", "Done").await else {
        return;
    };
    let (id, _, pr) = open(&l, "OPS-6").await;
    let failed = wait_events(&l, &id, "tracker.writeback_failed", 1).await;
    assert!(
        failed[0]["data"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("Shipped")),
        "{failed:?}"
    );
    assert_eq!(t.jira_status_of("OPS-6"), "To Do");
    merge(&l, &id, pr).await;
    eventually(30, "OPS-6 done", || async {
        (t.jira_status_of("OPS-6") == "Done").then_some(())
    })
    .await;
    assert_eq!(t.jira_comments("OPS-6").len(), 2);
}
