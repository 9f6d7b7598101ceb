//! A store's history for a move to another process (`crate::moving`): read here out of the
//! views in chunks, and written into the other process's log as [`HistoryEntry`] entries,
//! whose views recovery rebuilds like those of any other entry.
//!
//! The history is what the store's snapshot does not hold: every order's latest state, the
//! ledger and the public events below the snapshot's counters, and the idempotency answers
//! that name the store's orders (so that a retry after the move finds its order instead of
//! placing another). Later changes follow as the store's own log records.

use super::format::{IdemAnswer, IdemEntry, WalError, decode_frame, encode_frame};
use super::storage::Storage;
use super::views::{self, LedgerReader, ViewWrite};
use crate::domain::{Movement, Order, OrderId, StoreEvent, StoreId, TimeMs};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Items (orders, movements, events or answers) per history chunk: a chunk of orders is a
/// few MB on the wire and one log entry, small enough to hold in memory on both sides.
pub const HISTORY_CHUNK_ITEMS: usize = 2_000;
/// Idempotency entries one chunk looks at (most belong to other stores): bounds the time a
/// chunk takes on a process that remembers many keys.
pub const ANSWERS_SCANNED_MAX: usize = 20_000;
/// The first byte a client's key can start with (printable ASCII); the tree's own entries
/// (ages, sagas) start below it.
const CLIENT_KEY_FIRST: u8 = 0x20;

/// One chunk of a store's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub store: StoreId,
    /// `(order number, Order frame)`.
    pub orders: Vec<(u64, Vec<u8>)>,
    /// Consecutive ids.
    pub movements: Vec<Movement>,
    /// Consecutive ids.
    pub events: Vec<StoreEvent>,
    /// `(Idempotency-Key, IdemEntry frame, first answered at)`.
    pub answers: Vec<(Vec<u8>, Vec<u8>, TimeMs)>,
}

/// Where the next chunk starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum HistoryCursor {
    /// Orders are read newest first, below this number.
    Orders {
        below: u64,
    },
    Movements {
        from: u64,
    },
    Events {
        from: u64,
    },
    /// Idempotency keys after this one.
    Answers {
        after: Vec<u8>,
    },
    Done,
}

impl HistoryCursor {
    pub fn start() -> HistoryCursor {
        HistoryCursor::Orders { below: u64::MAX }
    }
}

/// The snapshot's counters: the history holds the movements and events below them (the
/// later ones come with the store's records).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryBounds {
    pub movements_below: u64,
    pub events_below: u64,
}

/// The chunk of `store`'s history at `cursor`, and the cursor after it.
pub fn read_history(
    storage: &Storage,
    store: &StoreId,
    cursor: &HistoryCursor,
    bounds: HistoryBounds,
) -> Result<(HistoryEntry, HistoryCursor), WalError> {
    let mut entry = HistoryEntry {
        store: store.clone(),
        orders: Vec::new(),
        movements: Vec::new(),
        events: Vec::new(),
        answers: Vec::new(),
    };
    let next = match cursor {
        HistoryCursor::Orders { below } => {
            let seqs = views::store_orders_below(storage, store, *below, HISTORY_CHUNK_ITEMS)?;
            for &seq in &seqs {
                if let Some(order) = views::read_order(storage, OrderId::from_seq(seq))? {
                    entry.orders.push((seq, encode_frame(&order)));
                }
            }
            match seqs.last() {
                Some(&last) if seqs.len() == HISTORY_CHUNK_ITEMS => {
                    HistoryCursor::Orders { below: last }
                }
                _ => HistoryCursor::Movements { from: 1 },
            }
        }
        HistoryCursor::Movements { from } => {
            let to = from
                .saturating_add(HISTORY_CHUNK_ITEMS as u64)
                .min(bounds.movements_below);
            let mut ledger = LedgerReader::new(storage, store);
            for id in *from..to {
                // A gap (none is expected) ends the chunk: a run's ids are consecutive.
                match ledger.read(id)? {
                    Some(m) => entry.movements.push(m),
                    None if entry.movements.is_empty() => continue,
                    None => return Ok((entry, HistoryCursor::Movements { from: id + 1 })),
                }
            }
            if to < bounds.movements_below {
                HistoryCursor::Movements { from: to }
            } else {
                HistoryCursor::Events { from: 1 }
            }
        }
        HistoryCursor::Events { from } => {
            let found = views::events_after(storage, store, from - 1, HISTORY_CHUNK_ITEMS)?;
            let mut last = None;
            for e in found.iter().filter(|e| e.id < bounds.events_below) {
                if last.is_some_and(|l| e.id != l + 1) {
                    // A gap: what is before it is one run, the rest the next chunk's.
                    return Ok((entry, HistoryCursor::Events { from: e.id }));
                }
                last = Some(e.id);
                entry.events.push(StoreEvent::clone(e));
            }
            match last {
                Some(l) if found.len() == HISTORY_CHUNK_ITEMS => {
                    HistoryCursor::Events { from: l + 1 }
                }
                _ => HistoryCursor::Answers { after: Vec::new() },
            }
        }
        HistoryCursor::Answers { after } => read_answers(storage, store, after, &mut entry)?,
        HistoryCursor::Done => HistoryCursor::Done,
    };
    Ok((entry, next))
}

/// The idempotency answers that name an order of `store`, after key `after`.
fn read_answers(
    storage: &Storage,
    store: &StoreId,
    after: &[u8],
    entry: &mut HistoryEntry,
) -> Result<HistoryCursor, WalError> {
    use std::ops::Bound;
    let from = if after.is_empty() {
        Bound::Included(vec![CLIENT_KEY_FIRST])
    } else {
        Bound::Excluded(after.to_vec())
    };
    let mut last = None;
    for item in storage
        .idem
        .range::<Vec<u8>, _>((from, Bound::Unbounded))
        .take(ANSWERS_SCANNED_MAX)
    {
        let (key, value) = item?;
        last = Some(key.to_vec());
        let idem: IdemEntry = decode_frame(&value, &|| "an idempotency entry".into())?;
        let order = match &idem.answer {
            IdemAnswer::Order(id) | IdemAnswer::Return { order_id: id, .. } => Some(*id),
            IdemAnswer::Batch(results) => results.iter().find_map(|r| r.as_ref().ok().copied()),
            _ => None,
        };
        let Some(order) = order else { continue };
        if views::read_order(storage, order)?.is_some_and(|o| &o.store_id == store) {
            entry
                .answers
                .push((key.to_vec(), value.to_vec(), idem.at_ms));
            if entry.answers.len() == HISTORY_CHUNK_ITEMS {
                break;
            }
        }
    }
    Ok(match last {
        Some(after) => HistoryCursor::Answers { after },
        None => HistoryCursor::Done,
    })
}

/// The view writes of a chunk of history.
pub fn history_views(entry: &HistoryEntry) -> Result<Vec<ViewWrite>, WalError> {
    let store = &entry.store;
    let mut writes = Vec::with_capacity(entry.orders.len() + 3);
    for (seq, frame) in &entry.orders {
        // Checked here, not trusted: a frame that does not decode is refused whole.
        let _: Order = decode_frame(frame, &|| format!("order {seq} of a moved store"))?;
        writes.push(ViewWrite::Order {
            seq: *seq,
            store: store.clone(),
            frame: frame.clone(),
        });
    }
    if !entry.movements.is_empty() {
        writes.push(ViewWrite::Movements {
            store: store.clone(),
            movements: entry.movements.clone(),
        });
    }
    if !entry.events.is_empty() {
        writes.push(ViewWrite::Events {
            store: store.clone(),
            events: entry.events.iter().cloned().map(Arc::new).collect(),
        });
    }
    for (key, value, at_ms) in &entry.answers {
        writes.push(ViewWrite::Idem {
            key: key.clone(),
            value: value.clone(),
            at_ms: *at_ms,
        });
    }
    Ok(writes)
}

/// Whether this process's views hold anything of `store` (a store may be moved in only
/// where it has never been: its history would mix with the old one's).
pub fn holds_history(storage: &Storage, store: &StoreId) -> Result<bool, WalError> {
    let prefix = super::format::movement_key(store, 0);
    let prefix = &prefix[..prefix.len() - 8];
    for tree in [&storage.store_orders, &storage.movements, &storage.events] {
        if tree.scan_prefix(prefix).next().transpose()?.is_some() {
            return Ok(true);
        }
    }
    Ok(storage.pending.holds_store(store))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::*;
    use crate::wal::format::{IdemTag, WalRecord, view_writes};
    use crate::wal::recovery::tests::{one_p, product_p, store_s};

    /// Store S with product P and `orders` one-unit orders (the first with a key), as views
    /// in `storage`'s memory (and its key's answer in sled); the store's state after them.
    fn store_with_orders(storage: &Storage, orders: u64) -> StoreState {
        let mut state = StoreState::new(store_s());
        let mut idem = sled::Batch::default();
        let mut log = |state: &mut StoreState, command: Command, key: Option<&str>| {
            let first_event_id = state.next_event_id();
            let (_, events) = state.execute(command, 0).unwrap();
            let record = WalRecord {
                store_id: state.config.store_id.clone(),
                events,
                idem: key.map(|k| IdemTag {
                    key: k.into(),
                    body_hash: [1; 16],
                    at_ms: 5,
                }),
                first_event_id,
                batch: None,
            };
            storage.pending.add(view_writes(record), &mut idem);
        };
        log(&mut state, product_p(100_000), None);
        for seq in 1..=orders {
            log(&mut state, one_p(seq), (seq == 1).then_some("key-1"));
        }
        storage.idem.apply_batch(idem).unwrap();
        state
    }

    #[test]
    fn a_stores_history_read_in_chunks_and_written_elsewhere_reads_the_same() {
        // Goal: more orders and movements than one chunk holds; every order, movement and
        // event, and the key's answer, read back from the other storage as they were.
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (
            Storage::open(a_dir.path()).unwrap(),
            Storage::open(b_dir.path()).unwrap(),
        );
        let orders = HISTORY_CHUNK_ITEMS as u64 + 5;
        let state = store_with_orders(&a, orders);
        let store = state.config.store_id.clone();
        assert!(holds_history(&a, &store).unwrap());
        assert!(!holds_history(&b, &store).unwrap());
        let bounds = HistoryBounds {
            movements_below: state.next_movement_id(),
            events_below: state.next_event_id(),
        };
        let (mut cursor, mut chunks, mut idem) =
            (HistoryCursor::start(), 0, sled::Batch::default());
        let mut answers = 0;
        while cursor != HistoryCursor::Done {
            let (entry, next) = read_history(&a, &store, &cursor, bounds).unwrap();
            answers += entry.answers.len();
            let frame = encode_frame(&entry);
            let entry: HistoryEntry = decode_frame(&frame, &|| "chunk".into()).unwrap();
            b.pending.add(history_views(&entry).unwrap(), &mut idem);
            cursor = next;
            chunks += 1;
        }
        b.idem.apply_batch(idem).unwrap();
        assert!(
            chunks >= 4,
            "orders and movements took two chunks each: {chunks}"
        );
        assert_eq!(answers, 1);
        for seq in 1..=orders {
            let id = OrderId::from_seq(seq);
            let (x, y) = (
                views::read_order(&a, id).unwrap(),
                views::read_order(&b, id).unwrap(),
            );
            assert!(x.is_some() && x == y, "order {seq}");
        }
        let (mut la, mut lb) = (LedgerReader::new(&a, &store), LedgerReader::new(&b, &store));
        for id in 1..bounds.movements_below {
            let m = la.read(id).unwrap();
            assert!(m.is_some() && m == lb.read(id).unwrap(), "movement {id}");
        }
        let events = |s: &Storage| views::events_after(s, &store, 0, usize::MAX).unwrap();
        assert_eq!(events(&a).len() as u64, bounds.events_below - 1);
        assert_eq!(events(&a), events(&b));
        assert_eq!(a.idem.get("key-1").unwrap(), b.idem.get("key-1").unwrap());
        assert!(holds_history(&b, &store).unwrap());
    }
}
