//! An exit reads the agent's last output (a tmux capture, tried again for a second while the
//! screen is empty) only when something reads it: a failed exit's cause, or a clean exit its
//! agent may call failed (aider). Any other clean exit takes no capture.

use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla::store::*;

use crate::helpers::*;
use crate::hooked_tmux::{DialogFleet, Hook};

#[actix_web::test]
async fn a_clean_exit_takes_no_capture_of_the_screen() {
    if !require_tool("tmux") || !require_tool("git") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let exited = dir.path().join("exited");
    // Every capture taken once the agent has exited never returns: an exit that reads the
    // screen never reports, and the session never ends.
    let seen = exited.clone();
    let hold: Hook = Arc::new(move |_screen| {
        let gone = seen.exists();
        Box::pin(async move {
            if gone {
                std::future::pending::<()>().await;
            }
        })
    });
    let env = BTreeMap::from([("EXITED".to_string(), exited.display().to_string())]);
    let f = DialogFleet::start(
        dir,
        "echo done here; touch \"$EXITED\"",
        env,
        Some(hold),
        None,
    )
    .await;
    let s = eventually(60, "the session ended", || async {
        let s = f.session().await?;
        s.session.state.is_terminal().then_some(s)
    })
    .await;
    assert_eq!(s.session.state, SessionState::Done, "{:?}", s.session);
    assert!(exited.exists());
}
