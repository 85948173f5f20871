//! A host's files as an agent's preparation edits them ([`crate::plugins::AgentFiles`]): read
//! with one call, replaced with one call (the text on ssh's stdin, written beside the file and
//! renamed over it, mode 0600). Paths are passed as quoted words, never spliced into a script.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::state::Host;
use crate::plugins::{AgentFiles, PluginResult};

/// Timeout of one read or write.
const FILE_TIMEOUT: Duration = Duration::from_secs(30);

/// `$0` is the file: prints `1` and its text, or `0` when it does not exist.
const READ: &str = "if [ -e \"$0\" ]; then printf 1 && cat -- \"$0\"; else printf 0; fi";
/// `$0` is the file, `$1` its directory; the text comes on stdin.
const WRITE: &str = "umask 077 && mkdir -p -- \"$1\" && cat > \"$0.flotilla-tmp\" && mv -f -- \"$0.flotilla-tmp\" \"$0\"";

/// The files of one host.
pub struct HostFiles(pub Arc<Host>);

#[async_trait]
impl AgentFiles for HostFiles {
    async fn read(&self, path: &Path) -> PluginResult<Option<String>> {
        let p = path.to_string_lossy();
        let out = self
            .0
            .ssh
            .run(&["sh", "-c", READ, &p], None, FILE_TIMEOUT)
            .await?;
        Ok(out.strip_prefix('1').map(str::to_string))
    }

    async fn write(&self, path: &Path, text: &str) -> PluginResult<()> {
        let p = path.to_string_lossy();
        let dir = path
            .parent()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".into());
        self.0
            .ssh
            .run(
                &["sh", "-c", WRITE, &p, &dir],
                Some(text.as_bytes()),
                FILE_TIMEOUT,
            )
            .await
            .map(drop)
    }

    async fn canonical(&self, path: &Path) -> PathBuf {
        // The host's paths are Flotilla's own (under its `workdir`), used as configured.
        path.to_path_buf()
    }
}
