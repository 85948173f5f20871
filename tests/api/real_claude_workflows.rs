//! The nine seeded workflows (`/prd`, `/plan`, `/implement`, `/commit`, `/create-pr`,
//! `/review-pr`, `/merge-pr`, `/rca`, `/fix-rca`) run through the chat bridge with the real
//! `claude` CLI as the assistant, driven by the scripted Messages API: each workflow's
//! instructions reach the model in full (the template, filled in, inside the execute-now
//! wrapper), and the artefact its name promises exists afterwards — a document in
//! `.flotilla/…`, a commit with a Conventional Commits subject, a pull request opened, commented
//! on and merged on the fake GitHub. The model's moves are scripted; the CLI really runs them
//! (`Write`, `Bash`: git and curl) in the conversation's checkout.
//!
//! One app, one clone of the repository; each workflow in its own thread (a fresh session).
//! Skipped without the CLI; under `CI=true` a missing CLI fails. Waits use deadlines.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::chat_driver::ChatDriver;
use crate::fake_anthropic::{request_text, FakeAnthropic, Step};
use crate::fake_github::FakeGithub;
use crate::helpers::*;
use flotilla::chat::template::{strip_front_matter, substitute, SEEDED};

const KEY: &str = "sk-ant-fake-0123456789";
const GH_TOKEN: &str = "ghp_workflows";
const REPO: &str = "acme/widget";

/// What a workflow run checks afterwards.
enum Artefact {
    /// A file at this path (relative to the checkout) holding this text.
    File(&'static str, &'static str),
    /// `HEAD`'s subject is this.
    Commit(&'static str),
    /// The fake GitHub answered this request kind with this status once more than before.
    Github(&'static str, u16),
}

/// One workflow: the message that invokes it and the model's scripted moves (given the
/// checkout's path).
struct Run {
    name: &'static str,
    args: &'static [&'static str],
    steps: fn(&Path) -> Vec<Step>,
    artefacts: &'static [Artefact],
}

fn write(dir: &Path, rel: &str, content: &str) -> Step {
    let path = dir.join(rel);
    Step::tool(
        "Write",
        json!({"file_path": path.to_str().expect("utf-8 path"), "content": content}),
    )
}

fn bash(command: &str) -> Step {
    Step::tool(
        "Bash",
        json!({"command": command, "description": "workflow step"}),
    )
}

const CURL: &str = r#"curl -sS -f -H "Authorization: Bearer $GITHUB_TOKEN" -H 'Accept: application/vnd.github+json'"#;

fn runs() -> Vec<Run> {
    vec![
        Run {
            name: "prd",
            args: &["CSV", "export"],
            steps: |d| {
                vec![
                    write(d, ".flotilla/prds/csv-export.md", "# PRD: CSV export\n"),
                    Step::text("DONE prd"),
                ]
            },
            artefacts: &[Artefact::File(
                ".flotilla/prds/csv-export.md",
                "# PRD: CSV export",
            )],
        },
        Run {
            name: "plan",
            args: &[".flotilla/prds/csv-export.md"],
            steps: |d| {
                vec![
                    write(
                        d,
                        ".flotilla/plans/csv-export.md",
                        "# CSV export\n## Steps\n- [ ] 1. export.csv\n",
                    ),
                    Step::text("DONE plan"),
                ]
            },
            artefacts: &[Artefact::File(".flotilla/plans/csv-export.md", "## Steps")],
        },
        Run {
            name: "implement",
            args: &[".flotilla/plans/csv-export.md"],
            steps: |d| {
                vec![
                    write(d, "export.csv", "id,name\n"),
                    bash("git checkout -q -b feat/csv-export && git add -A && git commit -q -m 'feat: add CSV export' -m 'Plan: .flotilla/plans/csv-export.md'"),
                    Step::text("DONE implement"),
                ]
            },
            artefacts: &[
                Artefact::Commit("feat: add CSV export"),
                Artefact::File("export.csv", "id,name"),
            ],
        },
        Run {
            name: "commit",
            args: &[],
            steps: |_| {
                vec![
                    bash("git add NOTES.md && git commit -q -m 'docs: add export notes'"),
                    Step::text("DONE commit"),
                ]
            },
            artefacts: &[Artefact::Commit("docs: add export notes")],
        },
        Run {
            name: "create-pr",
            args: &["main"],
            steps: |_| {
                vec![
                    bash(&format!(
                        r#"git push -q -u origin HEAD && {CURL} -X POST "$GITHUB_API/repos/{REPO}/pulls" -d '{{"title":"feat: add CSV export","head":"feat/csv-export","base":"main","body":"Summary: CSV export."}}'"#
                    )),
                    Step::text("DONE create-pr"),
                ]
            },
            artefacts: &[Artefact::Github("POST /repos/{owner}/{repo}/pulls", 201)],
        },
        Run {
            name: "review-pr",
            args: &["1"],
            steps: |d| {
                vec![
                    write(
                        d,
                        ".flotilla/reviews/pr-1.md",
                        "# Review of PR #1: feat: add CSV export\n## Verdict\napprove\n",
                    ),
                    bash(&format!(
                        r#"{CURL} -X POST "$GITHUB_API/repos/{REPO}/issues/1/comments" -d '{{"body":"Review: approve"}}'"#
                    )),
                    Step::text("DONE review-pr"),
                ]
            },
            artefacts: &[
                Artefact::File(".flotilla/reviews/pr-1.md", "## Verdict"),
                Artefact::Github("POST /repos/{owner}/{repo}/issues/{number}/comments", 201),
            ],
        },
        Run {
            name: "merge-pr",
            args: &["1"],
            steps: |_| {
                vec![
                    bash(&format!(
                        r#"{CURL} -X PUT "$GITHUB_API/repos/{REPO}/pulls/1/merge" -d '{{"merge_method":"squash"}}'"#
                    )),
                    Step::text("DONE merge-pr"),
                ]
            },
            artefacts: &[Artefact::Github(
                "PUT /repos/{owner}/{repo}/pulls/{number}/merge",
                200,
            )],
        },
        Run {
            name: "rca",
            args: &["export", "drops", "the", "header"],
            steps: |d| {
                vec![
                    write(
                        d,
                        ".flotilla/rca/export-drops-header.md",
                        "# RCA: export drops the header\n## Root cause\nx\n## Proposed fix\ny\n",
                    ),
                    Step::text("DONE rca"),
                ]
            },
            artefacts: &[Artefact::File(
                ".flotilla/rca/export-drops-header.md",
                "## Root cause",
            )],
        },
        Run {
            name: "fix-rca",
            args: &[".flotilla/rca/export-drops-header.md"],
            steps: |d| {
                vec![
                    write(d, "export.csv", "id,name,header\n"),
                    bash("git add -A && git commit -q -m 'fix: keep the header in CSV exports' -m 'RCA: .flotilla/rca/export-drops-header.md'"),
                    Step::text("DONE fix-rca"),
                ]
            },
            artefacts: &[Artefact::Commit("fix: keep the header in CSV exports")],
        },
    ]
}

/// An app whose chat assistant is the real CLI (every tool allowed, as a user who lets it run
/// git and curl configures it) with a GitHub token for the fake GitHub in its environment.
async fn start(bin: &Path, fake: &FakeAnthropic, gh: &FakeGithub) -> Option<ChatDriver> {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("chat");
    let home = base.join("claude-home");
    std::fs::create_dir_all(&home).expect("mkdir home");
    let extra = format!(
        "chat:\n  max_concurrent: 2\n  turn_timeout: 120s\n  test_adapter: true\n  \
         allow: {{ test: [tester] }}\n  workspace: {ws}\n  worktrees: {wt}\n  \
         assistant: {{ kind: claude, command: [\"{bin}\"], permission_mode: permissionless, \
         env: {{ HOME: \"{home}\", IS_SANDBOX: \"1\", ANTHROPIC_BASE_URL: \"{url}\", \
         ANTHROPIC_API_KEY: \"{KEY}\", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: \"1\", \
         GITHUB_API: \"{api}\", GITHUB_TOKEN: \"{GH_TOKEN}\", GIT_AUTHOR_NAME: a, \
         GIT_AUTHOR_EMAIL: a@example.com, GIT_COMMITTER_NAME: a, \
         GIT_COMMITTER_EMAIL: a@example.com }} }}\n",
        ws = base.join("ws").display(),
        wt = base.join("worktrees").display(),
        bin = bin.display(),
        home = home.display(),
        url = fake.url(),
        api = gh.url,
    );
    let agents = format!("  scripted: {{ kind: command, command: {ECHO_AGENT} }}\n");
    let app = spawn_app_with_agents(Backend::Sqlite, &agents, &extra, dir).await?;
    Some(ChatDriver { app, base })
}

/// The workflow template `name` as the model must see it, filled in with `args`.
fn instructions(name: &str, args: &[&str]) -> String {
    let (_, content) = SEEDED
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no seeded workflow {name}"));
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    substitute(strip_front_matter(content), &args)
        .trim()
        .to_string()
}

fn head_subject(dir: &Path) -> String {
    git(dir, &["log", "-1", "--format=%s"]).trim().to_string()
}

#[actix_web::test]
async fn real_claude_seeded_workflows_send_their_instructions_and_produce_their_artefacts() {
    let Some(bin) = real_cli("claude", "FLOTILLA_CLAUDE_BIN") else {
        return;
    };
    if !require_tool("git") || !require_tool("curl") {
        return;
    }
    let fake = FakeAnthropic::start(Vec::new()).await;
    fake.require_api_key(KEY);
    let gh = FakeGithub::start(GH_TOKEN).await;
    let bare: PathBuf = gh.create_repo(REPO);
    let Some(c) = start(&bin, &fake, &gh).await else {
        return;
    };
    for run in runs() {
        let thread = format!("wf-{}", run.name);
        c.send(&thread, &format!("/clone {}", bare.display())).await;
        c.wait_reply(&thread, REPO).await;
        let dir = PathBuf::from(c.conversation(&thread).await.cwd.expect("cwd"));
        if run.name == "commit" {
            std::fs::write(dir.join("NOTES.md"), "Exports are CSV.\n").expect("write notes");
        }
        let github_before: Vec<u64> = run
            .artefacts
            .iter()
            .map(|a| match a {
                Artefact::Github(kind, status) => gh.count_status(kind, *status),
                _ => 0,
            })
            .collect();
        let first_request = fake.requests().len();
        fake.push((run.steps)(&dir));
        let mut message = format!("/{}", run.name);
        for a in run.args {
            message.push(' ');
            message.push_str(a);
        }
        c.send(&thread, &message).await;
        let reply = c.wait_reply(&thread, &format!("DONE {}", run.name)).await;
        assert!(!reply.contains("not allowed"), "/{}: {reply}", run.name);
        assert_eq!(fake.remaining(), 0, "/{}: the script ran out", run.name);

        let sent = request_text(&fake.requests()[first_request]);
        assert!(
            sent.contains(&format!("The user invoked the `/{}` command", run.name)),
            "/{}: {sent}",
            run.name
        );
        let expected = instructions(run.name, run.args);
        assert!(
            sent.contains(&expected),
            "/{}: the model did not get the workflow's instructions:\n{expected}\n--- sent ---\n{sent}",
            run.name
        );
        for (a, before) in run.artefacts.iter().zip(github_before) {
            match a {
                Artefact::File(rel, needle) => {
                    let text = std::fs::read_to_string(dir.join(rel))
                        .unwrap_or_else(|e| panic!("/{}: {rel} missing: {e}", run.name));
                    assert!(text.contains(needle), "/{}: {rel}: {text}", run.name);
                }
                Artefact::Commit(subject) => {
                    assert_eq!(head_subject(&dir), *subject, "/{}", run.name)
                }
                Artefact::Github(kind, status) => assert_eq!(
                    gh.count_status(kind, *status),
                    before + 1,
                    "/{}: {kind} → {status}",
                    run.name
                ),
            }
        }
    }
    // The pull request the workflows opened is merged, with the branch's commits.
    let main = gh.git(REPO, &["log", "--format=%s", "main"]);
    assert!(main.contains("feat: add CSV export"), "{main}");
}
