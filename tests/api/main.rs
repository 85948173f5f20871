//! One integration-test binary (fast to link), one module per area.

mod actors;
mod answer_moved_on;
mod answer_race;
mod app_builder;
mod bad_input;
mod chat;
mod chat_bridge;
mod chat_contracts;
mod chat_driver;
mod chat_fidelity;
mod chat_jira_repos;
mod chat_platforms;
mod chat_replies;
mod cli;
mod cluster;
mod cluster_chat;
mod crash;
mod crash_points;
mod dashboard;
mod events;
mod exit_grace;
mod exit_output;
#[path = "../support/fake_anthropic.rs"]
mod fake_anthropic;
#[path = "../support/fake_discord.rs"]
mod fake_discord;
#[path = "../support/fake_github.rs"]
mod fake_github;
#[path = "../support/fake_jira.rs"]
mod fake_jira;
#[path = "../support/fake_openai.rs"]
mod fake_openai;
#[path = "../support/fake_server.rs"]
mod fake_server;
#[path = "../support/fake_slack.rs"]
mod fake_slack;
#[path = "../support/fake_telegram.rs"]
mod fake_telegram;
#[path = "../support/fake_trackers.rs"]
mod fake_trackers;
mod fleet;
mod fleet_plugins;
mod fleet_tmux;
mod github;
mod github_webhooks;
mod helpers;
mod hooked_tmux;
mod lifecycle;
mod lifecycle_checks;
mod lifecycle_linear;
mod metrics;
mod notifications;
mod openapi_contract;
mod probe_race;
mod real_aider;
mod real_claude_answer;
mod real_claude_api_errors;
mod real_claude_chat;
mod real_claude_delivery;
mod real_claude_first_run;
mod real_claude_fleet;
mod real_claude_headless;
mod real_claude_many;
mod real_claude_pr_loop;
mod real_claude_workflows;
mod real_codex;
mod real_codex_chat;
mod real_codex_fleet;
mod real_crash;
mod real_fleet;
mod real_opencode;
mod real_opencode_fleet;
mod real_pr_loop;
mod real_tmux;
#[path = "../support/receivers.rs"]
mod receivers;
mod remote_hosts;
mod runtime_secrets;
mod sandbox;
mod secrets_scan;
mod server;
mod sessions;
mod spawn_branches;
#[path = "../support/sshd.rs"]
mod sshd;
mod tracker_contracts;
mod tracker_intake;
mod tracker_writeback;
mod trackers;
mod turn_guard;
