//! What the real-claude benches share: finding the CLI, git, the private tmux server's
//! clean-up, percentiles. Included with `#[path]` (benches are separate crates).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The real `claude`: `FLOTILLA_CLAUDE_BIN`, else where `.ci/deps.sh` installs it.
pub fn claude() -> Option<PathBuf> {
    std::env::var_os("FLOTILLA_CLAUDE_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| Path::new(&h).join(".cache/flotilla/real-clis/node_modules/.bin/claude"))
        })
        .filter(|p| p.is_file())
}

/// Runs git in `dir`, panicking with its output on failure.
pub fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

/// Kills the bench's private tmux server when dropped (also on a failed wait).
pub struct KillTmux(pub String);

impl Drop for KillTmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.0, "kill-server"])
            .status();
    }
}

/// The `p` percentile of `sorted`.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
