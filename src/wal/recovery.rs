//! Recovery: load each store's snapshot, replay the log after it, rebuild the views.
//!
//! The log is the truth and a snapshot only a shortcut: a store with no snapshot is
//! rebuilt from its first record. A frame cut short at the very end of the log (a write a
//! crash interrupted before its fdatasync returned, so never acknowledged) ends replay there
//! with a warning and is cut off; damage anywhere else stops start-up.

use super::format::{
    EntryKind, Remembered, SagaEntry, SnapshotFrame, StoredSnapshot, WalError, WalRecord,
    decode_frame, decode_record, decode_state, encode_frame, push_batch_entry, read_snapshots,
    saga_views, split_batch, split_legacy_batch, view_writes,
};
use super::segments::{self, io_error, sync_dir};
use super::storage::Storage;
use super::views::{self, ViewWrite};
use super::writer::LogPosition;
use crate::domain::{Event, StoreId, StoreState};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct RecoveryReport {
    pub snapshots: u64,
    pub records_replayed: u64,
    /// Records older than their store's snapshot (awaiting truncation).
    pub records_skipped: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub torn_tail: bool,
    /// Log segments read.
    pub segments: u64,
    pub elapsed: Duration,
}

pub struct Recovered {
    pub states: Vec<StoreState>,
    /// Where the writer continues the log.
    pub log: LogPosition,
    /// The first order sequence number never used by a durable order.
    pub report: RecoveryReport,
}

/// What replay has built so far.
struct Replay<'a> {
    storage: &'a Storage,
    stores: HashMap<StoreId, (u64, StoreState)>,
    replay_from: HashMap<StoreId, u64>,
    views_from: u64,
    idem: sled::Batch,
    report: RecoveryReport,
}

/// Rebuilds every store, and the views that may be missing from sled (into
/// `storage.pending`, which the writer writes out later). With `repair`, the log kept in sled
/// by earlier versions is moved into segment files, a torn tail is cut off and idempotency
/// entries are rewritten; without it (for `godown verify`) nothing is written.
pub fn recover(storage: &Storage, repair: bool) -> Result<Recovered, WalError> {
    let started = Instant::now();
    let dir = segments::log_dir(storage.dir());
    if repair {
        migrate_legacy(storage, &dir)?;
    }
    let mut r = Replay {
        storage,
        stores: HashMap::new(),
        replay_from: HashMap::new(),
        views_from: 0,
        idem: sled::Batch::default(),
        report: RecoveryReport::default(),
    };
    for (name, versions) in read_snapshots(&storage.snapshots)? {
        let (seq, state) = newest_whole_snapshot(&name, versions)?;
        r.report.snapshots += 1;
        r.stores.insert(state.config.store_id.clone(), (seq, state));
    }
    r.replay_from = r
        .stores
        .iter()
        .map(|(id, (seq, _))| (id.clone(), seq + 1))
        .collect();
    // Views of records from `views_from` on may be missing from sled.
    r.views_from = match segments::read_checkpoint(&dir)? {
        Some(seq) => seq,
        None => views::views_from(storage)?.unwrap_or(0),
    };
    if !repair && !storage.wal.is_empty() && segments::list_segments(&dir)?.is_empty() {
        read_legacy(&mut r)?;
    } else {
        read_segments(&mut r, &dir, repair)?;
    }
    if repair {
        storage.idem.apply_batch(std::mem::take(&mut r.idem))?;
    }
    finish(r, started)
}

/// The newest of a store's stored snapshots that is whole. A newer one that is not was being
/// written when the process stopped (never checkpointed, so the log still holds what it would
/// have covered): it is skipped with a warning. None whole is damage.
fn newest_whole_snapshot(
    name: &str,
    versions: Vec<StoredSnapshot>,
) -> Result<(u64, StoreState), WalError> {
    let what = || format!("snapshot of store {name}");
    let mut why = String::from("no parts");
    for stored in versions {
        let decoded = stored
            .frame
            .map_err(|why| WalError::Corrupt { what: what(), why })
            .and_then(|bytes| {
                let frame: SnapshotFrame = decode_frame(&bytes, &what)?;
                let state = decode_state(&frame.state, &what)?;
                Ok((frame.seq, state))
            });
        match decoded {
            Ok(found) => return Ok(found),
            Err(e) => {
                tracing::warn!(store = name, version = stored.version, error = %e, "a snapshot is incomplete (cut short by a crash); using the one before it");
                why = e.to_string();
            }
        }
    }
    Err(WalError::Corrupt {
        what: what(),
        why: format!("no stored snapshot is whole: {why}"),
    })
}

fn finish(r: Replay<'_>, started: Instant) -> Result<Recovered, WalError> {
    let mut report = r.report;
    // Never continue below a number already used: not below the last entry, a snapshot, or
    // the checkpoint (records whose views were written out took their numbers too).
    let next_seq = report
        .last_seq
        .map_or(1, |s| s + 1)
        .max(r.stores.values().map(|(seq, _)| seq + 1).max().unwrap_or(1))
        .max(r.views_from);
    let states: Vec<StoreState> = r.stores.into_values().map(|(_, s)| s).collect();
    for state in &states {
        state.check_invariants();
    }
    report.elapsed = started.elapsed();
    Ok(Recovered {
        states,
        log: LogPosition {
            next_seq,
            replay_from: r.replay_from,
            views_from: r.views_from,
        },
        report,
    })
}

impl Recovered {
    /// The next order number to issue in `partition` (see `domain::ids::order_partition`):
    /// after every number of it already used, in the archive or in memory. A store moved in
    /// from another process brings numbers of that process's partition; they do not count.
    pub fn next_order_seq(
        &self,
        storage: &Storage,
        partition: std::ops::Range<u64>,
    ) -> Result<u64, WalError> {
        let archived = views::max_order_seq(storage, partition.clone())?;
        let in_memory = self
            .states
            .iter()
            .flat_map(|s| s.orders().map(|o| o.order_id.seq()))
            .filter(|seq| partition.contains(seq))
            .max();
        Ok(archived
            .max(in_memory)
            .map_or(partition.start, |s| s.saturating_add(1))
            .max(partition.start))
    }
}

/// Replays every segment, oldest first. A frame that does not check ends the log only if
/// nothing durable follows it; with `repair` the damaged tail is cut off and segments with
/// no frames (created, never written) are deleted.
fn read_segments(r: &mut Replay<'_>, dir: &Path, repair: bool) -> Result<(), WalError> {
    let seqs = segments::list_segments(dir)?;
    let mut torn: Option<(u64, String)> = None;
    for &name in &seqs {
        let bytes = segments::read_segment(dir, name)?;
        let scan = segments::scan_segment(&bytes);
        r.report.segments += 1;
        if let Some((at, why)) = &torn
            && !scan.frames.is_empty()
        {
            return Err(WalError::Corrupt {
                what: format!("log segment {at}"),
                why: format!("{why}, and later segments hold entries"),
            });
        }
        if let Some(first) = scan.frames.first() {
            let expected = r.report.last_seq.map_or(name, |last| last + 1);
            if first.first_seq != name || first.first_seq != expected {
                // A segment lost or out of place: the log has a hole.
                return Err(WalError::Corrupt {
                    what: format!("log segment {name}"),
                    why: format!(
                        "it starts at entry {}, expected {expected}",
                        first.first_seq
                    ),
                });
            }
        }
        for frame in &scan.frames {
            replay_batch(r, frame.entries, name)?;
        }
        if let Some(why) = scan.damage {
            if scan.frames_after_damage {
                return Err(WalError::Corrupt {
                    what: format!("log segment {name}"),
                    why: format!("{why}, and entries follow"),
                });
            }
            tracing::warn!(segment = name, %why, "the log's last write was cut short (never acknowledged); replay ends before it");
            r.report.torn_tail = true;
            if repair {
                segments::cut_segment(dir, name, scan.end)?;
            }
            torn = Some((name, why));
        }
        if repair && scan.frames.is_empty() {
            let path = dir.join(format!("{name:020}.log"));
            std::fs::remove_file(&path)
                .map_err(|e| io_error("deleting an empty segment", &path, e))?;
            sync_dir(dir)?;
        }
    }
    Ok(())
}

/// Replays one batch's entries; `segment` names it in errors.
fn replay_batch(r: &mut Replay<'_>, entries: &[u8], segment: u64) -> Result<(), WalError> {
    let (entries, damage) = split_batch(entries);
    if let Some(why) = damage {
        // The frame's checksum held, so this is not a torn write.
        return Err(WalError::Corrupt {
            what: format!("a batch in log segment {segment}"),
            why,
        });
    }
    for e in entries {
        if let Some(last) = r.report.last_seq
            && e.seq <= last
        {
            return Err(WalError::Corrupt {
                what: format!("log segment {segment}"),
                why: format!("entry {} follows entry {last}", e.seq),
            });
        }
        r.report.first_seq.get_or_insert(e.seq);
        r.report.last_seq = Some(e.seq);
        let what = || format!("log entry {}", e.seq);
        match e.kind {
            EntryKind::Record => {
                let record = decode_record(e.frame, &what)?;
                replay_record(r, e.seq, record)?;
            }
            EntryKind::Remembered => {
                let remembered: Remembered = decode_frame(e.frame, &what)?;
                if e.seq >= r.views_from {
                    let write = ViewWrite::Idem {
                        key: remembered.key.as_bytes().to_vec(),
                        value: encode_frame(&remembered.entry),
                        at_ms: remembered.entry.at_ms,
                    };
                    r.storage.pending.add([write], &mut r.idem);
                }
            }
            EntryKind::Snapshot => {
                let _: StoreId = decode_frame(e.frame, &what)?;
            }
            EntryKind::Saga => {
                let entry: SagaEntry = decode_frame(e.frame, &what)?;
                if e.seq >= r.views_from {
                    r.storage.pending.add(saga_views(&entry), &mut r.idem);
                }
            }
            EntryKind::History => {
                let entry: super::moving::HistoryEntry = decode_frame(e.frame, &what)?;
                if e.seq >= r.views_from {
                    let views = super::moving::history_views(&entry)?;
                    r.storage.pending.add(views, &mut r.idem);
                }
            }
        }
    }
    Ok(())
}

fn replay_record(r: &mut Replay<'_>, seq: u64, record: WalRecord) -> Result<(), WalError> {
    let covered = matches!(r.stores.get(&record.store_id), Some((snap_seq, _)) if seq <= *snap_seq);
    if covered {
        r.report.records_skipped += 1;
    } else {
        replay(&mut r.stores, &record).map_err(|why| WalError::Corrupt {
            what: format!("log entry {seq}"),
            why: why.into(),
        })?;
        r.replay_from.entry(record.store_id.clone()).or_insert(seq);
        r.report.records_replayed += 1;
    }
    if seq >= r.views_from {
        r.storage.pending.add(view_writes(record), &mut r.idem);
    }
    Ok(())
}

/// Replays the log kept in sled by earlier versions (for `verify`, which writes nothing).
fn read_legacy(r: &mut Replay<'_>) -> Result<(), WalError> {
    for (seq, frame) in legacy_entries(r.storage)? {
        let record = decode_record(&frame, &|| format!("WAL record {seq}"))?;
        r.report.first_seq.get_or_insert(seq);
        r.report.last_seq = Some(seq);
        replay_record(r, seq, record)?;
    }
    Ok(())
}

/// The entries of the log kept in sled by earlier versions, in order. Damage in the last
/// entry is a write cut short and dropped with a warning; anywhere else it is an error.
fn legacy_entries(storage: &Storage) -> Result<Vec<(u64, Vec<u8>)>, WalError> {
    let mut out = Vec::new();
    let mut iter = storage.wal.iter().peekable();
    while let Some(entry) = iter.next() {
        let (key, value) = entry?;
        let last_batch = iter.peek().is_none();
        let (entries, damage) = match split_legacy_batch(&value) {
            Ok(entries) => (entries, None),
            Err(why) => (Vec::new(), Some(why)),
        };
        let count = entries.len();
        for (i, (seq, frame)) in entries.into_iter().enumerate() {
            let intact = decode_record(frame, &|| String::new()).is_ok();
            if !(intact || last_batch && i + 1 == count) {
                return Err(WalError::Corrupt {
                    what: format!("WAL record {seq}"),
                    why: "damaged".into(),
                });
            }
            if intact {
                out.push((seq, frame.to_vec()));
            }
        }
        if let Some(why) = damage {
            if !last_batch {
                return Err(WalError::Corrupt {
                    what: format!("WAL batch {key:?}"),
                    why,
                });
            }
            tracing::warn!(%why, "the last WAL record is damaged (a write cut short); dropped");
        }
    }
    Ok(out)
}

/// Moves the log kept in sled by earlier versions into a segment file, once: written whole
/// under a temporary name, synced, renamed into place, and only then removed from sled (a
/// crash in between leaves both, and the next start only removes the old one).
fn migrate_legacy(storage: &Storage, dir: &Path) -> Result<(), WalError> {
    if storage.wal.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| io_error("creating the log", dir, e))?;
    if segments::list_segments(dir)?.is_empty() {
        let entries = legacy_entries(storage)?;
        if let Some(&(first, _)) = entries.first() {
            let mut batch = Vec::new();
            for (seq, frame) in &entries {
                push_batch_entry(&mut batch, *seq, EntryKind::Record, frame);
            }
            let mut frame = Vec::new();
            segments::encode_frame(first, &batch, &mut frame);
            let tmp = dir.join("migrating.tmp");
            let write = || -> std::io::Result<()> {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&frame)?;
                f.sync_all()
            };
            write().map_err(|e| io_error("moving the log into segments", &tmp, e))?;
            let path = dir.join(format!("{first:020}.log"));
            std::fs::rename(&tmp, &path)
                .map_err(|e| io_error("moving the log into segments", &path, e))?;
            sync_dir(dir)?;
            tracing::info!(
                entries = entries.len(),
                "moved the log out of sled into a segment file"
            );
        }
    }
    storage.wal.clear()?;
    storage.make_durable()
}

/// Applies one record to its store (creating the store from its first record). Finished
/// orders go to the archive, not memory, as the actor keeps them.
fn replay(
    stores: &mut HashMap<StoreId, (u64, StoreState)>,
    record: &WalRecord,
) -> Result<(), &'static str> {
    let state = match stores.get_mut(&record.store_id) {
        Some((_, state)) => state,
        None => {
            let Some(Event::StoreSet(config)) = record.events.first() else {
                return Err("a store's first record does not create it");
            };
            let state = StoreState::new(config.clone());
            &mut stores
                .entry(record.store_id.clone())
                .or_insert((0, state))
                .1
        }
    };
    record.events.iter().for_each(|e| state.apply_event(e));
    for order in record.events.iter().filter_map(Event::order) {
        state.evict_order(order.order_id);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::state::{DraftItem, OrderDraft};
    use crate::domain::*;
    use crate::wal::format::{EntryKind, encode_frame, encode_record, push_batch_entry};

    fn record(state: &mut StoreState, command: Command) -> WalRecord {
        let (_, events) = state.execute(command, 0).unwrap();
        WalRecord {
            store_id: state.config.store_id.clone(),
            events,
            idem: None,
            first_event_id: 0,
            batch: None,
        }
    }

    /// Store `S` (also for other modules' tests).
    pub(crate) fn store_s() -> StoreConfig {
        StoreConfig {
            store_id: StoreId::parse("S").unwrap(),
            name: "s".into(),
            tax_rate_bp: 0,
            delivery_fee: Paise(0),
            free_delivery_above: None,
            location: None,
            updated_ms: 0,
            utc_offset_minutes: 330,
        }
    }

    /// Sets product `P` with `units` in stock.
    pub(crate) fn product_p(units: u64) -> Command {
        let info = ProductInfo {
            product_id: ProductId::parse("P").unwrap(),
            name: "p".into(),
            unit: Unit::Pieces,
            unit_price: Paise(100),
            low_stock_threshold: Qty::ZERO,
            category: None,
            lead_time_days: 2,
            safety_stock_days: 1,
        };
        let stock = Some(Qty::from_units(units));
        Command::SetProduct { info, stock }
    }

    /// Order `seq`: one unit of `P`, cash on delivery.
    pub(crate) fn one_p(seq: u64) -> Command {
        let draft = OrderDraft {
            order_id: OrderId::from_seq(seq),
            customer: Customer {
                phone: "1".into(),
                name: "c".into(),
                delivery_address: "a".into(),
            },
            items: vec![DraftItem {
                product_id: ProductId::parse("P").unwrap(),
                quantity: Qty::from_units(1),
                unit_price: None,
            }],
            payment_method: PaymentMethod::Cod,
            reservation_id: None,
            payment_ttl_ms: 1000,
            allow_partial: false,
            saga_key: None,
        };
        Command::PlaceOrder(Box::new(draft))
    }

    /// Six records of store `S`: the store, its product `P` (100 units), and orders 1..=4
    /// of one unit each.
    fn six_records() -> Vec<WalRecord> {
        let config = store_s();
        let mut state = StoreState::new(config.clone());
        let mut records = vec![WalRecord {
            store_id: config.store_id.clone(),
            events: vec![Event::StoreSet(config.clone())],
            idem: None,
            first_event_id: 0,
            batch: None,
        }];
        state.apply_event(&records[0].events[0]);
        records.push(record(&mut state, product_p(100)));
        for seq in 1..=4 {
            records.push(record(&mut state, one_p(seq)));
        }
        records
    }

    /// The batches of the test log: [store, product], [order 1], [order 2], [order 3, 4].
    const BATCHES: [&[usize]; 4] = [&[0, 1], &[2], &[3], &[4, 5]];

    /// A data directory whose log holds `six_records` in `BATCHES` (sequence numbers
    /// 1..=6), in one segment file, with no views in sled.
    fn four_batches() -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let records = six_records();
        let mut log = segments::LogFiles::open(dir.path(), segments::SEGMENT_BYTES_MIN).unwrap();
        let mut seq = 1u64;
        for batch in BATCHES {
            let first = seq;
            let mut value = Vec::new();
            for &i in batch {
                push_batch_entry(
                    &mut value,
                    seq,
                    EntryKind::Record,
                    &encode_record(&records[i]),
                );
                seq += 1;
            }
            log.append(first, &value, true).unwrap();
        }
        (dir, storage)
    }

    fn log_dir(storage: &Storage) -> std::path::PathBuf {
        segments::log_dir(storage.dir())
    }

    fn has_order(storage: &Storage, seq: u64) -> bool {
        views::read_order(storage, OrderId::from_seq(seq))
            .unwrap()
            .is_some()
    }

    /// Asserts what recovering `four_batches` gives, whatever the log's form.
    fn assert_six_records(r: &Recovered, storage: &Storage) {
        assert_eq!(r.report.records_replayed, 6);
        assert_eq!(r.states.len(), 1);
        let p = r.states[0]
            .product(&ProductId::parse("P").unwrap())
            .unwrap();
        assert_eq!(p.on_hand, Qty::from_units(96));
        assert_eq!(
            r.next_order_seq(storage, crate::domain::ids::order_partition(0))
                .unwrap(),
            5
        );
        assert_eq!(r.log.next_seq, 7);
    }

    #[test]
    fn recovery_rebuilds_views_from_the_checkpoint_and_keeps_finished_orders_out_of_memory() {
        // Goal: views of records from the checkpoint on come back (into memory, readable),
        // older records' views are not rebuilt (they are in sled by then), and replayed
        // finished orders are not held in memory (they are in the archive).
        let (_dir, storage) = four_batches();
        segments::write_checkpoint(&log_dir(&storage), 4).unwrap();
        let r = recover(&storage, true).unwrap();
        assert_eq!(r.log.views_from, 4);
        assert!(
            !has_order(&storage, 1),
            "views before the checkpoint are not rebuilt"
        );
        assert!(has_order(&storage, 2) && has_order(&storage, 3) && has_order(&storage, 4));
        assert_eq!(storage.pending.len(), (3, 3));
        assert_six_records(&r, &storage);
        assert_eq!(r.report.segments, 1);
        assert_eq!(
            r.states[0].orders().count(),
            0,
            "finished orders stay in the archive"
        );
    }

    #[test]
    fn without_a_checkpoint_every_view_is_rebuilt() {
        // Goal: a database whose views were never checkpointed rebuilds them all.
        let (_dir, storage) = four_batches();
        let r = recover(&storage, true).unwrap();
        assert_eq!(r.log.views_from, 0);
        assert!((1..=4).all(|seq| has_order(&storage, seq)));
        assert_six_records(&r, &storage);
    }

    #[test]
    fn the_log_kept_in_sled_by_earlier_versions_is_moved_into_a_segment_once() {
        // Goal: `verify` reads the old log where it is and writes nothing; a server start
        // moves it into a segment file, empties the old tree, and recovers the same state,
        // with the old views marker honoured; a second start finds nothing left to move.
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let records = six_records();
        let mut seq = 1u64;
        for batch in BATCHES {
            let first = seq;
            let mut value = Vec::new();
            for &i in batch {
                let frame = encode_record(&records[i]);
                value.extend_from_slice(&seq.to_le_bytes());
                value.extend_from_slice(&(frame.len() as u32).to_le_bytes());
                value.extend_from_slice(&frame);
                seq += 1;
            }
            storage.wal.insert(first.to_be_bytes(), value).unwrap();
        }
        storage
            .meta
            .insert(views::VIEWS_FROM_KEY, &4u64.to_be_bytes())
            .unwrap();
        let r = recover(&storage, false).unwrap();
        assert_six_records(&r, &storage);
        assert_eq!(storage.wal.len(), 4, "verify moved nothing");
        assert!(
            segments::list_segments(&log_dir(&storage))
                .unwrap()
                .is_empty()
        );

        let r = recover(&storage, true).unwrap();
        assert_six_records(&r, &storage);
        assert_eq!(r.log.views_from, 4);
        assert!(storage.wal.is_empty());
        assert_eq!(segments::list_segments(&log_dir(&storage)).unwrap(), [1]);
        let r = recover(&storage, true).unwrap();
        assert_six_records(&r, &storage);
        assert_eq!(r.report.segments, 1);
    }

    #[test]
    fn a_torn_last_write_is_cut_off_and_damage_before_entries_stops_recovery() {
        // Goal: half a frame after the last one (a write a crash cut short) is dropped with
        // the report saying so, and cut off for good; a flipped bit in an earlier frame, with
        // frames after it, is damage to acknowledged entries and stops recovery.
        let (_dir, storage) = four_batches();
        let dir = log_dir(&storage);
        let path = dir.join(format!("{:020}.log", 1));
        let mut bytes = std::fs::read(&path).unwrap();
        let end = segments::scan_segment(&bytes).end as usize;
        let mut torn = Vec::new();
        segments::encode_frame(7, &[9; 100], &mut torn);
        bytes.truncate(end);
        bytes.extend_from_slice(&torn[..60]);
        std::fs::write(&path, &bytes).unwrap();
        let r = recover(&storage, true).unwrap();
        assert!(r.report.torn_tail);
        assert_six_records(&r, &storage);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), end as u64, "cut");
        let r = recover(&storage, true).unwrap();
        assert!(!r.report.torn_tail);

        bytes.truncate(end);
        bytes[30] ^= 1; // inside the first frame
        std::fs::write(&path, &bytes).unwrap();
        let e = recover(&storage, true)
            .err()
            .expect("damage stops recovery");
        assert!(matches!(e, WalError::Corrupt { .. }), "{e}");
    }

    /// Starts a writer on `storage` where `at` says, checkpointing every 4 numbers.
    fn writer_at(storage: &Storage, at: LogPosition) -> crate::wal::WalHandle {
        let mut config = crate::wal::writer::WriterConfig::new(crate::wal::Durability::Flush, 4);
        config.segment_bytes = segments::SEGMENT_BYTES_MIN;
        crate::wal::writer::start(storage.clone(), config, at).unwrap()
    }

    use crate::wal::writer::tests::write;

    fn record_item(record: &WalRecord) -> crate::wal::ItemBody {
        crate::wal::ItemBody::Record {
            store_id: record.store_id.clone(),
            frame: encode_record(record),
            views: view_writes(record.clone()),
        }
    }

    #[test]
    fn after_a_streak_of_records_without_stores_no_number_or_order_id_is_used_twice() {
        // Goal: entries that change no store (remembered refusals) take sequence numbers and
        // move the checkpoint past them; after a restart the log continues above it, so an
        // order written next has its view rebuilt by the following recovery and its id is
        // not issued again. Method: real writer, two restarts on the same directory.
        let dir = tempfile::tempdir().unwrap();
        let records = six_records();
        let storage = Storage::open(dir.path()).unwrap();
        let handle = writer_at(&storage, LogPosition::default());
        write(&handle, record_item(&records[0]));
        write(&handle, record_item(&records[1]));
        for n in 0..10 {
            let item = crate::wal::archive::remember(&format!("refused-{n}"), [n; 16], 0, vec![n]);
            write(&handle, item);
        }
        write(&handle, crate::wal::ItemBody::Checkpoint);
        handle.close();
        drop(storage);

        let storage = Storage::open(dir.path()).unwrap();
        let r = recover(&storage, true).unwrap();
        assert_eq!(r.log.views_from, 13, "checkpointed past the streak");
        let saved = crate::wal::Archive::new(storage.clone())
            .saved_answer("refused-9")
            .unwrap()
            .unwrap();
        assert_eq!(saved.answer, crate::wal::SavedAnswer::Answer(vec![9]));
        assert_eq!(r.log.next_seq, 13, "12 entries were logged");
        assert_eq!(
            r.next_order_seq(&storage, crate::domain::ids::order_partition(0))
                .unwrap(),
            1
        );
        let handle = writer_at(&storage, r.log);
        assert_eq!(write(&handle, record_item(&records[2])), 13);
        handle.close();
        drop(storage);

        let storage = Storage::open(dir.path()).unwrap();
        let r = recover(&storage, true).unwrap();
        assert!(has_order(&storage, 1), "the order's view is rebuilt");
        assert_eq!(
            r.next_order_seq(&storage, crate::domain::ids::order_partition(0))
                .unwrap(),
            2,
            "its id is not issued again"
        );
        assert_eq!(r.log.next_seq, 14);
    }

    #[test]
    fn a_snapshot_cut_short_falls_back_to_the_one_before_it() {
        // Goal: a store's newest snapshot with a part missing (a crash while sled wrote it,
        // before any checkpoint) is skipped with a warning; the one before it is used and the
        // log after it replayed, giving the same state; with no whole snapshot at all,
        // recovery refuses (damage).
        let (_dir, storage) = four_batches();
        let records = six_records();
        let store = records[0].store_id.clone();
        let mut state = StoreState::new(match &records[0].events[0] {
            Event::StoreSet(c) => c.clone(),
            _ => unreachable!("the first record creates the store"),
        });
        for e in &records[1].events {
            state.apply_event(e);
        }
        let snapshot = |seq: u64, state: &StoreState| {
            let frame = encode_frame(&SnapshotFrame {
                seq,
                state: crate::wal::format::encode_state(state),
            });
            for (k, v) in crate::wal::format::snapshot_parts(&store, seq, &frame) {
                storage.snapshots.insert(k, v).unwrap();
            }
        };
        snapshot(2, &state);
        for r in &records[2..4] {
            r.events.iter().for_each(|e| state.apply_event(e));
        }
        snapshot(4, &state);
        storage
            .snapshots
            .remove(crate::wal::format::snapshot_key(&store, 4, 0))
            .unwrap();
        let r = recover(&storage, true).unwrap();
        assert_eq!(r.report.snapshots, 1);
        assert_eq!(
            r.report.records_skipped, 2,
            "records 1 and 2, under version 2"
        );
        assert_eq!(r.report.records_replayed, 4);
        let p = r.states[0]
            .product(&ProductId::parse("P").unwrap())
            .unwrap();
        assert_eq!(p.on_hand, Qty::from_units(96));

        storage
            .snapshots
            .remove(crate::wal::format::snapshot_key(&store, 2, 0))
            .unwrap();
        storage
            .snapshots
            .insert(crate::wal::format::snapshot_key(&store, 2, 1), &b"x"[..])
            .unwrap();
        assert!(matches!(
            recover(&storage, true),
            Err(WalError::Corrupt { .. })
        ));
    }
}
