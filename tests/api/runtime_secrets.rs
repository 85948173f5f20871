//! What a runtime puts where other local users (every other agent) can read it. A tmux
//! server's argv is the argv of the client that started it, for the server's whole life, and
//! `/proc/<pid>/cmdline` is world-readable: an agent's environment (its report token, API
//! keys) must not be on any command line.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla::plugins::tmux::TmuxRuntime;
use flotilla::plugins::{LaunchSpec, Runtime};

use crate::helpers::require_tool;

/// Every process's command line on the machine, NUL-separated args joined by spaces.
fn all_command_lines() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .collect()
}

#[actix_web::test]
async fn tmux_agents_get_their_env_and_exact_argv_and_no_secret_reaches_a_command_line() {
    if !require_tool("tmux") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = format!("flotilla-secrets-{}", uuid::Uuid::new_v4().simple());
    let rt = TmuxRuntime::new(socket.clone(), dir.path().join("logs"));
    let secret = format!("s3cr3t-{}", uuid::Uuid::new_v4().simple());
    let out = dir.path().join("out.txt");
    // Arguments tmux would otherwise split, expand or end a command at; one longer than the
    // 16 KiB a tmux command line may hold.
    let long = "x".repeat(20_000);
    let tricky = [
        "a;",
        "it's",
        "$HOME ~",
        "two\nlines",
        "#{pane_id}",
        "{",
        &long,
    ];
    let mut argv: Vec<String> = vec![
        "sh".into(),
        "-c".into(),
        "printf '%s\\n' \"$TOKEN\" \"$@\" > \"$OUT\"; sleep 60".into(),
        "agent".into(),
    ];
    argv.extend(tricky.iter().map(|s| s.to_string()));
    let env = BTreeMap::from([
        ("TOKEN".to_string(), secret.clone()),
        ("OUT".to_string(), out.display().to_string()),
        ("PATH".to_string(), "/usr/bin:/bin".to_string()),
    ]);
    let h = rt
        .create(&LaunchSpec {
            session_id: "secret-1".into(),
            cwd: dir.path().to_path_buf(),
            argv,
            env,
        })
        .await
        .expect("tmux create");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let written = loop {
        if let Ok(t) = std::fs::read_to_string(&out) {
            if t.ends_with(&format!("{long}\n")) {
                break t;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent never wrote {}",
            out.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut expected = format!("{secret}\n");
    for a in tricky {
        expected.push_str(a);
        expected.push('\n');
    }
    assert_eq!(written, expected);

    let leaks: Vec<String> = all_command_lines()
        .into_iter()
        .filter(|c| c.contains(&secret))
        .collect();
    let _ = rt.destroy(&h).await;
    let _ = std::process::Command::new("tmux")
        .args(["-L", &socket, "kill-server"])
        .output();
    assert!(
        leaks.is_empty(),
        "the secret is on a command line: {leaks:?}"
    );
}
