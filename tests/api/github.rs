//! The `github` SCM plugin against the fake GitHub: every method, what it costs, rate limits,
//! and merges that really move the bare repository's base branch.

use std::time::Duration;

use flotilla::plugins::github::GithubScm;
use flotilla::plugins::{MergeMethod, PluginError, Scm};

use crate::fake_github::{FakeGithub, Limit};
use crate::helpers::{assert_primary_rate_limit, github_settings, require_tool};

const REPO: &str = "acme/widgets";
const PULLS: &str = "GET /repos/{owner}/{repo}/pulls";
const GRAPHQL: &str = "POST /graphql";

async fn setup() -> Option<(FakeGithub, GithubScm)> {
    if !require_tool("git") {
        return None;
    }
    let gh = FakeGithub::start("ghp_test").await;
    gh.create_repo(REPO);
    let settings = github_settings(&gh.url, "ghp_test");
    let scm = GithubScm::new(&settings, Duration::from_secs(10)).expect("plugin");
    Some((gh, scm))
}

#[actix_web::test]
async fn github_find_pr_returns_the_open_pr_of_a_branch() {
    let Some((gh, scm)) = setup().await else {
        return;
    };
    let sha = gh
        .push(REPO, "feat/a", "main", &[("a.txt", "a\n")], "a")
        .await;
    let n = gh.open_pr(REPO, "feat/a", "main", "A").await;
    let p = scm
        .find_pr(REPO, "feat/a")
        .await
        .expect("ok")
        .expect("found");
    assert_eq!(p.number, n);
    assert_eq!(
        (p.state.as_str(), p.ci.as_str(), p.review.as_str()),
        ("open", "none", "none")
    );
    assert_eq!(p.head_branch, "feat/a");
    assert_eq!(p.head_sha, sha);
    assert_eq!(p.mergeable, Some(true));
    assert_eq!(p.merge_state, "clean");
    assert!(scm.find_pr(REPO, "feat/none").await.expect("ok").is_none());
    assert_eq!(gh.count(PULLS), 2);
    assert_eq!(
        gh.count(GRAPHQL),
        1,
        "no status query when no PR: {:?}",
        gh.counts()
    );
    let rl = scm.rate_limit().expect("rate limit seen");
    assert_eq!(rl.limit, 5000);
    // The last answer was the second REST list: two core requests spent (GraphQL has its own
    // budget).
    assert_eq!(rl.remaining, 5000 - 2);
}

/// `head` is a query parameter (`user:ref-name`, "List pull requests"): a branch holding `+`
/// or `&` (both valid in git refs) must reach GitHub as written, not as a space or a new
/// parameter.
#[actix_web::test]
async fn github_find_pr_finds_a_branch_whose_name_a_query_would_misread() {
    let Some((gh, scm)) = setup().await else {
        return;
    };
    for branch in ["feat/c++", "fix/a&b"] {
        gh.push(
            REPO,
            branch,
            "main",
            &[("c.txt", &format!("{branch}\n"))],
            "c",
        )
        .await;
        let n = gh.open_pr(REPO, branch, "main", branch).await;
        let p = scm.find_pr(REPO, branch).await.expect("ok");
        assert_eq!(p.map(|p| p.number), Some(n), "{branch}");
    }
}

#[actix_web::test]
async fn github_ci_names_failed_checks_with_urls_and_log_excerpts() {
    let Some((gh, scm)) = setup().await else {
        return;
    };
    let sha = gh
        .push(REPO, "feat/ci", "main", &[("c.txt", "c\n")], "c")
        .await;
    let n = gh.open_pr(REPO, "feat/ci", "main", "CI").await;
    gh.add_check_run(REPO, &sha, "build", Some("success"), Some("ok\n"))
        .await;
    let log: String = (0..200).map(|i| format!("step {i}\n")).collect::<String>()
        + "error[E0308]: mismatched types\n";
    gh.add_check_run(REPO, &sha, "test", Some("failure"), Some(&log))
        .await;
    gh.add_status(REPO, &sha, "lint", "error").await;
    let p = scm.pr_status(REPO, n).await.expect("status");
    assert_eq!(p.ci, "failing");
    assert_eq!(p.checks.len(), 3);
    let ci = scm.ci(REPO, &sha).await.expect("ci");
    assert_eq!(ci.state, "failing");
    let names: Vec<&str> = ci.failed.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["lint", "test"]);
    let test = &ci.failed[1];
    assert!(
        test.url.as_deref().unwrap_or("").contains("/actions/runs/"),
        "{test:?}"
    );
    let excerpt = test.log_excerpt.as_deref().expect("excerpt");
    assert!(excerpt.contains("error[E0308]"), "{excerpt}");
    assert!(!excerpt.contains("step 100\n"), "only the tail is kept");
    assert!(
        ci.failed[0].log_excerpt.is_none(),
        "a status has no job log"
    );
    // A re-run that passes: the latest run per name counts.
    gh.add_check_run(REPO, &sha, "test", Some("success"), None)
        .await;
    gh.add_status(REPO, &sha, "lint", "success").await;
    let ci = scm.ci(REPO, &sha).await.expect("ci");
    assert_eq!((ci.state.as_str(), ci.failed.len()), ("passing", 0));
}

#[actix_web::test]
async fn github_review_feedback_has_decision_unresolved_threads_bodies_and_comments() {
    let Some((gh, scm)) = setup().await else {
        return;
    };
    gh.push(
        REPO,
        "feat/r",
        "main",
        &[("src/lib.rs", "fn a() {}\n")],
        "r",
    )
    .await;
    let n = gh.open_pr(REPO, "feat/r", "main", "R").await;
    let ids = gh
        .add_review(
            REPO,
            n,
            "alice",
            "CHANGES_REQUESTED",
            "Needs work.",
            &[
                ("src/lib.rs", 1, "rename a"),
                ("src/lib.rs", 3, "add a test"),
            ],
        )
        .await;
    gh.reply(REPO, n, ids[0], "bob", "agreed").await;
    gh.resolve_thread(REPO, ids[1]);
    gh.add_comment(REPO, n, "carol", "Also update the changelog.")
        .await;
    let f = scm.review_feedback(REPO, n).await.expect("feedback");
    assert_eq!(f.decision, "changes_requested");
    assert_eq!(f.unresolved_threads.len(), 1);
    let t = &f.unresolved_threads[0];
    assert_eq!((t.path.as_str(), t.line), ("src/lib.rs", Some(1)));
    assert_eq!(
        (t.comments[0].author.as_str(), t.comments[0].body.as_str()),
        ("alice", "rename a")
    );
    assert_eq!(t.comments[1].body, "agreed");
    assert_eq!(f.reviews.len(), 1);
    assert_eq!(
        (f.reviews[0].state.as_str(), f.reviews[0].body.as_str()),
        ("changes_requested", "Needs work.")
    );
    assert_eq!(f.comments.len(), 1);
    assert_eq!(f.comments[0].author, "carol");
    assert!(!t.comments[0].bot && !f.comments[0].bot);
    // An automated reviewer's thread is marked as a bot's (GraphQL types it `Bot`).
    gh.add_review(
        REPO,
        n,
        "cursor[bot]",
        "COMMENTED",
        "",
        &[("src/lib.rs", 1, "Possible panic here.")],
    )
    .await;
    let status = scm.pr_status(REPO, n).await.expect("status");
    let bot: Vec<(&str, bool)> = status
        .unresolved_threads
        .iter()
        .map(|t| (t.comments[0].author.as_str(), t.comments[0].bot))
        .collect();
    assert_eq!(bot, [("alice", false), ("cursor", true)]);
    gh.add_review(REPO, n, "alice", "APPROVED", "", &[]).await;
    assert_eq!(
        scm.pr_status(REPO, n).await.expect("status").review,
        "approved"
    );
}

#[actix_web::test]
async fn github_conflicts_and_behind_come_from_real_git_and_405_refuses_the_merge() {
    let Some((gh, scm)) = setup().await else {
        return;
    };
    gh.push(
        REPO,
        "feat/conflict",
        "main",
        &[("README.md", "mine\n")],
        "mine",
    )
    .await;
    let c = gh.open_pr(REPO, "feat/conflict", "main", "C").await;
    gh.push(REPO, "feat/behind", "main", &[("b.txt", "b\n")], "b")
        .await;
    let b = gh.open_pr(REPO, "feat/behind", "main", "B").await;
    gh.push(REPO, "main", "main", &[("README.md", "theirs\n")], "theirs")
        .await;
    let st = scm.batch_status(REPO, &[c, b]).await.expect("batch");
    assert_eq!(st.len(), 2);
    let (pc, pb) = (&st[0], &st[1]);
    assert!(
        pc.conflicts && pc.mergeable == Some(false) && pc.merge_state == "dirty",
        "{pc:?}"
    );
    assert!(
        !pb.conflicts && pb.behind && pb.merge_state == "behind",
        "{pb:?}"
    );
    let before = gh.branch_sha(REPO, "main");
    let e = scm
        .merge(REPO, c, MergeMethod::Merge, None)
        .await
        .expect_err("405");
    assert!(matches!(e, PluginError::NotMergeable(_)), "{e:?}");
    assert_eq!(
        gh.branch_sha(REPO, "main"),
        before,
        "a refused merge changes nothing"
    );
    assert_eq!(
        gh.count_status("PUT /repos/{owner}/{repo}/pulls/{number}/merge", 405),
        1
    );
}

#[actix_web::test]
async fn github_merge_really_updates_the_base_branch_for_every_method_and_409_on_a_moved_head() {
    let Some((gh, scm)) = setup().await else {
        return;
    };
    for (i, method) in [MergeMethod::Merge, MergeMethod::Squash, MergeMethod::Rebase]
        .into_iter()
        .enumerate()
    {
        let branch = format!("feat/m{i}");
        let file = format!("m{i}.txt");
        gh.push(REPO, &branch, "main", &[(file.as_str(), "one\n")], "one")
            .await;
        let head = gh
            .push(REPO, &branch, "main", &[(file.as_str(), "two\n")], "two")
            .await;
        let n = gh.open_pr(REPO, &branch, "main", &branch).await;
        let sha = scm
            .merge(REPO, n, method, Some(&head))
            .await
            .expect("merged");
        assert_eq!(
            gh.branch_sha(REPO, "main").as_deref(),
            Some(sha.as_str()),
            "{method:?}"
        );
        assert_eq!(gh.git(REPO, &["show", &format!("main:{file}")]), "two");
        let parents = gh
            .git(REPO, &["rev-list", "--parents", "-n1", "main"])
            .split(' ')
            .count()
            - 1;
        assert_eq!(
            parents,
            if method == MergeMethod::Merge { 2 } else { 1 },
            "{method:?}"
        );
        assert_eq!(
            scm.pr_status(REPO, n).await.expect("status").state,
            "merged"
        );
    }
    // 409: the head moved after we looked.
    let old = gh
        .push(REPO, "feat/moving", "main", &[("mv.txt", "1\n")], "1")
        .await;
    let n = gh.open_pr(REPO, "feat/moving", "main", "moving").await;
    gh.push(REPO, "feat/moving", "main", &[("mv.txt", "2\n")], "2")
        .await;
    let before = gh.branch_sha(REPO, "main");
    let e = scm
        .merge(REPO, n, MergeMethod::Squash, Some(&old))
        .await
        .expect_err("409");
    assert!(matches!(e, PluginError::Conflict(_)), "{e:?}");
    assert_eq!(gh.branch_sha(REPO, "main"), before);
}

#[actix_web::test]
async fn github_repo_probe_is_one_free_304_when_nothing_changed() {
    let Some((gh, scm)) = setup().await else {
        return;
    };
    gh.push(REPO, "feat/p", "main", &[("p.txt", "p\n")], "p")
        .await;
    let n = gh.open_pr(REPO, "feat/p", "main", "P").await;
    assert!(
        scm.repo_changed(REPO).await.expect("probe"),
        "the first probe sees a change"
    );
    let quota = gh.core_remaining();
    for _ in 0..3 {
        assert!(!scm.repo_changed(REPO).await.expect("probe"));
    }
    assert_eq!(gh.count_status(PULLS, 304), 3);
    assert_eq!(gh.core_remaining(), quota, "304s cost no quota");
    // A check run does not bump the PR (that is what `ci` per head is for); a review does.
    gh.add_check_run(REPO, "feat/p", "t", Some("success"), None)
        .await;
    assert!(!scm.repo_changed(REPO).await.expect("probe"));
    gh.add_review(REPO, n, "alice", "COMMENTED", "hm", &[])
        .await;
    assert!(scm.repo_changed(REPO).await.expect("probe"));
    assert_eq!(
        gh.total(),
        gh.count(PULLS),
        "only the probe was called: {:?}",
        gh.counts()
    );
}

#[actix_web::test]
async fn github_lists_follow_pagination_and_reread_unchanged_pages_for_free() {
    let Some((gh, scm)) = setup().await else {
        return;
    };
    gh.push(REPO, "feat/pg", "main", &[("pg.txt", "p\n")], "p")
        .await;
    let n = gh.open_pr(REPO, "feat/pg", "main", "PG").await;
    for i in 0..130 {
        gh.add_comment(REPO, n, "bot", &format!("comment {i}"))
            .await;
    }
    let f = scm.review_feedback(REPO, n).await.expect("feedback");
    assert_eq!(f.comments.len(), 130);
    assert_eq!(f.comments[129].body, "comment 129");
    let kind = "GET /repos/{owner}/{repo}/issues/{number}/comments";
    assert_eq!(
        gh.count_status(kind, 200),
        2,
        "two pages of 100: {:?}",
        gh.counts()
    );
    let quota = gh.core_remaining();
    let again = scm.review_feedback(REPO, n).await.expect("feedback");
    assert_eq!(again.comments.len(), 130);
    assert_eq!(gh.count_status(kind, 304), 2);
    assert_eq!(
        gh.core_remaining(),
        quota,
        "unchanged pages and reviews cost nothing"
    );
}

#[actix_web::test]
async fn github_batched_status_for_60_prs_takes_2_graphql_requests() {
    let Some((gh, scm)) = setup().await else {
        return;
    };
    let numbers = gh.open_many(REPO, "feat/many", 60).await;
    gh.reset_counts();
    let st = scm.batch_status(REPO, &numbers).await.expect("batch");
    assert_eq!(st.len(), 60);
    assert!(st
        .iter()
        .zip(&numbers)
        .all(|(p, n)| p.number == *n && p.state == "open"));
    assert_eq!(gh.count(GRAPHQL), 2);
    assert_eq!(gh.total(), 2, "{:?}", gh.counts());
    // An unknown number is left out rather than failing the batch.
    let st = scm
        .batch_status(REPO, &[numbers[0], 9999])
        .await
        .expect("batch");
    assert_eq!(st.len(), 1);
    assert!(matches!(
        scm.pr_status(REPO, 9999).await,
        Err(PluginError::NotFound(_))
    ));
}

#[actix_web::test]
async fn github_rate_limits_surface_as_retriable_errors_with_the_wait() {
    let Some((gh, scm)) = setup().await else {
        return;
    };
    gh.push(REPO, "feat/rl", "main", &[("rl.txt", "r\n")], "r")
        .await;
    let n = gh.open_pr(REPO, "feat/rl", "main", "RL").await;
    gh.limit_next(
        1,
        Limit::Secondary {
            status: 429,
            retry_after: 7,
        },
    );
    let e = scm.pr_status(REPO, n).await.expect_err("limited");
    assert!(e.is_retriable());
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)), "{e:?}");
    assert!(matches!(
        e,
        PluginError::RateLimited {
            kind: "secondary",
            ..
        }
    ));
    // Inside the wait nothing leaves: the call is held with what is left of the wait.
    let sent = gh.total();
    let e = scm.repo_changed(REPO).await.expect_err("held");
    assert!(e.retry_after().is_some_and(|d| d <= Duration::from_secs(7)));
    assert_eq!(gh.total(), sent, "a held call sends no request");
    assert_eq!(gh.early_requests(), 0);

    // A 403 secondary limit, on a client of its own.
    let Some((gh, scm)) = setup().await else {
        return;
    };
    gh.limit_next(
        1,
        Limit::Secondary {
            status: 403,
            retry_after: 2,
        },
    );
    let e = scm.repo_changed(REPO).await.expect_err("limited");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));

    // The primary limit: remaining 0 until the reset.
    let Some((gh, scm)) = setup().await else {
        return;
    };
    gh.push(REPO, "feat/rl", "main", &[("rl.txt", "r\n")], "r")
        .await;
    let n = gh.open_pr(REPO, "feat/rl", "main", "RL").await;
    assert_eq!(scm.pr_status(REPO, n).await.expect("ok").number, n);
    assert!(scm.rate_limit().expect("seen").remaining > 0);
    gh.limit_next(1, Limit::Primary);
    let e = scm.ci(REPO, "feat/rl").await.expect_err("limited");
    assert_primary_rate_limit(&e);
    assert_eq!(scm.rate_limit().map(|r| r.remaining), Some(0));
    assert_eq!(
        flotilla::telemetry::METRICS
            .github_rate_limit_remaining
            .get(),
        0
    );
}

/// GraphQL answers an exceeded primary limit with HTTP 200, an `errors` entry and
/// `x-ratelimit-remaining: 0` ("Rate limits and node limits for the GraphQL API"): that is a
/// rate limit with the wait until the reset, and nothing leaves before it, not an API error.
#[actix_web::test]
async fn github_graphql_primary_limit_answered_200_is_a_rate_limit_held_until_the_reset() {
    let Some((gh, scm)) = setup().await else {
        return;
    };
    gh.push(REPO, "feat/gq", "main", &[("gq.txt", "g\n")], "g")
        .await;
    let n = gh.open_pr(REPO, "feat/gq", "main", "GQ").await;
    gh.limit_next(1, Limit::Primary);
    let e = scm.pr_status(REPO, n).await.expect_err("limited");
    assert_eq!(gh.count_status(GRAPHQL, 200), 1, "GitHub answered 200");
    assert_primary_rate_limit(&e);
    assert_eq!(scm.rate_limit().map(|r| r.remaining), Some(0));
    let sent = gh.total();
    let e = scm.batch_status(REPO, &[n]).await.expect_err("held");
    assert!(e.is_retriable(), "{e:?}");
    assert_eq!(gh.total(), sent, "a held call sends no request");
    // REST has a primary budget of its own: it is not held by GraphQL's.
    let ci = scm.ci(REPO, "feat/gq").await.expect("REST is not limited");
    assert_eq!(ci.state, "none");
    assert_eq!(gh.total(), sent + 2, "check runs and combined status");
}

/// The REST primary limit spends the `core` budget only: GraphQL, counted apart
/// (`x-ratelimit-resource: graphql`), still answers.
#[actix_web::test]
async fn github_rest_primary_limit_does_not_hold_graphql() {
    let Some((gh, scm)) = setup().await else {
        return;
    };
    gh.push(REPO, "feat/rp", "main", &[("rp.txt", "r\n")], "r")
        .await;
    let n = gh.open_pr(REPO, "feat/rp", "main", "RP").await;
    gh.limit_next(1, Limit::Primary);
    let e = scm.repo_changed(REPO).await.expect_err("limited");
    assert_primary_rate_limit(&e);
    let sent = gh.total();
    assert!(scm.repo_changed(REPO).await.is_err(), "REST is held");
    assert_eq!(gh.total(), sent);
    assert_eq!(
        scm.pr_status(REPO, n)
            .await
            .expect("GraphQL answers")
            .number,
        n
    );
}

/// A secondary limit without `retry-after` (and with budget left): "wait for at least one
/// minute before retrying. If your request continues to fail due to a secondary rate limit,
/// wait for an exponentially increasing amount of time between retries" (GitHub's REST rate
/// limit docs). The client waits 60 s, then 120 s, and starts over after an answer.
#[actix_web::test]
async fn github_unannounced_secondary_limits_back_off_exponentially() {
    let Some((gh, _)) = setup().await else {
        return;
    };
    let clock = flotilla::clock::ManualClock::new();
    gh.use_clock(clock.clock());
    let settings = github_settings(&gh.url, "ghp_test");
    let scm = GithubScm::new(&settings, Duration::from_secs(10))
        .expect("plugin")
        .on_clock(clock.clock());
    gh.limit_next(2, Limit::SecondaryUnannounced { status: 403 });
    let e = scm.repo_changed(REPO).await.expect_err("limited");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(60)), "{e:?}");
    clock.advance(Duration::from_secs(61));
    let e = scm.repo_changed(REPO).await.expect_err("limited again");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(120)), "{e:?}");
    // Still inside the doubled wait: held, nothing sent.
    clock.advance(Duration::from_secs(61));
    let sent = gh.total();
    assert!(scm.repo_changed(REPO).await.is_err());
    assert_eq!(gh.total(), sent);
    clock.advance(Duration::from_secs(60));
    scm.repo_changed(REPO)
        .await
        .expect("answers after the wait");
    assert_eq!(gh.early_requests(), 0, "no request inside a wait");
    // An answer in between: the next unannounced limit starts over at a minute.
    gh.limit_next(1, Limit::SecondaryUnannounced { status: 429 });
    let e = scm.repo_changed(REPO).await.expect_err("limited");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(60)), "{e:?}");
}

#[actix_web::test]
async fn github_a_wrong_token_is_an_api_error_that_never_shows_the_token() {
    let Some((gh, _)) = setup().await else { return };
    let settings = github_settings(&gh.url, "ghp_wrong_and_secret");
    let scm = GithubScm::new(&settings, Duration::from_secs(5)).expect("plugin");
    let e = scm.repo_changed(REPO).await.expect_err("401");
    assert!(matches!(e, PluginError::Api { status: 401, .. }), "{e:?}");
    assert!(!format!("{e:?} {e}").contains("ghp_wrong"));
    let before = flotilla::telemetry::METRICS
        .github_requests
        .with_label_values(&[PULLS, "401"])
        .get();
    assert!(before >= 1);
}
