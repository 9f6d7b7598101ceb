//! The sled database and its trees: caches of the log (see `segments`), made durable by
//! [`Storage::make_durable`] at each checkpoint.

use super::format::WalError;
use super::segments::{io_error, sync_dir};
use super::views::PendingViews;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The file of the secret behind public order ids.
const ORDER_ID_KEY_FILE: &str = "order-ids.key";

/// The trees derived from the log (caches; see `segments`, `recovery`). All live in one sled
/// `Db`; sled's files are made durable together by [`Storage::make_durable`].
#[derive(Clone)]
pub struct Storage {
    pub db: sled::Db,
    /// `first seq (u64 BE) → batch`: the log as versions before segment files kept it;
    /// recovery moves it into a segment once and empties it.
    pub wal: sled::Tree,
    /// `store \0 version (u64 BE) part (u32 BE) → part of a SnapshotFrame` (see
    /// `format::snapshot_parts`):
    /// a cache of replaying the WAL up to its `seq`.
    pub snapshots: sled::Tree,
    /// `order number / ORDER_BLOCK (u32 BE) → [(order number, Order frame)]`: every order's latest
    /// state, for reads by id (see `views`).
    pub order_blocks: sled::Tree,
    /// `order number (u32 BE) → Order frame`: the archive of godown before order blocks;
    /// still read, never written.
    pub orders: sled::Tree,
    /// `store \0 first movement id (BE) → Vec<Movement> frame`: the stock ledger in runs of
    /// consecutive ids, appended per store; a product's history is the chain of
    /// `prev_movement_id` from its newest movement.
    pub movements: sled::Tree,
    /// `store \0 first event id (BE) → Vec<StoreEvent> frame`: a store's public events in
    /// runs of consecutive ids (see `views`).
    pub events: sled::Tree,
    /// `store \0 order number (BE) → ()`: each store's orders, for listing them newest
    /// first (see `views`).
    pub store_orders: sled::Tree,
    /// `Idempotency-Key → IdemEntry frame`.
    pub idem: sled::Tree,
    /// `views_from → seq (u64 BE)`, as versions before the checkpoint file kept it.
    pub meta: sled::Tree,
    /// Views of the newest records, not yet in `order_blocks` and `movements`.
    pub pending: Arc<PendingViews>,
    /// The data directory (sled's files, and the log in `wal/`).
    dir: Arc<PathBuf>,
    /// sled's files as they were when last fsynced: `(length, modified)`.
    synced: Arc<Mutex<HashMap<PathBuf, (u64, SystemTime)>>>,
}

impl Storage {
    pub fn open(dir: &Path) -> Result<Storage, WalError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| io_error("creating the data directory", dir, e))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(64 << 20)
            .open()?;
        let storage = Storage {
            wal: db.open_tree("wal")?,
            snapshots: db.open_tree("snapshots")?,
            orders: db.open_tree("orders")?,
            movements: db.open_tree("movements")?,
            idem: db.open_tree("idem")?,
            events: db.open_tree("events")?,
            store_orders: db.open_tree("store_orders")?,
            order_blocks: db.open_tree("order_blocks")?,
            meta: db.open_tree("meta")?,
            pending: Arc::default(),
            db,
            dir: Arc::new(dir.to_path_buf()),
            synced: Arc::default(),
        };
        // sled writes its `conf` at creation without an fsync: make it durable at once.
        storage.make_durable()?;
        Ok(storage)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The data directory's secret for public order ids (`order-ids.key`, 32 bytes): made
    /// from the OS's CSPRNG at the first start and made durable before any id is shown, then
    /// only read (a new key would give every order a new id).
    pub fn order_id_key(&self) -> Result<[u8; 32], WalError> {
        use std::io::Write;
        let path = self.dir.join(ORDER_ID_KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                return bytes.try_into().map_err(|b: Vec<u8>| WalError::Corrupt {
                    what: path.display().to_string(),
                    why: format!("{} bytes, expected 32", b.len()),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("reading the order id key", &path, e)),
        }
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| WalError::Stopped(format!("no randomness: {e}")))?;
        let tmp = self.dir.join("order-ids.key.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&key)?;
            f.sync_all()
        };
        write().map_err(|e| io_error("writing the order id key", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io_error("writing the order id key", &path, e))?;
        sync_dir(&self.dir)?;
        Ok(key)
    }

    /// Makes every sled write that has returned durable. sled's `flush` writes its buffers
    /// but ends in `sync_file_range` (no device flush, no metadata) and writes large pages
    /// to `blobs/` files it never syncs; so after it, every file of sled's that changed since
    /// the last call is fsynced, then the directories.
    pub fn make_durable(&self) -> Result<(), WalError> {
        self.db.flush()?;
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        let mut seen = HashMap::with_capacity(synced.len());
        let blobs = self.dir.join("blobs");
        for dir in [self.dir.as_path(), blobs.as_path()] {
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error("listing sled's files", dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| io_error("listing sled's files", dir, e))?;
                let path = entry.path();
                let meta = match entry.metadata() {
                    Ok(m) if m.is_file() => m,
                    Ok(_) => continue,
                    // Deleted by sled meanwhile (an old blob or snapshot).
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_error("reading sled's file", &path, e)),
                };
                let stamp = (
                    meta.len(),
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                );
                // `db` always: its writes may land within one mtime tick.
                if synced.get(&path) != Some(&stamp) || path.ends_with("db") {
                    match std::fs::File::open(&path) {
                        Ok(f) => f
                            .sync_all()
                            .map_err(|e| io_error("fsync of sled's file", &path, e))?,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(io_error("opening sled's file", &path, e)),
                    }
                }
                seen.insert(path, stamp);
            }
            sync_dir(dir)?;
        }
        *synced = seen;
        Ok(())
    }
}
