//! The `flotilla` command line: `serve`, `init` and `doctor` run locally; the other verbs are clients of
//! a running service's REST API (`--server`, token from `--token`, `$FLOTILLA_TOKEN` or the
//! config). Exit codes (INTERFACE.md): 0 success, 1 failed operation, 2 bad usage or config.

pub mod client;
mod verbs;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

/// Exit code of a failed operation.
pub const EXIT_FAILED: i32 = 1;
/// Exit code of bad usage or bad configuration.
pub const EXIT_USAGE: i32 = 2;

/// Runs a fleet of AI coding agents.
#[derive(Debug, Parser)]
#[command(name = "flotilla", version, about, propagate_version = true)]
pub struct Cli {
    /// Config file (default: ./flotilla.yaml, or $FLOTILLA_CONFIG).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Server URL for client verbs (default: from the config's server.bind and port).
    #[arg(long, global = true, env = "FLOTILLA_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// API token for client verbs (default: $FLOTILLA_TOKEN, then server.token).
    #[arg(long, global = true, env = "FLOTILLA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Log format (default: the config's log.format, else text).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (embedded SQLite unless database.url says otherwise).
    Serve,
    /// Write a commented flotilla.yaml for the git repository in the current directory.
    Init {
        /// Overwrite an existing flotilla.yaml.
        #[arg(long)]
        force: bool,
    },
    /// Show sessions as a table.
    Status {
        /// Only this project.
        #[arg(long, short)]
        project: Option<String>,
        /// Only these states (comma-separated).
        #[arg(long)]
        state: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// List runtime instances and workspaces no live session owns.
        #[arg(long)]
        orphans: bool,
    },
    /// Start a session.
    Spawn {
        /// Project name (optional when exactly one project is configured).
        #[arg(long, short)]
        project: Option<String>,
        /// Task text.
        #[arg(long)]
        prompt: Option<String>,
        /// Tracker issue id.
        issue: Option<String>,
        /// Agent override.
        #[arg(long)]
        agent: Option<String>,
        /// Branch override.
        #[arg(long)]
        branch: Option<String>,
        /// Run on this host under `hosts:` (or `auto`: the least-loaded one).
        #[arg(long)]
        host: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Return once the id is reserved instead of waiting for the agent to start.
        #[arg(long)]
        no_wait: bool,
    },
    /// Start one session per issue (from arguments or a file), skipping issues that already
    /// have a live session.
    BatchSpawn {
        /// Project name (optional when exactly one project is configured).
        #[arg(long, short)]
        project: Option<String>,
        /// Issue ids.
        issues: Vec<String>,
        /// A file with one issue id per line (`#` starts a comment).
        #[arg(long, short)]
        file: Option<PathBuf>,
        /// Agent override.
        #[arg(long)]
        agent: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start (or attach to) the project's orchestrator agent; never two.
    Start {
        /// Project name (optional when exactly one project is configured).
        #[arg(long, short)]
        project: Option<String>,
        /// Do not attach to its terminal.
        #[arg(long)]
        no_attach: bool,
    },
    /// Attach to a session's terminal.
    Attach {
        /// Session id.
        session: String,
    },
    /// (Run by an agent's hooks) read one hook event on stdin and report what it means
    /// (e.g. a permission dialog: `needs_input` with what is asked). Always exits 0 and prints
    /// nothing, so it never decides anything for the agent.
    Hook {
        /// Which agent's hook format.
        #[arg(value_enum)]
        agent: HookAgent,
    },
    /// (The first program inside an agent's sandbox) bridge loopback ports to the egress
    /// proxy, apply the resource limits, then run the agent in its place.
    #[command(hide = true)]
    SandboxExec {
        /// The egress proxy's Unix socket.
        #[arg(long)]
        proxy: Option<std::path::PathBuf>,
        /// Serve an HTTP proxy here (bridged to `--proxy`).
        #[arg(long)]
        bridge: Option<std::net::SocketAddr>,
        /// Forward this loopback address to the same address on the host.
        #[arg(long)]
        forward: Vec<std::net::SocketAddr>,
        /// RLIMIT_NPROC.
        #[arg(long)]
        processes: Option<u64>,
        /// RLIMIT_AS in MiB.
        #[arg(long)]
        memory_mb: Option<u64>,
        /// RLIMIT_CPU in seconds.
        #[arg(long)]
        cpu_seconds: Option<u64>,
        /// The agent's argument vector, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// (Run by the node around each chat assistant) start the assistant in this process's
    /// group, forward its exit status, and kill the group when the node is gone or its
    /// cluster heartbeat file is older than `--within-ms`.
    #[command(hide = true)]
    TurnGuard {
        /// The node's pid (default: this process's parent when it starts).
        #[arg(long)]
        parent: Option<u32>,
        /// The node's heartbeat file (clustered), touched after each lease renewal.
        #[arg(long, requires = "within_ms")]
        alive: Option<std::path::PathBuf>,
        /// How old the heartbeat file may get, in milliseconds.
        #[arg(long, requires = "alive")]
        within_ms: Option<u64>,
        /// The assistant's argument vector, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// (For agents) report your own state; uses $FLOTILLA_SESSION_ID, $FLOTILLA_REPORT_TOKEN
    /// and $FLOTILLA_SERVER.
    Report {
        /// The state.
        #[arg(value_enum)]
        state: crate::domain::machine::ReportedState,
        /// A note.
        #[arg(long)]
        note: Option<String>,
        /// Your PR's URL.
        #[arg(long)]
        pr_url: Option<String>,
        /// Your PR's number.
        #[arg(long)]
        pr_number: Option<i64>,
    },
    /// Send a message to a session's agent.
    Send {
        /// Session id.
        session: String,
        /// Answer only this question (as `waiting_for` or the notification worded it): when
        /// the session now asks another, nothing is typed and the command fails saying which.
        #[arg(long)]
        question: Option<String>,
        /// The message (words are joined with spaces).
        #[arg(required = true)]
        message: Vec<String>,
    },
    /// Kill a session (idempotent).
    Kill {
        /// Session id.
        session: String,
    },
    /// Restore a dead or stuck session.
    Restore {
        /// Session id.
        session: String,
    },
    /// Merge a session's PR.
    Merge {
        /// Session id.
        session: String,
    },
    /// Print events, then follow the live stream.
    Logs {
        /// Only this session.
        session: Option<String>,
        /// Start after this event id.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// Print what is stored and exit.
        #[arg(long)]
        no_follow: bool,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Check this machine against the config (git, tmux, the database, every agent's CLI,
    /// version, credentials and first-run set-up, the sandbox); needs no running server.
    /// Exits 1 when something a project needs is missing.
    Doctor {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Agents whose hook events `flotilla hook` understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "kebab-case")]
pub enum HookAgent {
    /// Claude Code's hooks (`PermissionRequest`, `Notification`).
    ClaudeCode,
    /// Aider's `--notifications-command`: aider now waits for its human (a question, or its
    /// next message). Reads nothing (aider's stdin is the terminal).
    Aider,
}

/// Parses arguments and runs; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    verbs::run(cli)
}
