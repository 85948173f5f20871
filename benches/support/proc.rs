//! Running set-up commands in the benches (git, tmux): a failure stops the bench with the
//! command's stderr.

use std::path::{Path, PathBuf};
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

/// A git repository at `dir` on branch `main` with one commit (a README).
pub fn repo(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir");
    run(dir, &["git", "init", "-q", "-b", "main"]);
    std::fs::write(dir.join("README.md"), "bench\n").expect("write");
    run(dir, &["git", "add", "."]);
    let who = ["-c", "user.email=b@b", "-c", "user.name=b"];
    run(
        dir,
        &[&["git"], &who[..], &["commit", "-q", "-m", "init"]].concat(),
    );
    dir.to_path_buf()
}
