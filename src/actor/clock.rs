//! Time for the store actors, passed in: the domain takes `now` as an argument, the actors
//! ask a [`Clock`], and tests advance a [`ManualClock`] instead of sleeping.

use crate::domain::TimeMs;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch, as deadlines are kept and shown.
    fn now_ms(&self) -> TimeMs;

    /// Completes once `now_ms()` has reached `at_ms` (webhook retries wait on it).
    fn sleep_until(&self, at_ms: TimeMs) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The wall clock read once at start, then advanced by the monotonic clock: a step of the
/// system clock while godown runs (NTP, an operator) moves no deadline, so holds and unpaid
/// orders expire neither early nor late. Deadlines are stored as wall time, so a restart
/// reads the wall clock again (a hold that ran out while the process was down is released).
pub struct SystemClock {
    wall_at_start_ms: TimeMs,
    start: Instant,
}

impl SystemClock {
    pub fn new() -> SystemClock {
        SystemClock {
            wall_at_start_ms: super::now_ms(),
            start: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> SystemClock {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> TimeMs {
        self.wall_at_start_ms + self.start.elapsed().as_millis() as TimeMs
    }

    fn sleep_until(&self, at_ms: TimeMs) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let wait = (at_ms - self.now_ms()).max(0) as u64;
        Box::pin(tokio::time::sleep(Duration::from_millis(wait)))
    }
}

/// A clock that moves only when told to (tests).
pub struct ManualClock {
    now_ms: AtomicI64,
    /// Wakes every `sleep_until` when the time moves.
    moved: tokio::sync::Notify,
}

impl ManualClock {
    pub fn new(start_ms: TimeMs) -> ManualClock {
        ManualClock {
            now_ms: AtomicI64::new(start_ms),
            moved: tokio::sync::Notify::new(),
        }
    }

    pub fn advance_ms(&self, ms: TimeMs) {
        assert!(ms >= 0, "time does not go back");
        self.now_ms.fetch_add(ms, Ordering::SeqCst);
        self.moved.notify_waiters();
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> TimeMs {
        self.now_ms.load(Ordering::SeqCst)
    }

    fn sleep_until(&self, at_ms: TimeMs) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            loop {
                // Registered before the check, so an advance in between is not missed.
                let moved = self.moved.notified();
                tokio::pin!(moved);
                moved.as_mut().enable();
                if self.now_ms() >= at_ms {
                    return;
                }
                moved.await;
            }
        })
    }
}
