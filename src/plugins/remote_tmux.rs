//! The `ssh:<host>` runtime: the [`TmuxRuntime`] on a remote host, its tmux commands sent
//! through the host's SSH transport ([`crate::plugins::hosts::ssh`]). What the local runtime reads from
//! `/proc` comes from the host's state instead ([`crate::plugins::hosts::state`]), which the host's one
//! event stream keeps current ([`crate::plugins::hosts::monitor`]):
//! - **exit**: the host's tmux server appends `exit SESSION PANE STATUS` to an events file
//!   (a `pane-died` hook set in the launch script); [`Runtime::wait_exit`] waits for that
//!   change of the state, no subprocess per session;
//! - **output**: the stream mirrors each pane log into a local file, the handle's `log`, so
//!   the output watch and `last_output_at` work as for a local agent;
//! - **liveness** ([`Runtime::is_alive`]) answers from the state; while the host cannot be
//!   reached it answers an error (`host_unreachable: NAME`), never "gone".
//!
//! The prompt file is copied to the host (`<work_dir>/prompts/`) by the call that starts tmux
//! (its bytes ahead of tmux's script on stdin), and `FLOTILLA_PROMPT_FILE` points there.
//! Sends, answers, output and attach are the tmux runtime's, over SSH.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::proc::zombie_status;
use super::tmux::{session_name, RemoteFile, TmuxRuntime};
use super::{
    AttachInfo, LaunchSpec, OtherQuestion, PluginError, PluginResult, RemoteTmuxHandle, Runtime,
    RuntimeHandle, ScreenQuestion, TmuxHandle,
};
use crate::plugins::hosts::state::{Host, PaneStatus};

/// How long a pane tmux shows dead may wait for tmux to record its status (see
/// [`PaneStatus::Reaping`]) before it is read otherwise.
const STATUS_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
/// Timeout of the read of a zombie's status on the host.
const PROC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Agents in tmux on one remote host.
pub struct RemoteTmuxRuntime {
    host: Arc<Host>,
    tmux: TmuxRuntime,
}

impl RemoteTmuxRuntime {
    /// The runtime of `host`.
    pub fn new(host: Arc<Host>) -> Self {
        let tmux = TmuxRuntime::over_ssh(
            host.socket.clone(),
            host.logs_dir(),
            host.ssh.clone(),
            host.exit_hook(),
        );
        RemoteTmuxRuntime { host, tmux }
    }

    fn parse<'a>(&self, h: &'a RuntimeHandle) -> PluginResult<&'a RemoteTmuxHandle> {
        let r = h.remote()?;
        if r.host != self.host.name {
            return Err(PluginError::Invalid(format!(
                "a handle of host {}, not {}",
                r.host, self.host.name
            )));
        }
        Ok(r)
    }

    /// The error of every call while the host cannot be reached.
    fn unreachable(&self) -> PluginError {
        PluginError::Unreachable {
            service: "ssh",
            detail: format!("host_unreachable: {}", self.host.name),
        }
    }

    /// The agent must still run to take keys.
    fn check_alive(&self, h: &RemoteTmuxHandle) -> PluginResult<()> {
        match self.host.pane(&h.tmux.session, &h.tmux.pane) {
            PaneStatus::Alive => Ok(()),
            PaneStatus::Ended(_) | PaneStatus::Reaping => Err(PluginError::NotFound(format!(
                "agent in tmux session {} on host {}",
                h.tmux.session, self.host.name
            ))),
            PaneStatus::Unknown => Err(self.unreachable()),
        }
    }

    /// The status of a pane tmux has shown dead for [`STATUS_WAIT`] without recording one:
    /// from one more listing (its `pane-died` event may have fallen between two streams),
    /// else from the host's `/proc`: tmux 3.3 sometimes never reaps a killed pane's process,
    /// and the zombie (whose pid nothing else can take while it lasts) still holds its status.
    /// `None` when neither has it (a host without `/proc`).
    async fn status_after_wait(&self, h: &RemoteTmuxHandle) -> Option<i32> {
        if let Err(e) = crate::plugins::hosts::monitor::list(&self.host).await {
            tracing::debug!(host = %self.host.name, error = %e, "listing an unreaped pane failed");
        }
        if let PaneStatus::Ended(code) = self.host.pane(&h.tmux.session, &h.tmux.pane) {
            return code;
        }
        let stat = format!("/proc/{}/stat", h.tmux.pane_pid);
        match self.host.ssh.run(&["cat", &stat], None, PROC_TIMEOUT).await {
            Ok(line) => zombie_status(&line, None),
            Err(e) => {
                tracing::debug!(host = %self.host.name, error = %e, "no zombie status on the host");
                None
            }
        }
    }

    fn local_handle(h: &RemoteTmuxHandle) -> RuntimeHandle {
        RuntimeHandle::Tmux(h.tmux.clone())
    }

    fn handle(&self, name: String, pane: String, pid: i32) -> RemoteTmuxHandle {
        RemoteTmuxHandle {
            host: self.host.name.clone(),
            remote_log: self.host.remote_log(&name),
            tmux: TmuxHandle {
                socket: self.host.socket.clone(),
                log: self.host.mirror_log(&name),
                session: name,
                pane,
                pane_pid: pid,
                // The host's clock ticks are not ours: liveness comes from the host's state.
                start_ticks: 0,
            },
        }
    }
}

#[async_trait]
impl Runtime for RemoteTmuxRuntime {
    fn name(&self) -> &'static str {
        "ssh"
    }

    async fn create(&self, spec: &LaunchSpec) -> PluginResult<RuntimeHandle> {
        if spec.argv.is_empty() {
            return Err(PluginError::Invalid("empty agent command".into()));
        }
        if self.host.reachable() == Some(false) {
            return Err(self.unreachable());
        }
        let name = session_name(&spec.session_id);
        let mut spec = spec.clone();
        let local = spec.env.get("FLOTILLA_PROMPT_FILE").cloned();
        let text = match &local {
            Some(p) => tokio::fs::read(p).await?,
            None => Vec::new(),
        };
        let remote = self.host.prompts_dir().join(format!("{name}.md"));
        if let Some(local) = local {
            let remote = remote.to_string_lossy().into_owned();
            for a in spec.argv.iter_mut().filter(|a| **a == local) {
                a.clone_from(&remote);
            }
            spec.env.insert("FLOTILLA_PROMPT_FILE".into(), remote);
        }
        tokio::fs::create_dir_all(&self.host.mirror_dir).await?;
        tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.host.mirror_log(&name))
            .await?;
        let log = self.host.remote_log(&name);
        // The prompt goes with the launch: one ssh call writes it and starts tmux.
        let (logs, prompts) = (self.host.logs_dir(), self.host.prompts_dir());
        let prompt = RemoteFile {
            path: &remote,
            dirs: [&logs, &prompts],
            bytes: &text,
        };
        let Some((pane, pid)) = self.tmux.launch(&spec, &name, &log, Some(&prompt)).await? else {
            return Err(PluginError::Invalid(format!(
                "tmux session {name} already exists on host {}",
                self.host.name
            )));
        };
        self.host.pane_started(&name, &pane, pid);
        Ok(self.handle(name, pane, pid).into())
    }

    async fn destroy(&self, handle: &RuntimeHandle) -> PluginResult<()> {
        let h = self.parse(handle)?;
        // Closing the pane hangs up the agent's terminal (the host's tmux does the rest).
        self.tmux.kill_own_session(&h.tmux).await?;
        self.host.pane_removed(&h.tmux.session, &h.tmux.pane);
        Ok(())
    }

    async fn is_alive(&self, handle: &RuntimeHandle) -> PluginResult<bool> {
        let h = self.parse(handle)?;
        match self.host.pane(&h.tmux.session, &h.tmux.pane) {
            PaneStatus::Alive => Ok(true),
            PaneStatus::Ended(_) | PaneStatus::Reaping => Ok(false),
            PaneStatus::Unknown => Err(self.unreachable()),
        }
    }

    async fn wait_exit(&self, handle: &RuntimeHandle) -> PluginResult<Option<i32>> {
        let h = self.parse(handle)?;
        let mut changes = self.host.subscribe();
        // Set once tmux shows the pane dead without its status: until then the status may come.
        let mut reaping: Option<tokio::time::Instant> = None;
        let status = loop {
            match self.host.pane(&h.tmux.session, &h.tmux.pane) {
                PaneStatus::Ended(code) => break code,
                PaneStatus::Reaping => {
                    let deadline =
                        *reaping.get_or_insert_with(|| tokio::time::Instant::now() + STATUS_WAIT);
                    match tokio::time::timeout_at(deadline, changes.changed()).await {
                        Ok(Ok(())) => continue,
                        Ok(Err(_)) => return Ok(None), // the host's state is gone
                        Err(_) => break self.status_after_wait(h).await,
                    }
                }
                PaneStatus::Alive | PaneStatus::Unknown => {}
            }
            if changes.changed().await.is_err() {
                return Ok(None); // the host's state is gone (shutting down)
            }
        };
        tracing::debug!(session = %h.tmux.session, host = %self.host.name, ?status, "host pane ended");
        if let Err(e) = self.tmux.kill_own_session(&h.tmux).await {
            tracing::warn!(session = %h.tmux.session, host = %self.host.name, error = %e, "removing an exited tmux session failed");
        }
        self.host.pane_removed(&h.tmux.session, &h.tmux.pane);
        Ok(status)
    }

    async fn output(&self, handle: &RuntimeHandle, lines: usize) -> PluginResult<String> {
        let h = self.parse(handle)?;
        self.tmux.output(&Self::local_handle(h), lines).await
    }

    async fn last_output_at(&self, handle: &RuntimeHandle) -> PluginResult<Option<DateTime<Utc>>> {
        let h = self.parse(handle)?;
        super::activity::modified_at(&h.tmux.log).await
    }

    async fn send_message(&self, handle: &RuntimeHandle, text: &str) -> PluginResult<bool> {
        let h = self.parse(handle)?;
        self.check_alive(h)?;
        self.tmux.send_message(&Self::local_handle(h), text).await
    }

    async fn answer(
        &self,
        handle: &RuntimeHandle,
        choice: &str,
        read: ScreenQuestion,
    ) -> PluginResult<bool> {
        let h = self.parse(handle)?;
        self.check_alive(h)?;
        self.tmux.answer(&Self::local_handle(h), choice, read).await
    }

    async fn answer_to(
        &self,
        handle: &RuntimeHandle,
        choice: &str,
        read: ScreenQuestion,
        other: &OtherQuestion<'_>,
    ) -> PluginResult<bool> {
        let h = self.parse(handle)?;
        self.check_alive(h)?;
        self.tmux
            .answer_to(&Self::local_handle(h), choice, read, other)
            .await
    }

    /// `ssh -t … tmux -L SOCKET attach-session -t NAME`.
    fn attach_info(&self, handle: &RuntimeHandle) -> Option<AttachInfo> {
        let h = self.parse(handle).ok()?;
        let remote = [
            "tmux",
            "-L",
            &h.tmux.socket,
            "attach-session",
            "-t",
            &h.tmux.session,
        ];
        Some(AttachInfo {
            kind: "tmux".into(),
            target: format!("{}:{}", self.host.name, h.tmux.session),
            command: self.host.ssh.command(&remote, true),
        })
    }

    async fn list_live(&self) -> PluginResult<Vec<String>> {
        self.tmux.list_sessions().await
    }

    async fn find(
        &self,
        session_id: &str,
        since: DateTime<Utc>,
    ) -> PluginResult<Option<RuntimeHandle>> {
        let name = session_name(session_id);
        let Some((pane, pid, dead)) = self.tmux.find_pane(&name, since).await? else {
            return Ok(None);
        };
        if !dead {
            self.host.pane_started(&name, &pane, pid);
        }
        Ok(Some(self.handle(name, pane, pid).into()))
    }
}
