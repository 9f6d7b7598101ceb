//! Recovery: load each store's snapshot, replay the WAL after it, rebuild the views.
//!
//! The WAL is the truth and a snapshot only a shortcut: a store with no snapshot is
//! rebuilt from its first record. A damaged record at the very end of the log (a write cut
//! short) ends replay there with a warning; damage anywhere else stops start-up.

use super::format::{
    SnapshotFrame, View, WalError, WalRecord, decode_frame, decode_state, read_snapshot_frames,
    split_batch, view_writes,
};
use super::storage::Storage;
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
    pub next_seq: u64,
    /// Per store, the first sequence number a later recovery would need.
    pub replay_from: HashMap<StoreId, u64>,
    /// The first order sequence number never used by a durable order.
    pub next_order_seq: u32,
    /// The keys (first sequence numbers) of the log's batches, oldest first.
    pub batch_keys: Vec<u64>,
    pub report: RecoveryReport,
}

/// Rebuilds every store. With `repair`, a torn tail record is deleted and the views of the
/// last two batches are rewritten; without it (for `godown verify`) nothing is written.
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

    // A batch's views are flushed with it, so only the last batch's views can be missing
    // (sled need not keep writes to different trees in order within an interrupted flush).
    // The views of the last two batches are rewritten, also for records a snapshot covers;
    // older batches' views are on disk already, and rewriting them all would double the
    // time of a large recovery.
    let mut last_two = storage.wal.iter().keys().rev().take(2);
    let (_, rewrite_from) = (last_two.next(), last_two.next());
    let rewrite_from: Vec<u8> = match rewrite_from {
        Some(key) => key?.to_vec(),
        None => Vec::new(),
    };
    let mut views: [sled::Batch; 3] = Default::default();
    let mut pending_views = 0usize;
    let mut batch_keys = Vec::new();
    let mut iter = storage.wal.iter().peekable();
    'batches: while let Some(entry) = iter.next() {
        let (key, value) = entry?;
        let last_batch = iter.peek().is_none();
        let rewrite_views = repair && key.as_ref() >= rewrite_from.as_slice();
        let batch_key =
            u64::from_be_bytes(key.as_ref().try_into().map_err(|_| WalError::Corrupt {
                what: "WAL key".into(),
                why: format!("{} bytes", key.len()),
            })?);
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
            match stores.get_mut(&record.store_id) {
                Some((snap_seq, _)) if seq <= *snap_seq => {
                    report.records_skipped += 1;
                    if rewrite_views {
                        pending_views += add_views(&mut views, &record);
                    }
                    continue;
                }
                Some((_, state)) => record.events.iter().for_each(|e| state.apply_event(e)),
                None => {
                    let Some(Event::StoreSet(config)) = record.events.first() else {
                        return Err(WalError::Corrupt {
                            what: what(),
                            why: "a store's first record does not create it".into(),
                        });
                    };
                    let mut state = StoreState::new(config.clone());
                    record.events.iter().for_each(|e| state.apply_event(e));
                    stores.insert(record.store_id.clone(), (0, state));
                }
            }
            replay_from.entry(record.store_id.clone()).or_insert(seq);
            report.records_replayed += 1;
            // Finished orders live in the archive, not in memory (as the actor keeps them).
            if let Some((_, state)) = stores.get_mut(&record.store_id) {
                for event in &record.events {
                    if let Event::OrderSet(order) = event {
                        state.evict_order(order.order_id);
                    }
                }
            }
            if rewrite_views {
                pending_views += add_views(&mut views, &record);
                if pending_views >= 10_000 {
                    apply_views(storage, std::mem::take(&mut views))?;
                    pending_views = 0;
                }
            }
        }
        if torn.is_some() {
            break 'batches;
        }
    }
    if repair {
        apply_views(storage, views)?;
        storage.db.flush()?;
    }
    let states: Vec<StoreState> = stores.into_values().map(|(_, s)| s).collect();
    let archived = storage
        .orders
        .last()?
        .and_then(|(k, _)| k.as_ref().try_into().ok().map(u32::from_be_bytes));
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
        next_seq,
        replay_from,
        next_order_seq,
        batch_keys,
        report,
    })
}

/// Adds a record's view writes to `views`; returns how many.
fn add_views(views: &mut [sled::Batch; 3], record: &WalRecord) -> usize {
    let writes = view_writes(record);
    let n = writes.len();
    for w in writes {
        let index = match w.view {
            View::Orders => 0,
            View::Movements => 1,
            View::Idem => 2,
        };
        views[index].insert(w.key, w.value);
    }
    n
}

fn apply_views(storage: &Storage, views: [sled::Batch; 3]) -> Result<(), WalError> {
    let [orders, movements, idem] = views;
    storage.orders.apply_batch(orders)?;
    storage.movements.apply_batch(movements)?;
    storage.idem.apply_batch(idem)?;
    Ok(())
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

    #[test]
    fn recovery_rewrites_the_last_batches_views_and_keeps_finished_orders_out_of_memory() {
        // Goal: views lost with the last batches (an interrupted flush) come back, older
        // batches' views are not rewritten, and replayed finished orders are not held in
        // memory (they are in the archive).
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
        let archived = |seq: u32| {
            storage
                .orders
                .contains_key(order_key(OrderId::from_seq(seq)))
                .unwrap()
        };
        let r = recover(&storage, true).unwrap();
        assert!(!archived(1), "views of older batches are not rewritten");
        assert!(archived(2) && archived(3) && archived(4));
        assert!(!storage.movements.is_empty());
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
    }
}
