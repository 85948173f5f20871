//! `flotilla init`: detect the current git repository, generate an API token
//! and write a commented `flotilla.yaml` that loads and validates as is.
//!
//! `git` is run with argument vectors (never a shell) and only reads the
//! repository; nothing here talks to the network.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rand::RngCore;

use super::load::DEFAULT_FILE_NAME;

/// What `flotilla init` learned about the repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoInfo {
    /// Top-level directory of the working tree.
    pub root: PathBuf,
    /// Project name: the root directory's name reduced to `[A-Za-z0-9_-]`.
    pub name: String,
    /// URL of the `origin` remote, if there is one.
    pub origin_url: Option<String>,
    /// `owner/name` when `origin` points at GitHub.
    pub github_repo: Option<String>,
    /// `origin`'s default branch, else the current branch, else `main`.
    pub default_branch: String,
}

/// Why `flotilla init` failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// `git` could not be started (not installed, not on `PATH`).
    #[error("cannot run git: {0}")]
    GitUnavailable(#[source] std::io::Error),
    /// The directory is not inside a git working tree.
    #[error("{} is not inside a git repository: {stderr}", dir.display())]
    NotARepository {
        /// The directory that was inspected.
        dir: PathBuf,
        /// What git said.
        stderr: String,
    },
    /// The config file exists and overwriting was not requested.
    #[error("{} already exists; use --force to overwrite it", .0.display())]
    AlreadyExists(PathBuf),
    /// The config file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Output of one git invocation.
struct GitOutput {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn git(dir: &Path, args: &[&str]) -> Result<GitOutput, InitError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .map_err(InitError::GitUnavailable)?;
    Ok(GitOutput {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// Inspects the git repository containing `dir`.
///
/// # Errors
/// `InitError::GitUnavailable` when git cannot be run, `InitError::NotARepository`
/// when `dir` is not in a working tree.
pub fn detect_repo(dir: &Path) -> Result<RepoInfo, InitError> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    if !top.ok || top.stdout.is_empty() {
        return Err(InitError::NotARepository {
            dir: dir.to_path_buf(),
            stderr: top.stderr,
        });
    }
    let root = PathBuf::from(&top.stdout);

    let origin = git(&root, &["remote", "get-url", "origin"])?;
    let origin_url = (origin.ok && !origin.stdout.is_empty()).then_some(origin.stdout);
    let github_repo = origin_url.as_deref().and_then(parse_github_repo);

    let remote_head = git(
        &root,
        &[
            "symbolic-ref",
            "--quiet",
            "--short",
            "refs/remotes/origin/HEAD",
        ],
    )?;
    let default_branch = if remote_head.ok && !remote_head.stdout.is_empty() {
        remote_head
            .stdout
            .strip_prefix("origin/")
            .unwrap_or(&remote_head.stdout)
            .to_string()
    } else {
        // Works before the first commit too, unlike `rev-parse --abbrev-ref HEAD`.
        let head = git(&root, &["symbolic-ref", "--quiet", "--short", "HEAD"])?;
        if head.ok && !head.stdout.is_empty() {
            head.stdout
        } else {
            "main".to_string()
        }
    };

    let name = project_name(&root);
    Ok(RepoInfo {
        root,
        name,
        origin_url,
        github_repo,
        default_branch,
    })
}

/// The directory name reduced to `[A-Za-z0-9_-]+` (other characters become `-`).
fn project_name(root: &Path) -> String {
    let raw = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_matches('-');
    if cleaned.is_empty() {
        "project".to_string()
    } else {
        cleaned.to_string()
    }
}

/// `owner/name` from a GitHub remote URL (`git@github.com:o/n.git`,
/// `ssh://git@github.com/o/n`, `https://github.com/o/n.git`); `None` otherwise.
pub fn parse_github_repo(url: &str) -> Option<String> {
    let url = url.trim();
    let (host, path) = match url.split_once("://") {
        Some((_scheme, rest)) => {
            let (authority, path) = rest.split_once('/')?;
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            (host.split(':').next().unwrap_or(host), path)
        }
        None => {
            // scp-like syntax: [user@]host:path
            let (left, path) = url.split_once(':')?;
            (left.rsplit_once('@').map_or(left, |(_, h)| h), path)
        }
    };
    if !host.eq_ignore_ascii_case("github.com") {
        return None;
    }
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let (owner, name) = path.split_once('/')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    (ok(owner) && ok(name)).then(|| format!("{owner}/{name}"))
}

/// A new API token: 32 random bytes from the OS-seeded thread RNG, as 64 hex digits.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let mut hex = String::with_capacity(64);
    for b in bytes {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// A YAML double-quoted scalar for `s` (JSON string syntax is valid YAML), with
/// `${` escaped so it is not taken for an environment reference.
fn quoted(s: &str) -> String {
    let escaped = s.replace("${", "$${");
    serde_json::to_string(&escaped).unwrap_or_else(|_| format!("{escaped:?}"))
}

/// The commented `flotilla.yaml` for `info`, with `token` as the API token.
pub fn render_config(info: &RepoInfo, token: &str) -> String {
    let name = quoted(&info.name);
    let github_line = match &info.github_repo {
        Some(gh) => format!(
            "    github_repo: {}            # owner/name on GitHub\n",
            quoted(gh)
        ),
        None => "    # github_repo: \"owner/name\"   # not detected from origin\n".to_string(),
    };
    format!(
        r#"# flotilla.yaml — generated by `flotilla init` for {root}
#
# Only what differs from the defaults is needed here; every key and its default is
# listed in config/default.yaml in the Flotilla sources. Any value may be
# overridden with an environment variable FLOTILLA__SECTION__KEY (for example
# FLOTILLA__SERVER__PORT=7801), and any string may use ${{ENV_VAR}} references.

server:
  bind: 127.0.0.1   # a non-loopback address requires the token below
  port: 7700
  # Bearer token for the REST API (Authorization: Bearer <token>). This file is
  # created readable by you only; alternatively use token: "${{FLOTILLA_TOKEN}}".
  token: {token}

# database:
#   url: postgres://flotilla@localhost/flotilla   # default: SQLite under $FLOTILLA_HOME

projects:
  {name}:
    repo: {repo}
{github_line}    default_branch: {branch}
    session_prefix: {name}   # sessions are {prefix_hint}-1, {prefix_hint}-2, …
    # agent: claude-code     # or a name under agents:
    # runtime: tmux          # tmux | process
    # workspace: worktree    # worktree | clone
    # tracker: github        # github | linear | jira
    # rules_file: AGENTS.md  # extra instructions for the agent, relative to the repo
    # reactions:             # per-project overrides of the reactions table
    #   ci-failed: {{ retries: 3, escalate_after: 3 }}

# agents:                    # built-in kinds (claude-code, codex, aider, opencode) need no entry
#   scripted:
#     kind: command
#     command: ["./scripts/agent.sh", "--flag"]
#   claude-opus:
#     kind: claude-code
#     model: opus
#     permission_mode: permissionless

# notifiers:
#   ops:
#     kind: webhook
#     url: https://hooks.example.com/flotilla
#     secret: "${{OPS_WEBHOOK_SECRET}}"
#   laptop:
#     kind: desktop

# routing:                   # notifier names per priority; an empty list uses
#   urgent: [ops, laptop]    # defaults.notifiers, and every priority must reach one
#   action: [ops]
#   warning: [ops]
#   info: [ops]

# reactions:                 # global overrides; see config/default.yaml for the table
#   approved-and-green: {{ auto_merge: true, merge_method: squash }}
#   agent-stuck: {{ threshold: 15m }}

# github:
#   token: "${{GITHUB_TOKEN}}"
#   webhook_secret: "${{GITHUB_WEBHOOK_SECRET}}"
"#,
        root = info.root.display(),
        token = quoted(token),
        name = name,
        repo = quoted(&info.root.display().to_string()),
        github_line = github_line,
        branch = quoted(&info.default_branch),
        prefix_hint = info.name,
    )
}

/// The default location of the file `flotilla init` writes: `flotilla.yaml` in `dir`.
pub fn default_config_path(dir: &Path) -> PathBuf {
    dir.join(DEFAULT_FILE_NAME)
}

/// Writes `contents` to `path`, readable by the owner only (it holds the token).
///
/// # Errors
/// `InitError::AlreadyExists` when `path` exists and `force` is false;
/// `InitError::Write` on any I/O error.
pub fn write_config(path: &Path, contents: &str, force: bool) -> Result<(), InitError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let write_err = |source| InitError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            InitError::AlreadyExists(path.to_path_buf())
        } else {
            write_err(e)
        }
    })?;
    file.write_all(contents.as_bytes()).map_err(write_err)?;
    #[cfg(unix)]
    {
        // `mode` only applies to new files; an overwritten one may have been wider.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(write_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_with, LoadOptions};

    /// Whether `git` can be run; absent git fails under CI=true, skips elsewhere.
    fn require_git() -> bool {
        let found = Command::new("git")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "git is required under CI"
            );
            eprintln!("skipping: git not found");
        }
        found
    }

    fn run_git(dir: &Path, args: &[&str]) {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn parses_github_remotes() {
        for url in [
            "git@github.com:acme/widgets.git",
            "git@github.com:acme/widgets",
            "ssh://git@github.com/acme/widgets.git",
            "ssh://git@github.com:22/acme/widgets.git",
            "https://github.com/acme/widgets.git",
            "https://user@github.com/acme/widgets/",
            "git://github.com/acme/widgets",
        ] {
            assert_eq!(
                parse_github_repo(url).as_deref(),
                Some("acme/widgets"),
                "{url}"
            );
        }
        for url in [
            "git@gitlab.com:acme/widgets.git",
            "https://github.com/acme",
            "/srv/git/widgets.git",
            "https://github.com/acme/widgets/extra",
        ] {
            assert_eq!(parse_github_repo(url), None, "{url}");
        }
    }

    #[test]
    fn tokens_are_64_hex_digits_and_differ() {
        let a = generate_token();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, generate_token());
    }

    #[test]
    fn project_names_are_sanitized() {
        assert_eq!(project_name(Path::new("/x/my repo.v2")), "my-repo-v2");
        assert_eq!(project_name(Path::new("/x/.tmpAb1")), "tmpAb1");
        assert_eq!(project_name(Path::new("/")), "project");
    }

    #[test]
    fn init_writes_a_config_that_loads_and_validates() {
        if !require_git() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("widgets");
        std::fs::create_dir_all(repo.join("src")).unwrap();
        run_git(&repo, &["init", "-q", "-b", "main"]);
        run_git(
            &repo,
            &["remote", "add", "origin", "git@github.com:acme/widgets.git"],
        );

        // Detect from a subdirectory: the root is found by git.
        let info = detect_repo(&repo.join("src")).unwrap();
        assert_eq!(
            info.root.canonicalize().unwrap(),
            repo.canonicalize().unwrap()
        );
        assert_eq!(info.name, "widgets");
        assert_eq!(info.github_repo.as_deref(), Some("acme/widgets"));
        assert_eq!(info.default_branch, "main");

        let token = generate_token();
        let text = render_config(&info, &token);
        let path = default_config_path(&repo);
        write_config(&path, &text, false).unwrap();
        assert!(matches!(
            write_config(&path, &text, false),
            Err(InitError::AlreadyExists(_))
        ));
        write_config(&path, &text, true).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        let opts = LoadOptions {
            config_path: None,
            cwd: repo.clone(),
            env: Default::default(),
        };
        let settings = load_with(&opts).unwrap_or_else(|e| panic!("{e}\n---\n{text}"));
        settings
            .validate()
            .unwrap_or_else(|e| panic!("{e}\n---\n{text}"));
        assert_eq!(
            settings.server.token.as_ref().map(|t| t.expose()),
            Some(token.as_str())
        );
        let project = settings.project("widgets").unwrap();
        assert_eq!(project.github_repo.as_deref(), Some("acme/widgets"));
        assert_eq!(project.default_branch, "main");
        assert_eq!(settings.session_prefix("widgets"), "widgets");
    }

    #[test]
    fn detect_repo_outside_a_repository_fails() {
        if !require_git() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        // GIT_CEILING_DIRECTORIES is not set here; a temp dir is normally not
        // inside a repository, but guard against a checkout living in /tmp.
        match detect_repo(tmp.path()) {
            Err(InitError::NotARepository { .. }) => {}
            Ok(info) => assert_ne!(info.root, tmp.path()),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn render_without_github_keeps_a_commented_hint() {
        let info = RepoInfo {
            root: PathBuf::from("/srv/code/${odd}"),
            name: "odd".into(),
            origin_url: None,
            github_repo: None,
            default_branch: "trunk".into(),
        };
        let text = render_config(&info, "t");
        assert!(text.contains("# github_repo:"));
        assert!(text.contains("\"/srv/code/$${odd}\""));
        assert!(text.contains("default_branch: \"trunk\""));
    }
}
