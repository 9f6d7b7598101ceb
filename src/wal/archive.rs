//! The storage-facing API for everything above the log: reads of the views (orders, the
//! ledger, idempotency answers) and the few log items that are not a store's record.
//!
//! No other layer knows sled's trees, keys or frames. Every read here may touch sled and so
//! may block: callers on an async thread run it on a blocking thread (`web::block`, or
//! `spawn_blocking` inside a store actor with its mailbox paused).

use super::format::{IdemAnswer, IdemEntry, Remembered, WalError, decode_frame, encode_frame};
use super::storage::Storage;
use super::views::{self, LedgerReader, ViewWrite};
use super::writer::ItemBody;
use crate::domain::{Movement, Order, OrderId, ProductId, StoreId, TimeMs};

/// What an idempotency key was answered with the first time.
#[derive(Clone, Debug, PartialEq)]
pub enum SavedAnswer {
    /// The request created this order; its answer is the order as it is now.
    Order(OrderId),
    /// Any other answer, as the layer above encoded it (opaque here).
    Answer(Vec<u8>),
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
            IdemAnswer::Answer(bytes) => SavedAnswer::Answer(bytes),
            IdemAnswer::LegacyRefused { status, body } => {
                SavedAnswer::Answer(legacy_answer(status, &body))
            }
        };
        Ok(Some(Saved {
            body_hash: entry.body_hash,
            answer,
        }))
    }

    /// Forgets idempotency keys first answered before `cutoff_ms`; returns how many.
    pub fn forget_answers_before(&self, cutoff_ms: TimeMs) -> Result<u64, WalError> {
        let mut removed = 0;
        for entry in self.storage.idem.iter() {
            let (key, value) = entry?;
            let old = decode_frame::<IdemEntry>(&value, &|| "an idempotency entry".into())
                .map(|e| e.at_ms < cutoff_ms)
                .unwrap_or(false);
            if old {
                self.storage.idem.remove(&key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Orders and movements whose views are still in memory (for metrics).
    pub fn pending_views(&self) -> (usize, usize) {
        self.storage.pending.len()
    }
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
    }];
    let frame = encode_frame(&Remembered {
        key: key.into(),
        entry,
    });
    ItemBody::Remembered { frame, views }
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
