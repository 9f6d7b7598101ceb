//! The storage-facing API for everything above the log: reads of the views (orders, the
//! ledger, idempotency answers) and the few log items that are not a store's record.
//!
//! No other layer knows sled's trees, keys or frames. Every read here may touch sled and so
//! may block: callers on an async thread run it on a blocking thread (`web::block`, or
//! `spawn_blocking` inside a store actor with its mailbox paused).

use super::format::{
    IDEM_AGE_TAG, IdemAnswer, IdemEntry, OPEN_SAGA_TAG, Remembered, SAGA_TAG, SagaEntry, WalError,
    decode_frame, encode_frame, idem_age_key, saga_key, saga_views, split_idem_age_key,
};
use super::storage::Storage;
use super::views::{self, LedgerReader, ViewWrite};
use super::writer::ItemBody;
use crate::domain::{Movement, Order, OrderId, ProductId, ReturnId, StoreId, TimeMs};

/// What an idempotency key was answered with the first time.
#[derive(Clone, Debug, PartialEq)]
pub enum SavedAnswer {
    /// The request created this order; its answer is the order as it is now.
    Order(OrderId),
    /// The request took this return of this order; its answer is the return.
    Return {
        order_id: OrderId,
        return_id: ReturnId,
    },
    /// Any other answer, as the layer above encoded it (opaque here).
    Answer(Vec<u8>),
    /// The request ran this saga; its answer is the saga's record.
    Saga(Box<str>),
    /// The request placed this batch: each order's outcome, in order.
    Batch(Vec<Result<OrderId, crate::domain::DomainError>>),
}

/// An idempotency key's entry: the hash of the first request's body and its answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Saved {
    pub body_hash: [u8; 16],
    pub answer: SavedAnswer,
}

/// A page of a product's ledger, newest first.
pub struct LedgerPage {
    pub movements: Vec<Movement>,
    /// Whether older movements follow.
    pub more: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("`after` is not a movement of this product")]
    UnknownAfter,
    #[error(transparent)]
    Storage(#[from] WalError),
}

/// Reads over the views; cheap to clone.
#[derive(Clone)]
pub struct Archive {
    storage: Storage,
}

impl Archive {
    pub fn new(storage: Storage) -> Archive {
        Archive { storage }
    }

    /// An order by id, in its latest durable-or-pending state.
    pub fn order(&self, id: OrderId) -> Result<Option<Order>, WalError> {
        views::read_order(&self.storage, id)
    }

    /// Up to `limit` movements of `product` in `store`, newest first, from the chain that
    /// starts at `head` (the product's newest movement id), or from just before `after`.
    pub fn ledger_page(
        &self,
        store: &StoreId,
        product: &ProductId,
        head: u64,
        after: Option<u64>,
        limit: usize,
    ) -> Result<LedgerPage, LedgerError> {
        let mut ledger = LedgerReader::new(&self.storage, store);
        let mut cursor = match after {
            None => head,
            Some(a) => match ledger.read(a)? {
                Some(m) if m.product_id == *product => m.prev_movement_id,
                _ => return Err(LedgerError::UnknownAfter),
            },
        };
        let mut movements = Vec::with_capacity(limit + 1);
        while cursor != 0 && movements.len() <= limit {
            let Some(m) = ledger.read(cursor)? else {
                return Err(WalError::Corrupt {
                    what: format!("the ledger of store {store}"),
                    why: format!("movement {cursor} is missing"),
                }
                .into());
            };
            cursor = m.prev_movement_id;
            movements.push(m);
        }
        let more = movements.len() > limit;
        movements.truncate(limit);
        Ok(LedgerPage { movements, more })
    }

    /// The first answer given to `key`, if it is remembered.
    pub fn saved_answer(&self, key: &str) -> Result<Option<Saved>, WalError> {
        let Some(bytes) = self.storage.idem.get(key.as_bytes())? else {
            return Ok(None);
        };
        let entry: IdemEntry = decode_frame(&bytes, &|| "an idempotency entry".into())?;
        let answer = match entry.answer {
            IdemAnswer::Order(id) => SavedAnswer::Order(id),
            IdemAnswer::Return {
                order_id,
                return_id,
            } => SavedAnswer::Return {
                order_id,
                return_id,
            },
            IdemAnswer::Answer(bytes) => SavedAnswer::Answer(bytes),
            IdemAnswer::Saga(id) => SavedAnswer::Saga(id),
            IdemAnswer::Batch(results) => SavedAnswer::Batch(results),
            IdemAnswer::LegacyRefused { status, body } => {
                SavedAnswer::Answer(legacy_answer(status, &body))
            }
        };
        Ok(Some(Saved {
            body_hash: entry.body_hash,
            answer,
        }))
    }

    /// A saga's record as its last durable step left it (opaque: `crate::saga` encodes it).
    pub fn saga(&self, id: &str) -> Result<Option<Vec<u8>>, WalError> {
        let key = saga_key(SAGA_TAG, id);
        Ok(self.storage.idem.get(key)?.map(|v| v.to_vec()))
    }

    /// The records of every saga still open (to be resumed before the server is ready).
    pub fn open_sagas(&self) -> Result<Vec<Vec<u8>>, WalError> {
        let mut out = Vec::new();
        for key in self.storage.idem.scan_prefix([OPEN_SAGA_TAG]).keys() {
            let key = key?;
            let id = String::from_utf8_lossy(&key[1..]).into_owned();
            match self.saga(&id)? {
                Some(body) => out.push(body),
                None => {
                    return Err(WalError::Corrupt {
                        what: format!("saga {id}"),
                        why: "open, but its record is missing".into(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Forgets remembered idempotency keys, oldest first: every key first answered before
    /// `cutoff_ms`, and, with `keep`, the oldest beyond that many (counting them costs a
    /// walk over every key, so callers do it only when the count may be over).
    pub fn forget_answers(
        &self,
        cutoff_ms: TimeMs,
        keep: Option<u64>,
    ) -> Result<Forgotten, WalError> {
        let idem = &self.storage.idem;
        let total = match keep {
            Some(_) => Some(
                idem.scan_prefix([IDEM_AGE_TAG])
                    .keys()
                    .try_fold(0u64, |n, k| k.map(|_| n + 1))?,
            ),
            None => None,
        };
        let mut over = match (total, keep) {
            (Some(total), Some(keep)) => total.saturating_sub(keep),
            _ => 0,
        };
        let mut removed = 0;
        for age_key in idem.scan_prefix([IDEM_AGE_TAG]).keys() {
            let age_key = age_key?;
            let Some((at_ms, key)) = split_idem_age_key(&age_key) else {
                continue;
            };
            if at_ms >= cutoff_ms && over == 0 {
                break;
            }
            let mut batch = sled::Batch::default();
            batch.remove(age_key.as_ref());
            // The entry goes with its age entry, unless the key was answered again later
            // (after an earlier eviction): then it has a newer age entry of its own.
            if self.answer_time(key)? == Some(at_ms) {
                batch.remove(key);
            }
            idem.apply_batch(batch)?;
            over = over.saturating_sub(1);
            removed += 1;
        }
        Ok(Forgotten {
            removed,
            remaining: total.map(|t| t - removed),
        })
    }

    fn answer_time(&self, key: &[u8]) -> Result<Option<TimeMs>, WalError> {
        let Some(bytes) = self.storage.idem.get(key)? else {
            return Ok(None);
        };
        let entry: IdemEntry = decode_frame(&bytes, &|| "an idempotency entry".into())?;
        Ok(Some(entry.at_ms))
    }

    /// Gives an age entry to every remembered key written before age entries existed (a
    /// walk over every key; the sweeper does it once, at start). Returns how many.
    pub fn age_unaged_answers(&self) -> Result<u64, WalError> {
        let idem = &self.storage.idem;
        let mut added = 0;
        for entry in idem.range([IDEM_AGE_TAG + 1]..) {
            let (key, value) = entry?;
            let Ok(entry) = decode_frame::<IdemEntry>(&value, &|| "an idempotency entry".into())
            else {
                continue;
            };
            let age_key = idem_age_key(entry.at_ms, &key);
            if !idem.contains_key(&age_key)? {
                idem.insert(age_key, &[])?;
                added += 1;
            }
        }
        Ok(added)
    }

    /// A store's public events after `after`, oldest first, at most `limit`.
    pub fn events_after(
        &self,
        store: &StoreId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<std::sync::Arc<crate::domain::StoreEvent>>, WalError> {
        views::events_after(&self.storage, store, after, limit)
    }

    /// Drops a store's events older than `cutoff_ms` or beyond its newest `keep` (the
    /// newest run always stays); returns how many.
    pub fn forget_events(
        &self,
        store: &StoreId,
        cutoff_ms: TimeMs,
        keep: u64,
    ) -> Result<u64, WalError> {
        views::forget_events(&self.storage, store, cutoff_ms, keep)
    }

    /// A store's order numbers below `below`, newest first, at most `limit`.
    pub fn store_orders_below(
        &self,
        store: &StoreId,
        below: u64,
        limit: usize,
    ) -> Result<Vec<u64>, WalError> {
        views::store_orders_below(&self.storage, store, below, limit)
    }

    /// Indexes the orders of a data directory from before the store order index, once (a
    /// mark in `meta` says it is done). Returns how many orders it indexed.
    pub fn index_store_orders_once(&self) -> Result<u64, WalError> {
        if self.storage.meta.contains_key(STORE_ORDERS_INDEXED)? {
            return Ok(0);
        }
        let seen = views::index_store_orders(&self.storage)?;
        self.mark_store_orders_indexed()?;
        Ok(seen)
    }

    /// Records that every order is in the store order index: true of a data directory
    /// that starts empty (each order is indexed as it is written), so the backfill for
    /// directories of earlier versions never walks it.
    pub fn mark_store_orders_indexed(&self) -> Result<(), WalError> {
        self.storage.meta.insert(STORE_ORDERS_INDEXED, &[1])?;
        Ok(())
    }

    /// Whether every order is in the store order index (a move reads a store's orders
    /// through it).
    pub fn store_orders_indexed(&self) -> Result<bool, WalError> {
        Ok(self.storage.meta.contains_key(STORE_ORDERS_INDEXED)?)
    }

    /// A chunk of a store's history for a move (see `wal::moving`).
    pub fn store_history(
        &self,
        store: &StoreId,
        cursor: &super::moving::HistoryCursor,
        bounds: super::moving::HistoryBounds,
    ) -> Result<(super::moving::HistoryEntry, super::moving::HistoryCursor), WalError> {
        super::moving::read_history(&self.storage, store, cursor, bounds)
    }

    /// Whether the views hold anything of `store`.
    pub fn holds_store(&self, store: &StoreId) -> Result<bool, WalError> {
        super::moving::holds_history(&self.storage, store)
    }

    /// Idempotency entries added since the process started (see `PendingViews`).
    pub fn answers_added(&self) -> u64 {
        self.storage.pending.idem_added()
    }

    /// Orders and movements whose views are still in memory (for metrics).
    pub fn pending_views(&self) -> (usize, usize) {
        self.storage.pending.len()
    }
}

/// The meta key that says the store order index holds every order.
const STORE_ORDERS_INDEXED: &[u8] = b"store_orders_indexed";

/// What [`Archive::forget_answers`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Forgotten {
    pub removed: u64,
    /// How many keys are left, when they were counted.
    pub remaining: Option<u64>,
}

/// The log item that remembers `answer` (opaque) as the first answer to `key`, for a request
/// that changed no store. Submit it and wait for it before answering.
pub fn remember(key: &str, body_hash: [u8; 16], at_ms: TimeMs, answer: Vec<u8>) -> ItemBody {
    let entry = IdemEntry {
        body_hash,
        at_ms,
        answer: IdemAnswer::Answer(answer),
    };
    let views = vec![ViewWrite::Idem {
        key: key.as_bytes().to_vec(),
        value: encode_frame(&entry),
        at_ms,
    }];
    let frame = encode_frame(&Remembered {
        key: key.into(),
        entry,
    });
    ItemBody::Remembered { frame, views }
}

/// The log item of a saga's step. Submit it and wait for it before the next step.
pub fn saga_step(entry: &SagaEntry) -> ItemBody {
    ItemBody::Saga {
        frame: encode_frame(entry),
        views: saga_views(entry),
    }
}

/// Entries written before answers became opaque kept an HTTP status and a body; they come
/// back as the same bytes the HTTP layer writes today (status, u16 big-endian, then body).
/// Such entries are at most a day old when a new version starts, so this only bridges one
/// upgrade.
fn legacy_answer(status: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + body.len());
    out.extend_from_slice(&status.to_be_bytes());
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remembers `key` as first answered at `at_ms`, as the writer does.
    fn put(archive: &Archive, key: &str, at_ms: TimeMs) {
        let ItemBody::Remembered { views, .. } = remember(key, [0; 16], at_ms, vec![1]) else {
            panic!("a remembered item");
        };
        let mut batch = sled::Batch::default();
        archive.storage.pending.add(views, &mut batch);
        archive.storage.idem.apply_batch(batch).unwrap();
    }

    fn keys(archive: &Archive) -> Vec<String> {
        let mut keys: Vec<String> = (0..10)
            .map(|i| format!("k{i}"))
            .filter(|k| archive.saved_answer(k).unwrap().is_some())
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn keys_are_forgotten_by_age_and_by_count_oldest_first() {
        // Goal: keys older than the cutoff go; with a cap, the oldest beyond it go too; a
        // key answered again after eviction keeps its new answer when its old age entry is
        // swept; keys of an earlier version get age entries and are swept like the rest.
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::new(Storage::open(dir.path()).unwrap());
        for i in 0..8 {
            put(&archive, &format!("k{i}"), 1000 + i);
        }
        assert_eq!(archive.answers_added(), 8);
        let f = archive.forget_answers(1002, None).unwrap();
        assert_eq!((f.removed, f.remaining), (2, None), "k0, k1 by age");
        let f = archive.forget_answers(0, Some(4)).unwrap();
        assert_eq!((f.removed, f.remaining), (2, Some(4)), "k2, k3 by count");
        assert_eq!(keys(&archive), ["k4", "k5", "k6", "k7"]);

        // k4 answered again (as if evicted and reused): its old age entry must not take it.
        put(&archive, "k4", 5000);
        let f = archive.forget_answers(1006, None).unwrap();
        assert_eq!(f.removed, 2, "the old age entry of k4, and k5");
        assert_eq!(keys(&archive), ["k4", "k6", "k7"]);

        // An entry of an earlier version: no age entry until the sweeper gives it one.
        let (_, entry) = archive
            .storage
            .idem
            .get("k7")
            .unwrap()
            .map(|v| ((), v))
            .unwrap();
        archive.storage.idem.insert("k8", entry).unwrap();
        assert_eq!(archive.age_unaged_answers().unwrap(), 1);
        assert_eq!(archive.age_unaged_answers().unwrap(), 0, "once");
        let f = archive.forget_answers(4000, None).unwrap();
        assert_eq!(f.removed, 3, "k6, k7 and k8 (answered at 1007)");
        assert_eq!(keys(&archive), ["k4"]);
    }
}
