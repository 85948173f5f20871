//! The time the fleet's timers and deadlines read: a [`Clock`] handle, passed in (through
//! `Fleet::clock` and the chat context), never `Utc::now()` or `tokio::time::sleep` directly.
//!
//! [`Clock::system`] is the wall clock. [`ManualClock`] is the wall clock plus an offset that
//! only a test moves: [`ManualClock::advance`] jumps time forward, and every
//! [`Clock::sleep_until`] whose deadline the jump passed returns at once. Time still flows
//! between jumps, so the real processes, files and sockets a test drives keep timestamps that
//! agree with the clock; a stuck threshold of an hour is one `advance` away instead of an hour.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

/// The clock a component reads. Cheap to clone; the system clock unless a test made it.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    manual: Option<Arc<Offset>>,
}

#[derive(Debug, Default)]
struct Offset {
    /// How far ahead of the wall clock this clock is, in microseconds.
    micros: AtomicI64,
    /// Wakes sleepers when the offset moves.
    moved: Notify,
}

impl Clock {
    /// The wall clock.
    pub fn system() -> Self {
        Clock { manual: None }
    }

    /// Now, on this clock.
    pub fn now(&self) -> DateTime<Utc> {
        let now = Utc::now();
        match &self.manual {
            None => now,
            Some(o) => now + chrono::Duration::microseconds(o.micros.load(Ordering::SeqCst)),
        }
    }

    /// Waits `d` on this clock.
    pub fn sleep(&self, d: Duration) -> impl std::future::Future<Output = ()> + Send + 'static {
        let d = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(36_500));
        let deadline = self
            .now()
            .checked_add_signed(d)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.sleep_until(deadline)
    }

    /// Waits until this clock reads `deadline` (at once when it has passed).
    pub fn sleep_until(
        &self,
        deadline: DateTime<Utc>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let clock = self.clone();
        async move {
            loop {
                let moved = clock.manual.as_ref().map(|o| o.moved.notified());
                tokio::pin!(moved);
                if let Some(m) = moved.as_mut().as_pin_mut() {
                    // Registered before reading the time, so a jump in between is not missed.
                    m.enable();
                }
                let Ok(left) = (deadline - clock.now()).to_std() else {
                    return;
                };
                if left.is_zero() {
                    return;
                }
                match moved.as_mut().as_pin_mut() {
                    None => return tokio::time::sleep(left).await,
                    Some(m) => {
                        tokio::select! {
                            _ = tokio::time::sleep(left) => {}
                            _ = m => {}
                        }
                    }
                }
            }
        }
    }
}

/// A clock a test moves forward: the wall clock plus an offset. Give [`ManualClock::clock`] to
/// the application and keep the `ManualClock` to [`advance`](ManualClock::advance) it.
#[derive(Clone, Debug)]
pub struct ManualClock {
    offset: Arc<Offset>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock that reads the wall clock until advanced.
    pub fn new() -> Self {
        ManualClock {
            offset: Arc::default(),
        }
    }

    /// The handle components read.
    pub fn clock(&self) -> Clock {
        Clock {
            manual: Some(self.offset.clone()),
        }
    }

    /// Moves time forward by `d`; sleepers whose deadline passed wake at once.
    pub fn advance(&self, d: Duration) {
        let micros = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        self.offset.micros.fetch_add(micros, Ordering::SeqCst);
        self.offset.moved.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clock_a_sleep_of_an_hour_ends_when_the_clock_is_advanced_past_it() {
        let manual = ManualClock::new();
        let clock = manual.clock();
        let before = clock.now();
        let sleep = tokio::spawn(clock.sleep(Duration::from_secs(3600)));
        tokio::task::yield_now().await;
        manual.advance(Duration::from_secs(1800));
        tokio::task::yield_now().await;
        assert!(!sleep.is_finished(), "half-way is not there yet");
        manual.advance(Duration::from_secs(1800));
        tokio::time::timeout(Duration::from_secs(5), sleep)
            .await
            .expect("the sleep ends after the advance")
            .expect("the task");
        assert!(clock.now() - before >= chrono::Duration::seconds(3600));
    }

    #[tokio::test]
    async fn clock_a_deadline_in_the_past_returns_at_once_on_both_clocks() {
        for clock in [Clock::system(), ManualClock::new().clock()] {
            let past = clock.now() - chrono::Duration::seconds(1);
            tokio::time::timeout(Duration::from_secs(5), clock.sleep_until(past))
                .await
                .expect("no wait");
        }
    }
}
