//! `OutputWatch`: one inotify watcher for the whole fleet. A session actor registers its
//! agent's output log; each write to it becomes an `OutputChanged` message to that actor,
//! which then looks at the agent's activity. An idle agent writes nothing, so an idle session
//! costs no subprocess and no CPU (agent-orchestrator polled ~7 subprocesses per session every
//! 30 s).
//!
//! Why one watcher: `notify` runs a thread per watcher; a thousand sessions must not mean a
//! thousand threads. Directories are watched (files may be created after registration) with a
//! reference count, and events are routed by exact file path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};

/// Sent by the watch to a session actor when its agent's output file changed.
#[derive(Debug, Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct OutputChanged;

#[derive(Default)]
struct Routes {
    files: HashMap<PathBuf, Recipient<OutputChanged>>,
    dirs: HashMap<PathBuf, usize>,
}

/// The fleet's output watch.
pub struct OutputWatch {
    watcher: Mutex<Option<RecommendedWatcher>>,
    routes: Arc<Mutex<Routes>>,
}

impl Default for OutputWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl OutputWatch {
    /// A watch; if the platform refuses inotify, registrations are no-ops and the sessions'
    /// timers and the reconcile tick still catch changes (logged once).
    pub fn new() -> Self {
        let routes: Arc<Mutex<Routes>> = Arc::default();
        let r = routes.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else { return };
            if !(ev.kind.is_modify() || ev.kind.is_create()) {
                return;
            }
            let Ok(routes) = r.lock() else { return };
            for p in &ev.paths {
                if let Some(to) = routes.files.get(p) {
                    to.do_send(OutputChanged);
                }
            }
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "file watching unavailable; activity is seen at timers only");
                None
            }
        };
        OutputWatch {
            watcher: Mutex::new(watcher),
            routes,
        }
    }

    /// Routes changes of `file` to `to` (replacing an earlier route for the same file).
    pub fn watch(&self, file: &Path, to: Recipient<OutputChanged>) {
        let Some(dir) = file.parent().map(Path::to_path_buf) else {
            return;
        };
        let Ok(mut routes) = self.routes.lock() else {
            return;
        };
        if routes.files.insert(file.to_path_buf(), to).is_some() {
            return;
        }
        let n = routes.dirs.entry(dir.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            if let Ok(mut w) = self.watcher.lock() {
                if let Some(w) = w.as_mut() {
                    if let Err(e) = w.watch(&dir, RecursiveMode::NonRecursive) {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch output");
                    }
                }
            }
        }
    }

    /// Stops routing changes of `file`.
    pub fn unwatch(&self, file: &Path) {
        let Some(dir) = file.parent().map(Path::to_path_buf) else {
            return;
        };
        let Ok(mut routes) = self.routes.lock() else {
            return;
        };
        if routes.files.remove(file).is_none() {
            return;
        }
        let last = match routes.dirs.get_mut(&dir) {
            Some(n) => {
                *n -= 1;
                *n == 0
            }
            None => false,
        };
        if last {
            routes.dirs.remove(&dir);
            if let Ok(mut w) = self.watcher.lock() {
                if let Some(w) = w.as_mut() {
                    let _ = w.unwatch(&dir);
                }
            }
        }
    }

    /// How many files are watched (metrics, tests).
    pub fn len(&self) -> usize {
        self.routes.lock().map(|r| r.files.len()).unwrap_or(0)
    }

    /// Whether nothing is watched.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
