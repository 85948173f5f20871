//! What an agent's log adds up to, read on from where the last look stopped.
//!
//! A session at work is looked at up to twice a second, and a long session's log (Claude
//! Code's JSONL, Codex's rollout) runs to megabytes: read whole at every look, it cost each
//! working agent a parse of its whole history twice a second. [`Tallies`] keeps each log's
//! tally and feeds it only the lines appended since.

use std::path::Path;
use std::sync::Mutex;

use super::recent::Recent;

use crate::plugins::PluginResult;

/// A running sum over a log's lines.
pub trait Tally: Default + Send {
    /// Adds complete lines (the last may have no newline).
    fn feed(&mut self, lines: &str);
}

/// How many logs' tallies are kept (the least recently read goes first): memory stays bounded
/// however many sessions a node has run.
const KEPT: usize = 1024;

/// One log's tally and where its reading stopped.
#[derive(Debug, Default)]
struct Kept<T> {
    tally: T,
    /// Bytes read: up to the end of the last complete line.
    offset: u64,
    /// The file read (a log replaced by another file is read afresh).
    file: Option<(u64, u64)>,
}

/// The tallies of the logs read, each read on from where the last look stopped.
#[derive(Debug)]
pub struct Tallies<T> {
    kept: Mutex<Recent<Kept<T>>>,
}

impl<T> Default for Tallies<T> {
    fn default() -> Self {
        Tallies {
            kept: Mutex::new(Recent::new(KEPT)),
        }
    }
}

impl<T: Tally> Tallies<T> {
    /// `read` of the tally of the log at `path` (`None` when there is none), after feeding it
    /// what was appended since it was last read.
    ///
    /// # Errors
    /// `Io` when the log cannot be read.
    pub async fn read<R>(
        &self,
        path: &Path,
        read: impl FnOnce(&T) -> R,
    ) -> PluginResult<Option<R>> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut f = match tokio::fs::File::open(path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let meta = f.metadata().await?;
        let file = identity(&meta);
        // Taken out while it is read on: a concurrent read of the same log starts afresh.
        let mut kept = self.take(path);
        if kept.file != file || meta.len() < kept.offset {
            kept = Kept {
                file,
                ..Kept::default()
            };
        }
        if meta.len() > kept.offset {
            f.seek(std::io::SeekFrom::Start(kept.offset)).await?;
            let mut bytes = Vec::new();
            f.take(meta.len() - kept.offset)
                .read_to_end(&mut bytes)
                .await?;
            // A line still being written is left for the next read, unless it is whole JSON
            // (a log whose last line has no newline): a cut line does not parse.
            let end = match bytes.iter().rposition(|b| *b == b'\n') {
                Some(end) => end + 1,
                None => 0,
            };
            let rest = &bytes[end..];
            let whole =
                !rest.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(rest).is_ok();
            let upto = if whole { bytes.len() } else { end };
            if upto > 0 {
                kept.tally.feed(&String::from_utf8_lossy(&bytes[..upto]));
                kept.offset += upto as u64;
            }
        }
        let out = read(&kept.tally);
        self.put(path, kept);
        Ok(Some(out))
    }

    fn take(&self, path: &Path) -> Kept<T> {
        match self.kept.lock() {
            Ok(mut k) => k.remove(path).unwrap_or_default(),
            Err(_) => Kept::default(),
        }
    }

    fn put(&self, path: &Path, kept: Kept<T>) {
        if let Ok(mut k) = self.kept.lock() {
            k.insert(path, kept);
        }
    }
}

/// The device and inode of a file (`None` where the platform has no such identity).
pub(super) fn identity(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// Appends `text` to the log at `path` as an agent does (tests).
#[cfg(test)]
pub(crate) fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("log");
    f.write_all(text.as_bytes()).expect("append");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines fed, in order.
    #[derive(Debug, Default)]
    struct Lines(Vec<String>);

    impl Tally for Lines {
        fn feed(&mut self, lines: &str) {
            self.0.extend(lines.lines().map(str::to_string));
        }
    }

    /// Each line is fed once, whole: a line half written waits for its end (a whole last line
    /// without a newline does not); a log replaced by a shorter one is read afresh; the least
    /// recently read log is the one forgotten.
    #[tokio::test]
    async fn each_line_is_fed_once_and_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("s.jsonl");
        let tallies = Tallies::<Lines>::default();
        let lines = |t: &Lines| t.0.clone();
        assert_eq!(tallies.read(&log, lines).await.expect("read"), None);
        append(&log, "\"one\"\n\"tw");
        assert_eq!(
            tallies.read(&log, lines).await.expect("read"),
            Some(vec!["\"one\"".to_string()])
        );
        // The last line whole but without its newline: read.
        append(&log, "o\"\n\"three\"");
        assert_eq!(
            tallies.read(&log, lines).await.expect("read"),
            Some(vec!["\"one\"".into(), "\"two\"".into(), "\"three\"".into()])
        );
        assert_eq!(
            tallies
                .read(&log, |t: &Lines| t.0.len())
                .await
                .expect("read"),
            Some(3),
            "nothing new, nothing fed"
        );
        std::fs::remove_file(&log).expect("rm");
        append(&log, "\"new\"\n");
        assert_eq!(
            tallies.read(&log, lines).await.expect("read"),
            Some(vec!["\"new\"".to_string()])
        );

        // Bounded: reading more logs than are kept forgets the one read longest ago.
        for i in 0..KEPT {
            let other = dir.path().join(format!("{i}.jsonl"));
            append(&other, "x\n");
            tallies.read(&other, |_| ()).await.expect("read");
        }
        let kept = tallies.kept.lock().expect("lock");
        assert_eq!(kept.len(), KEPT);
        assert!(!kept.contains(&log));
    }
}
