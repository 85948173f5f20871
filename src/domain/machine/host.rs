//! A session on a remote host that cannot be reached: its state stays what it was (the agent
//! may well still run there), its `reason` says `host_unreachable: <host>` and a human is told
//! (urgent). When the host answers again the reason it had before comes back and the human is
//! told that too. The host and the earlier reason are kept under `meta.host_unreachable`.

use serde_json::json;

use super::{Effect, Machine, Outcome};
use crate::domain::policy::Priority;

/// Where the mark lives in a session's `meta`.
pub const HOST_KEY: &str = "host_unreachable";

/// The reason of a session whose host cannot be reached.
pub fn unreachable_reason(host: &str) -> String {
    format!("host_unreachable: {host}")
}

impl Machine<'_> {
    pub(super) fn host_unreachable(&mut self, host: &str) -> Outcome {
        if self.state().is_terminal() {
            return self.ignore("host.unreachable");
        }
        if self.s.session.meta.get(HOST_KEY).is_some() {
            return Outcome::Noop(format!("host {host} already marked unreachable"));
        }
        self.s.session.meta[HOST_KEY] = json!({"host": host, "reason": self.s.session.reason});
        self.s.session.reason = Some(unreachable_reason(host));
        self.effects.push(Effect::Notify {
            reaction: None,
            priority: Priority::Urgent,
            message: format!(
                "Host {host} cannot be reached: this session's agent is out of reach until it \
                 answers again."
            ),
            escalation: false,
        });
        Outcome::Applied
    }

    pub(super) fn host_reachable(&mut self, host: &str) -> Outcome {
        let Some(mark) = self.s.session.meta.get(HOST_KEY).cloned() else {
            return Outcome::Noop(format!("host {host} was not marked unreachable"));
        };
        if let Some(m) = self.s.session.meta.as_object_mut() {
            m.remove(HOST_KEY);
        }
        if self.s.session.reason.as_deref() == Some(unreachable_reason(host).as_str()) {
            self.s.session.reason = mark["reason"].as_str().map(str::to_string);
        }
        if !self.state().is_terminal() {
            self.effects.push(Effect::Notify {
                reaction: None,
                priority: Priority::Info,
                message: format!("Host {host} answers again: this session is back in reach."),
                escalation: false,
            });
        }
        Outcome::Applied
    }
}
