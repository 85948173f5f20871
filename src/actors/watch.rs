//! `OutputWatch`: the one inotify watcher of agents' output logs, for the whole process.
//!
//! Two kinds of listeners share it:
//! - a session actor registers its agent's output log ([`OutputWatch::watch`]); each write to
//!   it becomes an `OutputChanged` message to that actor, which then looks at the agent's
//!   activity. An idle agent writes nothing, so an idle session costs no subprocess and no
//!   CPU (agent-orchestrator polled ~7 subprocesses per session every 30 s);
//! - a terminal viewer following a process agent's log ([`OutputWatch::follow`]) is woken
//!   ([`OutputFollow::changed`]) to read what was appended.
//!
//! Why one watcher: `notify` runs a thread per watcher; a thousand sessions (or viewers) must
//! not mean a thousand threads or inotify instances. Directories are watched (files may be
//! created after registration, and a rotated log is a new file under the same name) with a
//! reference count, and events are routed by exact file path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;

/// Sent by the watch to a session actor when its agent's output file changed.
#[derive(Debug, Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct OutputChanged;

/// Who listens to one file.
#[derive(Default)]
struct Route {
    /// The session actor whose agent writes the file (one at a time).
    actor: Option<Recipient<OutputChanged>>,
    /// Followers (terminal viewers), by registration number.
    followers: HashMap<u64, Arc<Notify>>,
}

impl Route {
    fn is_empty(&self) -> bool {
        self.actor.is_none() && self.followers.is_empty()
    }
}

#[derive(Default)]
struct Routes {
    files: HashMap<PathBuf, Route>,
    dirs: HashMap<PathBuf, usize>,
    next_follower: u64,
}

struct Inner {
    watcher: Mutex<Option<RecommendedWatcher>>,
    routes: Arc<Mutex<Routes>>,
}

impl Inner {
    /// Runs `change` on the route of `file`, then watches or unwatches its directory as the
    /// route appears or empties.
    fn update(&self, file: &Path, change: impl FnOnce(&mut Route)) {
        let Some(dir) = file.parent().map(Path::to_path_buf) else {
            return;
        };
        // The watcher lock is taken first and held throughout, so updates are serialized and
        // the directory's count always agrees with what the watcher watches. The routes lock
        // is released before calling the watcher: `notify` hands a new watch to its event
        // thread and waits for it, and that thread may be in our callback waiting for routes.
        let Ok(mut watcher) = self.watcher.lock() else {
            return;
        };
        let (delta, n) = {
            let Ok(mut routes) = self.routes.lock() else {
                return;
            };
            let existed = routes.files.contains_key(file);
            let route = routes.files.entry(file.to_path_buf()).or_default();
            change(route);
            let now_empty = route.is_empty();
            if now_empty {
                routes.files.remove(file);
            }
            let delta: isize = match (existed, now_empty) {
                (false, false) => 1,
                (true, true) => -1,
                _ => return,
            };
            let n = routes.dirs.entry(dir.clone()).or_insert(0);
            *n = n.saturating_add_signed(delta);
            let n = *n;
            if n == 0 {
                routes.dirs.remove(&dir);
            }
            (delta, n)
        };
        let Some(w) = watcher.as_mut() else {
            return;
        };
        match (delta, n) {
            (1, 1) => {
                if let Err(e) = w.watch(&dir, RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch output");
                }
            }
            (-1, 0) => {
                let _ = w.unwatch(&dir);
            }
            _ => {}
        }
    }
}

/// The process's output watch.
pub struct OutputWatch {
    inner: Arc<Inner>,
}

impl Default for OutputWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl OutputWatch {
    /// A watch; if the platform refuses inotify, registrations are no-ops and the sessions'
    /// timers, the reconcile tick and followers' re-checks still catch changes (logged once).
    pub fn new() -> Self {
        let routes: Arc<Mutex<Routes>> = Arc::default();
        let r = routes.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else { return };
            // Followers re-read on anything (a rotation shows as a rename or a removal);
            // actors only care that something was written.
            let written = ev.kind.is_modify() || ev.kind.is_create();
            let Ok(routes) = r.lock() else { return };
            for p in &ev.paths {
                let Some(route) = routes.files.get(p) else {
                    continue;
                };
                for f in route.followers.values() {
                    f.notify_one();
                }
                if written {
                    if let Some(to) = &route.actor {
                        to.do_send(OutputChanged);
                    }
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
            inner: Arc::new(Inner {
                watcher: Mutex::new(watcher),
                routes,
            }),
        }
    }

    /// Routes changes of `file` to `to` (replacing an earlier actor route for the same file).
    pub fn watch(&self, file: &Path, to: Recipient<OutputChanged>) {
        self.inner.update(file, |r| r.actor = Some(to));
    }

    /// Stops routing changes of `file` to its actor (followers keep theirs).
    pub fn unwatch(&self, file: &Path) {
        self.inner.update(file, |r| r.actor = None);
    }

    /// Follows `file`: the returned handle wakes on each change until it is dropped.
    pub fn follow(&self, file: &Path) -> OutputFollow {
        let wake = Arc::new(Notify::new());
        let mut id = 0;
        if let Ok(mut routes) = self.inner.routes.lock() {
            id = routes.next_follower;
            routes.next_follower += 1;
        }
        let w = wake.clone();
        self.inner.update(file, |r| {
            r.followers.insert(id, w);
        });
        OutputFollow {
            inner: self.inner.clone(),
            file: file.to_path_buf(),
            id,
            wake,
        }
    }

    /// How many files are watched (metrics, tests).
    pub fn len(&self) -> usize {
        self.inner.routes.lock().map(|r| r.files.len()).unwrap_or(0)
    }

    /// Whether nothing is watched.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One follower of a file; stops following when dropped.
pub struct OutputFollow {
    inner: Arc<Inner>,
    file: PathBuf,
    id: u64,
    wake: Arc<Notify>,
}

impl OutputFollow {
    /// Resolves at the next change of the file since the last call (changes in between fold
    /// into one wake-up, and one that came before this call is not lost).
    pub async fn changed(&self) {
        self.wake.notified().await;
    }
}

impl Drop for OutputFollow {
    fn drop(&mut self) {
        let id = self.id;
        self.inner.update(&self.file, |r| {
            r.followers.remove(&id);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Counts the changes a session actor was told about.
    struct Probe(Arc<std::sync::atomic::AtomicUsize>);
    impl Actor for Probe {
        type Context = Context<Self>;
    }
    impl Handler<OutputChanged> for Probe {
        type Result = ();
        fn handle(&mut self, _: OutputChanged, _: &mut Self::Context) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[actix::test]
    async fn an_actor_and_a_viewer_of_the_same_log_are_both_woken_by_one_watcher() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("output.log");
        std::fs::write(&log, "").expect("create");
        let watch = OutputWatch::new();
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let actor = Probe(seen.clone()).start();
        watch.watch(&log, actor.recipient());
        let viewer = watch.follow(&log);
        assert_eq!(watch.len(), 1, "one route for one file");

        std::fs::write(&log, "more\n").expect("append");
        tokio::time::timeout(Duration::from_secs(10), viewer.changed())
            .await
            .expect("the viewer is woken");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while seen.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the actor is told too"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // The actor leaving keeps the viewer's route, and the viewer leaving frees it.
        watch.unwatch(&log);
        assert_eq!(watch.len(), 1);
        drop(viewer);
        assert!(watch.is_empty());
        let routes = watch.inner.routes.lock().expect("lock");
        assert!(routes.dirs.is_empty(), "the directory is no longer watched");
    }
}
