//! A typed way to start a test app: the base configuration of [`write_config_agents`] (the
//! `demo` project on the process runtime, the `scripted` echo agent), then edits of the
//! parsed `Settings` in Rust, checked by the compiler, instead of YAML strings concatenated
//! into the project's lines.
//!
//! ```ignore
//! let app = AppBuilder::new()
//!     .agent_command("slow", &["sleep", "600"])
//!     .project(|p| p.agent = Some("slow".into()))
//!     .start()
//!     .await;
//! ```

use flotilla::config::{
    load_with, AgentKind, AgentSettings, LoadOptions, ProjectSettings, Settings,
};

use crate::helpers::*;

type Edit = Box<dyn FnOnce(&mut Settings)>;

/// Builds a [`TestApp`] from typed edits of its settings.
pub struct AppBuilder {
    backend: Backend,
    edits: Vec<Edit>,
}

impl Default for AppBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl AppBuilder {
    /// SQLite, the base configuration, no edits.
    pub fn new() -> Self {
        AppBuilder {
            backend: Backend::Sqlite,
            edits: Vec::new(),
        }
    }

    /// On `backend` instead of SQLite.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Any edit of the settings.
    pub fn settings(mut self, f: impl FnOnce(&mut Settings) + 'static) -> Self {
        self.edits.push(Box::new(f));
        self
    }

    /// An edit of the `demo` project.
    pub fn project(self, f: impl FnOnce(&mut ProjectSettings) + 'static) -> Self {
        self.settings(|s| f(s.projects.get_mut("demo").expect("the demo project")))
    }

    /// Adds (or replaces) agent `name`, a `command` agent running `argv`.
    pub fn agent_command(self, name: &str, argv: &[&str]) -> Self {
        let name = name.to_string();
        let mut agent = AgentSettings::built_in(AgentKind::Command);
        agent.command = argv.iter().map(|a| a.to_string()).collect();
        self.settings(move |s| {
            s.agents.insert(name, agent);
        })
    }

    /// Starts the app; `None` when the backend is unavailable here (PostgreSQL on a laptop).
    pub async fn try_start(self) -> Option<TestApp> {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        let repo = make_repo(dir.path());
        let db = match self.backend {
            Backend::Sqlite => format!("sqlite://{}/flotilla.db", home.display()),
            Backend::Postgres => fresh_pg_url().await?,
        };
        let agents = format!("  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n");
        let cfg = write_config_agents(dir.path(), &repo, &db, &agents, "");
        let mut settings = load_with(&LoadOptions {
            config_path: Some(cfg),
            cwd: dir.path().to_path_buf(),
            env: Default::default(),
        })
        .expect("the base config loads");
        for edit in self.edits {
            edit(&mut settings);
        }
        start_app(settings, dir, home, repo).await
    }

    /// [`AppBuilder::try_start`] on a backend that must be there.
    pub async fn start(self) -> TestApp {
        self.try_start().await.expect("the app starts")
    }
}
