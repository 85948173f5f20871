//! The Fleet plugins against real programs: the tmux runtime on a private tmux server per test,
//! the claude-code plugin driving the scripted agent (`tests/support/scripted_agent.rs`)
//! through tmux end to end, and every argument vector our agents build checked by the real
//! agent CLIs' own parsers (the pinned ones `.ci/deps.sh` installs; runs under `CI=true` or with
//! `FLOTILLA_REAL_CLIS=1`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use flotilla::config::{AgentKind, AgentSettings, PermissionMode};
use flotilla::plugins::activity::terminal_question;
use flotilla::plugins::activity::ActivityProbe;
use flotilla::plugins::agents::{self, ClaudeCodeAgent};
use flotilla::plugins::tmux::TmuxRuntime;
use flotilla::plugins::{Agent, AgentContext, LaunchSpec, Runtime, RuntimeHandle};
use flotilla::store::Activity;
use futures::StreamExt;
use serde_json::Value;
use tempfile::TempDir;

use crate::helpers::{eventually, git, make_repo, real_cli, require_tool};

/// The scripted agent example at `<target>/debug/examples/scripted_agent` (this binary is
/// `<target>/debug/deps/api-…`). A full `cargo test` builds examples; a filtered run
/// (`cargo test --test api fleet_plugins`) does not, so it is built here, once, when missing or
/// older than its source.
pub fn scripted_agent_path() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("current exe");
            let debug = exe.parent().and_then(Path::parent).expect("target/debug");
            let p = debug.join("examples").join("scripted_agent");
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/scripted_agent.rs");
            let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            if mtime(&p).is_none() || mtime(&p) < mtime(&src) {
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                let status = std::process::Command::new(cargo)
                    .args(["build", "--quiet", "--example", "scripted_agent"])
                    .current_dir(env!("CARGO_MANIFEST_DIR"))
                    .status()
                    .expect("cargo runs");
                assert!(
                    status.success(),
                    "building the scripted_agent example failed"
                );
            }
            assert!(p.is_file(), "{} is missing", p.display());
            p
        })
        .clone()
}

/// A tmux runtime on its own server; the server is killed when this is dropped.
struct Tmux {
    rt: Arc<TmuxRuntime>,
    dir: TempDir,
}

impl Tmux {
    fn new() -> Option<Tmux> {
        if !require_tool("tmux") {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = format!("flotilla-test-{}", uuid::Uuid::new_v4().simple());
        let rt = Arc::new(TmuxRuntime::new(socket, dir.path().join("logs")));
        Some(Tmux { rt, dir })
    }

    fn home(&self) -> PathBuf {
        let h = self.dir.path().join("home");
        std::fs::create_dir_all(&h).expect("home");
        h
    }

    fn spec(&self, id: &str, cwd: &Path, argv: &[&str]) -> LaunchSpec {
        LaunchSpec {
            session_id: id.into(),
            cwd: cwd.to_path_buf(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: base_env(&self.home()),
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", self.rt.socket(), "kill-server"])
            .output();
    }
}

fn base_env(home: &Path) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert(
        "PATH".into(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
    );
    env.insert("HOME".into(), home.to_string_lossy().into_owned());
    env
}

async fn output_containing(rt: &TmuxRuntime, h: &RuntimeHandle, text: &str) -> String {
    eventually(15, &format!("output to contain {text:?}"), || async {
        let o = rt.output(h, 200).await.ok()?;
        o.contains(text).then_some(o)
    })
    .await
}

#[tokio::test]
async fn tmux_runs_an_agent_with_exactly_its_environment_and_reports_exit_status() {
    let Some(t) = Tmux::new() else { return };
    let mut spec = t.spec(
        "demo-1",
        t.dir.path(),
        &[
            "sh",
            "-c",
            "env | sort; echo hello from tmux; read x; exit 3",
        ],
    );
    spec.env.insert("FOO".into(), "bar;".into());
    let h = t.rt.create(&spec).await.expect("create");
    assert_eq!(h.tmux().expect("tmux").session, "demo-1");
    assert!(t.rt.is_alive(&h).await.expect("alive"));
    assert_eq!(t.rt.list_sessions().await.expect("list"), ["demo-1"]);
    let out = output_containing(&t.rt, &h, "hello from tmux").await;
    // The spec's variables and tmux's own: nothing leaks from this process (cargo's CARGO_*).
    assert!(out.contains("FOO=bar;"), "{out}");
    assert!(
        !out.contains("CARGO"),
        "Flotilla's environment leaked:\n{out}"
    );
    assert!(t.rt.last_output_at(&h).await.expect("mtime").is_some());
    let attach = t.rt.attach_info(&h).expect("attach");
    assert_eq!(
        attach.command,
        [
            "tmux",
            "-L",
            t.rt.socket(),
            "attach-session",
            "-t",
            "demo-1"
        ]
    );

    assert!(t.rt.send_message(&h, "go").await.expect("send"));
    let code = tokio::time::timeout(Duration::from_secs(15), t.rt.wait_exit(&h))
        .await
        .expect("exit observed")
        .expect("wait");
    assert_eq!(code, Some(3));
    assert!(!t.rt.is_alive(&h).await.expect("alive"));
    assert!(t.rt.list_sessions().await.expect("list").is_empty());
    // The session is gone; output comes from the pane log.
    let out = t.rt.output(&h, 50).await.expect("output from log");
    assert!(out.contains("hello from tmux"), "{out}");
}

#[tokio::test]
async fn tmux_passes_argv_to_the_program_without_a_shell() {
    let Some(t) = Tmux::new() else { return };
    let odd = t.dir.path().join("dir #{pane_id};");
    std::fs::create_dir_all(&odd).expect("mkdir");
    let h =
        t.rt.create(&t.spec(
            "argv-1",
            &odd,
            &[
                "printf",
                "[%s]",
                "a;",
                "$HOME",
                "#{pane_id}",
                "x  y",
                "\\;",
                ";",
            ],
        ))
        .await
        .expect("create");
    output_containing(&t.rt, &h, "[a;][$HOME][#{pane_id}][x  y][\\;][;]").await;
    assert_eq!(t.rt.wait_exit(&h).await.expect("wait"), Some(0));
    // A one-element argv is exec'd too (tmux would hand a single argument to `sh -c`), in a
    // working directory whose name tmux would otherwise format-expand.
    let h =
        t.rt.create(&t.spec("argv-2", &odd, &["pwd"]))
            .await
            .expect("create");
    output_containing(&t.rt, &h, "dir #{pane_id};").await;
    let h =
        t.rt.create(&t.spec("argv-3", &odd, &["echo $HOME"]))
            .await
            .expect("create");
    assert_eq!(
        t.rt.wait_exit(&h).await.expect("wait"),
        Some(127),
        "not run by a shell"
    );
}

/// The JSONL entries the scripted agent wrote under `home`.
fn claude_log(home: &Path) -> Vec<Value> {
    let mut entries = Vec::new();
    let projects = home.join(".claude").join("projects");
    for dir in std::fs::read_dir(&projects).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = std::fs::read_to_string(f.path()).unwrap_or_default();
            entries.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
        }
    }
    entries
}

pub fn user_messages(home: &Path) -> Vec<String> {
    claude_log(home)
        .iter()
        .filter(|v| v["type"] == "user")
        .filter_map(|v| v["message"]["content"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn a_5000_character_multiline_message_arrives_whole_and_submitted() {
    let Some(t) = Tmux::new() else { return };
    let agent = scripted_agent_path();
    let h =
        t.rt.create(&t.spec(
            "paste-1",
            t.dir.path(),
            &[agent.to_str().expect("utf8"), "IDLE"],
        ))
        .await
        .expect("create");
    output_containing(&t.rt, &h, "scripted agent").await;
    let mut message = String::new();
    let mut i = 0;
    while message.chars().count() < 5000 {
        i += 1;
        message.push_str(&format!(
            "Line {i:03}: fix `parse(x; y)` in $HOME/src/#{{pane}} — quotes \"' and ünïcödé, keep going\n"
        ));
    }
    let message: String = message.chars().take(5000).collect();
    let message = message.trim_end().to_string();
    assert!(message.lines().count() > 50);

    let sent = t.rt.send_message(&h, &message).await.expect("send");
    assert!(sent, "submission not confirmed");
    let home = t.home();
    let got = eventually(10, "the message in the agent's log", || async {
        user_messages(&home)
            .into_iter()
            .find(|m| m.starts_with("Line 001"))
    })
    .await;
    assert_eq!(got.len(), message.len());
    assert_eq!(got, message, "the message arrived altered");

    // A short one right after, then exit through a message.
    assert!(t.rt.send_message(&h, "second message").await.expect("send"));
    assert!(t.rt.send_message(&h, "exit 7").await.expect("send"));
    let code = tokio::time::timeout(Duration::from_secs(15), t.rt.wait_exit(&h))
        .await
        .expect("exit")
        .expect("wait");
    assert_eq!(code, Some(7));
    let msgs = user_messages(&home);
    assert_eq!(msgs.iter().filter(|m| *m == "second message").count(), 1);
}

#[tokio::test]
async fn a_message_nobody_reads_is_not_reported_as_submitted() {
    let Some(t) = Tmux::new() else { return };
    // `sleep` never reads: the terminal echoes the draft, Enter is never taken.
    let h =
        t.rt.create(&t.spec("deaf-1", t.dir.path(), &["sleep", "600"]))
            .await
            .expect("create");
    // The tty echoes typed input and moves to a new line on Enter, which looks like a
    // submission to a line editor; raw mode without echo shows nothing at all.
    let h2 =
        t.rt.create(&t.spec(
            "deaf-2",
            t.dir.path(),
            &["sh", "-c", "stty raw -echo; sleep 600"],
        ))
        .await
        .expect("create");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!t.rt.send_message(&h2, "hello there").await.expect("send"));
    t.rt.destroy(&h).await.expect("destroy");
    t.rt.destroy(&h2).await.expect("destroy");
}

/// A menu that reads one raw key, shown as Codex draws its approval dialog: what key came,
/// and whether anything was typed after it.
const KEY_MENU: &str = r#"clear; printf 'Would you like to run the following command?\n\n  $ cargo test\n\n› 1. Yes, proceed (y)\n  2. No, and tell Codex what to do differently (esc)\n\nPress enter to confirm or esc to cancel\n'; IFS= read -rsn1 k; clear; [ "$k" = "$(printf '\033')" ] && k=esc; echo "key:[$k]"; IFS= read -rsn1 -t 2 n; echo "next:[$n]"; sleep 600"#;

#[tokio::test]
async fn an_answer_to_a_menu_is_one_key_and_to_a_line_prompt_a_line() {
    let Some(t) = Tmux::new() else { return };
    let menu = |id: &str| t.spec(id, t.dir.path(), &["bash", "-c", KEY_MENU]);
    // "yes" picks the option saying Yes by the key it names, and nothing follows it (no
    // Enter, no "es" for the composer behind the dialog).
    let h = t.rt.create(&menu("menu-1")).await.expect("create");
    output_containing(&t.rt, &h, "Press enter to confirm").await;
    assert!(t
        .rt
        .answer(&h, "yes", terminal_question)
        .await
        .expect("answer"));
    let out = output_containing(&t.rt, &h, "next:[").await;
    assert!(out.contains("key:[y]") && out.contains("next:[]"), "{out}");
    // "no" picks the option marked (esc).
    let h2 = t.rt.create(&menu("menu-2")).await.expect("create");
    output_containing(&t.rt, &h2, "Press enter to confirm").await;
    assert!(t
        .rt
        .answer(&h2, "no", terminal_question)
        .await
        .expect("answer"));
    let out = output_containing(&t.rt, &h2, "next:[").await;
    assert!(
        out.contains("key:[esc]") && out.contains("next:[]"),
        "{out}"
    );
    // A line prompt reads the answer up to Enter.
    let h3 =
        t.rt.create(&t.spec(
            "line-1",
            t.dir.path(),
            &[
                "bash",
                "-c",
                "printf 'Overwrite notes.txt? (y/n) '; read -r l; echo \"line:[$l]\"; sleep 600",
            ],
        ))
        .await
        .expect("create");
    output_containing(&t.rt, &h3, "(y/n)").await;
    assert!(t
        .rt
        .answer(&h3, "y", terminal_question)
        .await
        .expect("answer"));
    let out = output_containing(&t.rt, &h3, "line:[").await;
    assert!(out.contains("line:[y]"), "{out}");
    // Words that name no option are not typed onto a menu: "please" starts with Codex's `p`
    // (allow for good), and an Enter would confirm the highlighted option.
    let h4 = t.rt.create(&menu("menu-3")).await.expect("create");
    output_containing(&t.rt, &h4, "Press enter to confirm").await;
    assert!(!t
        .rt
        .answer(&h4, "please run cargo check instead", terminal_question)
        .await
        .expect("answer"));
    assert!(t
        .rt
        .answer(&h4, "no", terminal_question)
        .await
        .expect("answer"));
    let out = output_containing(&t.rt, &h4, "next:[").await;
    assert!(
        out.contains("key:[esc]") && out.contains("next:[]"),
        "only the later answer's key: {out}"
    );
    for h in [h, h2, h3, h4] {
        t.rt.destroy(&h).await.expect("destroy");
    }
}

/// A numbered menu whose options (`$1`, `printf %b` text) are drawn under Codex's question;
/// it reads one raw key and prints it, then whether anything was typed after it.
const OPTIONS_MENU: &str = r#"clear; printf 'Would you like to run the following command?\n\n  $ cargo test\n\n%b\nPress enter to confirm or esc to cancel\n' "$1"; IFS= read -rsn1 k; clear; [ "$k" = "$(printf '\033')" ] && k=esc; echo "key:[$k]"; IFS= read -rsn1 -t 2 n; echo "next:[$n]"; sleep 600"#;

#[tokio::test]
async fn an_answer_naming_a_numbered_option_is_its_key() {
    let Some(t) = Tmux::new() else { return };
    // `\n` and `\342\200\272` (›) for printf: an argument reaching tmux is ASCII.
    let codex = r"\342\200\272 1. Yes, proceed (y)\n  2. Yes, and don't ask again for this command (a)\n  3. No, and tell Codex what to do differently (esc)\n";
    let trust = r"\342\200\272 1. Trust and continue\n  2. Quit without trusting\n";
    let cases = [
        ("words-1", codex, "don't ask again", "key:[a]"),
        ("words-2", trust, "Trust and continue", "key:[1]"),
        ("words-3", codex, "tell Codex", "key:[esc]"),
    ];
    let mut handles = Vec::new();
    for (id, options, answer, want) in cases {
        let spec = t.spec(
            id,
            t.dir.path(),
            &["bash", "-c", OPTIONS_MENU, "menu", options],
        );
        let h = t.rt.create(&spec).await.expect("create");
        output_containing(&t.rt, &h, "Press enter to confirm").await;
        assert!(
            t.rt.answer(&h, answer, terminal_question)
                .await
                .expect("answer"),
            "{answer}"
        );
        // The option's one key, and nothing after it (no letters of the words, no Enter).
        let out = output_containing(&t.rt, &h, "next:[").await;
        assert!(
            out.contains(want) && out.contains("next:[]"),
            "{answer}: {out}"
        );
        handles.push(h);
    }
    for h in handles {
        t.rt.destroy(&h).await.expect("destroy");
    }
}

/// A permission dialog as Claude draws it, read one raw key at a time. `$1` keys are ignored
/// (a TUI guarding against accidental approvals), each only blinking the pending call's `●`;
/// every key after that is taken: `1` approves, and the next dialog is drawn at once (the
/// agent's next `git commit`, its round one more), with the transcript grown a line unless
/// `$2` is `number` (a transcript scrolled as much as it grew). Each frame is one write, as a
/// TUI draws it. After 3 s without a key it prints every key it read.
const REPEAT_MENU: &str = r#"ignore=$1; mode=$2; n=0; keys=""; dot=$'\342\227\217'; done=""
draw() { f=$(printf '%b%s Committing\n\n Bash command\n\n   git commit -m round-%s\n\n Do you want to proceed?\n \342\235\257 1. Yes\n   2. No\n\n Esc to cancel' "$done" "$dot" "$n"); printf '\033[H\033[2J%s\n' "$f"; }
draw
while IFS= read -rsn1 -t 3 k; do keys="$keys[$k]"
  if [ "$ignore" -gt 0 ]; then ignore=$((ignore - 1)); [ "$dot" = " " ] && dot=$'\342\227\217' || dot=" "; draw; continue; fi
  if [ "$k" = 1 ]; then n=$((n + 1)); [ "$mode" = number ] || done="$done  git commit: done\n"; fi; draw; done
clear; echo "keys:$keys approved:$n"; sleep 600"#;

/// An answer is typed again only onto the screen it first landed on: a dialog that ignored
/// the key gets it again, but an agent that took it and asked the same question again at
/// once (its transcript moved, or only the command's number) does not get a second approval
/// nobody gave.
#[tokio::test]
async fn an_answer_is_typed_again_only_while_its_screen_stays_unchanged() {
    let Some(t) = Tmux::new() else { return };
    let menu = |id: &str, ignore: &str, mode: &str| {
        t.spec(
            id,
            t.dir.path(),
            &["bash", "-c", REPEAT_MENU, "menu", ignore, mode],
        )
    };
    // Taken at once, and the next dialog differs from it only by its round's number (as the
    // real Claude under load drew the bench's `git commit -m round-14` straight after
    // `round-13`): one approval. Before, digits did not count as the screen moving, and the
    // key was typed twice more, approving two dialogs nobody saw.
    let h0 =
        t.rt.create(&menu("repeat-0", "0", "number"))
            .await
            .expect("create");
    output_containing(&t.rt, &h0, "Esc to cancel").await;
    assert!(t
        .rt
        .answer(&h0, "1", terminal_question)
        .await
        .expect("answer"));
    let out = output_containing(&t.rt, &h0, "keys:").await;
    assert!(out.contains("keys:[1] approved:1"), "{out}");
    // Taken at once, then asked again in the same words: one approval.
    let h =
        t.rt.create(&menu("repeat-1", "0", "grow"))
            .await
            .expect("create");
    output_containing(&t.rt, &h, "Esc to cancel").await;
    assert!(t
        .rt
        .answer(&h, "1", terminal_question)
        .await
        .expect("answer"));
    let out = output_containing(&t.rt, &h, "keys:").await;
    assert!(out.contains("keys:[1] approved:1"), "{out}");
    // Ignored the first time, only a blink redrawn: typed again, taken once.
    let h2 =
        t.rt.create(&menu("repeat-2", "1", "grow"))
            .await
            .expect("create");
    output_containing(&t.rt, &h2, "Esc to cancel").await;
    assert!(t
        .rt
        .answer(&h2, "1", terminal_question)
        .await
        .expect("answer"));
    let out = output_containing(&t.rt, &h2, "keys:").await;
    assert!(out.contains("keys:[1][1] approved:1"), "{out}");
    for h in [h0, h, h2] {
        t.rt.destroy(&h).await.expect("destroy");
    }
}

/// A menu without numbers or letters, only a cursor (`$2`: `heavy` ❯, `angle` ›, else `>`; as
/// octal bytes, an argument reaching tmux being ASCII) on the option `$1` (0-based), as
/// Claude draws its trust dialog: arrow keys move the cursor (redrawn), Enter picks. It prints
/// the option picked and every key it read, then whether anything came after the Enter.
const CURSOR_MENU: &str = r#"opts=("No, exit" "Yes, I trust this folder" "Cancel"); n=${#opts[@]}; c=$1; keys=""
case "$2" in heavy) m=$'\342\235\257';; angle) m=$'\342\200\272';; *) m='>';; esac
draw() { clear; printf 'Is this a project you created or one you trust?\n\n'; for ((i = 0; i < n; i++)); do if [ "$i" = "$c" ]; then printf ' %s %s\n' "$m" "${opts[$i]}"; else printf '   %s\n' "${opts[$i]}"; fi; done; printf '\n Enter to confirm, Esc to cancel\n'; }
draw
while IFS= read -rsn1 k; do
  if [ "$k" = "$(printf '\033')" ]; then IFS= read -rsn2 r
    case "$r" in "[A") keys="$keys up"; [ "$c" -gt 0 ] && c=$((c - 1));; "[B") keys="$keys down"; [ "$c" -lt $((n - 1)) ] && c=$((c + 1));; *) keys="$keys esc$r";; esac; draw
  elif [ -z "$k" ]; then keys="$keys enter"; break
  else keys="$keys [$k]"; draw; fi
done
clear; echo "picked:[${opts[$c]}] keys:[${keys# }]"; IFS= read -rsn1 -t 2 x; echo "next:[$x]"; sleep 600"#;

#[tokio::test]
async fn an_answer_to_a_menu_without_numbers_moves_its_cursor_then_enters() {
    let Some(t) = Tmux::new() else { return };
    let menu = |id: &str, at: &str, mark: &str| {
        t.spec(
            id,
            t.dir.path(),
            &["bash", "-c", CURSOR_MENU, "menu", at, mark],
        )
    };
    let answer = |id: &'static str, at: &'static str, mark: &'static str, choice: &'static str| {
        let spec = menu(id, at, mark);
        let rt = t.rt.clone();
        async move {
            let h = rt.create(&spec).await.expect("create");
            output_containing(&rt, &h, "Enter to confirm").await;
            assert!(
                rt.answer(&h, choice, terminal_question)
                    .await
                    .expect("answer"),
                "{choice}"
            );
            let out = output_containing(&rt, &h, "next:[").await;
            rt.destroy(&h).await.expect("destroy");
            out
        }
    };
    // "yes" with the cursor on "No, exit": one Down, then Enter, and nothing after it (no
    // letters typed into the dialog, no second Enter for what is drawn next).
    let out = answer("cur-1", "0", "heavy", "yes").await;
    assert!(
        out.contains("picked:[Yes, I trust this folder] keys:[down enter]")
            && out.contains("next:[]"),
        "{out}"
    );
    // "no" with the cursor already on it: Enter alone.
    let out = answer("cur-2", "0", "heavy", "no").await;
    assert!(out.contains("picked:[No, exit] keys:[enter]"), "{out}");
    // Upwards, under another cursor mark, by the option's own words.
    let out = answer("cur-3", "2", "plain", "No, exit").await;
    assert!(
        out.contains("picked:[No, exit] keys:[up up enter]"),
        "{out}"
    );
    // By its place in the list.
    let out = answer("cur-4", "0", "angle", "3").await;
    assert!(
        out.contains("picked:[Cancel] keys:[down down enter]"),
        "{out}"
    );
}

#[tokio::test]
async fn destroy_is_idempotent_and_leaves_nothing_running() {
    let Some(t) = Tmux::new() else { return };
    let h =
        t.rt.create(&t.spec("kill-1", t.dir.path(), &["sleep", "600"]))
            .await
            .expect("create");
    let pid = h.tmux().expect("tmux").pane_pid;
    assert!(crate::helpers::alive(pid));
    t.rt.destroy(&h).await.expect("destroy");
    assert!(!t.rt.is_alive(&h).await.expect("alive"));
    assert!(!crate::helpers::alive(pid));
    assert!(t.rt.list_sessions().await.expect("list").is_empty());
    t.rt.destroy(&h).await.expect("second destroy is a no-op");
    // Also with the whole server gone.
    t.rt.kill_server().await.expect("kill server");
    t.rt.destroy(&h).await.expect("destroy without a server");
    assert!(matches!(
        t.rt.send_message(&h, "x").await,
        Err(flotilla::plugins::PluginError::NotFound(_))
    ));
}

#[tokio::test]
async fn wait_exit_resolves_when_the_tmux_server_is_killed() {
    let Some(t) = Tmux::new() else { return };
    let h =
        t.rt.create(&t.spec("server-1", t.dir.path(), &["sleep", "600"]))
            .await
            .expect("create");
    let waiter = tokio::spawn({
        let rt = t.rt.clone();
        let h = h.clone();
        async move { rt.wait_exit(&h).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished());
    std::process::Command::new("tmux")
        .args(["-L", t.rt.socket(), "kill-server"])
        .status()
        .expect("tmux kill-server");
    let code = tokio::time::timeout(Duration::from_secs(15), waiter)
        .await
        .expect("wait_exit resolved")
        .expect("join")
        .expect("wait");
    assert_eq!(code, None, "no status once the server is gone");
    assert!(!t.rt.is_alive(&h).await.expect("alive"));
}

#[tokio::test]
async fn the_claude_code_plugin_drives_the_scripted_agent_through_tmux() {
    let Some(t) = Tmux::new() else { return };
    if !require_tool("git") {
        return;
    }
    // A project with a bare origin, and the session's worktree on its own branch.
    let root = t.dir.path();
    let origin = root.join("origin.git");
    git(
        root,
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            origin.to_str().expect("utf8"),
        ],
    );
    let repo = make_repo(root);
    git(
        &repo,
        &["remote", "add", "origin", origin.to_str().expect("utf8")],
    );
    git(&repo, &["push", "-q", "origin", "main"]);
    let ws = root.join("ws");
    git(
        &repo,
        &[
            "worktree",
            "add",
            "-q",
            "-b",
            "session/demo-1",
            ws.to_str().expect("utf8"),
            "main",
        ],
    );

    let home = t.home();
    let mut settings = AgentSettings::built_in(AgentKind::ClaudeCode);
    settings.command = vec![scripted_agent_path().to_string_lossy().into_owned()];
    settings.model = Some("sonnet".into());
    settings
        .env
        .insert("HOME".into(), home.to_string_lossy().into_owned());
    let agent = ClaudeCodeAgent::new("claude-code".into(), settings);
    let prompt_file = root.join("prompt.md");
    std::fs::write(
        &prompt_file,
        "## Project rules\n\nBe careful.\n\n## Task\n\nFix the parser. ASK before finishing.\n\n## How to work\n\nCommit and push.\n",
    )
    .expect("prompt");
    let mut ctx = AgentContext {
        permission_mode: None,
        flotilla_cli: None,
        session_id: "demo-1".into(),
        workspace: ws.clone(),
        prompt_file: prompt_file.clone(),
        resume: false,
        agent_session_id: None,
        message: None,
    };
    let (argv, extra) = agent.launch(&ctx).expect("launch");
    assert!(argv.contains(&"--append-system-prompt".to_string()));
    let mut env = base_env(&home);
    env.extend(extra);
    env.insert("FLOTILLA_SESSION_ID".into(), "demo-1".into());
    env.insert(
        "FLOTILLA_PROMPT_FILE".into(),
        prompt_file.to_string_lossy().into_owned(),
    );
    let h =
        t.rt.create(&LaunchSpec {
            session_id: "demo-1".into(),
            cwd: ws.clone(),
            argv,
            env,
        })
        .await
        .expect("create");

    let probe = |terminal: Option<String>| ActivityProbe {
        workspace: ws.clone(),
        terminal,
        last_output_at: None,
        now: chrono::Utc::now(),
    };
    // It asks: the log has a pending AskUserQuestion, the screen a (y/n) prompt.
    output_containing(&t.rt, &h, "Do you want to proceed? (y/n)").await;
    let screen = t.rt.output(&h, 20).await.expect("output");
    let sig = agent
        .activity(&probe(Some(screen)))
        .await
        .expect("activity")
        .expect("signal");
    assert_eq!(sig.activity, Activity::WaitingInput);
    assert!(t.rt.send_message(&h, "y").await.expect("send"));
    // Answered and finished: idle, not stuck in waiting_input.
    let sig = eventually(15, "idle after the answer", || async {
        let screen = t.rt.output(&h, 20).await.ok();
        let s = agent.activity(&probe(screen)).await.ok()??;
        (s.activity == Activity::Idle).then_some(s)
    })
    .await;
    assert_eq!(
        sig.source,
        flotilla::plugins::activity::ActivitySource::Native
    );

    // The work reached origin on the session's branch.
    let pushed = git(&origin, &["log", "--format=%s", "session/demo-1"]);
    assert!(
        pushed.starts_with("scripted: Fix the parser. ASK before finishing."),
        "{pushed}"
    );
    let usage = agent.usage(&ws).await.expect("usage").expect("some");
    assert!(usage.output_tokens > 0 && usage.cache_tokens > 0);
    assert!(usage.cost_usd.expect("priced") > 0.0);

    // Another commit on request; then exit.
    assert!(t
        .rt
        .send_message(&h, "commit second change")
        .await
        .expect("send"));
    output_containing(&t.rt, &h, "push: ok\n").await;
    eventually(10, "second commit on origin", || async {
        git(&origin, &["log", "--format=%s", "session/demo-1"])
            .starts_with("second change")
            .then_some(())
    })
    .await;
    assert!(t.rt.send_message(&h, "exit 0").await.expect("send"));
    assert_eq!(t.rt.wait_exit(&h).await.expect("wait"), Some(0));

    // Restore: the plugin resumes the same conversation, which continues in the same log.
    let id = agent
        .agent_session_id(&ws)
        .await
        .expect("id")
        .expect("some");
    ctx.resume = true;
    let (argv, _) = agent.launch(&ctx).expect("launch");
    let i = argv.iter().position(|a| a == "--resume").expect("--resume");
    assert_eq!(argv[i + 1], id);
}

/// Kills the app's tmux server (named after its home) when dropped.
struct TmuxServerGuard(String);

impl Drop for TmuxServerGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.0, "kill-server"])
            .output();
    }
}

#[actix_web::test]
async fn the_app_runs_a_claude_code_session_on_the_tmux_runtime() {
    if !require_tool("tmux") || !require_tool("git") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let agent_home = dir.path().join("agent-home");
    std::fs::create_dir_all(&agent_home).expect("agent home");
    let repo = make_repo(dir.path());
    let db = format!("sqlite://{}/flotilla.db", home.display());
    let cfg = crate::helpers::write_config(dir.path(), &repo, &db, r#"["true"]"#, "");
    // The demo project on tmux with the claude-code plugin, whose executable is the scripted
    // agent (it takes Claude's flags).
    let yaml = std::fs::read_to_string(&cfg)
        .expect("config")
        .replace("runtime: process", "runtime: tmux")
        .replace("agent: scripted", "agent: claude")
        .replace(
            "agents:\n",
            &format!(
                "agents:\n  claude: {{ kind: claude-code, model: sonnet, command: [\"{}\"], env: {{ HOME: \"{}\" }} }}\n",
                scripted_agent_path().display(),
                agent_home.display()
            ),
        );
    std::fs::write(&cfg, yaml).expect("config");
    let settings = flotilla::config::load_with(&flotilla::config::LoadOptions {
        config_path: Some(cfg),
        cwd: dir.path().to_path_buf(),
        env: Default::default(),
    })
    .expect("config loads");
    settings.validate().expect("config valid");
    let _server = TmuxServerGuard(flotilla::app::tmux_socket(&home));
    let clock = flotilla::clock::ManualClock::new();
    let app = flotilla::app::Application::build_with_clock(settings, home.clone(), clock.clock())
        .await
        .expect("app builds");
    let t = crate::helpers::TestApp {
        address: format!("http://127.0.0.1:{}", app.port()),
        client: crate::helpers::http_client(),
        store: app.store(),
        repo,
        home,
        clock,
        _handle: app.spawn(),
        _dir: dir,
    };
    t.wait_ready().await;

    let id = t
        .spawn(serde_json::json!({"project": "demo", "prompt": "Add a greeting"}))
        .await;
    let s = t.wait_state(&id, "working").await;
    assert_eq!(s["runtime"], "tmux", "{s}");
    let out = t.wait_output(&id, "DONE").await;
    assert!(out.contains("commit: ok"), "{out}");
    let log = git(&t.repo, &["log", "--format=%s", &format!("session/{id}")]);
    assert!(log.starts_with("scripted: Add a greeting"), "{log}");
    let (status, v) = t
        .post(
            &format!("/api/v1/sessions/{id}/send"),
            serde_json::json!({"message": "hello from the API"}),
        )
        .await;
    assert_eq!((status, v["delivered"].as_bool()), (200, Some(true)), "{v}");
    t.wait_output(&id, "got: hello from the API").await;
    t.post(
        &format!("/api/v1/sessions/{id}/send"),
        serde_json::json!({"message": "exit 0"}),
    )
    .await;
    let s = t.wait_state(&id, "done").await;
    assert_eq!(s["reason"], "agent_exited_0", "{s}");
}

// ---------------------------------------------------------------------------------------------
// The real CLIs' parsers.

/// Output that means the CLI rejected its command line.
const PARSE_ERRORS: &[&str] = &[
    "unknown option",
    "unexpected argument",
    "unrecognized arguments",
    "invalid value",
    "unknown argument",
    "error: option",
    "error: argument",
    "missing required argument",
    "too many arguments",
    "unknown configuration field",
    "Positionals:",
];

fn real_clis_wanted() -> bool {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    if ci || std::env::var("FLOTILLA_REAL_CLIS").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("skipping the real agent CLIs: set FLOTILLA_REAL_CLIS=1 (always run under CI=true)");
    false
}

/// One argv to check: which CLI, the case, the argv.
struct Case {
    label: String,
    argv: Vec<String>,
}

/// The chat bridge's assistants' turn command lines (claude `-p`, codex `exec`), fresh and
/// resumed, in every permission mode.
fn assistant_cases(claude: &Path, codex: &Path, ws: &Path) -> Vec<Case> {
    use flotilla::plugins::assistants::{claude::ClaudeAssistant, codex::CodexAssistant, CliTurns};
    use flotilla::plugins::TurnRequest;
    let exe = |p: &Path| vec![p.to_string_lossy().into_owned()];
    let mut cases = Vec::new();
    for mode in [
        PermissionMode::Default,
        PermissionMode::AutoEdit,
        PermissionMode::Suggest,
        PermissionMode::Permissionless,
    ] {
        for resume in [None, Some("0b0d6c1e-1111-4222-8333-444455556666")] {
            let request = TurnRequest {
                cwd: ws.to_path_buf(),
                prompt: "Say hello.".into(),
                resume_id: resume.map(str::to_string),
            };
            let how = if resume.is_some() { " resume" } else { "" };
            let (argv, _) =
                ClaudeAssistant(CliTurns::new(exe(claude), mode, BTreeMap::new())).argv(&request);
            cases.push(Case {
                label: format!("claude assistant {mode:?}{how}"),
                argv,
            });
            let (argv, _) =
                CodexAssistant(CliTurns::new(exe(codex), mode, BTreeMap::new())).argv(&request);
            cases.push(Case {
                label: format!("codex assistant {mode:?}{how}"),
                argv,
            });
        }
    }
    cases
}

fn cases_for(kind: AgentKind, exe: &Path, model: &str, dir: &Path) -> Vec<Case> {
    let modes = [
        PermissionMode::Default,
        PermissionMode::AutoEdit,
        PermissionMode::Suggest,
        PermissionMode::Permissionless,
    ];
    let prompt_file = dir.join("prompt.md");
    std::fs::write(
        &prompt_file,
        "## Project rules\n\nBe careful.\n\n## Task\n\nSay hello.\n\n## How to work\n\nCommit.\n",
    )
    .expect("prompt");
    let big_prompt = dir.join("big-prompt.md");
    std::fs::write(
        &big_prompt,
        format!("## Task\n\n{}\n", "word ".repeat(4000)),
    )
    .expect("big");
    let mut cases = Vec::new();
    let mut push =
        |label: String, mode, model: Option<&str>, resume: Option<&str>, prompt: &Path| {
            let mut s = AgentSettings::built_in(kind);
            s.command = vec![exe.to_string_lossy().into_owned()];
            s.permission_mode = mode;
            s.model = model.map(str::to_string);
            let prices = std::sync::Arc::new(flotilla::pricing::PriceTable::builtin_only());
            let agent = agents::from_settings(kind.as_str(), &s, &prices).expect("agent");
            let ctx = AgentContext {
                permission_mode: None,
                flotilla_cli: None,
                session_id: "demo-1".into(),
                workspace: dir.to_path_buf(),
                prompt_file: prompt.to_path_buf(),
                resume: resume.is_some(),
                agent_session_id: resume.map(str::to_string),
                message: None,
            };
            let (mut argv, _) = agent.launch(&ctx).expect("launch");
            if kind == AgentKind::Codex {
                // Make Codex reject unknown `-c` keys too.
                let at = if argv.get(1).map(String::as_str) == Some("resume") {
                    2
                } else {
                    1
                };
                argv.insert(at, "--strict-config".into());
            }
            cases.push(Case { label, argv });
        };
    for mode in modes {
        push(
            format!("{} {mode:?} with model", kind.as_str()),
            mode,
            Some(model),
            None,
            &prompt_file,
        );
    }
    // Without a model, aider starts an interactive OpenRouter login; the others fail fast.
    push(
        format!("{} default", kind.as_str()),
        PermissionMode::Default,
        None,
        None,
        &prompt_file,
    );
    push(
        format!("{} long prompt by file", kind.as_str()),
        PermissionMode::AutoEdit,
        Some(model),
        None,
        &big_prompt,
    );
    push(
        format!("{} resume", kind.as_str()),
        PermissionMode::AutoEdit,
        Some(model),
        Some("0b0d6c1e-1111-4222-8333-444455556666"),
        &prompt_file,
    );
    cases
}

#[tokio::test]
async fn real_agent_clis_accept_every_argv_we_build() {
    if !real_clis_wanted() {
        return;
    }
    // The CLIs `.ci/deps.sh` installs (pinned), the same the other real-CLI tests drive;
    // installing them again here cost three minutes of every run.
    let cli = |name: &str, var: &str| -> PathBuf {
        real_cli(name, var).unwrap_or_else(|| panic!("the real {name} CLI is needed"))
    };
    let claude = cli("claude", "FLOTILLA_CLAUDE_BIN");
    let codex = cli("codex", "FLOTILLA_CODEX_BIN");
    let opencode = cli("opencode", "FLOTILLA_OPENCODE_BIN");
    let aider = cli("aider", "FLOTILLA_AIDER_BIN");
    let bin = claude
        .parent()
        .expect("the npm bin directory")
        .to_path_buf();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let home = root.join("home");
    let ws = root.join("ws");
    std::fs::create_dir_all(&home).expect("home");
    std::fs::create_dir_all(&ws).expect("ws");
    let mut cases = Vec::new();
    cases.extend(cases_for(AgentKind::ClaudeCode, &claude, "sonnet", &ws));
    cases.extend(cases_for(AgentKind::Codex, &codex, "gpt-5-codex", &ws));
    cases.extend(cases_for(
        AgentKind::Opencode,
        &opencode,
        "anthropic/claude-sonnet-4-5",
        &ws,
    ));
    cases.extend(cases_for(AgentKind::Aider, &aider, "gpt-4o", &ws));
    cases.extend(assistant_cases(&claude, &codex, &ws));

    // A scrubbed environment: no credentials, a throwaway HOME, no terminal.
    let path = format!(
        "{}:{}:/usr/local/bin:/usr/bin:/bin",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let t0 = Instant::now();
    let results: Vec<(&Case, Outcome)> = futures::stream::iter(cases.iter().map(|c| {
        let path = path.clone();
        let home = home.clone();
        let ws = ws.clone();
        async move { (c, run_cli(c, &path, &home, &ws).await) }
    }))
    .buffer_unordered(4)
    .collect()
    .await;
    eprintln!(
        "{} argv checked in {:.0}s",
        cases.len(),
        t0.elapsed().as_secs_f64()
    );
    let mut failures = Vec::new();
    for (c, o) in results {
        let text = strip_escapes(&o.output);
        let lower = text.to_lowercase();
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .chars()
            .take(120)
            .collect::<String>();
        if let Some(p) = PARSE_ERRORS
            .iter()
            .find(|p| lower.contains(&p.to_lowercase()))
        {
            failures.push(format!(
                "{}: rejected ({p}):\n  argv: {:?}\n  output: {}",
                c.label,
                c.argv,
                text.chars().take(600).collect::<String>()
            ));
        } else if o.output.trim().is_empty() {
            // Killed before saying anything: no evidence its parser ran.
            failures.push(format!("{}: no output ({}): {:?}", c.label, o.how, c.argv));
        } else {
            eprintln!("ok {} ({}): {last}", c.label, o.how);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What running a CLI produced.
struct Outcome {
    output: String,
    how: &'static str,
}

/// Runs one CLI in the scrubbed environment. A CLI that exits is judged by its output; one
/// still running after [`SETTLE`] with output on screen is past its parser (an interactive
/// TUI, a login prompt) and is stopped; a silent one gets until [`HARD_LIMIT`].
async fn run_cli(c: &Case, path: &str, home: &Path, ws: &Path) -> Outcome {
    use tokio::io::AsyncReadExt;
    const SETTLE: Duration = Duration::from_secs(10);
    const HARD_LIMIT: Duration = Duration::from_secs(60);
    let mut child = tokio::process::Command::new(&c.argv[0])
        .args(&c.argv[1..])
        .current_dir(ws)
        .env_clear()
        .env("PATH", path)
        .env("HOME", home)
        .env("TERM", "dumb")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{}: cannot run {:?}: {e}", c.label, c.argv[0]));
    let captured = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let mut readers = Vec::new();
    let streams: Vec<Box<dyn tokio::io::AsyncRead + Unpin + Send>> = vec![
        Box::new(child.stdout.take().expect("stdout")),
        Box::new(child.stderr.take().expect("stderr")),
    ];
    for mut r in streams {
        let captured = captured.clone();
        readers.push(tokio::spawn(async move {
            let mut buf = [0u8; 8192];
            while let Ok(n) = r.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if let Ok(mut v) = captured.lock() {
                    v.extend_from_slice(&buf[..n]);
                }
            }
        }));
    }
    let pid = child.id().map(|p| p as i32);
    let started = Instant::now();
    let how = loop {
        match tokio::time::timeout(Duration::from_millis(500), child.wait()).await {
            Ok(_) => break "exited",
            Err(_) => {
                let has_output = captured.lock().map(|v| !v.is_empty()).unwrap_or(false);
                let t = started.elapsed();
                if (t >= SETTLE && has_output) || t >= HARD_LIMIT {
                    if let Some(pid) = pid {
                        // SAFETY: plain signal to the process group we started.
                        unsafe {
                            libc::killpg(pid, libc::SIGKILL);
                        }
                    }
                    let _ = child.wait().await;
                    break "still running, stopped";
                }
            }
        }
    };
    for r in readers {
        let _ = tokio::time::timeout(Duration::from_secs(5), r).await;
    }
    let output = captured
        .lock()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default();
    Outcome { output, how }
}

fn strip_escapes(s: &str) -> String {
    flotilla::plugins::tmux::strip_ansi(s)
}
