//! Tokenizing and classifying an inbound message.

/// Commands handled by Flotilla itself: they never reach the assistant, and a template of the
/// same name cannot shadow them.
pub const DETERMINISTIC: &[&str] = &[
    "help",
    "status",
    "getcwd",
    "setcwd",
    "clone",
    "repos",
    "repo",
    "reset",
    "reset-context",
    "command-set",
    "load-commands",
    "commands",
    "command-invoke",
    "template-add",
    "template-list",
    "templates",
    "template-delete",
    "worktree",
    "cancel",
    "spawn",
    "fleet",
    "answer",
];

/// What a message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A deterministic command (`/status`), with its arguments.
    Command {
        /// Name without the slash.
        name: String,
        /// Arguments, quotes removed.
        args: Vec<String>,
        /// Everything after the command name, as typed (for `/setcwd a b`, `/spawn …`).
        rest: String,
    },
    /// `/name args` where `name` is not deterministic: a global template, or unknown.
    Template {
        /// Name without the slash.
        name: String,
        /// Arguments, quotes removed.
        args: Vec<String>,
    },
    /// Anything else: a message for the assistant.
    Plain(String),
}

/// Splits on whitespace, keeping `"double"` and `'single'` quoted strings as one token with
/// the quotes removed. An unterminated quote runs to the end.
pub fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_token = false;
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                in_token = true;
            }
            None if c.is_whitespace() => {
                if in_token {
                    out.push(std::mem::take(&mut cur));
                    in_token = false;
                }
            }
            None => {
                cur.push(c);
                in_token = true;
            }
        }
    }
    if in_token {
        out.push(cur);
    }
    out
}

/// Classifies a message. Only the first line of a multi-line message is taken as a command
/// line when it starts with `/`; the rest stays with the prompt for templates.
pub fn parse(text: &str) -> Parsed {
    let trimmed = text.trim();
    if !trimmed.starts_with('/') || trimmed.starts_with("//") {
        return Parsed::Plain(trimmed.to_string());
    }
    let tokens = tokenize(trimmed);
    let Some(first) = tokens.first() else {
        return Parsed::Plain(trimmed.to_string());
    };
    // Telegram groups address bots as `/status@BotName`.
    let name = first
        .trim_start_matches('/')
        .split('@')
        .next()
        .unwrap_or("")
        .to_string();
    if name.is_empty() {
        return Parsed::Plain(trimmed.to_string());
    }
    let args = tokens[1..].to_vec();
    let rest = trimmed
        .split_once(char::is_whitespace)
        .map(|(_, r)| r.trim().to_string())
        .unwrap_or_default();
    if DETERMINISTIC.contains(&name.as_str()) {
        Parsed::Command { name, args, rest }
    } else {
        Parsed::Template { name, args }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_arguments_stay_one_token_scenario_5() {
        assert_eq!(
            parse(r#"/command-invoke plan "add dark mode" now"#),
            Parsed::Command {
                name: "command-invoke".into(),
                args: vec!["plan".into(), "add dark mode".into(), "now".into()],
                rest: r#"plan "add dark mode" now"#.into(),
            }
        );
        assert_eq!(tokenize("a 'b c'  d"), ["a", "b c", "d"]);
        assert_eq!(tokenize(r#"x "" y"#), ["x", "", "y"]);
        assert_eq!(tokenize("  "), Vec::<String>::new());
    }

    #[test]
    fn classifies_commands_templates_and_plain_text() {
        assert!(
            matches!(parse("/status@FlotillaBot"), Parsed::Command { name, .. } if name == "status")
        );
        assert!(
            matches!(parse("/plan build X"), Parsed::Template { name, args } if name == "plan" && args == ["build", "X"])
        );
        assert_eq!(
            parse("why does login fail"),
            Parsed::Plain("why does login fail".into())
        );
        assert_eq!(parse("/"), Parsed::Plain("/".into()));
        // `/worktree` is deterministic, never a template.
        assert!(matches!(parse("/worktree list"), Parsed::Command { .. }));
    }
}
