//! The trackers against their published wire contracts: rate limits as each vendor answers
//! them are retriable errors with the vendor's wait, never plain API failures.

use std::time::Duration;

use flotilla::config::{JiraSettings, LinearSettings, Secret};
use flotilla::plugins::trackers::github::GithubIssues;
use flotilla::plugins::trackers::jira::JiraIssues;
use flotilla::plugins::trackers::linear::LinearIssues;
use flotilla::plugins::{PluginError, Tracker};

use crate::fake_github::{FakeGithub, Limit};
use crate::fake_trackers::FakeTrackers;
use crate::helpers::{assert_primary_rate_limit, eventually, github_settings, require_tool};

const REPO: &str = "acme/widgets";

/// GitHub's REST rate limits ("Rate limits for the REST API"): the primary one is a 403 with
/// `x-ratelimit-remaining: 0` (wait for `x-ratelimit-reset`), a secondary one a 403 with
/// `retry-after`. Reading an issue under either is `RateLimited` with that wait.
#[actix_web::test]
async fn tracker_github_issue_reads_under_a_403_rate_limit_are_rate_limited() {
    if !require_tool("git") {
        return;
    }
    let gh = FakeGithub::start("ghp_test").await;
    gh.create_repo(REPO);
    let n = gh.create_issue(REPO, "Flaky test", "It fails on Tuesdays.");
    let issues = GithubIssues::new(&github_settings(&gh.url, "ghp_test"), REPO).expect("tracker");
    assert_eq!(
        issues.issue(&n.to_string()).await.expect("read").title,
        "Flaky test"
    );

    gh.limit_next(1, Limit::Primary);
    let e = issues.issue(&n.to_string()).await.expect_err("limited");
    assert_primary_rate_limit(&e);

    gh.limit_next(
        1,
        Limit::Secondary {
            status: 403,
            retry_after: 4,
        },
    );
    let e = issues.labelled("flotilla").await.expect_err("limited");
    assert!(e.is_retriable(), "{e:?}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(4)), "{e:?}");
}

/// "Get an issue" answers a pull request's number too ("every pull request is an issue, but
/// not every issue is a pull request"), marked by its `pull_request` key: the tracker refuses
/// it rather than hand a PR's description over as an issue to work on.
#[actix_web::test]
async fn tracker_github_a_pull_request_number_is_not_an_issue() {
    if !require_tool("git") {
        return;
    }
    let gh = FakeGithub::start("ghp_test").await;
    gh.create_repo(REPO);
    gh.push(REPO, "feat/a", "main", &[("a.txt", "a\n")], "a")
        .await;
    let pr = gh.open_pr(REPO, "feat/a", "main", "A change").await;
    let issues = GithubIssues::new(&github_settings(&gh.url, "ghp_test"), REPO).expect("tracker");
    let e = issues.issue(&pr.to_string()).await.expect_err("a PR");
    assert!(
        matches!(&e, PluginError::Invalid(m) if m.contains("is a pull request")),
        "{e:?}"
    );
    let n = gh.create_issue(REPO, "Flaky test", "It fails on Tuesdays.");
    assert_eq!(
        issues.issue(&n.to_string()).await.expect("an issue").title,
        "Flaky test"
    );
}

/// Linear's rate limit is a GraphQL error with `extensions.code: RATELIMITED` and the
/// `X-RateLimit-Requests-Reset` instant (epoch ms): a retriable error with the wait until
/// then; the next request, after it, reads the issue.
#[actix_web::test]
async fn tracker_linear_ratelimited_is_a_rate_limit_with_the_reset_wait() {
    let t = FakeTrackers::start("lin_api_key", "dev@acme.test", "jira-token").await;
    t.add_linear("ENG-7", "Cache misses", "Twice as many.", "dev/eng-7", &[]);
    let settings = LinearSettings {
        api_url: format!("{}/graphql", t.url),
        api_key: Some(Secret::new("lin_api_key")),
        webhook_secret: None,
    };
    let linear = LinearIssues::new(&settings, Duration::from_secs(10)).expect("tracker");
    t.limit_linear_next(1);
    let e = linear.issue("ENG-7").await.expect_err("limited");
    assert!(
        matches!(e, PluginError::RateLimited { .. }),
        "RATELIMITED is a rate limit, not an API error: {e:?}"
    );
    assert!(
        e.retry_after()
            .is_some_and(|d| d >= Duration::from_secs(1) && d <= Duration::from_secs(30)),
        "{e:?}"
    );
    assert_eq!(
        linear.issue("ENG-7").await.expect("read").title,
        "Cache misses"
    );
}

/// Jira Cloud at a resource limit answers 503 with `Retry-After` ("Rate limiting": "not rate
/// limit responses, [but] handled with similar logic"), and a request made before the wait is
/// over fails again with the same or a longer one. Reading an issue is then `RateLimited`
/// with that wait, and nothing is asked of Jira until it is over; after it the issue reads.
/// A 503 without `Retry-After` (an outage) stays an API error and holds nothing.
#[actix_web::test]
async fn tracker_jira_503_with_retry_after_is_a_rate_limit_held_until_then() {
    let t = FakeTrackers::start("lin_api_key", "dev@acme.test", "jira-token").await;
    t.add_jira("OPS-9", "Disk full", serde_json::json!(null), &[]);
    let settings = JiraSettings {
        base_url: Some(t.url.clone()),
        email: Some("dev@acme.test".into()),
        api_token: Some(Secret::new("jira-token")),
        webhook_secret: None,
        bot_account_id: None,
        repositories: Default::default(),
    };
    let jira = JiraIssues::new(&settings, Duration::from_secs(10)).expect("tracker");
    t.jira_busy_for(2);
    let e = jira.issue("OPS-9").await.expect_err("busy");
    assert!(
        matches!(e, PluginError::RateLimited { .. }),
        "a 503 with Retry-After is a rate limit: {e:?}"
    );
    assert!(
        e.retry_after()
            .is_some_and(|d| d >= Duration::from_secs(1) && d <= Duration::from_secs(2)),
        "{e:?}"
    );
    assert_eq!(t.jira_503s(), 1);
    let held = jira.issue("OPS-9").await.expect_err("held");
    assert!(matches!(held, PluginError::RateLimited { .. }), "{held:?}");
    assert_eq!(t.jira_503s(), 1, "asked again inside the wait");
    let issue = eventually(10, "the issue after the wait", || async {
        jira.issue("OPS-9").await.ok()
    })
    .await;
    assert_eq!(issue.title, "Disk full");
    assert_eq!(
        t.jira_503s(),
        1,
        "every request waited for the end of the wait"
    );

    t.jira_down_next(1);
    let e = jira.issue("OPS-9").await.expect_err("down");
    assert!(
        matches!(e, PluginError::Api { status: 503, .. }),
        "a bare 503 is an API error: {e:?}"
    );
    assert_eq!(
        jira.issue("OPS-9").await.expect("read at once").title,
        "Disk full",
        "a bare 503 holds nothing"
    );
}
