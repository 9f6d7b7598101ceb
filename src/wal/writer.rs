//! Group commit: one thread takes the records of every store, writes them as one batch,
//! flushes once, and only then completes each waiting answer.
//!
//! There is no timer: the writer blocks for the first item, then takes whatever else is
//! already queued (up to `BATCH_LEN_MAX`). A lone client pays one flush; under load, the
//! items that queue while a flush runs share the next one.

use super::format::{SnapshotFrame, WalError, encode_frame, push_batch_entry, snapshot_parts};
use super::storage::Storage;
use super::views::{Sealed, VIEWS_FROM_KEY, ViewWrite};
use crate::domain::StoreId;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;
use tokio::sync::oneshot;

/// Most items in one batch: bounds one flush's latency and the memory of one batch.
pub const BATCH_LEN_MAX: usize = 4096;
/// A group commit slower than this is logged.
const SLOW_BATCH: std::time::Duration = std::time::Duration::from_millis(20);
/// Most old WAL batches deleted with each new one (truncation keeps pace with appends
/// as long as this is above 1).
const TRUNCATE_PER_BATCH: usize = 8;
/// With no views in memory, `views_from` is persisted only when it moved this far.
const MARKER_STEP: u64 = 4096;
/// Most items accepted but not yet durable, over all stores. Past it, stores answer 503
/// before changing anything, so the writer's queue can never grow without bound.
pub const INFLIGHT_MAX: usize = 65_536;

/// Whether an answer waits for `fsync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Every acknowledged change was flushed first (the default, and the contract).
    Flush,
    /// No flush per batch: sled writes back in the background. For benchmarks only.
    None,
}

pub enum ItemBody {
    /// A WAL record (already framed) and the view writes it implies.
    Record {
        store_id: StoreId,
        frame: Vec<u8>,
        views: Vec<ViewWrite>,
    },
    /// A store's state, bincode-encoded by its actor; the writer gives it its sequence number.
    Snapshot { store_id: StoreId, state: Vec<u8> },
    /// View writes with no WAL record (a remembered refusal of an idempotent request).
    Views(Vec<ViewWrite>),
}

/// The answer a waiter gets: the sequence number its item was written at.
pub type Durable = Result<u64, Arc<String>>;

pub struct WalItem {
    pub body: ItemBody,
    pub done: Option<oneshot::Sender<Durable>>,
    /// The submitting actor's own counter, raised to this value once the item is durable.
    pub mark: Option<(Arc<AtomicU64>, u64)>,
}

#[derive(Default)]
pub struct WalStats {
    pub records: AtomicU64,
    pub snapshots: AtomicU64,
    pub batches: AtomicU64,
    pub flush_us_total: AtomicU64,
    pub last_seq: AtomicU64,
    pub records_since_snapshot: AtomicU64,
    pub truncated_below: AtomicU64,
}

/// The submitting side of the writer; cheap to clone.
#[derive(Clone)]
pub struct WalHandle {
    tx: mpsc::Sender<WalItem>,
    inflight: Arc<AtomicUsize>,
    pub stats: Arc<WalStats>,
}

impl WalHandle {
    /// Claims room for one more item; false when the writer is `INFLIGHT_MAX` behind.
    pub fn try_claim(&self) -> bool {
        if self.inflight.fetch_add(1, Ordering::AcqRel) >= INFLIGHT_MAX {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Claims room for an item that must be written whatever the load (expiry, snapshots).
    pub fn claim(&self) {
        self.inflight.fetch_add(1, Ordering::AcqRel);
    }

    /// Gives back a claim that was not used.
    pub fn release_claim(&self) {
        self.inflight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Queues an item whose room was claimed with [`try_claim`](Self::try_claim).
    pub fn submit(&self, item: WalItem) {
        if let Err(mpsc::SendError(item)) = self.tx.send(item) {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            if let Some(done) = item.done {
                let _ = done.send(Err(Arc::new("the write-ahead log has stopped".into())));
            }
        }
    }

    /// Claims, submits and returns the receiver to await durability on.
    pub fn submit_waiting(&self, body: ItemBody) -> Option<oneshot::Receiver<Durable>> {
        if !self.try_claim() {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.submit(WalItem {
            body,
            done: Some(tx),
            mark: None,
        });
        Some(rx)
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }
}

/// Where the writer continues a log (from recovery).
#[derive(Default)]
pub struct LogPosition {
    /// The next sequence number.
    pub next_seq: u64,
    /// Per store, the first sequence number recovery would need (so that older records may
    /// be deleted).
    pub replay_from: HashMap<StoreId, u64>,
    /// The first sequence number whose views may be missing from sled (see `views`).
    pub views_from: u64,
    /// The keys of the log's batches, oldest first.
    pub batch_keys: Vec<u64>,
}

/// Starts the writer thread. The views of at most `views_every_records` records (and at
/// most `views::PENDING_ORDERS_MAX` orders) wait in memory before they are written out.
pub fn start(
    storage: Storage,
    durability: Durability,
    at: LogPosition,
    views_every_records: u64,
) -> WalHandle {
    let next_seq = at.next_seq.max(1);
    let (tx, rx) = mpsc::channel::<WalItem>();
    let inflight = Arc::new(AtomicUsize::new(0));
    let stats = Arc::new(WalStats::default());
    stats
        .last_seq
        .store(next_seq.saturating_sub(1), Ordering::Relaxed);
    storage.pending.set_applied_below(at.views_from);
    let writer = Writer {
        storage: storage.clone(),
        durability,
        next_seq,
        replay: ReplayPoints::new(at.replay_from),
        views_from: at.views_from,
        views_marker: None,
        marker_persisted: at.views_from,
        views_every_records: views_every_records.max(1),
        sealed_at: at.views_from,
        views_tx: start_views_thread(storage.clone()),
        wal_keys: at.batch_keys.into(),
    };
    let (inflight2, stats2) = (inflight.clone(), stats.clone());
    std::thread::Builder::new()
        .name("wal-writer".into())
        .spawn(move || writer.run(rx, inflight2, stats2))
        .expect("spawning the WAL writer");
    WalHandle {
        tx,
        inflight,
        stats,
    }
}

/// A writer that completes every item at once and stores nothing: the store actors'
/// own cost (execute, encode the record, hand it over) measured without any storage.
/// For benchmarks only; nothing it is given survives.
pub fn start_discarding() -> WalHandle {
    let (tx, rx) = mpsc::channel::<WalItem>();
    let inflight = Arc::new(AtomicUsize::new(0));
    let stats = Arc::new(WalStats::default());
    let (inflight2, stats2) = (inflight.clone(), stats.clone());
    std::thread::Builder::new()
        .name("wal-discard".into())
        .spawn(move || {
            let mut seq = 1u64;
            while let Ok(item) = rx.recv() {
                if let Some((mark, value)) = &item.mark {
                    mark.fetch_max(*value, Ordering::AcqRel);
                }
                if let Some(done) = item.done {
                    let _ = done.send(Ok(seq));
                }
                seq += 1;
                stats2.records.fetch_add(1, Ordering::Relaxed);
                inflight2.fetch_sub(1, Ordering::AcqRel);
            }
        })
        .expect("spawning the discarding WAL writer");
    WalHandle {
        tx,
        inflight,
        stats,
    }
}

/// The thread that writes sealed views into sled's trees (see `views`). It stops with the
/// writer (which holds the sender); a failure stops the process, as the writer's does.
fn start_views_thread(storage: Storage) -> mpsc::Sender<Sealed> {
    let (tx, rx) = mpsc::channel::<Sealed>();
    std::thread::Builder::new()
        .name("views-writer".into())
        .spawn(move || {
            while let Ok(sealed) = rx.recv() {
                let started = Instant::now();
                let (orders, movements) = sealed.len();
                if let Err(e) = storage.pending.write_sealed(&storage, sealed) {
                    tracing::error!(error = %e, "the views cannot be written; stopping");
                    std::process::exit(70);
                }
                tracing::debug!(
                    orders,
                    movements,
                    us = started.elapsed().as_micros() as u64,
                    "views written out"
                );
            }
        })
        .expect("spawning the views writer");
    tx
}

struct Writer {
    storage: Storage,
    durability: Durability,
    next_seq: u64,
    replay: ReplayPoints,
    /// Every record before it has its views in sled, flushed.
    views_from: u64,
    /// A new `views_from` to persist with the next batch (after the views it speaks of
    /// were flushed, never in the same flush).
    views_marker: Option<u64>,
    /// The `views_from` last persisted.
    marker_persisted: u64,
    views_every_records: u64,
    /// `next_seq` when the views were last sealed for writing out.
    sealed_at: u64,
    views_tx: mpsc::Sender<Sealed>,
    /// First sequence numbers of the WAL's batches, oldest first.
    wal_keys: VecDeque<u64>,
}

impl Writer {
    fn run(
        mut self,
        rx: mpsc::Receiver<WalItem>,
        inflight: Arc<AtomicUsize>,
        stats: Arc<WalStats>,
    ) {
        let mut batch: Vec<WalItem> = Vec::with_capacity(BATCH_LEN_MAX);
        while let Ok(first) = rx.recv() {
            batch.push(first);
            while batch.len() < BATCH_LEN_MAX {
                match rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            let first_seq = self.next_seq;
            let started = Instant::now();
            match self.write_batch(&mut batch, &stats) {
                Ok(()) => {
                    let took = started.elapsed();
                    if took >= SLOW_BATCH {
                        tracing::warn!(
                            items = batch.len(),
                            ms = took.as_millis() as u64,
                            "slow group commit"
                        );
                    }
                    stats
                        .flush_us_total
                        .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
                    stats.batches.fetch_add(1, Ordering::Relaxed);
                    stats.last_seq.store(self.next_seq - 1, Ordering::Release);
                    let n = batch.len();
                    for (i, item) in batch.drain(..).enumerate() {
                        if let Some((mark, value)) = &item.mark {
                            mark.fetch_max(*value, Ordering::AcqRel);
                        }
                        if let Some(done) = item.done {
                            let _ = done.send(Ok(first_seq + i as u64));
                        }
                    }
                    inflight.fetch_sub(n, Ordering::AcqRel);
                }
                Err(e) => {
                    // Memory is now ahead of the disk: answering from it would be a lie that
                    // a restart exposes. Fail every waiter and stop the process.
                    let why = Arc::new(e.to_string());
                    tracing::error!(error = %e, "the write-ahead log cannot be written; stopping");
                    for item in batch.drain(..) {
                        if let Some(done) = item.done {
                            let _ = done.send(Err(why.clone()));
                        }
                    }
                    std::process::exit(70);
                }
            }
        }
    }

    fn write_batch(&mut self, batch: &mut [WalItem], stats: &WalStats) -> Result<(), WalError> {
        // Truncation is decided before this batch's snapshots move any replay point: a
        // deletion must never rely on a snapshot in the same flush (sled need not keep
        // trees in order across an interrupted flush).
        let mut wal_batch = self.truncation(stats);
        // The whole batch's records go into one WAL value keyed by its first sequence number:
        // one sled insert per flush instead of one per record.
        let first_seq = self.next_seq;
        let mut wal_value: Vec<u8> = Vec::new();
        let mut snapshots = sled::Batch::default();
        let mut views: Vec<ViewWrite> = Vec::new();
        let (mut records, mut snaps) = (0u64, 0u64);
        for item in batch.iter_mut() {
            let seq = self.next_seq;
            self.next_seq += 1;
            match &mut item.body {
                ItemBody::Record {
                    store_id,
                    frame,
                    views: writes,
                } => {
                    push_batch_entry(&mut wal_value, seq, frame);
                    self.replay.first_record(store_id, seq);
                    views.append(writes);
                    records += 1;
                }
                ItemBody::Snapshot { store_id, state } => {
                    let frame = encode_frame(&SnapshotFrame {
                        seq,
                        state: state.clone(),
                    });
                    // Replaces the whole-frame key of the layout before parts, if any.
                    snapshots.remove(store_id.as_str().as_bytes());
                    for (key, value) in snapshot_parts(store_id, &frame) {
                        snapshots.insert(key, value);
                    }
                    self.replay.snapshot(store_id, seq);
                    tracing::debug!(store = %store_id, seq, "snapshot");
                    snaps += 1;
                }
                ItemBody::Views(writes) => views.append(writes),
            }
        }
        let mut idem = sled::Batch::default();
        self.storage.pending.add(views, &mut idem);
        // The WAL first: the views and snapshots are caches of it. The same write deletes
        // a few batches that no recovery needs any more (see `truncation`), by the replay
        // points of earlier, flushed batches.
        if !wal_value.is_empty() {
            wal_batch.insert(&first_seq.to_be_bytes(), wal_value);
            self.wal_keys.push_back(first_seq);
        }
        self.storage.wal.apply_batch(wal_batch)?;
        self.storage.idem.apply_batch(idem)?;
        if snaps > 0 {
            self.storage.snapshots.apply_batch(snapshots)?;
        }
        if let Some(from) = self.views_marker.take() {
            self.storage
                .meta
                .insert(VIEWS_FROM_KEY, &from.to_be_bytes())?;
            self.marker_persisted = from;
        }
        // The order archive and the ledger go to sled a few thousand records at a time, on
        // the views thread, while this one goes on. Whatever that thread has applied
        // before this flush is durable after it.
        let pending = &self.storage.pending;
        // Read before sealing, so that a generation sealed now counts from a later batch
        // however fast that thread is (either is safe; this one is deterministic).
        let applied = pending.applied_below();
        let views_ready = if pending.is_empty() {
            self.next_seq
        } else {
            if (pending.is_full()
                || self.next_seq.saturating_sub(self.sealed_at) >= self.views_every_records)
                && let Some(sealed) = pending.seal(self.next_seq)
            {
                self.sealed_at = self.next_seq;
                if self.views_tx.send(sealed).is_err() {
                    return Err(WalError::Stopped("the views thread has stopped".into()));
                }
            }
            applied
        };
        if self.durability == Durability::Flush {
            self.storage.db.flush()?;
        }
        if views_ready > self.views_from {
            self.views_from = views_ready;
            // A stale marker only makes recovery rebuild more views, so with nothing in
            // memory (a log of records without views) it is not rewritten every batch.
            if !pending.is_empty() || views_ready >= self.marker_persisted + MARKER_STEP {
                self.views_marker = Some(views_ready);
            }
        }
        stats.records.fetch_add(records, Ordering::Relaxed);
        stats.snapshots.fetch_add(snaps, Ordering::Relaxed);
        if snaps > 0 {
            stats.records_since_snapshot.store(0, Ordering::Relaxed);
        } else {
            stats
                .records_since_snapshot
                .fetch_add(records, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Deletions of the oldest WAL batches whose every record is below every store's replay
    /// point, at most `TRUNCATE_PER_BATCH` of them. A batch ends where the next one starts,
    /// so batch `k` may go once batch `k + 1` starts at or below that point. Deleting a few
    /// per group commit, in the writer's own sled write, keeps truncation from competing
    /// with the log (a bulk delete after each snapshot round stalled it for up to 140 ms).
    /// A deletion lost in a crash only leaves records that replay skips.
    fn truncation(&mut self, stats: &WalStats) -> sled::Batch {
        let mut batch = sled::Batch::default();
        let Some(below) = self.replay.min().map(|m| m.min(self.views_from)) else {
            return batch;
        };
        let mut removed = 0;
        while removed < TRUNCATE_PER_BATCH && self.wal_keys.len() >= 2 && self.wal_keys[1] <= below
        {
            let key = self.wal_keys.pop_front().expect("two keys");
            batch.remove(&key.to_be_bytes());
            removed += 1;
        }
        if removed > 0 {
            stats
                .truncated_below
                .store(self.wal_keys[0], Ordering::Relaxed);
        }
        batch
    }
}

/// Per store, the first sequence number a recovery would need, and their minimum in
/// O(log n): the writer asks for the minimum on every batch, and there may be 100,000 stores.
struct ReplayPoints {
    by_store: HashMap<StoreId, u64>,
    /// Replay point → how many stores have it.
    counts: BTreeMap<u64, u32>,
}

impl ReplayPoints {
    fn new(by_store: HashMap<StoreId, u64>) -> ReplayPoints {
        let mut counts = BTreeMap::new();
        for &seq in by_store.values() {
            *counts.entry(seq).or_insert(0) += 1;
        }
        ReplayPoints { by_store, counts }
    }

    fn set(&mut self, store: &StoreId, seq: u64) {
        if let Some(old) = self.by_store.insert(store.clone(), seq)
            && let Some(n) = self.counts.get_mut(&old)
        {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&old);
            }
        }
        *self.counts.entry(seq).or_insert(0) += 1;
    }

    /// A record at `seq`: the store's replay point if it has none yet.
    fn first_record(&mut self, store: &StoreId, seq: u64) {
        if !self.by_store.contains_key(store) {
            self.set(store, seq);
        }
    }

    /// A snapshot at `seq` covers every record of the store before it.
    fn snapshot(&mut self, store: &StoreId, seq: u64) {
        self.set(store, seq + 1);
    }

    fn min(&self) -> Option<u64> {
        self.counts.keys().next().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::views::PENDING_RECORDS_MAX;

    /// Writes one item and waits until it is durable (so each item is its own batch).
    fn write(handle: &WalHandle, body: ItemBody) -> u64 {
        handle
            .submit_waiting(body)
            .unwrap()
            .blocking_recv()
            .unwrap()
            .unwrap()
    }

    /// The keys of the log's batches.
    fn wal_keys(storage: &Storage) -> Vec<u64> {
        storage
            .wal
            .iter()
            .keys()
            .map(|k| u64::from_be_bytes(k.unwrap().as_ref().try_into().unwrap()))
            .collect()
    }

    #[test]
    fn truncation_never_relies_on_a_snapshot_of_the_same_flush() {
        // Goal: batches covered by a snapshot are deleted only by a later batch (the snapshot
        // is durable by then), the last batch is always kept, and deletion then catches up.
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let handle = start(
            storage.clone(),
            Durability::Flush,
            LogPosition {
                next_seq: 1,
                ..LogPosition::default()
            },
            PENDING_RECORDS_MAX,
        );
        let store = StoreId::parse("A").unwrap();
        let write = |body: ItemBody| write(&handle, body);
        let record = || ItemBody::Record {
            store_id: store.clone(),
            frame: vec![1, 2, 3],
            views: Vec::new(),
        };
        let keys = || wal_keys(&storage);
        for seq in 1..=3 {
            assert_eq!(write(record()), seq);
        }
        let snapshot = ItemBody::Snapshot {
            store_id: store.clone(),
            state: Vec::new(),
        };
        assert_eq!(write(snapshot), 4);
        assert_eq!(
            keys(),
            [1, 2, 3],
            "nothing deleted in the snapshot's own flush"
        );
        assert_eq!(write(record()), 5);
        assert_eq!(
            keys(),
            [3, 5],
            "deleted once the snapshot was durable; 3 ends at 4"
        );
        assert_eq!(write(record()), 6);
        assert_eq!(keys(), [5, 6]);
    }

    #[test]
    fn views_hold_truncation_back_until_written_out_and_the_marker_follows_a_flush_later() {
        // Goal: records whose views are only in memory are never deleted from the log, even
        // under a snapshot; once the views are written out (here every 5 sequence numbers) and
        // flushed, the next batch persists `views_from` and deletes the covered batches.
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let handle = start(
            storage.clone(),
            Durability::Flush,
            LogPosition::default(),
            5,
        );
        let store = StoreId::parse("A").unwrap();
        let write = |body: ItemBody| write(&handle, body);
        let record = |seq: u32| ItemBody::Record {
            store_id: store.clone(),
            frame: vec![1, 2, 3],
            views: vec![ViewWrite::Order {
                seq,
                frame: vec![seq as u8],
            }],
        };
        let keys = || wal_keys(&storage);
        let marker = || crate::wal::views::views_from(&storage).unwrap();
        assert_eq!(write(record(1)), 1);
        assert_eq!(write(record(2)), 2);
        let snapshot = ItemBody::Snapshot {
            store_id: store.clone(),
            state: Vec::new(),
        };
        assert_eq!(write(snapshot), 3);
        assert_eq!(write(record(3)), 4);
        assert_eq!(keys(), [1, 2, 4], "views of 1..=4 were only in memory");
        // Sealed with record 4; the views thread writes them out meanwhile.
        storage.pending.wait_applied(5);
        assert!(storage.pending.is_empty());
        assert_eq!(storage.order_blocks.len(), 1);
        assert_eq!(write(record(4)), 5);
        assert_eq!(keys(), [1, 2, 4, 5], "the views became durable only now");
        assert_eq!(marker(), None, "not in the flush that made them durable");
        assert_eq!(write(record(5)), 6);
        assert_eq!(marker(), Some(5));
        assert_eq!(keys(), [4, 5, 6], "deleted once the views were durable");
    }

    #[test]
    fn replay_points_track_the_minimum_over_stores() {
        // Goal: the minimum follows new stores and snapshots, whichever store held it.
        let id = |s: &str| StoreId::parse(s).unwrap();
        let mut points = ReplayPoints::new(HashMap::from([(id("A"), 5), (id("B"), 5)]));
        assert_eq!(points.min(), Some(5));
        points.first_record(&id("A"), 9);
        assert_eq!(
            points.min(),
            Some(5),
            "a later record does not move a replay point"
        );
        points.snapshot(&id("A"), 10);
        assert_eq!(points.min(), Some(5), "B still needs 5");
        points.snapshot(&id("B"), 12);
        assert_eq!(points.min(), Some(11));
        points.first_record(&id("C"), 20);
        points.snapshot(&id("A"), 30);
        assert_eq!(points.min(), Some(13));
        points.snapshot(&id("B"), 31);
        assert_eq!(points.min(), Some(20));
        points.snapshot(&id("C"), 40);
        assert_eq!(points.min(), Some(31));
    }
}
