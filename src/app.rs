//! `Application`: binds the listener first (so the real port is known, port 0 in tests), opens
//! the store, builds the plugins and projects from `Settings`, starts the `FleetSupervisor`,
//! builds the read side (`read::ReadModel`) beside it, and starts the HTTP server with both.

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::dev::Server;
use actix_web::{App, HttpServer};

use crate::actors::fleet::{Fleet, Plugins, ProjectSpec};
use crate::actors::journal::Journal;
use crate::actors::supervisor::messages::ReconcileAll;
use crate::actors::supervisor::FleetSupervisor;
use crate::config::{self, AgentKind, AgentSettings, Settings, TrackerKind};
use crate::domain::policy::{
    Budget, BudgetAction, EscalateAfter, MergeMethod, Policy, Priority, ReactionAction,
    ReactionPolicy,
};
use crate::http::{self, AppState};
use crate::notify::outbox::{OutboxActor, OutboxSettings};
use crate::notify::routing::Router;
use crate::notify::{self, Notifications};
use crate::plugins::agents;
use crate::plugins::process::ProcessRuntime;
use crate::plugins::tmux::TmuxRuntime;
use crate::plugins::worktree::WorktreeWorkspace;
use crate::plugins::Agent;
use crate::store::{self, SharedStore};

/// The `flotilla` executable agents' hooks run: the configured one, else this executable
/// when it is `flotilla` (an embedding program, such as a test binary, has no `hook` verb).
fn cli_path(s: &crate::config::ServerSettings) -> Option<PathBuf> {
    if let Some(p) = s.cli_path.as_deref().filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    (exe.file_stem()? == "flotilla").then_some(exe)
}

/// The `flotilla` executable chat turns run their guard with: this executable when it is
/// `flotilla` (the guard must be this version, whatever `server.cli_path` wraps for hooks),
/// else the configured one (a program embedding Flotilla, such as a test binary).
fn turn_guard_exe(s: &crate::config::ServerSettings) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok();
    exe.filter(|e| e.file_stem().is_some_and(|n| n == "flotilla"))
        .or_else(|| cli_path(s))
}

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable (exit 2).
    #[error("{0}")]
    Config(String),
    /// Binding the listener failed.
    #[error("cannot listen on {addr}")]
    Bind {
        /// Address.
        addr: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error("cannot open the store at {url}")]
    Store {
        /// Redacted URL.
        url: String,
        /// Cause.
        #[source]
        source: store::StoreError,
    },
    /// Anything else at start-up.
    #[error("start-up failed")]
    Io(#[from] std::io::Error),
}

/// How many sessions may create workspaces and start agents at once.
const MAX_CONCURRENT_SPAWNS: usize = 8;

/// The key of agents' report tokens: created once (0600) under `$FLOTILLA_HOME`, so tokens
/// stay valid across restarts and re-adopted agents can still report.
fn report_key(home: &Path) -> Result<Vec<u8>, StartError> {
    use rand::RngCore;
    use std::os::unix::fs::OpenOptionsExt;
    let path = home.join("report.key");
    match std::fs::read(&path) {
        Ok(k) if k.len() >= 32 => return Ok(k),
        Ok(_) | Err(_) => {}
    }
    let mut key = vec![0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    std::io::Write::write_all(&mut f, &key)?;
    Ok(key)
}

/// A built, not yet running application.
pub struct Application {
    port: u16,
    server: Server,
    supervisor: Addr<FleetSupervisor>,
    store: SharedStore,
    /// The chat listeners (Telegram poll or webhook, Discord gateway), stopped after the
    /// server so a registered Telegram webhook is removed.
    chat_listeners: crate::plugins::chat::Listeners,
    /// The remote hosts' monitors (stopped with the application).
    _hosts: crate::plugins::hosts::MonitorGuard,
}

/// Converts the config's reaction table into the machine's policy.
pub fn policy_from(settings: &Settings, project: &str) -> Policy {
    let mut p = Policy::defaults();
    p.spawn_timeout = chrono_dur(settings.lifecycle.spawn_timeout.get());
    p.budget = settings
        .project(project)
        .and_then(|pr| pr.budget.as_ref())
        .map(|b| Budget {
            session_usd: b.session_usd,
            session_tokens: b.session_tokens,
            project_usd: b.project_usd,
            action: match b.action {
                config::BudgetAction::Stop => BudgetAction::Stop,
                config::BudgetAction::Escalate => BudgetAction::Escalate,
            },
        });
    p.merge_grace = chrono_dur(settings.lifecycle.merge_grace.get());
    p.abandon_after = chrono_dur(settings.lifecycle.abandon_after.get());
    p.reactions = settings
        .reactions_for(project)
        .into_iter()
        .map(|(k, r)| {
            let rp = ReactionPolicy {
                auto: r.auto,
                action: match r.action {
                    config::ReactionAction::SendToAgent => ReactionAction::SendToAgent,
                    config::ReactionAction::Notify => ReactionAction::Notify,
                    config::ReactionAction::AutoMerge => ReactionAction::AutoMerge,
                },
                message: r.message,
                priority: r.priority.map(|p| match p {
                    config::Priority::Urgent => Priority::Urgent,
                    config::Priority::Action => Priority::Action,
                    config::Priority::Warning => Priority::Warning,
                    config::Priority::Info => Priority::Info,
                }),
                retries: r.retries,
                escalate_after: r.escalate_after.map(|e| match e {
                    config::EscalateAfter::Attempts(n) => EscalateAfter::Attempts(n),
                    config::EscalateAfter::Duration(d) => EscalateAfter::After(chrono_dur(d.get())),
                }),
                threshold: r.threshold.map(|d| chrono_dur(d.get())),
                auto_merge: r.auto_merge,
                include_summary: r.include_summary,
                merge_method: match r.merge_method {
                    config::MergeMethod::Merge => MergeMethod::Merge,
                    config::MergeMethod::Squash => MergeMethod::Squash,
                    config::MergeMethod::Rebase => MergeMethod::Rebase,
                },
            };
            (k, rp)
        })
        .collect();
    p
}

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Builds the plugin registry: the runtimes and workspaces of this build, every built-in agent
/// kind under its own name, and an agent per `agents:` entry (which may shadow a built-in name).
pub fn plugins_from(settings: &Settings, home: &Path, clock: &crate::clock::Clock) -> Plugins {
    let mut p = Plugins::default();
    p.runtimes.insert(
        "process".into(),
        Arc::new(ProcessRuntime::new(home.join("runtime"))),
    );
    p.runtimes.insert(
        "tmux".into(),
        Arc::new(TmuxRuntime::new(tmux_socket(home), home.join("tmux"))),
    );
    p.workspaces
        .insert("worktree".into(), Arc::new(WorktreeWorkspace::new()));
    p.workspaces.insert(
        "clone".into(),
        Arc::new(crate::plugins::clone::CloneWorkspace),
    );
    let mut agents: HashMap<String, Arc<dyn Agent>> = HashMap::new();
    let built_in = AgentKind::BUILT_IN
        .iter()
        .map(|k| (k.as_str().to_string(), AgentSettings::built_in(*k)));
    let configured = settings.agents.iter().map(|(n, a)| (n.clone(), a.clone()));
    let prices = Arc::new(crate::pricing::PriceTable::from_settings(&settings.pricing));
    for (name, a) in built_in.chain(configured) {
        match agents::from_settings(&name, &a, &prices) {
            Ok(agent) => {
                agents.insert(name, agent);
            }
            // `validate` reports these; an unusable agent is a clear 422 at spawn.
            Err(e) => tracing::warn!(agent = %name, error = %e, "agent not registered"),
        }
    }
    p.agents = agents;
    p.scm = scm_from(settings, clock);
    p.trackers = trackers_from(settings);
    p.writebacks = settings
        .projects
        .iter()
        .map(|(name, project)| (name.clone(), project.writeback.clone()))
        .collect();
    p.hosts = crate::plugins::hosts::HostSet::new(&settings.hosts, home);
    for (name, host) in p.hosts.iter() {
        let plugin = crate::plugins::hosts::plugin_name(name);
        p.runtimes.insert(
            plugin.clone(),
            Arc::new(crate::plugins::remote_tmux::RemoteTmuxRuntime::new(
                host.clone(),
            )),
        );
        p.workspaces.insert(
            plugin,
            Arc::new(crate::plugins::hosts::workspace::RemoteWorktree::new(
                host.clone(),
            )),
        );
    }
    p
}

/// The tmux socket of the Flotilla instance living in `home` (see [`crate::plugins::tmux::socket_name`]).
pub fn tmux_socket(home: &Path) -> String {
    crate::plugins::tmux::socket_name(home)
}

/// Each project's tracker. A GitHub tracker needs the project's `github_repo`.
fn trackers_from(settings: &Settings) -> HashMap<String, Arc<dyn crate::plugins::Tracker>> {
    use crate::plugins::trackers::{github::GithubIssues, jira::JiraIssues, linear::LinearIssues};
    let timeout = settings.github.timeout.get();
    let mut out: HashMap<String, Arc<dyn crate::plugins::Tracker>> = HashMap::new();
    for (name, p) in &settings.projects {
        let built: Option<Result<Arc<dyn crate::plugins::Tracker>, _>> = match p.tracker {
            None => None,
            Some(TrackerKind::Github) => p
                .github_repo
                .as_deref()
                .map(|r| GithubIssues::new(&settings.github, r).map(|t| Arc::new(t) as Arc<_>)),
            Some(TrackerKind::Linear) => {
                Some(LinearIssues::new(&settings.linear, timeout).map(|t| Arc::new(t) as Arc<_>))
            }
            Some(TrackerKind::Jira) => {
                Some(JiraIssues::new(&settings.jira, timeout).map(|t| Arc::new(t) as Arc<_>))
            }
        };
        match built {
            Some(Ok(t)) => {
                out.insert(name.clone(), t);
            }
            // `validate` names the missing keys; spawns then use the issue id as the task.
            Some(Err(e)) => tracing::warn!(project = %name, error = %e, "tracker not available"),
            None => {}
        }
    }
    out
}

/// Polls each GitHub project with an intake label for labelled issues, every
/// `github.poll_interval` (none when it is 0s: `issues` webhooks only).
fn start_intake_poller(
    settings: &Settings,
    fleet: &Arc<Fleet>,
    intake: &crate::plugins::trackers::intake::Intake,
    supervisor: &Addr<FleetSupervisor>,
) {
    use crate::actors::intake::{IntakePoller, PolledProject};
    let every = settings.github.poll_interval.get();
    let projects: Vec<PolledProject> = intake
        .github_labels()
        .into_iter()
        .filter_map(|(project, label)| {
            let tracker = fleet.plugins.trackers.get(&project)?.clone();
            Some(PolledProject {
                project,
                label,
                tracker,
            })
        })
        .collect();
    if every.is_zero() || projects.is_empty() {
        return;
    }
    IntakePoller::new(
        projects,
        Arc::new(fleet.read_model()),
        supervisor.clone(),
        every,
    )
    .start();
}

/// The GitHub SCM, when any project has a `github_repo`, keeping rate-limit waits on `clock`.
/// Must run inside the runtime.
fn scm_from(
    settings: &Settings,
    clock: &crate::clock::Clock,
) -> Option<Arc<dyn crate::plugins::Scm>> {
    if !settings.projects.values().any(|p| p.github_repo.is_some()) {
        return None;
    }
    match crate::plugins::github::GithubScm::new(&settings.github, settings.github.timeout.get()) {
        Ok(scm) => Some(Arc::new(scm.on_clock(clock.clone()))),
        // `validate` reports a bad URL; without the plugin PRs are simply not followed.
        Err(e) => {
            tracing::error!(error = %e, "the github plugin could not be built: PRs are not followed");
            None
        }
    }
}

/// Agents' sandbox settings, and the files no sandbox may show: the config file and an
/// SQLite database (Flotilla's home is hidden as a whole).
fn sandbox_host(
    settings: &Settings,
    home: &std::path::Path,
) -> crate::actors::sandbox_host::SandboxHost {
    let mut hidden = Vec::new();
    if let Some(f) = &settings.config_file {
        hidden.push(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone()));
    }
    let db = settings.database_url(home);
    if let Some(path) = db.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        hidden.push(std::path::PathBuf::from(path));
    }
    crate::actors::sandbox_host::SandboxHost::new(
        settings
            .agents
            .iter()
            .map(|(name, a)| (name.clone(), a.sandbox.clone()))
            .collect(),
        hidden,
    )
}

/// Resolves every configured project.
pub fn projects_from(settings: &Settings) -> BTreeMap<String, ProjectSpec> {
    settings
        .projects
        .iter()
        .map(|(name, p)| {
            let rules = p
                .rules_path()
                .and_then(|path| std::fs::read_to_string(path).ok());
            let spec = ProjectSpec {
                name: name.clone(),
                repo: p.repo.clone(),
                remote: p.remote.clone(),
                default_branch: p.default_branch.clone(),
                prefix: settings.session_prefix(name),
                agent: p.agent(&settings.defaults).to_string(),
                runtime: p.runtime(&settings.defaults).as_str().to_string(),
                workspace: p.workspace(&settings.defaults).as_str().to_string(),
                policy: Arc::new(policy_from(settings, name)),
                rules,
                setup: p.setup.clone(),
                delete_branch_on_kill: p.delete_branch_on_kill,
                port_base: settings.lifecycle.port_base,
                orchestrator_agent: p.orchestrator_agent.clone(),
                github_repo: p.github_repo.clone(),
                sandbox: p.sandbox.clone(),
                host: p.host.clone(),
            };
            (name.clone(), spec)
        })
        .collect()
}

impl Application {
    /// Validates the settings, binds, opens the store and starts the actors and the server.
    /// Must run inside an actix `System`.
    ///
    /// # Errors
    /// `Config` for a token-less public bind; `Bind`; `Store`.
    pub async fn build(settings: Settings, home: PathBuf) -> Result<Self, StartError> {
        Self::build_with_clock(settings, home, crate::clock::Clock::system()).await
    }

    /// [`Application::build`] on `clock` (session timers, deadlines, chat turn timeouts):
    /// tests pass a [`crate::clock::ManualClock`]'s handle and move time themselves.
    ///
    /// # Errors
    /// As [`Application::build`].
    pub async fn build_with_clock(
        settings: Settings,
        home: PathBuf,
        clock: crate::clock::Clock,
    ) -> Result<Self, StartError> {
        let token = settings
            .server
            .token
            .as_ref()
            .map(|t| t.expose().to_string())
            .filter(|t| !t.is_empty());
        if token.is_none() && !settings.server.is_loopback() {
            return Err(StartError::Config(
                "server.token: required when server.bind is not a loopback address".into(),
            ));
        }
        if token.is_none() {
            tracing::warn!("no server.token configured: the API is open to anyone on this machine (loopback only)");
        }
        raise_open_files_limit();
        let addr = settings.server.bind_address();
        let listener = TcpListener::bind(&addr).map_err(|source| StartError::Bind {
            addr: addr.clone(),
            source,
        })?;
        let port = listener.local_addr()?.port();
        std::fs::create_dir_all(&home)?;
        let url = settings.database_url(&home);
        let store = store::open(&url)
            .await
            .map_err(|source| StartError::Store {
                url: store::redact_url(&url),
                source,
            })?;
        // Several nodes: session writes go through this node's leases (fenced).
        let cluster =
            crate::actors::cluster::Cluster::from_settings(&settings.cluster, store.clone());
        let store = match &cluster {
            Some(c) => {
                tracing::info!(node = %c.node(), "clustered: sessions are leased through the database");
                c.fenced_store()
            }
            None => store,
        };
        // Telegram chats that moved (groups upgraded to supergroups), shared by every Telegram
        // client of the process and kept in the store.
        let telegram_moves = crate::plugins::chat::telegram_api::MovedChats::stored(store.clone());
        let mut notifiers = notify::build_notifiers(&settings, &telegram_moves)
            .map_err(|e| StartError::Config(e.to_string()))?;
        let chat_platforms =
            crate::actors::chat::platforms::chat_platforms_from(&settings, &telegram_moves);
        crate::actors::chat::replace_chat_notifiers(
            &settings,
            &mut notifiers,
            &store,
            &chat_platforms,
        );
        if notifiers.is_empty() {
            tracing::warn!(
                "no notifiers configured: notifications are recorded in the event log only"
            );
        }
        let outbox = OutboxActor::new(
            store.clone(),
            notifiers,
            OutboxSettings::from_settings(&settings.notifications),
        )
        .on_clock(clock.clone())
        .claiming_as(
            cluster
                .as_ref()
                .map(|c| (c.node().0.clone(), c.timing().ttl)),
        )
        .start();
        let fleet = Arc::new(Fleet {
            journal: Arc::new(Journal::new(store.clone())),
            store: store.clone(),
            plugins: plugins_from(&settings, &home, &clock),
            projects: projects_from(&settings),
            home: home.clone(),
            max_restarts: settings.lifecycle.max_restarts,
            actor_timeout: settings.server.actor_timeout.get(),
            agent_env_passthrough: Vec::new(),
            report_key: report_key(&home)?,
            server_url: settings.server.local_url(port),
            cli_path: cli_path(&settings.server),
            sandbox: Arc::new(sandbox_host(&settings, &home)),
            spawn_permits: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_SPAWNS)),
            lifecycle_order: Default::default(),
            clock: clock.clone(),
            output_watch: Arc::new(crate::actors::watch::OutputWatch::new()),
            notifications: Notifications::new(
                Router::from_settings(&settings),
                Some(outbox.clone().recipient()),
            ),
        });
        let ready = Arc::new(AtomicBool::new(false));
        let supervisor = FleetSupervisor::new(fleet.clone(), ready)
            .with_cluster(cluster.clone())
            .start();
        let chat_cluster = cluster.clone();
        // Each chat turn's assistant runs under `flotilla turn-guard`, which kills it when
        // this node dies or, clustered, stops renewing its leases (the heartbeat file).
        let turn_guard = turn_guard_exe(&settings.server).map(|exe| {
            let alive = cluster.as_ref().and_then(|c| {
                let file =
                    crate::actors::cluster::heartbeat::HeartbeatFile::in_home(&home, c.node());
                match c.keep_heartbeat(file) {
                    Ok(()) => c.guard_heartbeat(),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot reset the cluster heartbeat file");
                        None
                    }
                }
            });
            crate::plugins::assistants::TurnGuard::new(exe, alive)
        });
        if let Some(c) = cluster {
            crate::actors::cluster::lease_manager::LeaseManagerActor::new(c, supervisor.clone())
                .start();
        }
        if let Some(scm) = fleet.plugins.scm.clone() {
            let every = settings.github.poll_interval.get();
            if every.is_zero() {
                tracing::info!(
                    "github.poll_interval is 0s: PRs are followed through webhooks only"
                );
            } else {
                crate::actors::poller::GithubPoller::new(
                    fleet.clone(),
                    scm,
                    supervisor.clone(),
                    every,
                    settings.github.reconcile_every,
                )
                .start();
            }
        }
        let intake = crate::plugins::trackers::intake::Intake::from_settings(&settings);
        start_intake_poller(&settings, &fleet, &intake, &supervisor);
        let hosts = &fleet.plugins.hosts;
        actix::spawn(crate::actors::host_events::forward(
            hosts.subscribe(),
            store.clone(),
            supervisor.clone(),
        ));
        let host_monitors = hosts.start();
        let reconcile = settings.lifecycle.reconcile_interval.get();
        if !reconcile.is_zero() {
            let sup = supervisor.clone();
            actix::spawn(async move {
                let mut tick = tokio::time::interval(reconcile);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if sup.send(ReconcileAll).await.is_err() {
                        break;
                    }
                }
            });
        }
        let extra_tokens = if token.is_some() {
            fleet
                .projects
                .keys()
                .map(|p| fleet.orchestrator_token(p))
                .collect()
        } else {
            Vec::new()
        };
        let chat = crate::actors::chat::start(
            &settings,
            store.clone(),
            &home,
            chat_platforms,
            crate::actors::chat::ChatLinks {
                fleet: Some(supervisor.clone()),
                journal: Some(fleet.journal.clone()),
                clock,
                cluster: chat_cluster,
                turn_guard,
            },
        )
        .map_err(|e| StartError::Config(format!("chat.assistant: {e}")))?;
        let chat_http = http::chat_test::ChatHttp::from(&chat);
        // The Telegram long poll and the Discord gateway feed the same inbox as the webhooks;
        // they are stopped when the server stops (or die with the actix system).
        let chat_listeners = crate::plugins::chat::start_listeners(
            &settings,
            chat.inbox.clone(),
            crate::plugins::chat::CALL_TIMEOUT,
            &telegram_moves,
        )
        .map_err(|e| StartError::Config(format!("chat platforms: {e}")))?;
        let checker = fleet.clone();
        let state = AppState {
            extra_tokens,
            check_report_token: Arc::new(move |id: &str, t: &str| {
                checker.check_report_token(id, t)
            }),
            supervisor: supervisor.clone(),
            reads: Arc::new(fleet.read_model()),
            output_watch: fleet.output_watch.clone(),
            outbox: outbox.recipient(),
            token,
            actor_timeout: settings.server.actor_timeout.get(),
            max_body_bytes: settings.server.max_body_bytes,
            output_lines: settings.lifecycle.output_lines,
            projects: settings.projects.keys().cloned().collect(),
            agents: {
                let mut agents: Vec<(String, Option<crate::preflight::AgentLaunch>)> = fleet
                    .plugins
                    .agents
                    .iter()
                    .map(|(name, a)| (name.clone(), a.preflight()))
                    .collect();
                agents.sort_by(|a, b| a.0.cmp(&b.0));
                agents
            },
            github_webhook_secret: settings.github.webhook_secret.clone(),
            linear_hook: crate::plugins::trackers::linear_hook::LinearHook::from_settings(
                &settings,
            )
            .map(Arc::new),
            intake: Arc::new(intake),
            chat_inbox: Some(chat.inbox.clone()),
            chat_conversations: Some(chat.supervisor.clone().recipient()),
            chat_webhooks: http::webhooks_chat::ChatWebhookSettings::from_settings(&settings)
                .with_telegram_moves(telegram_moves),
        };
        let shutdown = settings.server.shutdown_timeout.get();
        let body_timeout = settings.server.body_timeout.get();
        let webhook_gate = Arc::new(tokio::sync::Semaphore::new(
            settings.server.max_webhooks_in_flight,
        ));
        let server = HttpServer::new(move || {
            let st = state.clone();
            let ch = chat_http.clone();
            let gate = webhook_gate.clone();
            App::new()
                .wrap(actix_web::middleware::from_fn(move |req, next| {
                    http::middleware::webhook_gate(gate.clone(), req, next)
                }))
                .wrap(actix_web::middleware::from_fn(move |req, next| {
                    http::middleware::body_deadline(body_timeout, req, next)
                }))
                .wrap(actix_web::middleware::from_fn(http::middleware::observe))
                .configure(|cfg| http::chat_test::routes(cfg, &ch))
                .configure(|cfg| http::routes(cfg, &st))
        })
        .listen(listener)?
        .shutdown_timeout(shutdown.as_secs().max(1))
        .workers(2)
        .run();
        tracing::info!(%addr, port, store = %store::redact_url(&url), "flotilla listening");
        Ok(Application {
            port,
            server,
            supervisor,
            store,
            chat_listeners,
            _hosts: host_monitors,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The supervisor (tests and benches feed it directly).
    pub fn supervisor(&self) -> Addr<FleetSupervisor> {
        self.supervisor.clone()
    }

    /// The store (tests read it directly).
    pub fn store(&self) -> SharedStore {
        self.store.clone()
    }

    /// Serves until the server stops (SIGINT/SIGTERM).
    ///
    /// # Errors
    /// The server's I/O errors.
    pub async fn run_until_stopped(self) -> Result<(), std::io::Error> {
        let r = self.server.await;
        self.chat_listeners.stop().await;
        r
    }

    /// A handle to stop the server (tests).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Runs the server on the current arbiter in the background and returns its handle.
    pub fn spawn(self) -> actix_web::dev::ServerHandle {
        let h = self.server.handle();
        actix::spawn(async move {
            // The host monitors run as long as the server.
            let _hosts = self._hosts;
            if let Err(e) = self.server.await {
                tracing::error!(error = %e, "server stopped with an error");
            }
            self.chat_listeners.stop().await;
        });
        h
    }
}

/// Raises this process's soft limit on open files to its hard limit: every connection, agent
/// log and watcher is a file descriptor, and the usual soft default (1,024) is what a burst of
/// slow clients would exhaust first.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= lim.rlim_max {
            return;
        }
        let from = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
            tracing::debug!(from, to = lim.rlim_max, "raised the open files limit");
        }
    }
}
