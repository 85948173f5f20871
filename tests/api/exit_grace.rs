//! A reconcile that finds the agent gone leaves the exit watcher [`EXIT_GRACE`] to report the
//! exit with its status; a watcher that never reports does not keep the session alive past
//! it: the next reconcile after the grace ends the session without a status.
//!
//! [`EXIT_GRACE`]: the 30 s in `actors/session`.

use std::time::Duration;

use flotilla::actors::supervisor::messages::ReconcileAll;
use flotilla::clock::ManualClock;
use flotilla::plugins::tmux::TmuxRuntime;
use flotilla::plugins::Runtime;
use flotilla::store::*;

use crate::helpers::*;
use crate::hooked_tmux::DialogFleet;

#[actix_web::test]
async fn a_gone_agent_whose_exit_is_never_reported_ends_at_the_first_reconcile_after_the_grace() {
    if !require_tool("tmux") || !require_tool("git") {
        return;
    }
    let clock = ManualClock::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let f = DialogFleet::start_with_silent_exit(dir, "echo ready; sleep 600", clock.clock()).await;
    eventually(60, "the agent working", || async {
        let s = f.session().await?;
        (s.session.state == SessionState::Working).then_some(())
    })
    .await;
    let handle = f
        .session()
        .await
        .and_then(|s| s.session.runtime_handle)
        .expect("a runtime handle");
    let killed = std::process::Command::new("tmux")
        .args(["-L", &f.socket, "kill-session", "-t", f.id.as_str()])
        .status()
        .expect("tmux");
    assert!(killed.success());
    // The grace counts from the first reconcile that finds the agent gone: wait until it is
    // (its process dies of the hang-up a moment after its session, later under load).
    let tmux = TmuxRuntime::new(f.socket.clone(), std::env::temp_dir());
    eventually(30, "the agent's process gone", || async {
        matches!(tmux.is_alive(&handle).await, Ok(false)).then_some(())
    })
    .await;

    // Inside the grace, reconciles leave the gone agent's session to its exit watcher.
    for _ in 0..3 {
        f.sup.send(ReconcileAll).await.expect("reconcile");
        clock.advance(Duration::from_secs(9));
    }
    let s = f.session().await.expect("the session");
    assert_eq!(s.session.state, SessionState::Working, "{:?}", s.session);

    // Past it (27 s so far, then 4 more), the next reconcile ends the session without a
    // status.
    clock.advance(Duration::from_secs(4));
    f.sup.send(ReconcileAll).await.expect("reconcile");
    let s = eventually(30, "the session ended", || async {
        let s = f.session().await?;
        s.session.state.is_terminal().then_some(s)
    })
    .await;
    assert_eq!(s.session.state, SessionState::Killed, "{:?}", s.session);
    assert_eq!(
        s.session.reason.as_deref(),
        Some("runtime_lost"),
        "{:?}",
        s.session
    );
}
