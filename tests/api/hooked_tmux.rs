//! Tmux with test hooks: a runtime that makes a race certain by holding the session's look at
//! the screen, or its answer, until the test has done its part.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flotilla::plugins::tmux::TmuxRuntime;
use flotilla::plugins::{
    AttachInfo, LaunchSpec, PluginResult, Runtime, RuntimeHandle, ScreenQuestion,
};

/// Run with what the runtime read or did (the screen's text; for an answer, `"taken"` or
/// `"not taken"`) before it returns it to the session.
pub type Hook = Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Tmux, with `after_output` run on every capture of the screen and `after_answer` after
/// every answer, before the session gets either.
pub struct HookedTmux {
    pub inner: TmuxRuntime,
    pub after_output: Option<Hook>,
    pub after_answer: Option<Hook>,
}

#[async_trait]
impl Runtime for HookedTmux {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    async fn create(&self, spec: &LaunchSpec) -> PluginResult<RuntimeHandle> {
        self.inner.create(spec).await
    }
    async fn destroy(&self, handle: &RuntimeHandle) -> PluginResult<()> {
        self.inner.destroy(handle).await
    }
    async fn is_alive(&self, handle: &RuntimeHandle) -> PluginResult<bool> {
        self.inner.is_alive(handle).await
    }
    async fn wait_exit(&self, handle: &RuntimeHandle) -> PluginResult<Option<i32>> {
        self.inner.wait_exit(handle).await
    }
    async fn output(&self, handle: &RuntimeHandle, lines: usize) -> PluginResult<String> {
        let out = self.inner.output(handle, lines).await?;
        if let Some(hook) = &self.after_output {
            hook(out.clone()).await;
        }
        Ok(out)
    }
    async fn last_output_at(&self, handle: &RuntimeHandle) -> PluginResult<Option<DateTime<Utc>>> {
        self.inner.last_output_at(handle).await
    }
    async fn send_message(&self, handle: &RuntimeHandle, text: &str) -> PluginResult<bool> {
        self.inner.send_message(handle, text).await
    }
    async fn answer(
        &self,
        handle: &RuntimeHandle,
        choice: &str,
        read: ScreenQuestion,
    ) -> PluginResult<bool> {
        let taken = self.inner.answer(handle, choice, read).await?;
        if let Some(hook) = &self.after_answer {
            hook(if taken { "taken" } else { "not taken" }.into()).await;
        }
        Ok(taken)
    }
    async fn input_mark(&self, handle: &RuntimeHandle) -> PluginResult<Option<u64>> {
        self.inner.input_mark(handle).await
    }
    async fn resume_message(
        &self,
        handle: &RuntimeHandle,
        text: &str,
        mark: Option<u64>,
    ) -> PluginResult<bool> {
        self.inner.resume_message(handle, text, mark).await
    }
    fn attach_info(&self, handle: &RuntimeHandle) -> Option<AttachInfo> {
        self.inner.attach_info(handle)
    }
    async fn list_live(&self) -> PluginResult<Vec<String>> {
        self.inner.list_live().await
    }
    async fn find(&self, id: &str, since: DateTime<Utc>) -> PluginResult<Option<RuntimeHandle>> {
        self.inner.find(id, since).await
    }
}
