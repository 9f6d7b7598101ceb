//! Recovery: load each store's snapshot, replay the WAL after it, rebuild the views.
//!
//! The WAL is the truth and a snapshot only a shortcut: a store with no snapshot is
//! rebuilt from its first record. A damaged record at the very end of the log (a write cut
//! short) ends replay there with a warning; damage anywhere else stops start-up.

use super::format::{
    SnapshotFrame, WalError, WalRecord, decode_frame, decode_state, read_snapshot_frames,
    split_batch, view_writes,
};
use super::storage::Storage;
use super::views;
use super::writer::LogPosition;
use crate::domain::{Event, StoreId, StoreState};
use std::collections::HashMap;
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
    pub elapsed: Duration,
}

pub struct Recovered {
    pub states: Vec<StoreState>,
    /// Where the writer continues the log.
    pub log: LogPosition,
    /// The first order sequence number never used by a durable order.
    pub next_order_seq: u32,
    pub report: RecoveryReport,
}

/// Rebuilds every store, and the views that may be missing from sled (into
/// `storage.pending`, which the writer writes out later). With `repair`, a torn tail record
/// is deleted and idempotency entries are rewritten; without it (for `godown verify`)
/// nothing is written.
pub fn recover(storage: &Storage, repair: bool) -> Result<Recovered, WalError> {
    let started = Instant::now();
    let mut report = RecoveryReport::default();
    let mut stores: HashMap<StoreId, (u64, StoreState)> = HashMap::new();
    for (name, value) in read_snapshot_frames(&storage.snapshots)? {
        let what = || format!("snapshot of store {name}");
        let frame: SnapshotFrame = decode_frame(&value, &what)?;
        let state = decode_state(&frame.state, &what)?;
        report.snapshots += 1;
        stores.insert(state.config.store_id.clone(), (frame.seq, state));
    }
    let mut replay_from: HashMap<StoreId, u64> = stores
        .iter()
        .map(|(id, (seq, _))| (id.clone(), seq + 1))
        .collect();
    let mut next_seq = stores.values().map(|(seq, _)| seq + 1).max().unwrap_or(1);

    // Views of records from `views_from` on may be missing from sled. A database of the
    // layout before order blocks has no marker: it wrote each batch's views with it, so
    // only its last two batches' views can be missing (an interrupted flush).
    let views_from = match views::views_from(storage)? {
        Some(seq) => seq,
        None if storage.orders.is_empty() => 0,
        None => {
            let mut last_two = storage.wal.iter().keys().rev().take(2);
            match (last_two.next(), last_two.next()) {
                (_, Some(key)) => batch_key_of(&key?)?,
                _ => 0,
            }
        }
    };
    let mut idem = sled::Batch::default();
    let mut batch_keys = Vec::new();
    let mut iter = storage.wal.iter().peekable();
    'batches: while let Some(entry) = iter.next() {
        let (key, value) = entry?;
        let last_batch = iter.peek().is_none();
        let batch_key = batch_key_of(&key)?;
        batch_keys.push(batch_key);
        let (entries, damage) = split_batch(&value);
        let count = entries.len();
        let mut records = Vec::with_capacity(count);
        let mut torn: Option<String> = damage;
        for (i, (seq, frame)) in entries.into_iter().enumerate() {
            let what = || format!("WAL record {seq}");
            match decode_frame::<WalRecord>(frame, &what) {
                Ok(r) => records.push((seq, r)),
                Err(WalError::Corrupt { why, .. }) if i + 1 == count => {
                    torn = Some(format!("record {seq}: {why}"));
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(why) = &torn {
            if !last_batch {
                return Err(WalError::Corrupt {
                    what: format!("WAL batch {batch_key}"),
                    why: why.clone(),
                });
            }
            tracing::warn!(batch = batch_key, %why, "the last WAL record is damaged (a write cut short); replay ends before it");
            report.torn_tail = true;
            if repair {
                // Keep the intact records of the batch, drop the damaged end.
                let mut kept = Vec::new();
                for (seq, r) in &records {
                    super::format::push_batch_entry(
                        &mut kept,
                        *seq,
                        &super::format::encode_frame(r),
                    );
                }
                storage.wal.insert(&key, kept)?;
            }
        }
        for (seq, record) in records {
            let what = || format!("WAL record {seq}");
            report.first_seq.get_or_insert(seq);
            report.last_seq = Some(seq);
            next_seq = next_seq.max(seq + 1);
            let covered =
                matches!(stores.get(&record.store_id), Some((snap_seq, _)) if seq <= *snap_seq);
            if covered {
                report.records_skipped += 1;
            } else {
                replay(&mut stores, &record).map_err(|why| WalError::Corrupt {
                    what: what(),
                    why: why.into(),
                })?;
                replay_from.entry(record.store_id.clone()).or_insert(seq);
                report.records_replayed += 1;
            }
            if seq >= views_from {
                storage.pending.add(view_writes(record), &mut idem);
            }
        }
        if torn.is_some() {
            break 'batches;
        }
    }
    if repair {
        storage.idem.apply_batch(idem)?;
        storage.db.flush()?;
    }
    let states: Vec<StoreState> = stores.into_values().map(|(_, s)| s).collect();
    let archived = views::max_order_seq(storage)?;
    let in_memory = states
        .iter()
        .flat_map(|s| s.orders().map(|o| o.order_id.seq()))
        .max();
    let next_order_seq = archived
        .max(in_memory)
        .map_or(1, |s| s.saturating_add(1))
        .max(1);
    for state in &states {
        state.check_invariants();
    }
    report.elapsed = started.elapsed();
    Ok(Recovered {
        states,
        log: LogPosition {
            next_seq,
            replay_from,
            views_from,
            batch_keys,
        },
        next_order_seq,
        report,
    })
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
    for event in &record.events {
        if let Event::OrderSet(order) = event {
            state.evict_order(order.order_id);
        }
    }
    Ok(())
}

fn batch_key_of(key: &[u8]) -> Result<u64, WalError> {
    Ok(u64::from_be_bytes(key.try_into().map_err(|_| {
        WalError::Corrupt {
            what: "WAL key".into(),
            why: format!("{} bytes", key.len()),
        }
    })?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::state::{DraftItem, OrderDraft};
    use crate::domain::*;
    use crate::wal::format::{encode_frame, order_key, push_batch_entry};

    fn record(state: &mut StoreState, command: Command) -> WalRecord {
        let (_, events) = state.execute(command, 0).unwrap();
        WalRecord {
            store_id: state.config.store_id.clone(),
            events,
            idem: None,
        }
    }

    /// A log of four batches, sequence numbers 1..=6: [store, product], [order 1],
    /// [order 2], [order 3, order 4]; no views in sled.
    fn four_batches() -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        let config = StoreConfig {
            store_id: StoreId::parse("S").unwrap(),
            name: "s".into(),
            tax_rate_bp: 0,
            delivery_fee: Paise(0),
            free_delivery_above: None,
            location: None,
            updated_ms: 0,
        };
        let mut state = StoreState::new(config.clone());
        let mut records = vec![WalRecord {
            store_id: config.store_id.clone(),
            events: vec![Event::StoreSet(config.clone())],
            idem: None,
        }];
        state.apply_event(&records[0].events[0]);
        let info = ProductInfo {
            product_id: ProductId::parse("P").unwrap(),
            name: "p".into(),
            unit: Unit::Pieces,
            unit_price: Paise(100),
            low_stock_threshold: Qty::ZERO,
            category: None,
        };
        let stock = Some(Qty::from_units(100));
        records.push(record(&mut state, Command::SetProduct { info, stock }));
        for seq in 1..=4 {
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
            };
            records.push(record(&mut state, Command::PlaceOrder(Box::new(draft))));
        }
        // Four batches: [store, product], [order 1], [order 2], [order 3, order 4].
        let batches: [&[usize]; 4] = [&[0, 1], &[2], &[3], &[4, 5]];
        let mut seq = 1u64;
        for batch in batches {
            let first = seq;
            let mut value = Vec::new();
            for &i in batch {
                push_batch_entry(&mut value, seq, &encode_frame(&records[i]));
                seq += 1;
            }
            storage.wal.insert(first.to_be_bytes(), value).unwrap();
        }
        (dir, storage)
    }

    fn has_order(storage: &Storage, seq: u32) -> bool {
        views::read_order(storage, OrderId::from_seq(seq))
            .unwrap()
            .is_some()
    }

    #[test]
    fn recovery_rebuilds_views_from_the_marker_and_keeps_finished_orders_out_of_memory() {
        // Goal: views of records from `views_from` on come back (into memory, readable),
        // older records' views are not rebuilt (they are in sled by then), and replayed
        // finished orders are not held in memory (they are in the archive).
        let (_dir, storage) = four_batches();
        storage
            .meta
            .insert(views::VIEWS_FROM_KEY, &4u64.to_be_bytes())
            .unwrap();
        let r = recover(&storage, true).unwrap();
        assert_eq!(r.log.views_from, 4);
        assert!(
            !has_order(&storage, 1),
            "views before the marker are not rebuilt"
        );
        assert!(has_order(&storage, 2) && has_order(&storage, 3) && has_order(&storage, 4));
        assert_eq!(storage.pending.len(), (3, 3));
        assert_eq!(r.report.records_replayed, 6);
        assert_eq!(r.states.len(), 1);
        assert_eq!(
            r.states[0].orders().count(),
            0,
            "finished orders stay in the archive"
        );
        let p = r.states[0]
            .product(&ProductId::parse("P").unwrap())
            .unwrap();
        assert_eq!(p.on_hand, Qty::from_units(96));
        assert_eq!(r.next_order_seq, 5);
        assert_eq!(r.log.next_seq, 7);
        assert_eq!(r.log.batch_keys, [1, 3, 4, 5]);
    }

    #[test]
    fn without_a_marker_every_view_is_rebuilt_unless_the_database_predates_blocks() {
        // Goal: a new database whose views were never written out rebuilds them all; one of
        // the layout before order blocks (per-order archive, no marker) rebuilds only its
        // last two batches' views, as that layout needed.
        let (_dir, storage) = four_batches();
        let r = recover(&storage, true).unwrap();
        assert_eq!(r.log.views_from, 0);
        assert!((1..=4).all(|seq| has_order(&storage, seq)));

        let (_dir, storage) = four_batches();
        storage
            .orders
            .insert(order_key(OrderId::from_seq(1)), encode_frame(&"old"))
            .unwrap();
        let r = recover(&storage, true).unwrap();
        assert_eq!(r.log.views_from, 4, "the second-last batch");
        assert_eq!(storage.pending.len(), (3, 3), "orders 2, 3 and 4");
    }
}
