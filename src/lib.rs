//! Flotilla runs a fleet of AI coding agents — each in its own git worktree, branch and
//! runtime — watches every session through a persisted state machine, and reacts by itself.
//!
//! # Layout
//! - [`config`]: the `Settings` tree, layered loading, `validate()`, `flotilla init`.
//! - [`store`]: the `Store` trait and its SQLite and PostgreSQL implementations; all SQL.
//! - [`domain`]: the pure core every other module builds on and that imports none of them:
//!   the session `machine` (events, effects), its `policy` and priorities, typed reaction and
//!   timer `keys`, session and PR types, `pr_events`, and a chat turn's `step`.
//! - [`actors`]: the `FleetSupervisor`, one `SessionActor` per session (a shell around
//!   `domain::machine`), the chat bridge's actors, and the `journal` that persists and
//!   publishes events in order.
//! - [`plugins`]: one trait per slot (Runtime, Agent, Workspace, Tracker, Scm, Notifier,
//!   ChatPlatform, Assistant) and the implementations: `process` runtime, `command` agent,
//!   `worktree` workspace, the notifiers.
//! - [`http`]: the actix-web edge: REST, SSE, WebSocket, health and metrics, the web
//!   dashboard (embedded from `web/`) and terminal attach; commands are messages to actors,
//!   reads go to [`read`].
//! - [`read`]: the read side: sessions, events and the live feed, output, attach info, the
//!   board, orphans and conversations, answered from the store without an actor.
//! - [`notify`]: notification routing (pure) and the outbox actor that delivers them.
//! - [`cluster`]: several nodes on one PostgreSQL: node identity, session leases renewed by
//!   the lease manager, fenced writes, the command bus to a session's owner.
//! - [`chat`]: the chat bridge's pure logic (command parsing, templates, path checks, the
//!   conversations overview); its actors are in `actors::chat`, its turn step in
//!   `domain::chat`.
//! - [`pricing`]: what tokens cost when an agent reports none (the `pricing:` table over
//!   built-in list prices).
//! - [`preflight`]: can this machine start the configured agents? (spawn-time checks and
//!   `flotilla doctor`).
//! - [`hosts`]: agents on remote hosts over SSH (the `hosts:` section, the SSH transport,
//!   placement, each host's event stream, worktrees on the host).
//! - [`sandbox`]: the bubblewrap sandbox agents may run in, and its egress proxy.
//! - [`clock`]: the injected clock timers and deadlines read (system, or moved by tests).
//! - [`tasks`]: work run on its own task to its end, whoever awaits it.
//! - [`app`]: `Application`, which wires the above together.
//! - [`cli`]: the `flotilla` command line (server and client verbs).
//! - [`telemetry`]: tracing subscriber and Prometheus metrics.
#![warn(missing_docs)]

pub mod actors;
pub mod app;
pub mod chat;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod http;
pub mod notify;
pub mod plugins;
pub mod preflight;
pub mod pricing;
pub mod read;
pub mod sandbox;
pub mod store;
pub mod tasks;
pub mod telemetry;
