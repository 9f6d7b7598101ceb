//! The order archive and the stock ledger: read by id, written in chunks.
//!
//! Written as one sled value per order and one per record's movements, these views cost
//! half of a durable order: two inserts per order, each copying a leaf page inside sled
//! (the profile and the A/B run are in BENCHMARKS.md). So the WAL writer keeps the views of
//! recent records in memory ([`PendingViews`]); about every thousand orders it seals them
//! and the checkpointer thread writes them as a few large values: orders in blocks of
//! [`ORDER_BLOCK`] consecutive order numbers (so an order id alone finds its block),
//! movements in runs of up to [`LEDGER_RUN_MAX`] per store. Readers look in memory first.
//!
//! The log stays the only truth. The checkpoint file (see `segments`) says from which record
//! on the views may be missing from sled; recovery rebuilds those (into memory again), and
//! the log is never truncated past that point.

use super::format::{
    WalError, decode_frame, encode_frame, idem_age_key, movement_key, order_key, read_ledger_run,
};
use super::storage::Storage;
use crate::domain::{Movement, Order, OrderId, StoreEvent, StoreId, TimeMs};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};

/// Consecutive order numbers per archive block (one sled value).
pub const ORDER_BLOCK: u32 = 16;
/// Most movements in one ledger value.
pub const LEDGER_RUN_MAX: usize = 64;
/// The writer writes the pending views out when they hold this many orders…
pub const PENDING_ORDERS_MAX: usize = 1024;
/// …or this many movements…
pub const PENDING_MOVEMENTS_MAX: usize = 4096;
/// …or this many public events…
pub const PENDING_EVENTS_MAX: usize = 4096;
/// Most public events in one sled value of the event log.
pub const EVENT_RUN_MAX: usize = 64;
/// …or when this many records were logged since the last time (bounds recovery's work
/// and the log kept for it even when records carry no views).
pub const PENDING_RECORDS_MAX: u64 = 65_536;
/// The meta key where versions before the checkpoint file kept the first sequence number
/// whose views may be missing from sled (still read when there is no checkpoint file).
pub const VIEWS_FROM_KEY: &[u8] = b"views_from";

/// A write into the views that a WAL record implies.
#[derive(Clone, Debug)]
pub enum ViewWrite {
    /// An order's latest state, as a frame, and its store (for the store's order index).
    Order {
        seq: u64,
        store: StoreId,
        frame: Vec<u8>,
    },
    /// A record's movements (consecutive ids) in one store.
    Movements {
        store: StoreId,
        movements: Vec<Movement>,
    },
    /// A record's public events (consecutive ids) in one store.
    Events {
        store: StoreId,
        events: Vec<Arc<StoreEvent>>,
    },
    /// An idempotency entry (written straight to sled: few, and keyed by the client), with
    /// the time of its first answer (for its age entry, see `format::idem_age_key`).
    Idem {
        key: Vec<u8>,
        value: Vec<u8>,
        at_ms: TimeMs,
    },
    /// Any other write to the answers tree (a saga's record): set, or with `None` removed.
    Answer {
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    },
}

#[derive(Default)]
struct Pending {
    /// Order number → the order's latest frame.
    orders: HashMap<u64, Vec<u8>>,
    /// Store → its order numbers here (for the store's order index).
    store_orders: HashMap<StoreId, std::collections::BTreeSet<u64>>,
    /// Store → first movement id → a record's movements.
    movements: HashMap<StoreId, BTreeMap<u64, Vec<Movement>>>,
    movement_count: usize,
    /// Store → event id → event.
    events: HashMap<StoreId, BTreeMap<u64, Arc<StoreEvent>>>,
    event_count: usize,
}

impl Pending {
    fn order_frame(&self, seq: u64) -> Option<&Vec<u8>> {
        self.orders.get(&seq)
    }

    fn movement_run(&self, store: &StoreId, movement_id: u64) -> Option<&Vec<Movement>> {
        let (_, run) = self
            .movements
            .get(store)?
            .range(..=movement_id)
            .next_back()?;
        (movement_id <= run.last()?.movement_id).then_some(run)
    }
}

#[derive(Default)]
struct Generations {
    /// Views the WAL writer adds to.
    filling: Pending,
    /// Views being written into sled by the views thread (newer versions may be filling).
    sealed: Option<Arc<Pending>>,
}

/// A set of views sealed for writing out: every view of the records before `below`.
pub struct Sealed {
    views: Arc<Pending>,
    below: u64,
}

impl Sealed {
    /// Orders and movements in it.
    pub fn len(&self) -> (usize, usize) {
        (self.views.orders.len(), self.views.movement_count)
    }
}

/// Views of records not yet written to sled: the WAL writer adds to them, the views thread
/// (see `writer`) writes them out a generation at a time, anyone reads them.
#[derive(Default)]
pub struct PendingViews {
    inner: RwLock<Generations>,
    /// Every record before it has its views applied to sled's trees (not yet flushed).
    applied_below: Mutex<u64>,
    applied: Condvar,
    /// Idempotency entries added since the process started (re-added ones count again):
    /// what tells the key sweeper to count and evict (see `Archive::forget_answers`).
    idem_added: AtomicU64,
    /// Where public events go live once they are here (set by the server).
    bus: std::sync::OnceLock<Arc<super::bus::EventBus>>,
}

impl PendingViews {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Generations> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Generations> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds view writes, newest last; idempotency entries go to `idem` (for sled).
    pub fn add(&self, writes: impl IntoIterator<Item = ViewWrite>, idem: &mut sled::Batch) {
        let mut g = self.write();
        let p = &mut g.filling;
        for w in writes {
            match w {
                ViewWrite::Order { seq, store, frame } => {
                    p.orders.insert(seq, frame);
                    p.store_orders.entry(store).or_default().insert(seq);
                }
                ViewWrite::Movements { store, movements } => {
                    let Some(first) = movements.first().map(|m| m.movement_id) else {
                        continue;
                    };
                    p.movement_count += movements.len();
                    p.movements
                        .entry(store)
                        .or_default()
                        .insert(first, movements);
                }
                ViewWrite::Events { store, events } => {
                    if let Some(bus) = self.bus.get() {
                        bus.publish(&store, &events);
                    }
                    for e in &events {
                        event_counter(e.kind).increment(1);
                    }
                    p.event_count += events.len();
                    let run = p.events.entry(store).or_default();
                    run.extend(events.into_iter().map(|e| (e.id, e)));
                }
                ViewWrite::Idem { key, value, at_ms } => {
                    // The entry and its age entry in one batch: neither is ever alone.
                    idem.insert(idem_age_key(at_ms, &key), &[]);
                    idem.insert(key, value);
                    self.idem_added.fetch_add(1, Ordering::Relaxed);
                }
                ViewWrite::Answer { key, value } => match value {
                    Some(value) => idem.insert(key, value),
                    None => idem.remove(key),
                },
            }
        }
    }

    /// Sends public events live to `bus` from now on (views are added only once durable).
    pub fn set_bus(&self, bus: Arc<super::bus::EventBus>) {
        let _ = self.bus.set(bus);
    }

    /// Idempotency entries added since the process started.
    pub fn idem_added(&self) -> u64 {
        self.idem_added.load(Ordering::Relaxed)
    }

    /// Whether the filling generation is large enough to be written out.
    pub fn is_full(&self) -> bool {
        let g = self.read();
        g.filling.orders.len() >= PENDING_ORDERS_MAX
            || g.filling.movement_count >= PENDING_MOVEMENTS_MAX
            || g.filling.event_count >= PENDING_EVENTS_MAX
    }

    /// Orders and movements held, both generations.
    pub fn len(&self) -> (usize, usize) {
        let g = self.read();
        let sealed = g.sealed.as_deref();
        (
            g.filling.orders.len() + sealed.map_or(0, |p| p.orders.len()),
            g.filling.movement_count + sealed.map_or(0, |p| p.movement_count),
        )
    }

    /// Whether every view is in sled's trees.
    pub fn is_empty(&self) -> bool {
        let g = self.read();
        let f = &g.filling;
        g.sealed.is_none() && f.orders.is_empty() && f.movement_count == 0 && f.event_count == 0
    }

    /// Seals the filling generation as the views of every record before `below`; `None`
    /// while the previous one is still being written out.
    pub fn seal(&self, below: u64) -> Option<Sealed> {
        let mut g = self.write();
        if g.sealed.is_some() {
            return None;
        }
        let views = Arc::new(std::mem::take(&mut g.filling));
        g.sealed = Some(views.clone());
        Some(Sealed { views, below })
    }

    /// Writes a sealed generation into sled's trees (not flushed), then forgets it. Readers
    /// see each view in memory until sled has it. One generation at a time.
    pub fn write_sealed(&self, storage: &Storage, sealed: Sealed) -> Result<(), WalError> {
        let blocks = order_blocks(storage, &sealed.views)?;
        storage.order_blocks.apply_batch(blocks)?;
        storage.movements.apply_batch(ledger_runs(&sealed.views))?;
        storage.events.apply_batch(event_runs(&sealed.views))?;
        storage
            .store_orders
            .apply_batch(store_order_keys(&sealed.views))?;
        self.write().sealed = None;
        let mut applied = self.applied_below.lock().unwrap_or_else(|e| e.into_inner());
        *applied = (*applied).max(sealed.below);
        self.applied.notify_all();
        Ok(())
    }

    /// Seals and writes out at once (recovery's tests, benches).
    pub fn write_out(&self, storage: &Storage, below: u64) -> Result<(), WalError> {
        match self.seal(below) {
            Some(sealed) => self.write_sealed(storage, sealed),
            None => Err(WalError::Stopped(
                "a generation is being written out".into(),
            )),
        }
    }

    /// Every record before it has its views applied to sled's trees.
    pub fn applied_below(&self) -> u64 {
        *self.applied_below.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the starting point (recovery's `views_from`).
    pub fn set_applied_below(&self, seq: u64) {
        *self.applied_below.lock().unwrap_or_else(|e| e.into_inner()) = seq;
    }

    /// Blocks until the views of every record before `seq` are applied to sled's trees.
    pub fn wait_applied(&self, seq: u64) {
        let mut applied = self.applied_below.lock().unwrap_or_else(|e| e.into_inner());
        while *applied < seq {
            applied = self
                .applied
                .wait(applied)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    fn order_frame(&self, seq: u64) -> Option<Vec<u8>> {
        let g = self.read();
        g.filling
            .order_frame(seq)
            .or_else(|| g.sealed.as_ref()?.order_frame(seq))
            .cloned()
    }

    /// The pending run of `store` that holds `movement_id`, if any.
    fn movement_run(&self, store: &StoreId, movement_id: u64) -> Option<Vec<Movement>> {
        let g = self.read();
        g.filling
            .movement_run(store, movement_id)
            .or_else(|| g.sealed.as_ref()?.movement_run(store, movement_id))
            .cloned()
    }

    /// A store's pending events after `after`, ascending (at most `limit`).
    fn events_after(&self, store: &StoreId, after: u64, limit: usize) -> Vec<Arc<StoreEvent>> {
        let g = self.read();
        let mut found: BTreeMap<u64, Arc<StoreEvent>> = BTreeMap::new();
        for p in std::iter::once(&g.filling).chain(g.sealed.as_deref()) {
            if let Some(events) = p.events.get(store) {
                let later = events.range(after + 1..).take(limit);
                found.extend(later.map(|(id, e)| (*id, e.clone())));
            }
        }
        found.into_values().take(limit).collect()
    }

    /// A store's order numbers held, below `below`, highest first (at most `limit`).
    fn store_orders_below(&self, store: &StoreId, below: u64, limit: usize) -> Vec<u64> {
        let g = self.read();
        let mut found = std::collections::BTreeSet::new();
        for p in std::iter::once(&g.filling).chain(g.sealed.as_deref()) {
            if let Some(seqs) = p.store_orders.get(store) {
                found.extend(seqs.range(..below).rev().take(limit));
            }
        }
        found.into_iter().rev().take(limit).collect()
    }

    /// Whether any view of `store` waits here.
    pub fn holds_store(&self, store: &StoreId) -> bool {
        let g = self.read();
        let holds = |p: &Pending| {
            p.store_orders.contains_key(store)
                || p.movements.contains_key(store)
                || p.events.contains_key(store)
        };
        holds(&g.filling) || g.sealed.as_deref().is_some_and(holds)
    }

    /// The highest order number held.
    fn max_order_seq(&self, range: &Range<u64>) -> Option<u64> {
        let g = self.read();
        let in_range = |p: &Pending| p.orders.keys().filter(|s| range.contains(s)).max().copied();
        let sealed = g.sealed.as_deref().and_then(in_range);
        in_range(&g.filling).max(sealed)
    }
}

/// An archive block: `(order number, Order frame)`, ascending.
/// (Sequence numbers were u32 before private ids; bincode's varints read those as u64.)
type Block = Vec<(u64, Vec<u8>)>;

fn block_key(seq: u64) -> [u8; 4] {
    // 4-byte keys, as before private ids: enough for ORDER_BLOCK × 2³² orders.
    u32::try_from(seq / u64::from(ORDER_BLOCK))
        .unwrap_or(u32::MAX)
        .to_be_bytes()
}

/// The pending orders merged into their blocks (a block already in sled is read first).
fn order_blocks(storage: &Storage, p: &Pending) -> Result<sled::Batch, WalError> {
    let mut by_block: BTreeMap<[u8; 4], Vec<(u64, &Vec<u8>)>> = BTreeMap::new();
    for (&seq, frame) in &p.orders {
        by_block
            .entry(block_key(seq))
            .or_default()
            .push((seq, frame));
    }
    let mut batch = sled::Batch::default();
    for (key, news) in by_block {
        let mut block: BTreeMap<u64, Vec<u8>> = match storage.order_blocks.get(key)? {
            Some(bytes) => decode_frame::<Block>(&bytes, &|| "an order block".into())?
                .into_iter()
                .collect(),
            None => BTreeMap::new(),
        };
        for (seq, frame) in news {
            block.insert(seq, frame.clone());
        }
        let block: Block = block.into_iter().collect();
        batch.insert(&key, encode_frame(&block));
    }
    Ok(batch)
}

/// Each store's pending movements as runs of at most `LEDGER_RUN_MAX`, keyed by the first.
fn ledger_runs(p: &Pending) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for (store, runs) in &p.movements {
        let all: Vec<&Movement> = runs.values().flatten().collect();
        for chunk in all.chunks(LEDGER_RUN_MAX) {
            batch.insert(
                movement_key(store, chunk[0].movement_id),
                encode_frame(&chunk),
            );
        }
    }
    batch
}

/// `godown_events_total` for one type (handles made once: no lookup per event).
fn event_counter(kind: crate::domain::EventKind) -> &'static metrics::Counter {
    use crate::domain::EventKind;
    static COUNTERS: std::sync::OnceLock<Vec<metrics::Counter>> = std::sync::OnceLock::new();
    let all = COUNTERS.get_or_init(|| {
        EventKind::ALL
            .iter()
            .map(|k| metrics::counter!("godown_events_total", "type" => k.as_str()))
            .collect()
    });
    let i = EventKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
    &all[i]
}

/// Each store's pending events as runs of at most `EVENT_RUN_MAX`, keyed by the first.
fn event_runs(p: &Pending) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for (store, events) in &p.events {
        let all: Vec<&StoreEvent> = events.values().map(|e| &**e).collect();
        for chunk in all.chunks(EVENT_RUN_MAX) {
            batch.insert(event_key(store, chunk[0].id), encode_frame(&chunk));
        }
    }
    batch
}

/// The store order index entries of the pending orders: `store \0 order number (BE)`.
fn store_order_keys(p: &Pending) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for (store, seqs) in &p.store_orders {
        for &seq in seqs {
            batch.insert(store_order_key(store, seq), &[]);
        }
    }
    batch
}

/// An entry of the store order index: `store \0 order number (u64 BE)`.
pub fn store_order_key(store: &StoreId, seq: u64) -> Vec<u8> {
    movement_key(store, seq)
}

/// A store's order numbers below `below`, highest (newest) first, at most `limit`: from
/// the index in sled and from memory, merged.
pub fn store_orders_below(
    storage: &Storage,
    store: &StoreId,
    below: u64,
    limit: usize,
) -> Result<Vec<u64>, WalError> {
    let mut found: std::collections::BTreeSet<u64> = storage
        .pending
        .store_orders_below(store, below, limit)
        .into_iter()
        .collect();
    let range = store_order_key(store, 0)..store_order_key(store, below);
    for key in storage.store_orders.range(range).keys().rev().take(limit) {
        let key = key?;
        if let Some(seq) = key.get(key.len() - 8..).and_then(|b| b.try_into().ok()) {
            found.insert(u64::from_be_bytes(seq));
        }
    }
    Ok(found.into_iter().rev().take(limit).collect())
}

/// Indexes every order in the archive by its store (for data directories from before the
/// index; the index is idempotent). Returns how many orders it saw.
pub fn index_store_orders(storage: &Storage) -> Result<u64, WalError> {
    let mut seen = 0;
    let mut batch = sled::Batch::default();
    for entry in storage.order_blocks.iter() {
        let (_, bytes) = entry?;
        let block: Block = decode_frame(&bytes, &|| "an order block".into())?;
        for (seq, frame) in block {
            let order: Order = decode_frame(&frame, &|| format!("order {seq}"))?;
            batch.insert(store_order_key(&order.store_id, seq), &[]);
            seen += 1;
        }
    }
    for entry in storage.orders.iter() {
        let (key, bytes) = entry?;
        if let (Ok(k), false) = (<[u8; 4]>::try_from(key.as_ref()), bytes.is_empty()) {
            let order: Order = decode_frame(&bytes, &|| "an order".into())?;
            let seq = u64::from(u32::from_be_bytes(k));
            batch.insert(store_order_key(&order.store_id, seq), &[]);
            seen += 1;
        }
    }
    storage.store_orders.apply_batch(batch)?;
    Ok(seen)
}

/// The key of a run of `store`'s events starting at `id`: `store \0 id (u64 BE)`.
pub fn event_key(store: &StoreId, id: u64) -> Vec<u8> {
    movement_key(store, id)
}

/// A store's public events after `after`, oldest first, at most `limit`: from sled's runs
/// (the one holding `after + 1`, then the later ones) and from memory, merged by id.
pub fn events_after(
    storage: &Storage,
    store: &StoreId,
    after: u64,
    limit: usize,
) -> Result<Vec<Arc<StoreEvent>>, WalError> {
    let mut found: BTreeMap<u64, Arc<StoreEvent>> = BTreeMap::new();
    let from = event_key(store, after + 1);
    let first_run = storage
        .events
        .range(event_key(store, 0)..=from.clone())
        .next_back()
        .transpose()?;
    let later = storage.events.range(from..event_key(store, u64::MAX));
    let what = || format!("the event log of store {store}");
    for entry in first_run.into_iter().map(Ok).chain(later) {
        let (_, bytes) = entry?;
        let run: Vec<StoreEvent> = decode_frame(&bytes, &what)?;
        found.extend(
            run.into_iter()
                .filter(|e| e.id > after)
                .map(|e| (e.id, Arc::new(e))),
        );
        if found.len() >= limit {
            break;
        }
    }
    let pending = storage.pending.events_after(store, after, limit);
    found.extend(pending.into_iter().map(|e| (e.id, e)));
    Ok(found.into_values().take(limit).collect())
}

/// Drops `store`'s oldest event runs in sled: those whose newest event is older than
/// `cutoff_ms`, or is more than `keep` events behind the store's newest. Decodes only the
/// runs it drops and the first one it keeps. Returns how many events it dropped.
pub fn forget_events(
    storage: &Storage,
    store: &StoreId,
    cutoff_ms: TimeMs,
    keep: u64,
) -> Result<u64, WalError> {
    let what = || format!("the event log of store {store}");
    let prefix = event_key(store, 0);
    let prefix = &prefix[..prefix.len() - 8];
    let Some(newest) = storage.events.scan_prefix(prefix).next_back().transpose()? else {
        return Ok(0);
    };
    let newest: Vec<StoreEvent> = decode_frame(&newest.1, &what)?;
    let Some(newest_id) = newest.last().map(|e| e.id) else {
        return Ok(0);
    };
    let mut dropped = 0;
    for entry in storage.events.scan_prefix(prefix) {
        let (key, bytes) = entry?;
        let run: Vec<StoreEvent> = decode_frame(&bytes, &what)?;
        let Some(last) = run.last() else {
            storage.events.remove(key)?;
            continue;
        };
        if last.id == newest_id || (last.at_ms >= cutoff_ms && newest_id - last.id < keep) {
            break;
        }
        storage.events.remove(key)?;
        dropped += run.len() as u64;
    }
    Ok(dropped)
}

/// An order by id: pending, then its archive block, then the per-order tree of older
/// versions of godown.
pub fn read_order(storage: &Storage, id: OrderId) -> Result<Option<Order>, WalError> {
    let what = || format!("order {id}");
    let seq = id.seq();
    if let Some(frame) = storage.pending.order_frame(seq) {
        return decode_frame(&frame, &what).map(Some);
    }
    if let Some(bytes) = storage.order_blocks.get(block_key(seq))? {
        let block: Block = decode_frame(&bytes, &|| "an order block".into())?;
        if let Ok(i) = block.binary_search_by_key(&seq, |(s, _)| *s) {
            return decode_frame(&block[i].1, &what).map(Some);
        }
    }
    match storage.orders.get(order_key(id))? {
        Some(b) if !b.is_empty() => decode_frame(&b, &what).map(Some),
        _ => Ok(None),
    }
}

/// The highest order number of `range` in the views (to continue the sequence after a
/// restart).
pub fn max_order_seq(storage: &Storage, range: Range<u64>) -> Result<Option<u64>, WalError> {
    // Blocks never straddle a partition: a partition's length is a multiple of a block's.
    let blocks = block_key(range.start)..block_key(range.end);
    let from_blocks = match storage.order_blocks.range(blocks).next_back().transpose()? {
        Some((_, bytes)) => decode_frame::<Block>(&bytes, &|| "an order block".into())?
            .iter()
            .map(|(s, _)| *s)
            .filter(|s| range.contains(s))
            .max(),
        None => None,
    };
    let legacy = storage
        .orders
        .last()?
        .and_then(|(k, _)| k.as_ref().try_into().ok().map(u32::from_be_bytes))
        .map(u64::from)
        .filter(|s| range.contains(s));
    Ok(from_blocks
        .max(legacy)
        .max(storage.pending.max_order_seq(&range)))
}

/// Reads a store's ledger along a chain of ids, keeping the last run it decoded (a
/// product's consecutive movements are often in the same run).
pub struct LedgerReader<'a> {
    storage: &'a Storage,
    store: &'a StoreId,
    run: Vec<Movement>,
}

impl<'a> LedgerReader<'a> {
    pub fn new(storage: &'a Storage, store: &'a StoreId) -> LedgerReader<'a> {
        LedgerReader {
            storage,
            store,
            run: Vec::new(),
        }
    }

    pub fn read(&mut self, movement_id: u64) -> Result<Option<Movement>, WalError> {
        if let Some(m) = find(&self.run, movement_id) {
            return Ok(Some(m.clone()));
        }
        self.run = match self.storage.pending.movement_run(self.store, movement_id) {
            Some(run) => run,
            None => read_ledger_run(&self.storage.movements, self.store, movement_id)?,
        };
        Ok(find(&self.run, movement_id).cloned())
    }
}

/// A movement in a run (ascending ids).
fn find(run: &[Movement], movement_id: u64) -> Option<&Movement> {
    let i = run
        .binary_search_by_key(&movement_id, |m| m.movement_id)
        .ok()?;
    Some(&run[i])
}

/// The `views_from` that versions before the checkpoint file persisted in sled, if any.
pub fn views_from(storage: &Storage) -> Result<Option<u64>, WalError> {
    Ok(storage
        .meta
        .get(VIEWS_FROM_KEY)?
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes)))
}

/// Orders, their returns (each checked) and movements in the views, each value decoded (so
/// that damage is found); an order or movement both pending and in sled counts once. For
/// `godown verify`.
pub fn count_views(storage: &Storage) -> Result<ViewCounts, WalError> {
    let mut orders: HashMap<u64, Vec<u8>> = HashMap::new();
    for entry in storage.order_blocks.iter() {
        let (_, bytes) = entry?;
        let block: Block = decode_frame(&bytes, &|| "an order block".into())?;
        orders.extend(block);
    }
    for entry in storage.orders.iter() {
        let (key, bytes) = entry?;
        if let (Ok(k), false) = (<[u8; 4]>::try_from(key.as_ref()), bytes.is_empty()) {
            orders.insert(u64::from(u32::from_be_bytes(k)), bytes.to_vec());
        }
    }
    {
        let g = storage.pending.read();
        for p in std::iter::once(&g.filling).chain(g.sealed.as_deref()) {
            orders.extend(p.orders.iter().map(|(seq, frame)| (*seq, frame.clone())));
        }
    }
    let mut returns = 0;
    for (seq, frame) in &orders {
        let what = || format!("order {seq}");
        let order: Order = decode_frame(frame, &what)?;
        crate::domain::state::check_returns(&order)
            .map_err(|why| WalError::Corrupt { what: what(), why })?;
        returns += order.returns.len();
    }
    // Per store, the id ranges of its runs; their union is its ledger.
    let mut ranges: HashMap<Vec<u8>, Vec<(u64, u64)>> = HashMap::new();
    for entry in storage.movements.iter() {
        let (key, bytes) = entry?;
        let run: Vec<Movement> = decode_frame(&bytes, &|| "a ledger chunk".into())?;
        if let (Some(first), Some(last)) = (run.first(), run.last()) {
            let store = key[..key.len().saturating_sub(9)].to_vec();
            ranges
                .entry(store)
                .or_default()
                .push((first.movement_id, last.movement_id));
        }
    }
    let g = storage.pending.read();
    for p in std::iter::once(&g.filling).chain(g.sealed.as_deref()) {
        for (store, runs) in &p.movements {
            for run in runs.values() {
                if let (Some(first), Some(last)) = (run.first(), run.last()) {
                    ranges
                        .entry(store.as_str().as_bytes().to_vec())
                        .or_default()
                        .push((first.movement_id, last.movement_id));
                }
            }
        }
    }
    let mut movements = 0u64;
    for runs in ranges.values_mut() {
        runs.sort_unstable();
        let mut covered_to = 0u64;
        for &(first, last) in runs.iter() {
            let from = first.max(covered_to + 1);
            if last >= from {
                movements += last - from + 1;
                covered_to = last;
            }
        }
    }
    Ok(ViewCounts {
        orders: orders.len(),
        movements: movements as usize,
        returns,
    })
}

/// What `godown verify` reports of the views.
#[derive(Debug, PartialEq)]
pub struct ViewCounts {
    pub orders: usize,
    pub movements: usize,
    /// Returns in archived orders, each checked (`domain::state::check_returns`).
    pub returns: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::*;

    fn order(seq: u64, status: OrderStatus) -> Order {
        Order {
            order_id: OrderId::from_seq(seq),
            store_id: StoreId::parse("S").unwrap(),
            status,
            customer: Customer {
                phone: "1".into(),
                name: "c".into(),
                delivery_address: "a".into(),
            },
            lines: Vec::new(),
            subtotal: Paise(0),
            tax: Paise(0),
            delivery_fee: Paise(0),
            total_amount: Paise(0),
            payment_method: PaymentMethod::Cod,
            reservation_id: None,
            created_ms: 0,
            expires_ms: None,
            updated_ms: 0,
            payment_reference: None,
            cancel_reason: None,
            tax_rate_bp: Some(500),
            returns: Vec::new(),
            refunded_total: Paise(0),
        }
    }

    fn write(seq: u64, status: OrderStatus) -> ViewWrite {
        ViewWrite::Order {
            seq,
            store: StoreId::parse("S").unwrap(),
            frame: encode_frame(&order(seq, status)),
        }
    }

    fn movements(store: &str, ids: std::ops::RangeInclusive<u64>) -> ViewWrite {
        ViewWrite::Movements {
            store: StoreId::parse(store).unwrap(),
            movements: ids
                .map(|id| Movement {
                    movement_id: id,
                    prev_movement_id: id - 1,
                    product_id: ProductId::parse("P").unwrap(),
                    kind: MovementKind::Sale,
                    on_hand_change: -1000,
                    reserved_change: 0,
                    on_hand_after: Qty(0),
                    reserved_after: Qty(0),
                    reference: "r".into(),
                    at_ms: 0,
                })
                .collect(),
        }
    }

    fn status(storage: &Storage, seq: u64) -> Option<OrderStatus> {
        read_order(storage, OrderId::from_seq(seq))
            .unwrap()
            .map(|o| o.status)
    }

    #[test]
    fn orders_are_read_from_memory_then_blocks_and_the_newest_version_wins() {
        // Goal: a pending order is readable before any write-out; written out, it is found
        // in its block; a later version (pending, or written into the same block by a later
        // write-out) replaces the earlier one without losing the block's other orders.
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let mut idem = sled::Batch::default();
        let first: Vec<u64> = (1..=20).collect();
        storage.pending.add(
            first.iter().map(|&s| write(s, OrderStatus::PendingPayment)),
            &mut idem,
        );
        assert_eq!(status(&storage, 7), Some(OrderStatus::PendingPayment));
        assert_eq!(status(&storage, 21), None);
        storage.pending.write_out(&storage, 0).unwrap();
        assert!(storage.pending.is_empty());
        let blocks = 20 / ORDER_BLOCK as usize + 1;
        assert_eq!(storage.order_blocks.len(), blocks, "1..=20 in whole blocks");
        assert!(first.iter().all(|&s| status(&storage, s).is_some()));

        storage.pending.add(
            [
                write(7, OrderStatus::Confirmed),
                write(30, OrderStatus::Confirmed),
            ],
            &mut idem,
        );
        assert_eq!(
            status(&storage, 7),
            Some(OrderStatus::Confirmed),
            "pending wins"
        );
        storage.pending.write_out(&storage, 0).unwrap();
        assert_eq!(status(&storage, 7), Some(OrderStatus::Confirmed));
        assert_eq!(status(&storage, 8), Some(OrderStatus::PendingPayment));
        assert_eq!(status(&storage, 30), Some(OrderStatus::Confirmed));
        assert_eq!(max_order_seq(&storage, 1..u64::MAX).unwrap(), Some(30));

        // The archive before blocks is still read.
        storage
            .orders
            .insert(
                order_key(OrderId::from_seq(99)),
                encode_frame(&order(99, OrderStatus::Cancelled)),
            )
            .unwrap();
        assert_eq!(status(&storage, 99), Some(OrderStatus::Cancelled));
        assert_eq!(max_order_seq(&storage, 1..u64::MAX).unwrap(), Some(99));
        assert_eq!(count_views(&storage).unwrap().orders, 22);
    }

    #[test]
    fn the_ledger_is_read_across_memory_and_runs_and_counted_once() {
        // Goal: movements are found whether pending or written out (in runs of at most
        // LEDGER_RUN_MAX), stores whose ids prefix each other stay apart, and a range both
        // in sled and pending again (a recovery from an older marker) counts once.
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let mut idem = sled::Batch::default();
        let n = LEDGER_RUN_MAX as u64 + 10;
        storage
            .pending
            .add([movements("A", 1..=3), movements("A", 4..=n)], &mut idem);
        storage.pending.add([movements("AB", 1..=2)], &mut idem);
        let (a, ab) = (StoreId::parse("A").unwrap(), StoreId::parse("AB").unwrap());
        let read = |store: &StoreId, id: u64| {
            LedgerReader::new(&storage, store)
                .read(id)
                .unwrap()
                .map(|m| m.movement_id)
        };
        assert_eq!(read(&a, n), Some(n));
        assert_eq!(read(&ab, 3), None);
        storage.pending.write_out(&storage, 0).unwrap();
        assert_eq!(storage.movements.len(), 3, "A in two runs, AB in one");
        storage
            .pending
            .add([movements("A", n + 1..=n + 1)], &mut idem);
        let mut reader = LedgerReader::new(&storage, &a);
        for id in (1..=n + 1).rev() {
            assert_eq!(reader.read(id).unwrap().unwrap().movement_id, id);
        }
        assert_eq!(reader.read(0).unwrap(), None);
        assert_eq!(reader.read(n + 2).unwrap(), None);
        assert_eq!(read(&ab, 2), Some(2));
        storage.pending.add([movements("A", 5..=n)], &mut idem);
        let counts = count_views(&storage).unwrap();
        assert_eq!((counts.orders, counts.movements), (0, n as usize + 1 + 2));
    }

    #[test]
    fn events_are_read_after_any_id_and_the_oldest_dropped_by_age_and_count() {
        // Goal: 200 events written out in runs of 64 read back whole after any id; old
        // runs go by age, then by count, oldest first; the newest run always stays.
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let store = StoreId::parse("A").unwrap();
        let events: Vec<Arc<StoreEvent>> = (1..=200)
            .map(|id| {
                Arc::new(StoreEvent {
                    id,
                    kind: EventKind::ReservationReleased,
                    at_ms: id as i64 * 1000,
                    data: EventData::HoldClosed {
                        reservation_id: ReservationId::from_number(id),
                    },
                })
            })
            .collect();
        let write = ViewWrite::Events {
            store: store.clone(),
            events,
        };
        storage.pending.add([write], &mut sled::Batch::default());
        let ids = |after: u64| -> Vec<u64> {
            events_after(&storage, &store, after, 1000)
                .unwrap()
                .iter()
                .map(|e| e.id)
                .collect()
        };
        assert_eq!(ids(150), (151..=200).collect::<Vec<_>>(), "pending");
        storage.pending.write_out(&storage, 1).unwrap();
        assert_eq!(storage.events.len(), 4, "runs of 64");
        assert_eq!(ids(0), (1..=200).collect::<Vec<_>>());
        assert_eq!(ids(100), (101..=200).collect::<Vec<_>>());
        assert_eq!(events_after(&storage, &store, 10, 5).unwrap().len(), 5);

        assert_eq!(forget_events(&storage, &store, 0, 1000).unwrap(), 0);
        assert_eq!(
            forget_events(&storage, &store, 100_000, 1000).unwrap(),
            64,
            "by age"
        );
        assert_eq!(ids(0)[0], 65);
        assert_eq!(
            forget_events(&storage, &store, 0, 50).unwrap(),
            64,
            "by count"
        );
        assert_eq!(ids(0)[0], 129);
        assert_eq!(forget_events(&storage, &store, i64::MAX, 1).unwrap(), 64);
        assert_eq!(
            ids(0),
            (193..=200).collect::<Vec<_>>(),
            "the newest run stays"
        );
        let other = StoreId::parse("AB").unwrap();
        assert_eq!(forget_events(&storage, &other, i64::MAX, 1).unwrap(), 0);
    }

    #[test]
    fn a_store_s_orders_are_listed_newest_first_and_an_old_archive_is_indexed() {
        // Goal: the index lists a store's order numbers below a cursor, newest first, from
        // memory and sled alike; an archive without index entries is indexed by a walk.
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let store = StoreId::parse("S").unwrap();
        let mut idem = sled::Batch::default();
        storage.pending.add(
            (1..=5).map(|seq| write(seq, OrderStatus::Confirmed)),
            &mut idem,
        );
        assert_eq!(
            store_orders_below(&storage, &store, u64::MAX, 3).unwrap(),
            [5, 4, 3]
        );
        storage.pending.write_out(&storage, 1).unwrap();
        storage.pending.add(
            (6..=7).map(|seq| write(seq, OrderStatus::Confirmed)),
            &mut idem,
        );
        assert_eq!(
            store_orders_below(&storage, &store, 7, 10).unwrap(),
            [6, 5, 4, 3, 2, 1]
        );
        let other = StoreId::parse("T").unwrap();
        assert!(
            store_orders_below(&storage, &other, u64::MAX, 10)
                .unwrap()
                .is_empty()
        );
        storage.store_orders.clear().unwrap();
        storage.pending.write_out(&storage, 2).unwrap();
        storage.store_orders.clear().unwrap();
        assert!(
            store_orders_below(&storage, &store, u64::MAX, 10)
                .unwrap()
                .is_empty()
        );
        assert_eq!(index_store_orders(&storage).unwrap(), 7);
        assert_eq!(
            store_orders_below(&storage, &store, u64::MAX, 10).unwrap(),
            [7, 6, 5, 4, 3, 2, 1]
        );
    }
}
