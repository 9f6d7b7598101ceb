//! Group commit: one thread takes the records of every store, writes them as one frame into
//! the log's current segment, `fdatasync`s once, and only then completes each waiting answer.
//!
//! There is no timer: the writer blocks for the first item, then takes whatever else is
//! already queued (up to `BATCH_LEN_MAX`). A lone client pays one fdatasync; under load, the
//! items that queue while one runs share the next.
//!
//! sled (snapshots, the order archive, the ledger, idempotency entries) is written after the
//! log and never flushed here. Every few thousand records the writer hands a *job* to the
//! checkpointer thread: it writes the sealed views out, makes sled's files durable (sled's own
//! flush is no fsync), records in the checkpoint file from where recovery must rebuild views,
//! and only then deletes the log segments that no recovery needs.

use super::format::{
    EntryKind, SnapshotFrame, WalError, encode_frame, push_batch_entry, snapshot_keys_before,
    snapshot_parts,
};
use super::segments::{self, LogFiles};
use super::storage::Storage;
use super::views::{Sealed, ViewWrite};
use crate::domain::StoreId;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;
use tokio::sync::oneshot;

/// Most items in one batch: bounds one flush's latency and the memory of one batch.
pub const BATCH_LEN_MAX: usize = 4096;
/// A group commit slower than this is logged.
const SLOW_BATCH: std::time::Duration = std::time::Duration::from_millis(20);
/// Most items accepted but not yet durable, over all stores. Past it, stores answer 503
/// before changing anything, so the writer's queue can never grow without bound.
pub const INFLIGHT_MAX: usize = 65_536;
/// Most bytes accepted but not yet durable (records and the views they imply), over all
/// stores. Items alone would let 65,536 orders of 500 lines (~100 KB each) take 6.5 GB;
/// past this, stores answer 503 before changing anything, as for `INFLIGHT_MAX`.
pub const INFLIGHT_BYTES_MAX: usize = 256 << 20;
/// The exit status when the log, a snapshot or a view cannot be written (EX_SOFTWARE would
/// hide it among panics; 70 is what sysexits calls an internal software error).
pub const EXIT_STORAGE_FAILED: i32 = 70;

/// Whether an answer waits for `fdatasync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Every acknowledged change was synced first (the default, and the contract).
    Flush,
    /// No fdatasync per batch: the kernel writes back when it likes. For benchmarks only.
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
    /// An idempotency key's answer that changed no store (a `Remembered` frame) and its view.
    Remembered {
        frame: Vec<u8>,
        views: Vec<ViewWrite>,
    },
    /// A step of a saga (a `SagaEntry` frame) and its views.
    Saga {
        frame: Vec<u8>,
        views: Vec<ViewWrite>,
    },
    /// A chunk of a moved-in store's history (a `moving::HistoryEntry` frame) and its views.
    History {
        frame: Vec<u8>,
        views: Vec<ViewWrite>,
    },
    /// Writes nothing; completes once everything submitted before it is durable.
    Barrier,
    /// Writes nothing: the store has left this process (`crate::moving`), so its records
    /// no longer hold the log back from being deleted.
    Forget { store_id: StoreId },
    /// Writes nothing; completes once a checkpoint has made everything submitted before it
    /// durable in sled too (a clean shutdown, so that a restart rebuilds no views).
    Checkpoint,
}

impl ItemBody {
    /// The bytes it holds while in flight (for `INFLIGHT_BYTES_MAX`).
    fn weight(&self) -> usize {
        let views = |writes: &[ViewWrite]| -> usize {
            writes
                .iter()
                .map(|w| match w {
                    ViewWrite::Order { frame, .. } => frame.len(),
                    ViewWrite::Movements { movements, .. } => {
                        movements.len() * std::mem::size_of::<crate::domain::Movement>()
                    }
                    ViewWrite::Idem { key, value, .. } => 2 * key.len() + value.len() + 9,
                    ViewWrite::Answer { key, value } => {
                        key.len() + value.as_ref().map_or(0, Vec::len)
                    }
                    ViewWrite::Events { events, .. } => {
                        events.len() * std::mem::size_of::<crate::domain::StoreEvent>()
                    }
                })
                .sum()
        };
        match self {
            ItemBody::Record {
                frame, views: w, ..
            }
            | ItemBody::Remembered { frame, views: w }
            | ItemBody::Saga { frame, views: w }
            | ItemBody::History { frame, views: w } => frame.len() + views(w),
            ItemBody::Snapshot { state, .. } => state.len(),
            ItemBody::Barrier | ItemBody::Checkpoint | ItemBody::Forget { .. } => 0,
        }
    }
}

/// The answer a waiter gets: the sequence number its item was written at (for a barrier,
/// the last one written before it).
pub type Durable = Result<u64, Arc<String>>;

pub struct WalItem {
    pub body: ItemBody,
    /// Set by [`WalHandle::submit`]: the body's bytes, released once durable.
    pub weight: usize,
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
    /// The log before this sequence number may be deleted (the last checkpoint's point).
    pub truncated_below: AtomicU64,
    /// Checkpoints done; [`WalStats::wait_checkpoints`] waits on it.
    checkpoints: std::sync::Mutex<u64>,
    checkpointed: std::sync::Condvar,
}

impl WalStats {
    pub fn checkpoints(&self) -> u64 {
        *self.checkpoints.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks until `n` checkpoints are done (tests, and anyone who must see one happen).
    pub fn wait_checkpoints(&self, n: u64) {
        let mut done = self.checkpoints.lock().unwrap_or_else(|e| e.into_inner());
        while *done < n {
            done = self
                .checkpointed
                .wait(done)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    fn checkpoint_done(&self) {
        *self.checkpoints.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.checkpointed.notify_all();
    }
}

/// The submitting side of the writer; cheap to clone.
#[derive(Clone)]
pub struct WalHandle {
    tx: mpsc::Sender<WalItem>,
    inflight: Arc<AtomicUsize>,
    /// Bytes of the items in flight (see `INFLIGHT_BYTES_MAX`).
    inflight_bytes: Arc<AtomicUsize>,
    pub stats: Arc<WalStats>,
    /// The writer thread, for [`WalHandle::close`].
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl WalHandle {
    /// Waits until the writer and the checkpointer have finished everything submitted and
    /// stopped. Every other clone of this handle must be dropped first (the writer runs
    /// while any can still submit).
    pub fn close(self) {
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(self);
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    /// Claims room for one more item; false when the writer is `INFLIGHT_MAX` items or
    /// `INFLIGHT_BYTES_MAX` bytes behind.
    pub fn try_claim(&self) -> bool {
        if self.inflight_bytes.load(Ordering::Acquire) >= INFLIGHT_BYTES_MAX {
            return false;
        }
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

    /// Counts `bytes` as in flight without an item (tests; see [`release_bytes`](Self::release_bytes)).
    pub fn claim_bytes(&self, bytes: usize) {
        self.inflight_bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    pub fn release_bytes(&self, bytes: usize) {
        self.inflight_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Queues an item whose room was claimed with [`try_claim`](Self::try_claim).
    pub fn submit(&self, mut item: WalItem) {
        item.weight = item.body.weight();
        self.inflight_bytes.fetch_add(item.weight, Ordering::AcqRel);
        if let Err(mpsc::SendError(item)) = self.tx.send(item) {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            self.inflight_bytes.fetch_sub(item.weight, Ordering::AcqRel);
            if let Some(done) = item.done {
                let _ = done.send(Err(Arc::new("the write-ahead log has stopped".into())));
            }
        }
    }

    /// Submits past the in-flight bound (as expiry does: for the few items that must not be
    /// refused, each awaited before the next) and returns the receiver to await durability on.
    pub fn submit_unbounded(&self, body: ItemBody) -> oneshot::Receiver<Durable> {
        self.claim();
        self.submit_claimed(body)
    }

    /// Claims, submits and returns the receiver to await durability on.
    pub fn submit_waiting(&self, body: ItemBody) -> Option<oneshot::Receiver<Durable>> {
        self.try_claim().then(|| self.submit_claimed(body))
    }

    /// Submits an item whose in-flight slot is already claimed; the receiver says when it
    /// is durable.
    fn submit_claimed(&self, body: ItemBody) -> oneshot::Receiver<Durable> {
        let (tx, rx) = oneshot::channel();
        self.submit(WalItem {
            weight: 0,
            body,
            done: Some(tx),
            mark: None,
        });
        rx
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    pub fn inflight_bytes(&self) -> usize {
        self.inflight_bytes.load(Ordering::Relaxed)
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
}

/// The writer's settings.
#[derive(Clone, Copy, Debug)]
pub struct WriterConfig {
    pub durability: Durability,
    /// The views of at most this many records (and at most `views::PENDING_ORDERS_MAX`
    /// orders) wait in memory before a checkpoint writes them out.
    pub views_every_records: u64,
    /// The size of a log segment (see `segments`).
    pub segment_bytes: u64,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Durability, String> {
        match s {
            "flush" => Ok(Durability::Flush),
            "none" => Ok(Durability::None),
            _ => Err(format!("`{s}`: expected `flush` or `none`")),
        }
    }
}

impl WriterConfig {
    pub fn new(durability: Durability, views_every_records: u64) -> WriterConfig {
        WriterConfig {
            durability,
            views_every_records,
            segment_bytes: segments::SEGMENT_BYTES_DEFAULT,
        }
    }
}

/// Starts the writer and checkpointer threads. The log files must be in the state
/// recovery left them in (a torn tail cut).
pub fn start(
    storage: Storage,
    config: WriterConfig,
    at: LogPosition,
) -> Result<WalHandle, WalError> {
    let next_seq = at.next_seq.max(1);
    let (tx, rx) = mpsc::channel::<WalItem>();
    let inflight = Arc::new(AtomicUsize::new(0));
    let inflight_bytes = Arc::new(AtomicUsize::new(0));
    let stats = Arc::new(WalStats::default());
    stats
        .last_seq
        .store(next_seq.saturating_sub(1), Ordering::Relaxed);
    storage.pending.set_applied_below(at.views_from);
    let log = LogFiles::open(storage.dir(), config.segment_bytes)?;
    let job_busy = Arc::new(AtomicBool::new(false));
    let (jobs, checkpointer) = start_checkpointer(storage.clone(), job_busy.clone(), stats.clone());
    let writer = Writer {
        storage: storage.clone(),
        stats: stats.clone(),
        log,
        durability: config.durability,
        next_seq,
        replay: ReplayPoints::new(at.replay_from),
        views_every_records: config.views_every_records.max(1),
        job_at: next_seq,
        jobs,
        checkpointer: Some(checkpointer),
        jobs_sent: 0,
        checkpoint_waiters: Vec::new(),
        superseded: Vec::new(),
        job_busy,
        entries: Vec::new(),
        seqs: Vec::with_capacity(BATCH_LEN_MAX),
    };
    let counters = (inflight.clone(), inflight_bytes.clone(), stats.clone());
    let thread = std::thread::Builder::new()
        .name("wal-writer".into())
        .spawn(move || writer.run(rx, counters))
        .expect("spawning the WAL writer");
    Ok(WalHandle {
        tx,
        inflight,
        inflight_bytes,
        stats,
        thread: Arc::new(std::sync::Mutex::new(Some(thread))),
    })
}

/// A writer that completes every item at once and stores nothing: the store actors'
/// own cost (execute, encode the record, hand it over) measured without any storage.
/// For benchmarks only; nothing it is given survives.
pub fn start_discarding() -> WalHandle {
    let (tx, rx) = mpsc::channel::<WalItem>();
    let inflight = Arc::new(AtomicUsize::new(0));
    let inflight_bytes = Arc::new(AtomicUsize::new(0));
    let stats = Arc::new(WalStats::default());
    let (inflight2, bytes2, stats2) = (inflight.clone(), inflight_bytes.clone(), stats.clone());
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
                bytes2.fetch_sub(item.weight, Ordering::AcqRel);
            }
        })
        .expect("spawning the discarding WAL writer");
    WalHandle {
        tx,
        inflight,
        inflight_bytes,
        stats,
        thread: Arc::default(),
    }
}

/// How long a failing process lets the 503s already handed to waiters reach their clients
/// before it exits (nothing can be acknowledged meanwhile: the writer is stopped).
const FAIL_STOP_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// Stops the process after a storage failure: memory is ahead of the disk now, and
/// answering from it would be a lie that a restart exposes. Nothing is retried (a failed
/// fsync may already have dropped the dirty pages); a restart recovers from the log.
/// Called on the failing storage thread, which never returns to its work.
pub fn fail_stop(what: &str, e: &WalError) -> ! {
    if e.is_disk_full() {
        tracing::error!(error = %e, "{what}: the disk is full; stopping (free space, then restart: every acknowledged change will be recovered)");
    } else {
        tracing::error!(error = %e, "{what}; stopping (a restart recovers every acknowledged change)");
    }
    std::thread::sleep(FAIL_STOP_GRACE);
    std::process::exit(EXIT_STORAGE_FAILED);
}

/// Work for the checkpointer: write views out, make sled durable, then let the log go.
struct Job {
    /// Completed once the job is done.
    notify: Vec<oneshot::Sender<Durable>>,
    /// Views to write out first, if any were waiting.
    sealed: Option<Sealed>,
    /// Every record before it has its views in sled once `sealed` is written.
    views_below: u64,
    /// Every store's snapshot, as written to sled before this job was sent, covers the log
    /// before it.
    replay_below: u64,
    /// Stores' snapshots (store, version) written before this job: older ones may go after it.
    superseded: Vec<(StoreId, u64)>,
}

/// The thread that runs checkpoints, one at a time (see the module doc). A failure stops
/// the process, as the writer's does.
fn start_checkpointer(
    storage: Storage,
    busy: Arc<AtomicBool>,
    stats: Arc<WalStats>,
) -> (mpsc::Sender<Job>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<Job>();
    let thread = std::thread::Builder::new()
        .name("checkpointer".into())
        .spawn(move || {
            while let Ok(mut job) = rx.recv() {
                let started = Instant::now();
                let notify = std::mem::take(&mut job.notify);
                let below = job.views_below;
                if let Err(e) = checkpoint(&storage, job, &stats) {
                    let why = Arc::new(e.to_string());
                    for done in notify {
                        let _ = done.send(Err(why.clone()));
                    }
                    fail_stop("a checkpoint failed", &e);
                }
                busy.store(false, Ordering::Release);
                stats.checkpoint_done();
                for done in notify {
                    let _ = done.send(Ok(below.saturating_sub(1)));
                }
                tracing::debug!(us = started.elapsed().as_micros() as u64, "checkpoint");
            }
        })
        .expect("spawning the checkpointer");
    (tx, thread)
}

fn checkpoint(storage: &Storage, job: Job, stats: &WalStats) -> Result<(), WalError> {
    if let Some(sealed) = job.sealed {
        storage.pending.write_sealed(storage, sealed)?;
    }
    storage.make_durable()?;
    // Only now may recovery skip rebuilding these views, and the log before them go.
    let dir = segments::log_dir(storage.dir());
    segments::write_checkpoint(&dir, job.views_below)?;
    let below = job.views_below.min(job.replay_below);
    let deleted = segments::delete_below(&dir, below)?;
    // The snapshots these replace are no longer needed (the new ones are durable). Their
    // deletion is made durable by the next checkpoint; until then recovery takes the newest.
    let mut old = sled::Batch::default();
    for (store, version) in &job.superseded {
        for key in snapshot_keys_before(&storage.snapshots, store, *version)? {
            old.remove(key);
        }
    }
    storage.snapshots.apply_batch(old)?;
    stats.truncated_below.fetch_max(below, Ordering::Relaxed);
    if deleted > 0 {
        tracing::debug!(deleted, below, "log segments deleted");
    }
    Ok(())
}

struct Writer {
    storage: Storage,
    stats: Arc<WalStats>,
    log: LogFiles,
    durability: Durability,
    next_seq: u64,
    replay: ReplayPoints,
    views_every_records: u64,
    /// `next_seq` when the last checkpoint job was sent.
    job_at: u64,
    jobs: mpsc::Sender<Job>,
    /// Joined when the writer stops (after `jobs` is dropped, it finishes its last job).
    checkpointer: Option<std::thread::JoinHandle<()>>,
    /// Whether the checkpointer is still running the last job.
    job_busy: Arc<AtomicBool>,
    /// Jobs sent so far.
    jobs_sent: u64,
    /// Waiters of `ItemBody::Checkpoint` items in this batch.
    checkpoint_waiters: Vec<oneshot::Sender<Durable>>,
    /// Snapshots written since the last job: the older ones of their stores may go once
    /// these are durable.
    superseded: Vec<(StoreId, u64)>,
    /// The batch's entries, reused.
    entries: Vec<u8>,
    /// Each item's sequence number, reused.
    seqs: Vec<u64>,
}

impl Writer {
    /// Runs until every handle is dropped. `counters`: items and bytes in flight, stats.
    fn run(
        mut self,
        rx: mpsc::Receiver<WalItem>,
        counters: (Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<WalStats>),
    ) {
        let (inflight, inflight_bytes, stats) = counters;
        let mut batch: Vec<WalItem> = Vec::with_capacity(BATCH_LEN_MAX);
        while let Ok(first) = rx.recv() {
            batch.push(first);
            while batch.len() < BATCH_LEN_MAX {
                match rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            if let Err(e) = self.write_batch(&mut batch, &stats) {
                let why = Arc::new(e.to_string());
                for item in batch.drain(..) {
                    if let Some(done) = item.done {
                        let _ = done.send(Err(why.clone()));
                    }
                }
                fail_stop("the write-ahead log cannot be written", &e);
            }
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
            metrics::histogram!("godown_wal_flush_duration_seconds").record(took.as_secs_f64());
            metrics::histogram!("godown_wal_batch_records").record(batch.len() as f64);
            stats.batches.fetch_add(1, Ordering::Relaxed);
            stats.last_seq.store(self.next_seq - 1, Ordering::Release);
            let n = batch.len();
            let bytes: usize = batch.iter().map(|i| i.weight).sum();
            // Room is given back before the answers go, so a client answered can send again
            // without finding its own item still counted.
            inflight.fetch_sub(n, Ordering::AcqRel);
            inflight_bytes.fetch_sub(bytes, Ordering::AcqRel);
            for (item, &seq) in batch.drain(..).zip(&self.seqs) {
                if let Some((mark, value)) = &item.mark {
                    mark.fetch_max(*value, Ordering::AcqRel);
                }
                if let Some(done) = item.done {
                    let _ = done.send(Ok(seq));
                }
            }
        }
        let checkpointer = self.checkpointer.take();
        drop(self);
        if let Some(thread) = checkpointer {
            let _ = thread.join();
        }
    }

    fn write_batch(&mut self, batch: &mut [WalItem], stats: &WalStats) -> Result<(), WalError> {
        let first_seq = self.next_seq;
        self.entries.clear();
        self.seqs.clear();
        let mut snapshots = sled::Batch::default();
        let mut views: Vec<ViewWrite> = Vec::new();
        let (mut records, mut snaps) = (0u64, 0u64);
        for item in batch.iter_mut() {
            if let ItemBody::Forget { store_id } = &item.body {
                self.replay.forget(store_id);
            }
            if matches!(
                item.body,
                ItemBody::Barrier | ItemBody::Checkpoint | ItemBody::Forget { .. }
            ) {
                if matches!(item.body, ItemBody::Checkpoint)
                    && let Some(done) = item.done.take()
                {
                    self.checkpoint_waiters.push(done);
                }
                self.seqs.push(self.next_seq - 1);
                continue;
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            self.seqs.push(seq);
            match &mut item.body {
                ItemBody::Record {
                    store_id,
                    frame,
                    views: writes,
                } => {
                    push_batch_entry(&mut self.entries, seq, EntryKind::Record, frame);
                    self.replay.first_record(store_id, seq);
                    views.append(writes);
                    records += 1;
                }
                ItemBody::Remembered {
                    frame,
                    views: writes,
                } => {
                    push_batch_entry(&mut self.entries, seq, EntryKind::Remembered, frame);
                    views.append(writes);
                }
                ItemBody::Saga {
                    frame,
                    views: writes,
                } => {
                    push_batch_entry(&mut self.entries, seq, EntryKind::Saga, frame);
                    views.append(writes);
                }
                ItemBody::History {
                    frame,
                    views: writes,
                } => {
                    push_batch_entry(&mut self.entries, seq, EntryKind::History, frame);
                    views.append(writes);
                }
                ItemBody::Snapshot { store_id, state } => {
                    // The log names the snapshot's sequence number, so that numbers in the
                    // log run without gaps; the state itself goes to sled below.
                    push_batch_entry(
                        &mut self.entries,
                        seq,
                        EntryKind::Snapshot,
                        &encode_frame(store_id),
                    );
                    let frame = encode_frame(&SnapshotFrame {
                        seq,
                        state: std::mem::take(state),
                    });
                    // Keys of its own: the store's last snapshot stays whole until this one
                    // is durable (then the checkpointer deletes it).
                    for (key, value) in snapshot_parts(store_id, seq, &frame) {
                        snapshots.insert(key, value);
                    }
                    self.superseded.push((store_id.clone(), seq));
                    self.replay.snapshot(store_id, seq);
                    tracing::debug!(store = %store_id, seq, "snapshot");
                    snaps += 1;
                }
                ItemBody::Barrier | ItemBody::Checkpoint | ItemBody::Forget { .. } => {
                    unreachable!("skipped above")
                }
            }
        }
        // The log first, durable before anything derived from it reaches sled: a snapshot or
        // a view in sled never speaks of a record the log could lose.
        if !self.entries.is_empty() {
            self.log.append(
                first_seq,
                &self.entries,
                self.durability == Durability::Flush,
            )?;
        }
        let mut idem = sled::Batch::default();
        self.storage.pending.add(views, &mut idem);
        self.storage.idem.apply_batch(idem)?;
        if snaps > 0 {
            self.storage.snapshots.apply_batch(snapshots)?;
        }
        self.maybe_checkpoint()?;
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

    /// Hands the checkpointer a job when enough views or records have gathered since the
    /// last one and it is idle, or when a checkpoint was asked for (then waiting for the
    /// job before, if one runs: asked for only at shutdown and in tests).
    fn maybe_checkpoint(&mut self) -> Result<(), WalError> {
        let pending = &self.storage.pending;
        let asked = !self.checkpoint_waiters.is_empty();
        let due = pending.is_full() || self.next_seq - self.job_at >= self.views_every_records;
        if asked {
            self.stats.wait_checkpoints(self.jobs_sent);
        } else if !due || self.job_busy.load(Ordering::Acquire) {
            return Ok(());
        }
        self.job_busy.store(true, Ordering::Release);
        self.job_at = self.next_seq;
        self.jobs_sent += 1;
        let job = Job {
            notify: std::mem::take(&mut self.checkpoint_waiters),
            superseded: std::mem::take(&mut self.superseded),
            sealed: pending.seal(self.next_seq),
            views_below: self.next_seq,
            replay_below: self.replay.min().unwrap_or(self.next_seq),
        };
        self.jobs
            .send(job)
            .map_err(|_| WalError::Stopped("the checkpointer has stopped".into()))
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

    /// The store is gone: it holds nothing back.
    fn forget(&mut self, store: &StoreId) {
        if let Some(old) = self.by_store.remove(store)
            && let Some(n) = self.counts.get_mut(&old)
        {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&old);
            }
        }
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
pub(crate) mod tests {
    use super::*;

    /// Writes one item and waits until it is durable (so each item is its own batch).
    pub(crate) fn write(handle: &WalHandle, body: ItemBody) -> u64 {
        handle
            .submit_waiting(body)
            .unwrap()
            .blocking_recv()
            .unwrap()
            .unwrap()
    }

    /// A writer on a fresh directory with the smallest segments and a checkpoint every
    /// `views_every_records` sequence numbers.
    fn small_writer(views_every_records: u64) -> (tempfile::TempDir, Storage, WalHandle) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let config = WriterConfig {
            durability: Durability::Flush,
            views_every_records,
            segment_bytes: segments::SEGMENT_BYTES_MIN,
        };
        let handle = start(storage.clone(), config, LogPosition::default()).unwrap();
        (dir, storage, handle)
    }

    /// A record of `store` with a 30 KB frame: two fit in a 64 KiB segment.
    fn big_record(store: &StoreId) -> ItemBody {
        ItemBody::Record {
            store_id: store.clone(),
            frame: vec![1; 30_000],
            views: Vec::new(),
        }
    }

    fn log_state(storage: &Storage) -> (Vec<u64>, Option<u64>) {
        let dir = segments::log_dir(storage.dir());
        (
            segments::list_segments(&dir).unwrap(),
            segments::read_checkpoint(&dir).unwrap(),
        )
    }

    #[test]
    fn a_store_that_left_holds_the_log_back_no_more() {
        // Goal: the log may be deleted below the oldest replay point; a store moved away
        // (forgotten) no longer counts, whatever point it had.
        let (a, b) = (StoreId::parse("A").unwrap(), StoreId::parse("B").unwrap());
        let mut points = ReplayPoints::new(HashMap::new());
        points.snapshot(&a, 4);
        points.first_record(&b, 9);
        assert_eq!(points.min(), Some(5));
        points.forget(&a);
        assert_eq!(points.min(), Some(9));
        points.forget(&b);
        points.forget(&b);
        assert_eq!(points.min(), None);
    }

    #[test]
    fn the_log_goes_only_below_every_stores_snapshot_and_after_a_checkpoint() {
        // Goal: segments rotate as they fill; a checkpoint deletes only segments wholly
        // below every store's replay point (a store without a snapshot holds the log back
        // from its first record), never the newest, and records its point durably first.
        let (_dir, storage, handle) = small_writer(4);
        let (a, b) = (StoreId::parse("A").unwrap(), StoreId::parse("B").unwrap());
        let write = |body: ItemBody| write(&handle, body);
        assert_eq!(write(big_record(&b)), 1);
        assert_eq!(write(big_record(&a)), 2);
        assert_eq!(write(big_record(&a)), 3);
        let snapshot = |s: &StoreId| ItemBody::Snapshot {
            store_id: s.clone(),
            state: Vec::new(),
        };
        assert_eq!(write(snapshot(&a)), 4);
        handle.stats.wait_checkpoints(1);
        assert_eq!(
            log_state(&storage),
            (vec![1, 3], Some(5)),
            "B's record 1 is needed: nothing deleted"
        );
        assert_eq!(write(snapshot(&b)), 5);
        assert_eq!(write(big_record(&a)), 6);
        assert_eq!(write(big_record(&a)), 7);
        assert_eq!(write(big_record(&a)), 8);
        handle.stats.wait_checkpoints(2);
        assert_eq!(
            log_state(&storage),
            (vec![3, 7], Some(9)),
            "1 went once both snapshots were durable; 3 holds 3..=6 and A needs 5 on"
        );
        assert_eq!(storage.snapshots.len(), 2);
        assert_eq!(write(snapshot(&a)), 9);
        assert_eq!(
            storage.snapshots.len(),
            3,
            "A's last snapshot stays until this one is durable"
        );
        write(ItemBody::Checkpoint);
        let versions = |s: &str| -> Vec<u64> {
            crate::wal::format::read_snapshots(&storage.snapshots).unwrap()[s]
                .iter()
                .map(|v| v.version)
                .collect()
        };
        assert_eq!(versions("A"), [9], "deleted after the checkpoint");
        assert_eq!(versions("B"), [5]);
    }

    #[test]
    fn views_wait_in_memory_until_a_checkpoint_writes_them_out() {
        // Goal: an order's view is readable from memory at once, is written to sled by the
        // next checkpoint, and the checkpoint file then says views before it are durable.
        let (_dir, storage, handle) = small_writer(3);
        let store = StoreId::parse("A").unwrap();
        let write = |body: ItemBody| write(&handle, body);
        let record = |seq: u32| ItemBody::Record {
            store_id: store.clone(),
            frame: vec![1, 2, 3],
            views: vec![ViewWrite::Order {
                seq: seq.into(),
                store: store.clone(),
                frame: vec![seq as u8],
            }],
        };
        assert_eq!(write(record(1)), 1);
        assert_eq!(write(record(2)), 2);
        assert_eq!(storage.pending.len(), (2, 0), "both in memory");
        assert_eq!(storage.order_blocks.len(), 0);
        assert_eq!(log_state(&storage).1, None, "no checkpoint yet");
        assert_eq!(write(record(3)), 3);
        handle.stats.wait_checkpoints(1);
        assert!(storage.pending.is_empty());
        assert_eq!(
            storage.order_blocks.len(),
            1,
            "one block of 16 order numbers"
        );
        assert_eq!(log_state(&storage).1, Some(4));
        assert_eq!(write(ItemBody::Barrier), 3, "a barrier takes no number");
        assert_eq!(write(record(4)), 4);
        assert_eq!(handle.inflight(), 0);
        assert_eq!(
            handle.inflight_bytes(),
            0,
            "every durable item gave its bytes back"
        );
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
