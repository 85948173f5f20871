//! GitHub quota of the lifecycle poller: 1,000 sessions across 10 repositories, each with an
//! open PR on the fake GitHub (real bare repositories), polled by [`poll_once`] exactly as the
//! `GithubPoller` does. Reports the requests one poll cycle sends
//! - after warm-up when nothing changed (goal: one conditional request per repo, all 304);
//! - when 10% of the PRs changed (a comment bumps them);
//! - on a reconcile cycle (every `github.reconcile_every` polls) with nothing changed.
//!
//! `FLOTILLA_BENCH_PRS` changes the PR count (default 1,000; split over 10 repos). Seeding
//! pushes a real branch per PR, so it takes a while.

#[path = "../tests/support/fake_github.rs"]
mod fake_github;
#[path = "../tests/support/fake_server.rs"]
mod fake_server;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use fake_github::FakeGithub;
use flotilla::actors::fleet::{Fleet, Plugins, ProjectSpec};
use flotilla::actors::journal::Journal;
use flotilla::actors::poller::poll_once;
use flotilla::actors::supervisor::messages::ScmObserved;
use flotilla::config::{GithubSettings, HumanDuration, Secret};
use flotilla::plugins::github::GithubScm;
use flotilla::store::{self, NewEvent, NewSession, PrRef, SessionState, TransitionCommit};

const TOKEN: &str = "ghp_bench";
const REPOS: usize = 10;

/// Counts the sessions the poller hands an observation to.
struct Sink(Arc<AtomicUsize>);

impl Actor for Sink {
    type Context = Context<Self>;
}

impl Handler<ScmObserved> for Sink {
    type Result = ();
    fn handle(&mut self, msg: ScmObserved, _ctx: &mut Self::Context) {
        self.0.fetch_add(msg.checks.len(), Ordering::Relaxed);
    }
}

fn print_counts(label: &str, gh: &FakeGithub, observed: usize) {
    let counts = gh.counts();
    let total: u64 = counts.values().sum();
    println!("{label}: {total} requests, {observed} sessions observed");
    for ((kind, status), n) in counts {
        println!("    {n:>5} × {kind} → {status}");
    }
}

fn main() {
    let prs: usize = std::env::var("FLOTILLA_BENCH_PRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let per_repo = prs.div_ceil(REPOS);
    let sys = actix::System::new();
    sys.block_on(async move {
        let gh = FakeGithub::start(TOKEN).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store::open(&format!("sqlite://{}/bench.db", dir.path().display()))
            .await
            .expect("store");
        let t = Instant::now();
        let mut projects = BTreeMap::new();
        let mut numbers: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for r in 0..REPOS {
            let repo = format!("acme/service-{r}");
            gh.create_repo(&repo);
            let project = format!("p{r}");
            projects.insert(
                project.clone(),
                ProjectSpec {
                    prefix: project.clone(),
                    github_repo: Some(repo.clone()),
                    ..ProjectSpec::simple(&project, dir.path().to_path_buf(), "scripted", "tmux")
                },
            );
            let opened = gh.open_many(&repo, "session", per_repo).await;
            for (i, n) in opened.iter().enumerate() {
                let (rec, _) = store
                    .create_session(&NewSession {
                        project: project.clone(),
                        prefix: project.clone(),
                        agent: "claude-code".into(),
                        runtime: "tmux".into(),
                        workspace_kind: "worktree".into(),
                        branch: Some(format!("session-{i}")),
                        issue: None,
                        prompt: Some("work".into()),
                        skip_numbers: vec![],
                        fixed_id: None,
                        meta: serde_json::Value::Null,
                        at: Utc::now(),
                    })
                    .await
                    .expect("create");
                let mut snap = store.load_snapshot(&rec.id).await.expect("load");
                snap.session.state = SessionState::ReviewPending;
                snap.session.pr = Some(PrRef {
                    number: *n,
                    url: format!("{}/{repo}/pull/{n}", gh.url),
                });
                store
                    .commit_transition(&TransitionCommit {
                        snapshot: snap.clone(),
                        event: NewEvent {
                            session_id: Some(rec.id.clone()),
                            kind: "pr.opened".into(),
                            data: serde_json::json!({}),
                            at: Utc::now(),
                        },
                        notifications: vec![],
                        instructions: Vec::new(),
                    })
                    .await
                    .expect("commit");
            }
            numbers.insert(repo, opened);
        }
        eprintln!(
            "lifecycle bench: seeded {} PRs in {REPOS} repos in {:?}",
            numbers.values().map(Vec::len).sum::<usize>(),
            t.elapsed()
        );
        let fleet = Fleet {
            journal: Arc::new(Journal::new(store.clone())),
            store: store.clone(),
            plugins: Plugins::default(),
            projects,
            home: dir.path().to_path_buf(),
            max_restarts: 3,
            actor_timeout: Duration::from_secs(60),
            agent_env_passthrough: vec![],
            report_key: vec![7; 32],
            server_url: "http://127.0.0.1:1".into(),
            cli_path: None,
            sandbox: Default::default(),
            spawn_permits: Arc::new(tokio::sync::Semaphore::new(8)),
            lifecycle_order: Default::default(),
            clock: flotilla::clock::Clock::system(),
            output_watch: Arc::new(flotilla::actors::watch::OutputWatch::new()),
            notifications: Default::default(),
        };
        let settings = GithubSettings {
            api_url: gh.url.clone(),
            graphql_url: format!("{}/graphql", gh.url),
            token: Some(Secret::new(TOKEN)),
            webhook_secret: None,
            bot_login: None,
            poll_interval: HumanDuration::from_secs(30),
            reconcile_every: 10,
            timeout: HumanDuration::from_secs(30),
            ignore_checks: vec![],
        };
        let scm = GithubScm::new(&settings, Duration::from_secs(30)).expect("scm");
        let observed = Arc::new(AtomicUsize::new(0));
        let sink = Sink(observed.clone()).start().recipient();

        // Warm-up: the first poll reads everything (and stores the ETags).
        gh.reset_counts();
        let t = Instant::now();
        poll_once(&fleet, &scm, &sink, true).await;
        tokio::task::yield_now().await;
        print_counts(
            &format!("first poll (reconcile) in {:?}", t.elapsed()),
            &gh,
            observed.swap(0, Ordering::Relaxed),
        );

        gh.reset_counts();
        let t = Instant::now();
        poll_once(&fleet, &scm, &sink, false).await;
        tokio::task::yield_now().await;
        print_counts(
            &format!("nothing changed in {:?}", t.elapsed()),
            &gh,
            observed.swap(0, Ordering::Relaxed),
        );

        // 10% of the PRs change (a comment bumps `updated_at`), spread over every repo.
        for (repo, ns) in &numbers {
            for n in ns.iter().step_by(10) {
                gh.add_comment(repo, *n, "reviewer", "Looks close; one question.")
                    .await;
            }
        }
        gh.reset_counts();
        let t = Instant::now();
        poll_once(&fleet, &scm, &sink, false).await;
        tokio::task::yield_now().await;
        print_counts(
            &format!("10% changed in {:?}", t.elapsed()),
            &gh,
            observed.swap(0, Ordering::Relaxed),
        );

        gh.reset_counts();
        let t = Instant::now();
        poll_once(&fleet, &scm, &sink, true).await;
        tokio::task::yield_now().await;
        print_counts(
            &format!("reconcile, nothing changed, in {:?}", t.elapsed()),
            &gh,
            observed.swap(0, Ordering::Relaxed),
        );
    });
}
