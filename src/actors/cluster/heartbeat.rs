//! The node's heartbeat file: the time this node *sent* its last lease renewal that
//! committed, on the machine's boot clock (its text, see `guard::beat_text`) and on the wall
//! clock (its mtime, for people). The lease manager writes it after each successful renewal (never before
//! the commit, never after a failed one); each chat turn's `flotilla turn-guard` reads it and
//! kills the assistant once it is older than `guard::within(ttl, renew)`, before the leases
//! (and the turn slot) can expire and be taken by another node
//! (see [`crate::plugins::assistants::guard`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::NodeId;
use crate::plugins::assistants::guard;

/// One node's heartbeat file, under `$FLOTILLA_HOME/run/`.
#[derive(Debug, Clone)]
pub struct HeartbeatFile {
    path: PathBuf,
}

impl HeartbeatFile {
    /// Node `node`'s file under `home` (nodes may share a home: the name is the node's).
    pub fn in_home(home: &Path, node: &NodeId) -> Self {
        let name: String = node
            .as_str()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        HeartbeatFile {
            path: home.join("run").join(format!("cluster-heartbeat-{name}")),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Forgets an earlier run's heartbeat (at start-up, before any turn): until this run's
    /// first renewal, a guard counts from its own start.
    pub fn reset(&self) -> std::io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Records a renewal sent at `sent` that committed: `sent` is its time on the wall clock
    /// (the file's mtime) and on the boot clock (its text; none when the OS has no such
    /// clock). The file is replaced whole, so a guard never reads half of it.
    ///
    /// # Errors
    /// The file cannot be written.
    pub async fn beat(&self, sent: (SystemTime, Option<Duration>)) -> std::io::Result<()> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut name = path.file_name().unwrap_or_default().to_os_string();
            name.push(".new");
            let new = path.with_file_name(name);
            let f = std::fs::File::create(&new)?;
            if let Some(boot) = sent.1 {
                std::io::Write::write_all(&mut &f, guard::beat_text(boot).as_bytes())?;
            }
            f.set_modified(sent.0)?;
            drop(f);
            std::fs::rename(&new, &path)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// What a turn guard needs: the file and its allowed age for leases of `ttl` renewed
    /// every `renew`.
    pub fn for_guard(
        &self,
        ttl: std::time::Duration,
        renew: std::time::Duration,
    ) -> guard::Heartbeat {
        guard::Heartbeat {
            file: self.path.clone(),
            within: guard::within(ttl, renew),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_beat_records_when_the_renewal_was_sent_on_both_clocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = HeartbeatFile::in_home(dir.path(), &NodeId("node a/1".into()));
        assert!(h.path().ends_with("run/cluster-heartbeat-node_a_1"));
        let sent = SystemTime::now() - Duration::from_secs(2);
        let boot = guard::boot_clock().expect("a boot clock");
        h.beat((sent, Some(boot))).await.expect("beat");
        let m = std::fs::metadata(h.path())
            .and_then(|m| m.modified())
            .expect("mtime");
        assert_eq!(m, sent);
        let text = std::fs::read_to_string(h.path()).expect("text");
        assert_eq!(guard::beat_time(&text), Some(boot));
        // Beaten again: replaced, not appended to.
        let later = boot + Duration::from_secs(1);
        h.beat((sent, Some(later))).await.expect("beat");
        let text = std::fs::read_to_string(h.path()).expect("text");
        assert_eq!(guard::beat_time(&text), Some(later));
        h.reset().expect("reset");
        assert!(!h.path().exists());
        h.reset().expect("a missing file is fine");
    }
}
