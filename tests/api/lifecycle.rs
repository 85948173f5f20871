//! The lifecycle loop end to end: a scripted agent on real tmux pushes to the fake GitHub's
//! bare repository and opens a PR; the fake's checks, reviews and webhooks drive Flotilla,
//! which types instructions into the agent's pane and finally merges for real.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::fake_github::{FakeGithub, Limit};
use crate::fleet_plugins::{scripted_agent_path, user_messages};
use crate::fleet_tmux::TmuxGuard;
use crate::helpers::{
    eventually, eventually_advancing, git, require_tool, spawn_app_with_env, Backend, TestApp,
};

pub(crate) const REPO: &str = "acme/widgets";
const TOKEN: &str = "ghp_lifecycle";
const SECRET: &str = "lifecycle-secret";

pub(crate) struct Loop {
    pub(crate) tmux: TmuxGuard,
    pub(crate) app: TestApp,
    pub(crate) gh: FakeGithub,
    pub(crate) agent_home: PathBuf,
}

/// Agent lines: the scripted agent as `claude-code`, able to open PRs on `gh`.
fn agents(gh: &FakeGithub, agent_home: &Path) -> String {
    format!(
        "  claude:\n    kind: claude-code\n    command: [\"{agent}\"]\n    env: {{ HOME: \"{home}\", GIT_AUTHOR_NAME: a, GIT_AUTHOR_EMAIL: a@example.com, GIT_COMMITTER_NAME: a, GIT_COMMITTER_EMAIL: a@example.com, SCRIPTED_GITHUB_API: \"{api}\", SCRIPTED_GITHUB_REPO: {REPO}, SCRIPTED_GITHUB_TOKEN: {TOKEN} }}\n",
        agent = scripted_agent_path().display(),
        home = agent_home.display(),
        api = gh.url,
    )
}

/// An app whose project lives on the fake GitHub. `webhooks: false` leaves only polling.
pub(crate) async fn setup(webhooks: bool, extra_env: &[(&str, &str)]) -> Option<Loop> {
    setup_with(webhooks, extra_env, true).await
}

pub(crate) async fn setup_with(
    webhooks: bool,
    extra_env: &[(&str, &str)],
    auto_merge: bool,
) -> Option<Loop> {
    setup_yaml(webhooks, extra_env, auto_merge, "").await
}

/// As [`setup_with`], with top-level config lines (`notifiers:`…) after the project.
pub(crate) async fn setup_yaml(
    webhooks: bool,
    extra_env: &[(&str, &str)],
    auto_merge: bool,
    yaml: &str,
) -> Option<Loop> {
    if !require_tool("tmux") || !require_tool("git") {
        return None;
    }
    let gh = FakeGithub::start(TOKEN).await;
    let bare = gh.create_repo(REPO);
    gh.require_reviews(REPO);
    gh.watch_pushes();
    let dir = tempfile::tempdir().expect("tempdir");
    let agent_home = dir.path().join("agent-home");
    std::fs::create_dir_all(&agent_home).expect("mkdir");
    let agents = agents(&gh, &agent_home);
    let project = format!(
        "    runtime: tmux\n    agent: claude\n    scm: github\n    github_repo: {REPO}\n    reactions:\n      approved-and-green: {{ auto_merge: {auto_merge}, merge_method: squash }}\n{yaml}"
    );
    let graphql = format!("{}/graphql", gh.url);
    let mut env = vec![
        ("FLOTILLA__GITHUB__API_URL", gh.url.as_str()),
        ("FLOTILLA__GITHUB__GRAPHQL_URL", graphql.as_str()),
        ("FLOTILLA__GITHUB__TOKEN", TOKEN),
        ("FLOTILLA__GITHUB__WEBHOOK_SECRET", SECRET),
        ("FLOTILLA__LIFECYCLE__MERGE_GRACE", "1s"),
    ];
    env.extend_from_slice(extra_env);
    if !env
        .iter()
        .any(|(k, _)| *k == "FLOTILLA__GITHUB__POLL_INTERVAL")
    {
        env.push(("FLOTILLA__GITHUB__POLL_INTERVAL", "0s"));
    }
    let app = spawn_app_with_env(Backend::Sqlite, &agents, &project, dir, &env).await?;
    let tmux = TmuxGuard(flotilla::app::tmux_socket(&app.home));
    // The project's clone gets the fake's repository as origin; spawns branch from it.
    git(
        &app.repo,
        &["remote", "add", "origin", bare.to_str().expect("utf-8")],
    );
    if webhooks {
        gh.set_webhook(&format!("{}/webhooks/github", app.address), SECRET);
    }
    Some(Loop {
        app,
        gh,
        agent_home,
        tmux,
    })
}

/// What the agent was told (user messages in its JSONL log).
pub(crate) fn told(home: &Path) -> Vec<String> {
    user_messages(home)
}

/// Config lines routing every notification to `hooks`' webhook, delivered at once.
pub(crate) fn webhook_notifier(hooks: &crate::receivers::Receivers) -> String {
    format!(
        "notifiers:\n  hook: {{ kind: webhook, url: \"{}\" }}\ndefaults: {{ notifiers: [hook] }}\nnotifications: {{ poll_interval: 100ms, backoff_initial: 100ms, backoff_max: 2s, timeout: 5s }}\n",
        hooks.webhook_url()
    )
}

impl Loop {
    /// Spawns an agent that opens its PR, then asks its human something; once it waits, a
    /// check fails on the PR's head. The session id, the session then, and that head.
    pub(crate) async fn asking_about_its_pr_when_a_check_fails(&self) -> (String, Value, String) {
        let id = self
            .app
            .spawn(json!({"project": "demo", "prompt": "OPEN_PR ASK FIX ask after the PR"}))
            .await;
        let s = eventually(60, "a question with a PR", || async {
            let s = self.session(&id).await;
            (s["state"] == "needs_input" && s["pr"].is_object()).then_some(s)
        })
        .await;
        let branch = s["branch"].as_str().expect("branch");
        let head = self.head(branch).expect("pushed");
        self.gh
            .add_check_run(
                REPO,
                &head,
                "unit-tests",
                Some("failure"),
                Some("assertion failed: widgets == 3"),
            )
            .await;
        (id, s, head)
    }

    pub(crate) async fn session(&self, id: &str) -> Value {
        self.app.get(&format!("/api/v1/sessions/{id}")).await.1
    }

    pub(crate) async fn wait_state(&self, id: &str, state: &str, secs: u64) -> Value {
        eventually(secs, &format!("session {id} in {state}"), || async {
            let s = self.session(id).await;
            (s["state"] == state).then_some(s)
        })
        .await
    }

    /// Waits until the agent was told something containing `needle`; returns how many times.
    pub(crate) async fn wait_told(&self, needle: &str, secs: u64) -> usize {
        eventually(secs, &format!("the agent told {needle:?}"), || async {
            let n = told(&self.agent_home)
                .iter()
                .filter(|m| m.contains(needle))
                .count();
            (n > 0).then_some(n)
        })
        .await
    }

    /// The notifications recorded so far whose message `keep` accepts.
    pub(crate) async fn notifications_where(&self, keep: impl Fn(&str) -> bool) -> Vec<Value> {
        let (_, v) = self.app.get("/api/v1/notifications?limit=1000").await;
        v["notifications"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["message"].as_str().is_some_and(&keep))
            .cloned()
            .collect()
    }

    pub(crate) fn head(&self, branch: &str) -> Option<String> {
        self.gh.branch_sha(REPO, branch)
    }
}

/// Runs the whole loop; `secs` bounds each wait (polling needs a few cycles).
async fn whole_loop(l: &Loop, secs: u64) {
    let id = l
        .app
        .spawn(json!({"project": "demo", "prompt": "OPEN_PR FIX add the widget counter"}))
        .await;
    // The agent pushes and opens its PR; the session finds it and waits for review.
    let s = l.wait_state(&id, "review_pending", secs).await;
    let pr = s["pr"]["number"].as_i64().expect("pr number");
    let branch = s["branch"].as_str().expect("branch").to_string();
    let first_head = l.head(&branch).expect("pushed");

    // A check fails: the agent gets its name, URL and log excerpt, and pushes a fix.
    l.gh.add_check_run(
        REPO,
        &first_head,
        "unit-tests",
        Some("failure"),
        Some("running 12 tests\nassertion failed: widgets == 3\nerror: test failed"),
    )
    .await;
    l.wait_state(&id, "ci_failed", secs).await;
    l.wait_told("Failed check: unit-tests", secs).await;
    let msg = told(&l.agent_home)
        .into_iter()
        .find(|m| m.contains("Failed check: unit-tests"))
        .expect("told");
    assert!(msg.contains("assertion failed: widgets == 3"), "{msg}");
    let fixed = eventually(secs, "the fix pushed", || async {
        l.head(&branch).filter(|h| *h != first_head)
    })
    .await;
    // The check passes on the fix.
    l.gh.add_check_run(REPO, &fixed, "unit-tests", Some("success"), None)
        .await;
    l.wait_state(&id, "review_pending", secs).await;

    // Changes requested with two inline comments: both reach the agent, once.
    l.gh.add_review(
        REPO,
        pr,
        "alice",
        "CHANGES_REQUESTED",
        "Two things.",
        &[
            ("scripted-notes.md", 1, "Say why, not what."),
            ("README.md", 1, "Mention the counter here."),
        ],
    )
    .await;
    l.wait_state(&id, "changes_requested", secs).await;
    l.wait_told("Mention the counter here.", secs).await;
    let review_msgs: Vec<String> = told(&l.agent_home)
        .into_iter()
        .filter(|m| m.contains("A reviewer requested changes"))
        .collect();
    assert_eq!(review_msgs.len(), 1, "{review_msgs:?}");
    assert!(review_msgs[0].contains("scripted-notes.md:1"));
    assert!(review_msgs[0].contains("@alice: Say why, not what."));
    assert!(review_msgs[0].contains("README.md:1"));
    let addressed = eventually(secs, "the review fix pushed", || async {
        l.head(&branch).filter(|h| *h != fixed)
    })
    .await;
    l.gh.add_check_run(REPO, &addressed, "unit-tests", Some("success"), None)
        .await;

    // Approval: auto-merge merges into the bare repository, the session ends as merged.
    l.gh.add_review(REPO, pr, "alice", "APPROVED", "Ship it.", &[])
        .await;
    let merged = l.wait_state(&id, "merged", secs).await;
    assert_eq!(merged["pr"]["number"], pr);
    let log = l.gh.git(REPO, &["log", "--format=%s", "main"]);
    assert!(
        log.lines().next().unwrap_or("").contains(&format!("#{pr}")),
        "main has the squash commit: {log}"
    );
    // Grace period, then cleanup: the worktree is gone.
    let done = eventually(secs, "the merged session cleaned up", || async {
        let s = l.session(&id).await;
        (s["state"] != "merged").then_some(s)
    })
    .await;
    assert_eq!(done["reason"], "pr_merged", "{done}");
    let ws = PathBuf::from(done["workspace"].as_str().unwrap_or(""));
    eventually(secs, "the worktree removed", || async {
        (!ws.exists()).then_some(())
    })
    .await;
    // Each instruction was sent once.
    assert_eq!(
        told(&l.agent_home)
            .iter()
            .filter(|m| m.contains("Failed check: unit-tests"))
            .count(),
        1
    );
}

#[actix_web::test]
async fn the_whole_loop_runs_on_webhooks_from_pr_to_merge() {
    let Some(l) = setup(true, &[]).await else {
        return;
    };
    whole_loop(&l, 30).await;
    eprintln!("GitHub requests for the whole loop: {:?}", l.gh.counts());
}

#[actix_web::test]
async fn the_whole_loop_runs_on_polling_alone() {
    let env = [
        ("FLOTILLA__GITHUB__POLL_INTERVAL", "1s"),
        ("FLOTILLA__GITHUB__RECONCILE_EVERY", "1"),
    ];
    let Some(l) = setup(false, &env).await else {
        return;
    };
    whole_loop(&l, 60).await;
    assert!(l.gh.deliveries().is_empty(), "no webhook was configured");
}

#[actix_web::test]
async fn a_secondary_rate_limit_pauses_polling_without_a_burst_and_loses_nothing() {
    let env = [
        ("FLOTILLA__GITHUB__POLL_INTERVAL", "1s"),
        ("FLOTILLA__GITHUB__RECONCILE_EVERY", "1"),
    ];
    let Some(l) = setup(false, &env).await else {
        return;
    };
    let id = l
        .app
        .spawn(json!({"project": "demo", "prompt": "OPEN_PR limits"}))
        .await;
    let s = l.wait_state(&id, "review_pending", 60).await;
    let branch = s["branch"].as_str().expect("branch").to_string();
    // The fake keeps its 3 s on the app's clock, which the test moves.
    l.gh.use_clock(l.app.clock.clock());
    // The next request is answered with a secondary limit asking for 3 s.
    l.gh.reset_counts();
    l.gh.limit_next(
        1,
        Limit::Secondary {
            status: 403,
            retry_after: 3,
        },
    );
    let head = l.head(&branch).expect("head");
    l.gh.add_check_run(REPO, &head, "lint", Some("failure"), Some("E501"))
        .await;
    // The failure is still caught once the wait is over: the clock runs ahead in 250 ms steps
    // (the poller's 1 s interval and the 3 s wait pass in a few real steps)…
    eventually_advancing(
        &l.app.clock,
        Duration::from_millis(250),
        60,
        "the failed check seen after the wait",
        || async { (l.session(&id).await["state"] == "ci_failed").then_some(()) },
    )
    .await;
    l.wait_told("Failed check: lint", 30).await;
    // …and nobody (poller or session) sent anything inside the 3 s the limit asked for.
    assert_eq!(l.gh.early_requests(), 0, "{:?}", l.gh.counts());
    let limited = l.gh.count_status("GET /repos/{owner}/{repo}/pulls", 403)
        + l.gh.count_status("POST /graphql", 403);
    assert_eq!(limited, 1, "{:?}", l.gh.counts());
}

/// The ci-failed tracker and escalation timer of a session view.
fn ci_tracking(s: &Value) -> (i64, Value, Value) {
    let t = s["trackers"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["reaction"] == "ci-failed"))
        .cloned()
        .unwrap_or(Value::Null);
    let deadline = s["timers"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["kind"] == "escalate:ci-failed"))
        .map(|t| t["deadline"].clone())
        .unwrap_or(Value::Null);
    (
        t["attempts"].as_i64().unwrap_or(0),
        t["first_triggered_at"].clone(),
        deadline,
    )
}

#[actix_web::test]
async fn kill_dash_nine_between_two_ci_instructions_keeps_attempts_and_deadline_and_sends_nothing_twice(
) {
    use crate::server::{Scratch, ServerProc};
    if !require_tool("tmux") || !require_tool("git") {
        return;
    }
    let gh = FakeGithub::start(TOKEN).await;
    let bare = gh.create_repo(REPO);
    gh.require_reviews(REPO);
    gh.watch_pushes();
    let dir = tempfile::tempdir().expect("tempdir");
    let agent_home = dir.path().join("agent-home");
    std::fs::create_dir_all(&agent_home).expect("mkdir");
    let agents = agents(&gh, &agent_home);
    // A time-based escalation, so there is a deadline to keep; polling on, so the restarted
    // server re-reads the failure it already handled.
    let extra = format!(
        "    runtime: tmux\n    agent: claude\n    scm: github\n    github_repo: {REPO}\n    reactions:\n      ci-failed: {{ retries: 5, escalate_after: 30m }}\ngithub: {{ api_url: \"{api}\", graphql_url: \"{api}/graphql\", token: {TOKEN}, webhook_secret: {SECRET}, poll_interval: 1s, reconcile_every: 1 }}\n",
        api = gh.url
    );
    let s = Scratch::with_agents(dir, &agents, &extra);
    let _tmux = TmuxGuard(flotilla::app::tmux_socket(&s.home));
    let repo = s.dir.path().join("repo");
    git(
        &repo,
        &["remote", "add", "origin", bare.to_str().expect("utf-8")],
    );
    let mut server = ServerProc::start(s.dir.path(), &s.home, &s.cfg, s.port).await;
    gh.set_webhook(&format!("{}/webhooks/github", server.address), SECRET);
    let c = crate::helpers::http_client();
    let base = server.address.clone();
    let get = |id: String| {
        let (c, base) = (c.clone(), base.clone());
        async move {
            c.get(format!("{base}/api/v1/sessions/{id}"))
                .bearer_auth(crate::helpers::TOKEN)
                .send()
                .await
                .expect("get")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let v: Value = c
        .post(format!("{base}/api/v1/sessions"))
        .bearer_auth(crate::helpers::TOKEN)
        .json(&json!({"project": "demo", "prompt": "OPEN_PR crash between instructions"}))
        .send()
        .await
        .expect("spawn")
        .json()
        .await
        .expect("json");
    let id = v["id"].as_str().expect("id").to_string();
    let opened = eventually(60, "the PR found", || async {
        let s = get(id.clone()).await;
        (s["state"] == "review_pending").then_some(s)
    })
    .await;
    let branch = opened["branch"].as_str().expect("branch").to_string();
    let head = gh.branch_sha(REPO, &branch).expect("head");
    gh.add_check_run(REPO, &head, "build", Some("failure"), Some("error[E0308]"))
        .await;
    let first = eventually(30, "the first instruction", || async {
        let s = get(id.clone()).await;
        let told_once = told(&agent_home)
            .iter()
            .any(|m| m.contains("Failed check: build"));
        (s["state"] == "ci_failed" && told_once).then_some(s)
    })
    .await;
    let before = ci_tracking(&first);
    assert_eq!(before.0, 1);
    assert!(before.2.is_string(), "escalation deadline armed: {first}");

    server.kill9();
    let graphql_before = gh.count("POST /graphql");
    let server = ServerProc::start(s.dir.path(), &s.home, &s.cfg, s.port).await;
    assert_eq!(server.address, base);
    // The restarted poller re-reads the PR (still failing the same way)…
    eventually(30, "a reconcile after the restart", || async {
        (gh.count("POST /graphql") > graphql_before + 1).then_some(())
    })
    .await;
    let after = ci_tracking(&get(id.clone()).await);
    // …and neither resets nor repeats anything.
    assert_eq!(after, before);
    assert_eq!(
        told(&agent_home)
            .iter()
            .filter(|m| m.contains("Failed check: build"))
            .count(),
        1
    );

    // A new push that fails again: the second instruction, attempt 2, same deadline.
    let pushed = gh
        .push(REPO, &branch, "main", &[("fix.txt", "1\n")], "try again")
        .await;
    gh.add_check_run(
        REPO,
        &pushed,
        "build",
        Some("failure"),
        Some("error[E0599]"),
    )
    .await;
    let second = eventually(30, "the second instruction", || async {
        let s = get(id.clone()).await;
        (ci_tracking(&s).0 == 2).then_some(s)
    })
    .await;
    let (attempts, first_at, deadline) = ci_tracking(&second);
    assert_eq!((attempts, &first_at, &deadline), (2, &before.1, &before.2));
    eventually(30, "the second instruction typed", || async {
        let n = told(&agent_home)
            .iter()
            .filter(|m| m.contains("Failed check: build"))
            .count();
        (n == 2).then_some(())
    })
    .await;
    drop(server);
}

#[actix_web::test]
async fn without_auto_merge_a_human_merges_through_the_api_and_it_really_merges() {
    let Some(l) = setup_with(true, &[], false).await else {
        return;
    };
    let id = l
        .app
        .spawn(json!({"project": "demo", "prompt": "OPEN_PR manual merge"}))
        .await;
    let s = l.wait_state(&id, "review_pending", 30).await;
    let pr = s["pr"]["number"].as_i64().expect("pr");
    l.gh.add_review(REPO, pr, "bob", "APPROVED", "ok", &[])
        .await;
    let s = l.wait_state(&id, "mergeable", 30).await;
    assert_eq!(s["state"], "mergeable");
    let (st, v) = l
        .app
        .post(&format!("/api/v1/sessions/{id}/merge"), json!({}))
        .await;
    assert_eq!(st, 200, "{v}");
    let merged = l.wait_state(&id, "merged", 30).await;
    assert_eq!(merged["pr"]["number"], pr);
    let log = l.gh.git(REPO, &["log", "--format=%s", "-1", "main"]);
    assert!(log.contains(&format!("(#{pr})")), "{log}");
    // A second merge is refused: there is no open PR any more.
    let (st, _) = l
        .app
        .post(&format!("/api/v1/sessions/{id}/merge"), json!({}))
        .await;
    assert_eq!(st, 409);
}

/// The session's events of `kind`.
pub(crate) async fn events_of(l: &Loop, id: &str, kind: &str) -> Vec<Value> {
    let (_, v) = l.app.get(&format!("/api/v1/sessions/{id}/events")).await;
    v["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

#[actix_web::test]
async fn a_failed_check_restarts_an_agent_that_has_exited_and_delivers_the_instruction_once() {
    let Some(l) = setup(true, &[]).await else {
        return;
    };
    let id = l
        .app
        .spawn(json!({"project": "demo", "prompt": "OPEN_PR FIX exit after the PR"}))
        .await;
    let s = l.wait_state(&id, "review_pending", 60).await;
    let ws = s["workspace"].as_str().expect("workspace").to_string();
    let branch = s["branch"].as_str().expect("branch").to_string();
    let first_head = l.head(&branch).expect("pushed");

    // The agent ends its run (as aider does after its answer); the PR lives on. It may be gone
    // before the send is confirmed on its screen, so its exit is the proof, not the reply.
    l.app
        .post(
            &format!("/api/v1/sessions/{id}/send"),
            json!({"message": "exit 0"}),
        )
        .await;
    let s = eventually(30, "the agent exited", || async {
        let s = l.session(&id).await;
        (s["activity"] == "exited").then_some(s)
    })
    .await;
    assert_eq!(s["state"], "review_pending", "{s}");

    // A check fails: the agent is started again in its worktree, resumed, and gets the
    // instruction as its first prompt; it pushes the fix.
    l.gh.add_check_run(
        REPO,
        &first_head,
        "unit-tests",
        Some("failure"),
        Some("assertion failed: widgets == 3"),
    )
    .await;
    l.wait_told("Failed check: unit-tests", 60).await;
    let fixed = eventually(60, "the fix pushed", || async {
        l.head(&branch).filter(|h| *h != first_head)
    })
    .await;
    let log = git(std::path::Path::new(&ws), &["log", "--format=%s", "-1"]);
    assert!(
        log.starts_with("fix 1: "),
        "fixed in the same worktree: {log}"
    );
    assert_eq!(
        git(std::path::Path::new(&ws), &["rev-parse", "HEAD"]).trim(),
        fixed
    );

    let s = l.session(&id).await;
    assert_eq!(s["workspace"], ws.as_str(), "same worktree: {s}");
    assert_ne!(s["activity"], "exited", "{s}");
    assert_eq!(
        s["meta"]["restart_for"],
        Value::Null,
        "nothing left due: {s}"
    );
    assert_eq!(ci_tracking(&s).0, 1, "counted once: {s}");
    // One restart, one send, and the agent was told once.
    let restarted = events_of(&l, &id, "agent.restarted").await;
    assert_eq!(restarted.len(), 1, "{restarted:?}");
    assert!(
        restarted[0].to_string().contains("ci-failed"),
        "{restarted:?}"
    );
    let sent = eventually(30, "the send recorded", || async {
        let e = events_of(&l, &id, "reaction.sent").await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["data"]["reaction"], "ci-failed");
    assert_eq!(sent[0]["data"]["delivered"], true);
    assert_eq!(sent[0]["data"]["via"], "restart");
    assert_eq!(
        told(&l.agent_home)
            .iter()
            .filter(|m| m.contains("Failed check: unit-tests"))
            .count(),
        1
    );
}

/// The agent asks its human something after opening its PR, a check fails meanwhile (not
/// typed onto the question), and the agent dies before anyone answers: the question goes with
/// it, the PR does not. The session goes back to its PR, sees the failed check, and the agent
/// is started again to fix it (before, the session ended `errored` and the PR was orphaned).
#[actix_web::test]
async fn an_agent_that_dies_while_asking_about_its_pr_is_restarted_for_the_failed_check() {
    let Some(l) = setup(true, &[]).await else {
        return;
    };
    let (id, s, first_head) = l.asking_about_its_pr_when_a_check_fails().await;
    let ws = s["workspace"].as_str().expect("workspace").to_string();
    let branch = s["branch"].as_str().expect("branch").to_string();

    // The agent dies while it waits (its terminal's process killed).
    let socket = flotilla::app::tmux_socket(&l.app.home);
    let (_, panes) = crate::fleet_tmux::tmux(
        &socket,
        &["list-panes", "-a", "-F", "#{pane_pid} #{pane_current_path}"],
    );
    let pid = panes
        .lines()
        .find_map(|l| l.split_once(' ').filter(|(_, p)| *p == ws).map(|(p, _)| p))
        .unwrap_or_else(|| panic!("the agent's pane in {ws}: {panes}"))
        .to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());

    l.wait_told("Failed check: unit-tests", 60).await;
    eventually(60, "the fix pushed", || async {
        l.head(&branch).filter(|h| *h != first_head)
    })
    .await;
    let s = l.session(&id).await;
    assert!(
        !["errored", "done", "killed"].contains(&s["state"].as_str().unwrap_or("")),
        "{s}"
    );
    assert_eq!(s["workspace"], ws.as_str(), "same worktree: {s}");
    let exited = events_of(&l, &id, "agent.exited").await;
    assert_eq!(exited.len(), 1, "{exited:?}");
}

/// A check fails while the agent waits on its human: the human is told at once (it may change
/// the answer), once however often the PR is read meanwhile; the agent is told once answered.
#[actix_web::test]
async fn a_check_failing_while_the_agent_asks_is_told_to_the_human_then_the_agent() {
    let hooks = crate::receivers::Receivers::start().await;
    let yaml = webhook_notifier(&hooks);
    let env = [
        ("FLOTILLA__GITHUB__POLL_INTERVAL", "1s"),
        ("FLOTILLA__GITHUB__RECONCILE_EVERY", "1"),
    ];
    let Some(l) = setup_yaml(true, &env, true, &yaml).await else {
        return;
    };
    let (id, s, first_head) = l.asking_about_its_pr_when_a_check_fails().await;
    let news = || l.notifications_where(|m| m.starts_with("While the agent waits for your answer"));
    let told_human = eventually(60, "the human told of the failed check", || async {
        let n = news().await;
        (!n.is_empty()).then_some(n)
    })
    .await;
    let message = told_human[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("Do you want to proceed?") && message.contains("unit-tests"),
        "{message}"
    );
    assert!(
        !told(&l.agent_home)
            .iter()
            .any(|m| m.contains("Failed check: unit-tests")),
        "typed onto the question"
    );
    // Polls read the same failure again: no news.
    let polls = l.gh.count("POST /graphql");
    eventually(30, "more polls", || async {
        (l.gh.count("POST /graphql") >= polls + 3).then_some(())
    })
    .await;
    let after_polls = news().await;
    assert_eq!(after_polls.len(), 1, "{after_polls:?}");
    // Another check fails: news again, within the notifications' dedupe window.
    l.gh.add_check_run(
        REPO,
        &first_head,
        "lint",
        Some("failure"),
        Some("unused import"),
    )
    .await;
    let told_again = eventually(60, "the human told of the second failure", || async {
        let n = news().await;
        (n.len() == 2).then_some(n)
    })
    .await;
    assert!(
        told_again.iter().any(|n| n.to_string().contains("lint")),
        "{told_again:?}"
    );

    let (code, v) = l
        .app
        .post(
            &format!("/api/v1/sessions/{id}/send"),
            json!({"message": "y", "question": s["waiting_for"]}),
        )
        .await;
    assert_eq!((code, &v["delivered"]), (200, &json!(true)), "{v}");
    assert_eq!(l.wait_told("Failed check: unit-tests", 60).await, 1);
}

/// A question answered at the agent's terminal (not through Flotilla) and asked again once
/// the agent worked on pages again, though it comes within the notifications' dedupe window:
/// it is a new wait. (It used to be taken for the first one's flap, and nobody was told.)
#[actix_web::test]
async fn a_question_answered_at_the_terminal_and_asked_again_later_pages_again() {
    let hooks = crate::receivers::Receivers::start().await;
    let Some(l) = setup_yaml(false, &[], true, &webhook_notifier(&hooks)).await else {
        return;
    };
    let id = l
        .app
        .spawn(json!({"project": "demo", "prompt": "ASK before going on"}))
        .await;
    let pages = || async {
        l.notifications_where(|m| m.contains("Do you want to proceed?"))
            .await
            .len()
    };
    let asked = || async {
        let s = l.session(&id).await;
        (s["state"] == "needs_input").then_some(())
    };
    eventually(60, "the question", asked).await;
    eventually(30, "its page", || async {
        (pages().await == 1).then_some(())
    })
    .await;
    // Answered at the terminal; the agent works on.
    let type_in = |text: &str| {
        let typed = std::process::Command::new("tmux")
            .args([
                "-L",
                &l.tmux.0,
                "send-keys",
                "-t",
                &format!("={id}:"),
                text,
                "Enter",
            ])
            .status()
            .expect("tmux");
        assert!(typed.success());
    };
    type_in("y");
    l.wait_state(&id, "working", 60).await;
    // Twenty seconds on (by the app's clock), the same question again.
    l.app.clock.advance(std::time::Duration::from_secs(20));
    type_in("ask again");
    eventually(60, "the question asked again", asked).await;
    eventually(30, "a second page", || async {
        (pages().await == 2).then_some(())
    })
    .await;
}

/// The scripted agent's conversation id (its one JSONL log under `home`).
fn conversation_id(home: &Path) -> String {
    let projects = home.join(".claude").join("projects");
    std::fs::read_dir(&projects)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .filter_map(|f| {
            f.path()
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .next()
        .expect("a conversation log")
}

/// `kill -9` after the machine decided to restart an exited agent for an instruction (the
/// decision committed, as the actor commits it before acting); `launched` says whether the
/// restarted agent was already running when Flotilla died. Either way, after the restart of
/// Flotilla, the agent runs and has the instruction exactly once.
async fn crash_during_a_restart(launched: bool) {
    use crate::server::{Scratch, ServerProc};
    use flotilla::domain::machine::{self, Effect, Event, EventKind};
    if !require_tool("tmux") || !require_tool("git") {
        return;
    }
    let gh = FakeGithub::start(TOKEN).await;
    let bare = gh.create_repo(REPO);
    gh.require_reviews(REPO);
    gh.watch_pushes();
    let dir = tempfile::tempdir().expect("tempdir");
    let agent_home = dir.path().join("agent-home");
    std::fs::create_dir_all(&agent_home).expect("mkdir");
    let agents = agents(&gh, &agent_home);
    // Webhooks only: nothing but the committed decision says CI failed.
    let extra = format!(
        "    runtime: tmux\n    agent: claude\n    scm: github\n    github_repo: {REPO}\ngithub: {{ api_url: \"{api}\", graphql_url: \"{api}/graphql\", token: {TOKEN}, webhook_secret: {SECRET}, poll_interval: 0s }}\n",
        api = gh.url
    );
    let s = Scratch::with_agents(dir, &agents, &extra);
    let socket = flotilla::app::tmux_socket(&s.home);
    let _tmux = TmuxGuard(socket.clone());
    let repo = s.dir.path().join("repo");
    git(
        &repo,
        &["remote", "add", "origin", bare.to_str().expect("utf-8")],
    );
    let mut server = ServerProc::start(s.dir.path(), &s.home, &s.cfg, s.port).await;
    gh.set_webhook(&format!("{}/webhooks/github", server.address), SECRET);
    let c = crate::helpers::http_client();
    let base = server.address.clone();
    let get = |path: String| {
        let (c, base) = (c.clone(), base.clone());
        async move {
            c.get(format!("{base}{path}"))
                .bearer_auth(crate::helpers::TOKEN)
                .send()
                .await
                .expect("get")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let post = |path: String, body: Value| {
        let (c, base) = (c.clone(), base.clone());
        async move {
            c.post(format!("{base}{path}"))
                .bearer_auth(crate::helpers::TOKEN)
                .json(&body)
                .send()
                .await
                .expect("post")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let v = post(
        "/api/v1/sessions".into(),
        json!({"project": "demo", "prompt": "OPEN_PR FIX crash during a restart"}),
    )
    .await;
    let id = v["id"].as_str().expect("id").to_string();
    let spath = format!("/api/v1/sessions/{id}");
    eventually(60, "the PR found", || async {
        let s = get(spath.clone()).await;
        (s["state"] == "review_pending").then_some(())
    })
    .await;
    post(format!("{spath}/send"), json!({"message": "exit 0"})).await;
    let exited = eventually(30, "the agent exited", || async {
        let s = get(spath.clone()).await;
        (s["activity"] == "exited").then_some(s)
    })
    .await;
    let ws = exited["workspace"].as_str().expect("workspace").to_string();
    let branch = exited["branch"].as_str().expect("branch").to_string();
    let first_head = gh.branch_sha(REPO, &branch).expect("pushed");
    server.kill9();

    // What the actor commits for a failed check before it acts, then Flotilla is gone.
    let db = format!("sqlite://{}/flotilla.db", s.home.display());
    let store = flotilla::store::open(&db).await.expect("store");
    let sid = flotilla::store::SessionId(id.clone());
    let snap = store.load_snapshot(&sid).await.expect("snapshot");
    let event = Event {
        at: machine::micros(chrono::Utc::now()),
        kind: EventKind::CiFailed {
            summary: "### Failed check: crash-check\nerror: boom".into(),
            fingerprint: "crash-check".into(),
        },
    };
    let policy = flotilla::domain::policy::Policy::defaults();
    let step = machine::step(&snap, &event, &policy);
    let due = match step.effects.as_slice() {
        [Effect::RestartAgent { due }] => due.clone(),
        other => panic!("a restart is decided: {other:?}"),
    };
    store
        .commit_transition(&flotilla::store::TransitionCommit {
            snapshot: step.snapshot.clone(),
            event: flotilla::store::NewEvent {
                session_id: Some(sid.clone()),
                kind: event.kind.name().into(),
                data: step.event_data(snap.session.state, &event),
                at: event.at,
            },
            notifications: vec![],
            instructions: Vec::new(),
        })
        .await
        .expect("commit");
    drop(store);
    let mut pane = None;
    if launched {
        // The restart had started the agent (resumed, the instruction as its first prompt).
        let prompt_file = s.home.join("prompts").join(format!("{id}.md"));
        let envs = [
            format!("HOME={}", agent_home.display()),
            format!("FLOTILLA_PROMPT_FILE={}", prompt_file.display()),
            "GIT_AUTHOR_NAME=a".into(),
            "GIT_AUTHOR_EMAIL=a@example.com".into(),
            "GIT_COMMITTER_NAME=a".into(),
            "GIT_COMMITTER_EMAIL=a@example.com".into(),
        ];
        let agent = crate::fleet_plugins::scripted_agent_path();
        let message = machine::launch_message(&due);
        let conv = conversation_id(&agent_home);
        let mut args = vec![
            "new-session",
            "-d",
            "-s",
            &id,
            "-c",
            &ws,
            "-P",
            "-F",
            "#{pane_id}",
            "env",
        ];
        args.extend(envs.iter().map(String::as_str));
        args.extend([
            agent.to_str().expect("utf-8"),
            "--resume",
            &conv,
            "--",
            &message,
        ]);
        let (ok, out) = crate::fleet_tmux::tmux(&socket, &args);
        assert!(ok, "{out}");
        pane = Some(out.trim().to_string());
        lifecycle_wait_told(&agent_home, "Failed check: crash-check").await;
    }

    let server = ServerProc::start(s.dir.path(), &s.home, &s.cfg, s.port).await;
    let s2 = eventually(60, "the restart finished", || async {
        let s = get(spath.clone()).await;
        (s["meta"]["restart_for"].is_null() && s["activity"] != "exited").then_some(s)
    })
    .await;
    // (Its state follows the fake GitHub, whose CI never failed: only the decision says so.)
    assert_eq!(s2["workspace"], ws.as_str(), "{s2}");
    let fixed = eventually(60, "the fix pushed", || async {
        gh.branch_sha(REPO, &branch).filter(|h| *h != first_head)
    })
    .await;
    assert!(!fixed.is_empty());
    let events = eventually(30, "the send recorded", || async {
        let v = get(format!("{spath}/events")).await;
        let e = v["events"].as_array().cloned().unwrap_or_default();
        e.iter().any(|e| e["kind"] == "reaction.sent").then_some(e)
    })
    .await;
    let count = |k: &str| events.iter().filter(|e| e["kind"] == k).count();
    assert_eq!(count("agent.restarted"), 1, "{events:?}");
    assert_eq!(count("agent.restart_failed"), 0, "{events:?}");
    assert_eq!(count("reaction.sent"), 1, "{events:?}");
    if let Some(p) = &pane {
        let restarted = events
            .iter()
            .find(|e| e["kind"] == "agent.restarted")
            .expect("agent.restarted");
        assert_eq!(
            restarted["data"]["event"]["handle"]["pane"],
            p.as_str(),
            "the agent started before the crash is adopted, not launched again: {restarted}"
        );
    }
    assert_eq!(
        told(&agent_home)
            .iter()
            .filter(|m| m.contains("Failed check: crash-check"))
            .count(),
        1,
        "told once"
    );
    assert_eq!(ci_tracking(&s2).0, 1, "counted once: {s2}");
    drop(server);
}

async fn lifecycle_wait_told(home: &Path, needle: &str) {
    eventually(30, &format!("the agent told {needle:?}"), || async {
        told(home).iter().any(|m| m.contains(needle)).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn kill_dash_nine_after_a_restart_was_decided_restarts_and_delivers_once() {
    crash_during_a_restart(false).await;
}

#[actix_web::test]
async fn kill_dash_nine_after_the_restarted_agent_ran_adopts_it_and_delivers_nothing_twice() {
    crash_during_a_restart(true).await;
}
