//! Store actors: each store's state is owned by one actor that handles its messages one at
//! a time, so no two orders can ever both take the last unit — and no lock is needed.
//!
//! A change leaves the actor as a WAL record; the actor does not wait for the flush (it
//! takes its next message meanwhile) but hands the caller a receiver that completes once the
//! record is durable. The caller answers only then.

mod clock;
mod directory;
pub mod moving;
mod store;
mod tokens;

pub use clock::{Clock, ManualClock, SystemClock};
pub use directory::{CallError, Directory, StoreEntry};
pub use store::*;
pub use tokens::TokenIndex;

/// Wall-clock milliseconds since the Unix epoch (for display and bookkeeping; deadlines use
/// a [`Clock`]).
pub fn now_ms() -> crate::domain::TimeMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
