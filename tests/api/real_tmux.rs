//! What the real-CLI tests share: a private tmux runtime that launches an agent plugin's argv,
//! and polling with a deadline.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flotilla::plugins::activity::ActivityProbe;
use flotilla::plugins::tmux::TmuxRuntime;
use flotilla::plugins::{Agent, AgentContext, LaunchSpec, Runtime, RuntimeHandle};
use tempfile::TempDir;

use crate::helpers::require_tool;

/// Polls `f` every 100 ms until it returns `Ok`, failing with `what` (and the last state it
/// reported) after `secs`.
pub async fn within<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let last = match f().await {
            Ok(v) => return v,
            Err(status) => status,
        };
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {secs}s waiting for {what}; last state:\n{last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A tmux runtime on a private server, killed on drop.
pub struct Tmux {
    pub rt: Arc<TmuxRuntime>,
    _logs: TempDir,
}

impl Tmux {
    /// `None` (skip) without tmux; under `CI=true` its absence fails.
    pub fn new(prefix: &str) -> Option<Tmux> {
        if !require_tool("tmux") {
            return None;
        }
        let logs = tempfile::tempdir().expect("tempdir");
        let socket = format!("flotilla-{prefix}-{}", uuid::Uuid::new_v4().simple());
        let rt = Arc::new(TmuxRuntime::new(socket, logs.path().join("logs")));
        Some(Tmux { rt, _logs: logs })
    }

    /// Launches `agent` in `ws` with the argv and environment its plugin builds for `prompt`
    /// (written next to the worktree, as the fleet does); returns the handle and the argv.
    pub async fn launch(
        &self,
        agent: &dyn Agent,
        ws: &Path,
        prompt: &str,
    ) -> (RuntimeHandle, Vec<String>) {
        let prompt_file = ws.with_extension("prompt.md");
        std::fs::write(&prompt_file, prompt).expect("prompt");
        let ctx = AgentContext {
            message: None,
            permission_mode: None,
            flotilla_cli: None,
            session_id: "real-1".into(),
            workspace: ws.to_path_buf(),
            prompt_file,
            resume: false,
            agent_session_id: None,
        };
        let (argv, env) = agent.launch(&ctx).expect("launch");
        let h = self
            .rt
            .create(&LaunchSpec {
                session_id: "real-1".into(),
                cwd: ws.to_path_buf(),
                argv: argv.clone(),
                env,
            })
            .await
            .expect("tmux create");
        (h, argv)
    }

    pub async fn screen(&self, h: &RuntimeHandle) -> String {
        self.rt.output(h, 60).await.unwrap_or_default()
    }

    /// What the fleet's activity check gives the plugin.
    pub async fn probe(&self, h: &RuntimeHandle, ws: &Path) -> ActivityProbe {
        ActivityProbe {
            workspace: ws.to_path_buf(),
            terminal: Some(self.screen(h).await),
            last_output_at: self.rt.last_output_at(h).await.ok().flatten(),
            now: chrono::Utc::now(),
        }
    }

    /// Types `keys` (tmux key names) into the agent's pane.
    pub async fn send_keys(&self, h: &RuntimeHandle, keys: &[&str]) {
        let session = format!("={}:", h.tmux().expect("tmux").session);
        let mut args = vec!["-L", self.rt.socket(), "send-keys", "-t", &session];
        args.extend_from_slice(keys);
        let out = tokio::process::Command::new("tmux")
            .args(&args)
            .output()
            .await
            .expect("tmux send-keys");
        assert!(out.status.success(), "{out:?}");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", self.rt.socket(), "kill-server"])
            .output();
    }
}
