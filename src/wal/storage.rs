//! The sled database and its trees.

use super::format::WalError;
use super::views::PendingViews;
use std::path::Path;
use std::sync::Arc;

/// The WAL and the trees derived from it. All trees live in one sled `Db`, so one
/// `Db::flush` makes a whole batch durable.
#[derive(Clone)]
pub struct Storage {
    pub db: sled::Db,
    /// `seq (u64 BE) → WalRecord frame`: the source of truth.
    pub wal: sled::Tree,
    /// `store \0 part (u32 BE) → part of a SnapshotFrame` (see `format::snapshot_parts`):
    /// a cache of replaying the WAL up to its `seq`.
    pub snapshots: sled::Tree,
    /// `order number / 64 (u32 BE) → [(order number, Order frame)]`: every order's latest
    /// state, for reads by id (see `views`).
    pub order_blocks: sled::Tree,
    /// `order number (u32 BE) → Order frame`: the archive of godown before order blocks;
    /// still read, never written.
    pub orders: sled::Tree,
    /// `store \0 first movement id (BE) → Vec<Movement> frame`: the stock ledger in runs of
    /// consecutive ids, appended per store; a product's history is the chain of
    /// `prev_movement_id` from its newest movement.
    pub movements: sled::Tree,
    /// `Idempotency-Key → IdemEntry frame`.
    pub idem: sled::Tree,
    /// `views_from → seq (u64 BE)`: see `views`.
    pub meta: sled::Tree,
    /// Views of the newest records, not yet in `order_blocks` and `movements`.
    pub pending: Arc<PendingViews>,
}

impl Storage {
    pub fn open(dir: &Path) -> Result<Storage, WalError> {
        std::fs::create_dir_all(dir).map_err(|e| WalError::Sled(sled::Error::Io(e)))?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(64 << 20)
            .open()?;
        Ok(Storage {
            wal: db.open_tree("wal")?,
            snapshots: db.open_tree("snapshots")?,
            orders: db.open_tree("orders")?,
            movements: db.open_tree("movements")?,
            idem: db.open_tree("idem")?,
            order_blocks: db.open_tree("order_blocks")?,
            meta: db.open_tree("meta")?,
            pending: Arc::default(),
            db,
        })
    }
}
