//! The directory: which actor owns which store, and the arbiters (threads) they run on.

use super::store::{MAILBOX_CAPACITY, StoreActor};
use crate::domain::{StoreConfig, StoreId, StoreState};
use crate::wal::{Archive, WalHandle};
use actix::dev::ToEnvelope;
use actix::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// Most stores one process will host: bounds the directory and the number of actors.
pub const STORES_MAX: usize = 100_000;

#[derive(Clone)]
pub struct StoreEntry {
    pub addr: Addr<StoreActor>,
    /// Messages sent to this store and not yet handled: the overload gate.
    pub depth: Arc<AtomicUsize>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum CallError {
    #[error("store not found")]
    StoreNotFound,
    #[error("overloaded")]
    Overloaded,
    #[error("too many stores")]
    TooManyStores,
    #[error("store stopped")]
    Stopped,
    /// The store is arriving here from another process, or has left for one
    /// (`crate::moving`).
    #[error("store moved")]
    Moved,
}

/// A store that is here only in part: arriving from another process (not yet taking
/// requests), or gone to one.
enum Away {
    Arriving(StoreEntry),
    Gone,
}

/// Maps store ids to their actors. The lock guards only this map (who owns a store), never
/// stock: it is taken for a read on every request and for a write when a store is created.
pub struct Directory {
    stores: RwLock<HashMap<StoreId, StoreEntry>>,
    /// Stores moving in or gone (never also in `stores`).
    away: RwLock<HashMap<StoreId, Away>>,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: AtomicUsize,
    pub wal: WalHandle,
    /// Reads of the views, for store actors (evicted orders).
    pub archive: Archive,
    pub payment_ttl_ms: i64,
    /// The next order sequence number (see `OrderId`).
    pub order_seq: Arc<std::sync::atomic::AtomicU64>,
    /// The end of this process's order numbers (its partition's).
    pub order_seq_end: u64,
    /// The store actors' time (see `clock`).
    pub clock: Arc<dyn super::Clock>,
    /// Which store each live token acts for.
    pub tokens: Arc<super::TokenIndex>,
}

impl Directory {
    pub fn new(
        arbiters: Vec<ArbiterHandle>,
        wal: WalHandle,
        archive: Archive,
        payment_ttl_ms: i64,
        order_seqs: std::ops::Range<u64>,
    ) -> Directory {
        assert!(!arbiters.is_empty());
        assert!(order_seqs.start > 0);
        Directory {
            stores: RwLock::new(HashMap::new()),
            away: RwLock::new(HashMap::new()),
            arbiters,
            next_arbiter: AtomicUsize::new(0),
            wal,
            archive,
            payment_ttl_ms,
            order_seq: Arc::new(std::sync::atomic::AtomicU64::new(order_seqs.start)),
            order_seq_end: order_seqs.end,
            clock: Arc::new(super::SystemClock::new()),
            tokens: Arc::default(),
        }
    }

    /// Uses `clock` for every store started from now on (tests: a `ManualClock`).
    pub fn with_clock(mut self, clock: Arc<dyn super::Clock>) -> Directory {
        self.clock = clock;
        self
    }

    fn spawn(&self, state: StoreState, fresh: bool) -> StoreEntry {
        self.spawn_frozen(state, fresh, false)
    }

    fn spawn_frozen(&self, state: StoreState, fresh: bool, frozen: bool) -> StoreEntry {
        let i = self.next_arbiter.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
        let (wal, archive) = (self.wal.clone(), self.archive.clone());
        let shared = super::store::Shared {
            payment_ttl_ms: self.payment_ttl_ms,
            order_seq: self.order_seq.clone(),
            order_seq_end: self.order_seq_end,
            clock: self.clock.clone(),
            tokens: self.tokens.clone(),
        };
        let addr = StoreActor::start_in_arbiter(&self.arbiters[i], move |_| {
            let mut actor = StoreActor::new(state, wal, archive, fresh, shared);
            actor.frozen = frozen;
            actor
        });
        StoreEntry {
            addr,
            depth: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Starts an actor for a store recovered from disk.
    pub fn adopt(&self, state: StoreState) {
        let id = state.config.store_id.clone();
        self.tokens.set_store(&id, state.tokens());
        let entry = self.spawn(state, false);
        self.stores
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, entry);
    }

    /// Starts a frozen actor for a store arriving from another process (not reachable by
    /// [`Directory::call`] until [`Directory::arrive`]); replaces an earlier arrival of it.
    pub fn adopt_arriving(&self, state: StoreState) -> Result<StoreEntry, CallError> {
        let id = state.config.store_id.clone();
        if self.get(&id).is_some() {
            return Err(CallError::Moved);
        }
        let entry = self.spawn_frozen(state, false, true);
        self.away_map().insert(id, Away::Arriving(entry.clone()));
        Ok(entry)
    }

    /// The actor of a store that is arriving here.
    pub fn arriving(&self, id: &StoreId) -> Option<StoreEntry> {
        match self.away.read().unwrap_or_else(|e| e.into_inner()).get(id) {
            Some(Away::Arriving(entry)) => Some(entry.clone()),
            _ => None,
        }
    }

    /// An arriving store takes requests from now on (its actor must be told too).
    pub fn arrive(&self, id: &StoreId, tokens: &crate::domain::Tokens) -> Option<StoreEntry> {
        let mut away = self.away_map();
        let Some(Away::Arriving(entry)) = away.remove(id) else {
            return None;
        };
        self.tokens.set_store(id, tokens);
        let mut stores = self.stores.write().unwrap_or_else(|e| e.into_inner());
        stores.insert(id.clone(), entry.clone());
        Some(entry)
    }

    /// A store that has left for another process: its actor stops, its tokens stop acting
    /// for it here, and calls for it answer [`CallError::Moved`].
    pub fn mark_gone(&self, id: &StoreId) {
        let mut away = self.away_map();
        self.tokens.set_store(id, &crate::domain::Tokens::default());
        self.stores
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        away.insert(id.clone(), Away::Gone);
    }

    /// Whether `id` is arriving here or has gone from here.
    pub fn is_away(&self, id: &StoreId) -> bool {
        self.away
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
    }

    fn away_map(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<StoreId, Away>> {
        self.away.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, id: &StoreId) -> Option<StoreEntry> {
        self.stores
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// The store's actor, creating the store (empty, with `config`) if it does not exist.
    pub fn get_or_create(&self, config: &StoreConfig) -> Result<StoreEntry, CallError> {
        if let Some(entry) = self.get(&config.store_id) {
            return Ok(entry);
        }
        if self.is_away(&config.store_id) {
            return Err(CallError::Moved);
        }
        let mut stores = self.stores.write().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = stores.get(&config.store_id) {
            return Ok(entry.clone());
        }
        if stores.len() >= STORES_MAX {
            return Err(CallError::TooManyStores);
        }
        let entry = self.spawn(StoreState::new(config.clone()), true);
        stores.insert(config.store_id.clone(), entry.clone());
        Ok(entry)
    }

    pub fn store_ids(&self) -> Vec<StoreId> {
        self.stores
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Messages waiting for the busiest store, and for all stores.
    pub fn mailbox_depths(&self) -> (usize, usize) {
        let stores = self.stores.read().unwrap_or_else(|e| e.into_inner());
        stores.values().fold((0, 0), |(max, total), e| {
            let d = e.depth.load(Ordering::Relaxed);
            (max.max(d), total + d)
        })
    }

    pub fn len(&self) -> usize {
        self.stores.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends `msg` to the store's actor, refusing at once (503) when its mailbox is full.
    pub async fn call<M>(&self, id: &StoreId, msg: M) -> Result<M::Result, CallError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        StoreActor: Handler<M>,
        <StoreActor as Actor>::Context: ToEnvelope<StoreActor, M>,
    {
        let Some(entry) = self.get(id) else {
            return Err(if self.is_away(id) {
                CallError::Moved
            } else {
                CallError::StoreNotFound
            });
        };
        Self::call_entry(&entry, msg).await
    }

    pub async fn call_entry<M>(entry: &StoreEntry, msg: M) -> Result<M::Result, CallError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        StoreActor: Handler<M>,
        <StoreActor as Actor>::Context: ToEnvelope<StoreActor, M>,
    {
        struct Gate<'a>(&'a AtomicUsize);
        impl Drop for Gate<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        if entry.depth.fetch_add(1, Ordering::AcqRel) >= MAILBOX_CAPACITY {
            entry.depth.fetch_sub(1, Ordering::AcqRel);
            return Err(CallError::Overloaded);
        }
        let _gate = Gate(&entry.depth);
        entry.addr.send(msg).await.map_err(|_| CallError::Stopped)
    }
}
