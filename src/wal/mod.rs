//! Durability: a write-ahead log in segment files with group commit; snapshots and views in
//! sled; checkpoints and recovery.
//!
//! Every change a store actor makes leaves it as a [`format::WalRecord`]; the
//! [`writer`] appends records of all stores in batches to the log's [`segments`], one
//! `fdatasync` per batch, and only then releases the answers. sled holds caches of the log,
//! made durable at checkpoints. [`recovery`] rebuilds the stores from snapshots and the log.

pub mod archive;
pub mod bus;
pub mod format;
pub mod moving;
pub mod recovery;
pub mod segments;
pub mod storage;
pub mod views;
pub mod writer;

pub use archive::{Archive, LedgerError, Saved, SavedAnswer};
pub use bus::EventBus;
pub use format::{IdemTag, WalError, WalRecord};
pub use storage::Storage;
pub use writer::{Durability, ItemBody, WalHandle, WalItem};
