//! A second look at an agent last seen `active` whose output then went quiet.
//!
//! Output changes wake the activity probe, but an agent's own log can lag its screen: Claude
//! Code draws a turn's end ("Done.") before it appends the turn's last entries to its session
//! log, so the probe woken by that last redraw may read a tool result (`active`), and with no
//! further output nothing would look again until the stuck timer, minutes later. So while the
//! session is recorded active, a quiet agent is looked at again after a delay that doubles
//! (from [`FIRST`] to [`MAX`]), and any output starts it over. An idle or waiting agent gets
//! no such look: it costs nothing until it writes.

use std::time::Duration;

use actix::SpawnHandle;

/// The first second look after a probe that left the session active.
pub const FIRST: Duration = Duration::from_secs(2);
/// The longest wait between looks at a quiet, active agent.
pub const MAX: Duration = Duration::from_secs(30);

/// The pending second look and the delay of the next.
#[derive(Debug)]
pub struct Settle {
    pub handle: Option<SpawnHandle>,
    next: Duration,
}

impl Default for Settle {
    fn default() -> Self {
        Settle {
            handle: None,
            next: FIRST,
        }
    }
}

impl Settle {
    /// The agent wrote output: the next quiet spell starts from [`FIRST`] again.
    pub fn output_changed(&mut self) {
        self.next = FIRST;
    }

    /// After a probe: the delay of the next look if the session is still `active`, doubling
    /// for the one after; `None` (and the backoff reset) otherwise.
    pub fn after_probe(&mut self, active: bool) -> Option<Duration> {
        if !active {
            self.next = FIRST;
            return None;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(MAX);
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_active_agent_is_looked_at_again_less_and_less_often_until_it_writes() {
        let mut s = Settle::default();
        let delays: Vec<_> = (0..6).filter_map(|_| s.after_probe(true)).collect();
        let secs: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [2, 4, 8, 16, 30, 30]);
        s.output_changed();
        assert_eq!(s.after_probe(true), Some(FIRST));
        assert_eq!(s.after_probe(false), None, "idle: no more looks");
        assert_eq!(s.after_probe(true), Some(FIRST), "active again starts over");
    }
}
