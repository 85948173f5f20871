//! `desktop`: a notification on the machine Flotilla runs on — `notify-send` on Linux,
//! `osascript` on macOS — always through argument vectors ([`crate::plugins::exec`]), so no
//! text is ever parsed by a shell or by AppleScript as code.

use std::time::Duration;

use async_trait::async_trait;

use super::{headline, plain_text, truncate};
use crate::plugins::{exec, Notification, Notifier, PluginError, PluginResult, PostedMessage};

/// Longest body shown (desktop bubbles are small).
const MAX_BODY: usize = 1_000;

/// Shows desktop notifications.
pub struct DesktopNotifier {
    timeout: Duration,
}

impl DesktopNotifier {
    /// A notifier whose command is killed after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        DesktopNotifier { timeout }
    }
}

/// The argument vector for this platform (`macos` selects `osascript`).
pub fn argv(n: &Notification, macos: bool) -> Vec<String> {
    let title = truncate(&headline(n), 120);
    let body = truncate(&plain_text(n), MAX_BODY);
    if macos {
        // The texts are script *arguments*, read with `item N of argv`, never spliced in.
        vec![
            "osascript".into(),
            "-e".into(),
            "on run argv".into(),
            "-e".into(),
            "display notification (item 2 of argv) with title (item 1 of argv)".into(),
            "-e".into(),
            "end run".into(),
            title,
            body,
        ]
    } else {
        let urgency = match n.priority.as_str() {
            "urgent" => "critical",
            "info" => "low",
            _ => "normal",
        };
        vec![
            "notify-send".into(),
            "--app-name=Flotilla".into(),
            format!("--urgency={urgency}"),
            "--".into(),
            title,
            body,
        ]
    }
}

#[async_trait]
impl Notifier for DesktopNotifier {
    fn kind(&self) -> &'static str {
        "desktop"
    }

    async fn notify(&self, n: &Notification) -> PluginResult<Option<PostedMessage>> {
        let args = argv(n, cfg!(target_os = "macos"));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        match exec::run(&refs, None, self.timeout).await {
            Ok(_) => Ok(None),
            // A missing program will not appear by retrying.
            Err(PluginError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(PluginError::Unavailable {
                    slot: "notifier",
                    name: format!("desktop ({} is not installed)", args[0]),
                })
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_separate_arguments_on_both_platforms() {
        let n = Notification {
            priority: "urgent".into(),
            session: Some("demo-1".into()),
            message: "\"; rm -rf / #".into(),
            ..Notification::default()
        };
        let linux = argv(&n, false);
        assert_eq!(linux[0], "notify-send");
        assert_eq!(linux[2], "--urgency=critical");
        assert_eq!(linux[3], "--");
        assert!(linux[4].contains("\"; rm -rf / #"));
        let mac = argv(&n, true);
        assert_eq!(mac[0], "osascript");
        assert!(!mac[4].contains("rm -rf"), "texts are never in the script");
        assert!(mac[7].contains("rm -rf"));
    }
}
