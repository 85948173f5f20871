//! Value types used by the settings structs: [`Secret`], [`HumanDuration`],
//! [`EscalateAfter`] and the closed string enums (`kind: …`, `action: …`).
//!
//! Each type deserializes itself and produces an error message that makes sense
//! after the loader has put the key in front of it (`lifecycle.spawn_timeout: …`).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A secret string (token, signing secret, API key).
///
/// `Debug` and `Display` print `***`, so a `Settings` can be logged. Read the
/// value with [`Secret::expose`]; compare it in constant time where it
/// authenticates a request.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Keep it out of logs and error messages.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string (for example an empty `${VAR}`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A duration written with units in the config (`"30s"`, `"10m"`, `"2h"`,
/// `"1h 30m"`), parsed with `humantime`. A bare number without a unit is
/// rejected, except `0`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        HumanDuration(Duration::from_secs(secs))
    }

    /// The wrapped duration.
    pub fn get(self) -> Duration {
        self.0
    }

    /// Parses `"30s"`-style text; the error explains what is accepted.
    ///
    /// # Errors
    /// Returns a message naming the bad text when it is not a duration with units.
    pub fn parse(text: &str) -> Result<Self, String> {
        humantime::parse_duration(text.trim()).map(Self).map_err(|e| {
            // humantime appends a long list of unit spellings; the hint is enough.
            let e = e.to_string();
            let e = e.split(", supported units").next().unwrap_or(&e).to_string();
            format!("invalid duration {text:?}: {e} (use a number with a unit, like \"30s\", \"10m\", \"2h\")")
        })
    }
}

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Self {
        d.0
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with a unit, like \"30s\" or \"10m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                HumanDuration::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(DurationVisitor)
    }
}

/// When a reaction stops retrying and escalates to humans: after a number of
/// attempts (`escalate_after: 2`) or once the condition has lasted a while
/// (`escalate_after: 30m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EscalateAfter {
    /// Escalate when the reaction has fired more than this many times.
    Attempts(u32),
    /// Escalate when this much time has passed since the first trigger.
    Duration(HumanDuration),
}

impl<'de> Deserialize<'de> for EscalateAfter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EscalateVisitor;
        impl Visitor<'_> for EscalateVisitor {
            type Value = EscalateAfter;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of attempts or a duration like \"30m\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                u32::try_from(v)
                    .map(EscalateAfter::Attempts)
                    .map_err(|_| E::custom(format!("{v} attempts is too many")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!(
                        "must be a positive number of attempts or a duration, not {v}"
                    ))),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                // Environment overrides arrive as strings, so "2" means attempts too.
                let t = v.trim();
                if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
                    return t
                        .parse::<u32>()
                        .map(EscalateAfter::Attempts)
                        .map_err(|_| E::custom(format!("{t} attempts is too many")));
                }
                HumanDuration::parse(t)
                    .map(EscalateAfter::Duration)
                    .map_err(E::custom)
            }
        }
        deserializer.deserialize_any(EscalateVisitor)
    }
}

/// Defines a closed set of lowercase names as an enum with `as_str`, `ALL`,
/// `FromStr`, `Display` and a `Deserialize` whose error lists the choices.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $( $(#[$vmeta])* $variant ),+ }

        impl $name {
            /// Every accepted value, in config spelling.
            pub const ALL: &'static [&'static str] = &[$($text),+];

            /// The config spelling of this value.
            pub fn as_str(self) -> &'static str {
                match self { $( Self::$variant => $text ),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $( $text => Ok(Self::$variant), )+
                    other => Err(format!(
                        "unknown value {other:?}, expected one of: {}",
                        Self::ALL.join(", ")
                    )),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(f, "one of: {}", $name::ALL.join(", "))
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

string_enum! {
    /// Log output format (`log.format`).
    pub enum LogFormat {
        /// Human-readable lines.
        Text = "text",
        /// One JSON object per line.
        Json = "json",
    }
}

string_enum! {
    /// Which agent CLI an agent entry runs (`agents.<name>.kind`).
    pub enum AgentKind {
        /// Anthropic Claude Code.
        ClaudeCode = "claude-code",
        /// OpenAI Codex CLI.
        Codex = "codex",
        /// Aider.
        Aider = "aider",
        /// OpenCode.
        Opencode = "opencode",
        /// Any program, started with the entry's `command` argv.
        Command = "command",
    }
}

impl AgentKind {
    /// The kinds usable by name without an `agents:` entry.
    pub const BUILT_IN: &'static [AgentKind] = &[
        AgentKind::ClaudeCode,
        AgentKind::Codex,
        AgentKind::Aider,
        AgentKind::Opencode,
    ];

    /// The built-in kind spelled `name`, if any (`command` is not built in:
    /// it needs an entry with an argv).
    pub fn built_in(name: &str) -> Option<AgentKind> {
        Self::BUILT_IN.iter().copied().find(|k| k.as_str() == name)
    }
}

string_enum! {
    /// How much the agent may do without asking (`agents.<name>.permission_mode`).
    pub enum PermissionMode {
        /// The agent CLI's own default.
        Default = "default",
        /// Edit files without asking, ask before running commands.
        AutoEdit = "auto-edit",
        /// Only suggest changes.
        Suggest = "suggest",
        /// Never ask (needed for unattended sessions in most CLIs).
        Permissionless = "permissionless",
    }
}

string_enum! {
    /// Where an agent process runs (`defaults.runtime`, `projects.<name>.runtime`).
    pub enum RuntimeKind {
        /// A tmux session (attachable).
        Tmux = "tmux",
        /// A plain child process.
        Process = "process",
    }
}

string_enum! {
    /// How a session's working copy is made (`defaults.workspace`, `projects.<name>.workspace`).
    pub enum WorkspaceKind {
        /// A `git worktree` of the project repository.
        Worktree = "worktree",
        /// A full `git clone`.
        Clone = "clone",
    }
}

string_enum! {
    /// Issue tracker of a project (`projects.<name>.tracker`).
    pub enum TrackerKind {
        /// GitHub issues.
        Github = "github",
        /// Linear.
        Linear = "linear",
        /// Jira.
        Jira = "jira",
    }
}

string_enum! {
    /// Code host of a project (`projects.<name>.scm`).
    pub enum ScmKind {
        /// GitHub pull requests and checks.
        Github = "github",
    }
}

string_enum! {
    /// What a reaction does (`reactions.<key>.action`).
    pub enum ReactionAction {
        /// Send the reaction's message to the session's agent.
        SendToAgent = "send-to-agent",
        /// Notify humans through the routed notifiers.
        Notify = "notify",
        /// Merge the PR (when `auto` allows it).
        AutoMerge = "auto-merge",
    }
}

string_enum! {
    /// Notification priority, also the key of `routing`.
    pub enum Priority {
        /// Needs a human now.
        Urgent = "urgent",
        /// A human should act soon (review, merge).
        Action = "action",
        /// Something went wrong but is being handled.
        Warning = "warning",
        /// For the record.
        Info = "info",
    }
}

string_enum! {
    /// How a PR is merged (`reactions.<key>.merge_method`).
    pub enum MergeMethod {
        /// A merge commit.
        Merge = "merge",
        /// Squash into one commit.
        Squash = "squash",
        /// Rebase onto the base branch.
        Rebase = "rebase",
    }
}

string_enum! {
    /// What a named notifier is (`notifiers.<name>.kind`).
    pub enum NotifierKind {
        /// HTTP POST of a JSON body, HMAC-signed when `secret` is set.
        Webhook = "webhook",
        /// A desktop notification on the host.
        Desktop = "desktop",
        /// Slack (bot token + `channel`, or an incoming-webhook `url`).
        Slack = "slack",
        /// Discord (bot token + `channel`, or a webhook `url`).
        Discord = "discord",
        /// Telegram (bot token + `chat_id`).
        Telegram = "telegram",
        /// The chat conversation the session was started from.
        Chat = "chat",
    }
}

/// Deserializes an absent or `null` value as `T::default()`, so `agents:` with
/// nothing after it means "no agents" rather than a type error.
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_and_display_hide_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(format!("{s}"), "***");
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn durations_need_units() {
        assert_eq!(
            HumanDuration::parse("10m").unwrap().get(),
            Duration::from_secs(600)
        );
        assert_eq!(
            HumanDuration::parse("1h 30m").unwrap().get(),
            Duration::from_secs(5400)
        );
        assert!(HumanDuration::parse("5 parsecs").is_err());
        assert!(HumanDuration::parse("300").is_err());
    }

    #[test]
    fn enums_list_choices_on_error() {
        let err = "xml".parse::<LogFormat>().unwrap_err();
        assert!(err.contains("text, json"), "{err}");
        assert_eq!(
            "auto-edit".parse::<PermissionMode>(),
            Ok(PermissionMode::AutoEdit)
        );
        assert_eq!(AgentKind::built_in("codex"), Some(AgentKind::Codex));
        assert_eq!(AgentKind::built_in("command"), None);
    }
}
