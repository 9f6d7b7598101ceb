//! Durability: a write-ahead log in sled with group commit, snapshots and recovery.
//!
//! Every change a store actor makes leaves it as a [`format::WalRecord`]; the
//! [`writer`] appends records of all stores in batches, one flush per batch, and only then
//! releases the answers. [`recovery`] rebuilds the stores from snapshots and the log.

pub mod format;
pub mod recovery;
pub mod storage;
pub mod views;
pub mod writer;

pub use format::{IdemAnswer, IdemEntry, IdemTag, WalError, WalRecord};
pub use storage::Storage;
pub use writer::{Durability, ItemBody, WalHandle, WalItem};
