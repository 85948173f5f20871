//! Running set-up commands in the benches (git, tmux): a failure stops the bench with the
//! command's stderr.

use std::path::Path;
use std::process::Command;

/// Runs `argv` in `cwd` to completion; panics with its stderr when it fails.
pub fn run(cwd: &Path, argv: &[&str]) {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .current_dir(cwd)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
