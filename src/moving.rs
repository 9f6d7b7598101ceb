//! Moving a store from one process of a region to another while it takes orders, the way
//! Shopify moves a shop between pods (Ghostferry): copy while live, tail the changes until
//! the copy has caught up, then a short freeze, the switch, and the target takes over.
//!
//! The process the store leaves ([`Moves::out`]): `Begin` hands out the store's state and
//! starts a tap of its later records (`actor::moving`); `History` hands out its history in
//! chunks (`wal::moving`); `Drain` the records since the last drain; `Freeze` makes the
//! store's leaving durable, stops its changes (503 "Store unavailable" + `Retry-After`) and
//! hands out the last records once they are durable; `Finish` marks it gone (its requests
//! answer 503 here, 421 to the proxy's search) and `Abort` lets it take changes again.
//!
//! The process it arrives at ([`Moves::arrive`]): `Begin` makes the arrival durable and
//! starts the store frozen from the state; `History` and `Records` go through its own log
//! (durable before the answer); `Activate` lets it take requests. Until then it is not
//! served here (the proxy's search skips it).
//!
//! Who is where survives restarts in `moves.json` in the data directory. The mover
//! (`cluster::mover`, `godown cluster move`) drives both sides and switches nginx.

use crate::actor::moving::{Arrive, BeginMoveOut, DrainMoveOut, ReplayMoved, SetFrozen};
use crate::actor::{CallError, Directory, StoreEntry, StoreError, TakeSnapshot};
use crate::domain::{StoreId, StoreState};
use crate::wal::moving::{HistoryBounds, HistoryCursor, HistoryEntry};
use crate::wal::writer::Durable;
use crate::wal::{Archive, ItemBody, WalError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The file that says which stores are leaving, arriving or gone.
pub const MOVES_FILE: &str = "moves.json";
/// Records one drain hands out: a few MB, one HTTP answer (the rest waits for the next).
pub const DRAIN_RECORDS_MAX: usize = 10_000;

/// A step asked of the process a store leaves (bincode frames on the wire).
#[derive(Debug, Serialize, Deserialize)]
pub enum OutStep {
    Begin,
    History {
        cursor: HistoryCursor,
        bounds: HistoryBounds,
    },
    Drain,
    Freeze,
    Finish,
    Abort,
}

/// What the process a store leaves answers.
#[derive(Debug, Serialize, Deserialize)]
pub enum OutReply {
    Begun {
        state: Vec<u8>,
        bounds: HistoryBounds,
        key_fingerprint: String,
    },
    History {
        entry: HistoryEntry,
        next: HistoryCursor,
    },
    Records(Vec<Vec<u8>>),
    Done,
}

/// A step asked of the process a store arrives at.
#[derive(Debug, Serialize, Deserialize)]
pub enum InStep {
    Begin {
        state: Vec<u8>,
        key_fingerprint: String,
    },
    History(HistoryEntry),
    Records(Vec<Vec<u8>>),
    Activate,
}

#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// The store is not here in the state the step needs (not live, not leaving, not
    /// arriving).
    #[error("{0}")]
    Conflict(String),
    /// The two processes do not share the order id key: the store's orders would change
    /// their public ids.
    #[error("the two processes have different order id keys (order-ids.key)")]
    KeyMismatch,
    #[error("store not found")]
    StoreNotFound,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Storage(String),
}

impl From<WalError> for MoveError {
    fn from(e: WalError) -> MoveError {
        MoveError::Storage(e.to_string())
    }
}

impl From<CallError> for MoveError {
    fn from(e: CallError) -> MoveError {
        match e {
            CallError::StoreNotFound => MoveError::StoreNotFound,
            CallError::Moved => MoveError::Conflict("the store is moving".into()),
            other => MoveError::Storage(other.to_string()),
        }
    }
}

impl From<StoreError> for MoveError {
    fn from(e: StoreError) -> MoveError {
        match e {
            // The mover knows an interrupted move by these words (`cluster::mover`).
            StoreError::Moving => MoveError::Conflict("the store is frozen".into()),
            other => MoveError::Storage(other.to_string()),
        }
    }
}

/// Which stores are on the move, as kept in [`MOVES_FILE`].
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placements {
    pub leaving: BTreeSet<StoreId>,
    pub arriving: BTreeSet<StoreId>,
    pub gone: BTreeSet<StoreId>,
}

impl Placements {
    pub fn load(dir: &Path) -> std::io::Result<Placements> {
        match std::fs::read(dir.join(MOVES_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Placements::default()),
            Err(e) => Err(e),
        }
    }

    /// Starts the recovered stores: the gone ones not at all, the arriving ones frozen and
    /// unreachable, the leaving ones frozen.
    pub async fn adopt(&self, dir: &Directory, states: Vec<StoreState>) {
        for id in &self.gone {
            dir.mark_gone(id);
        }
        for state in states {
            let id = state.config.store_id.clone();
            if self.gone.contains(&id) {
                continue;
            }
            if self.arriving.contains(&id) {
                let _ = dir.adopt_arriving(state);
                continue;
            }
            dir.adopt(state);
            if self.leaving.contains(&id)
                && let Some(entry) = dir.get(&id)
            {
                let _ = entry.addr.send(SetFrozen(true)).await;
            }
        }
    }

    /// Whether the store's webhooks are delivered from here.
    pub fn serves(&self, id: &StoreId) -> bool {
        !self.gone.contains(id) && !self.arriving.contains(id)
    }
}

pub struct Moves {
    dir: Arc<Directory>,
    archive: Archive,
    path: PathBuf,
    /// Changed only under this lock, and written out (fsynced) before it takes effect.
    placements: Mutex<Placements>,
    key_fingerprint: String,
    deliverer: Option<Arc<crate::delivery::Deliverer>>,
}

impl Moves {
    pub fn new(
        dir: Arc<Directory>,
        archive: Archive,
        data_dir: &Path,
        placements: Placements,
        key_fingerprint: String,
        deliverer: Option<Arc<crate::delivery::Deliverer>>,
    ) -> Moves {
        Moves {
            dir,
            archive,
            path: data_dir.join(MOVES_FILE),
            placements: Mutex::new(placements),
            key_fingerprint,
            deliverer,
        }
    }

    /// Changes the placements durably (a temporary file, fsynced, renamed).
    async fn place(&self, change: impl FnOnce(&mut Placements)) -> Result<(), MoveError> {
        let bytes = {
            let mut p = self.placements.lock().unwrap_or_else(|e| e.into_inner());
            change(&mut p);
            serde_json::to_vec_pretty(&*p).expect("placements serialise")
        };
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || crate::saga::region::write_synced(&path, &bytes))
            .await
            .map_err(|e| MoveError::Storage(e.to_string()))?
            .map_err(|e| MoveError::Storage(format!("writing {MOVES_FILE}: {e}")))
    }

    fn live(&self, store: &StoreId) -> Result<StoreEntry, MoveError> {
        self.dir.get(store).ok_or_else(|| {
            if self.dir.is_away(store) {
                MoveError::Conflict("the store is not served here".into())
            } else {
                MoveError::StoreNotFound
            }
        })
    }

    /// A step of the process the store leaves.
    pub async fn out(&self, store: &StoreId, step: OutStep) -> Result<OutReply, MoveError> {
        match step {
            OutStep::Begin => {
                if !self.archive.store_orders_indexed()? {
                    // The store's orders are found through the index: it must be whole.
                    return Err(MoveError::Conflict(
                        "orders of an earlier version are still being indexed; retry shortly"
                            .into(),
                    ));
                }
                let begun = self.live(store)?.addr.send(BeginMoveOut).await;
                let begun = begun.map_err(|_| CallError::Stopped)??;
                Ok(OutReply::Begun {
                    state: begun.state,
                    bounds: HistoryBounds {
                        movements_below: begun.movements_below,
                        events_below: begun.events_below,
                    },
                    key_fingerprint: self.key_fingerprint.clone(),
                })
            }
            OutStep::History { cursor, bounds } => {
                self.live(store)?;
                let (archive, id) = (self.archive.clone(), store.clone());
                let (entry, next) = tokio::task::spawn_blocking(move || {
                    archive.store_history(&id, &cursor, bounds)
                })
                .await
                .map_err(|e| MoveError::Storage(e.to_string()))??;
                Ok(OutReply::History { entry, next })
            }
            OutStep::Drain => Ok(OutReply::Records(self.drain(store, false).await?)),
            OutStep::Freeze => {
                self.live(store)?;
                let id = store.clone();
                self.place(|p| {
                    p.leaving.insert(id);
                })
                .await?;
                Ok(OutReply::Records(self.drain(store, true).await?))
            }
            OutStep::Finish => self.finish_out(store).await,
            OutStep::Abort => {
                let entry = self.live(store)?;
                let id = store.clone();
                self.place(|p| {
                    p.leaving.remove(&id);
                })
                .await?;
                let _ = entry.addr.send(SetFrozen(false)).await;
                Ok(OutReply::Done)
            }
        }
    }

    /// The records since the last drain (all of them once frozen, when they are durable).
    async fn drain(&self, store: &StoreId, freeze: bool) -> Result<Vec<Vec<u8>>, MoveError> {
        let entry = self.live(store)?;
        let mut frames = Vec::new();
        loop {
            let drained = entry.addr.send(DrainMoveOut { freeze }).await;
            let drained = drained.map_err(|_| CallError::Stopped)??;
            if let Some(rx) = drained.durable {
                durable(rx).await?;
            }
            let more = drained.frames.len() == DRAIN_RECORDS_MAX;
            frames.extend(drained.frames);
            if !freeze || !more {
                return Ok(frames);
            }
        }
    }

    async fn finish_out(&self, store: &StoreId) -> Result<OutReply, MoveError> {
        let leaving = self
            .placements
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .leaving
            .contains(store);
        if !leaving {
            return Err(MoveError::Conflict("the store is not leaving".into()));
        }
        let webhooks = self
            .dir
            .call(store, crate::actor::ListWebhooks)
            .await
            .unwrap_or_default();
        let id = store.clone();
        self.place(|p| {
            p.leaving.remove(&id);
            p.gone.insert(id);
        })
        .await?;
        self.dir.mark_gone(store);
        let forget = ItemBody::Forget {
            store_id: store.clone(),
        };
        durable(self.dir.wal.submit_unbounded(forget)).await?;
        if let Some(d) = &self.deliverer {
            webhooks.iter().for_each(|w| d.stop(&w.webhook_id));
        }
        Ok(OutReply::Done)
    }

    /// A step of the process the store arrives at.
    pub async fn arrive(&self, store: &StoreId, step: InStep) -> Result<(), MoveError> {
        match step {
            InStep::Begin {
                state,
                key_fingerprint,
            } => self.begin_in(store, &state, &key_fingerprint).await,
            InStep::History(entry) => {
                self.arriving(store)?;
                if &entry.store != store {
                    return Err(MoveError::Invalid("history of another store".into()));
                }
                let frame = crate::wal::format::encode_frame(&entry);
                let views = crate::wal::moving::history_views(&entry)
                    .map_err(|e| MoveError::Invalid(e.to_string()))?;
                durable(
                    self.dir
                        .wal
                        .submit_unbounded(ItemBody::History { frame, views }),
                )
                .await
            }
            InStep::Records(frames) => {
                let entry = self.arriving(store)?;
                let rx = entry.addr.send(ReplayMoved(frames)).await;
                if let Some(rx) = rx.map_err(|_| CallError::Stopped)?? {
                    durable(rx).await?;
                }
                Ok(())
            }
            InStep::Activate => self.activate(store).await,
        }
    }

    fn arriving(&self, store: &StoreId) -> Result<StoreEntry, MoveError> {
        self.dir
            .arriving(store)
            .ok_or_else(|| MoveError::Conflict("the store is not arriving here".into()))
    }

    async fn begin_in(
        &self,
        store: &StoreId,
        state: &[u8],
        key_fingerprint: &str,
    ) -> Result<(), MoveError> {
        if key_fingerprint != self.key_fingerprint {
            return Err(MoveError::KeyMismatch);
        }
        let state = crate::wal::format::decode_state(state, &|| "a moved store's state".into())
            .map_err(|e| MoveError::Invalid(e.to_string()))?;
        if &state.config.store_id != store {
            return Err(MoveError::Invalid("the state is of another store".into()));
        }
        if self.dir.get(store).is_some() {
            return Err(MoveError::Conflict(
                "the store is served here already".into(),
            ));
        }
        let gone = self
            .placements
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .gone
            .contains(store);
        let (archive, id) = (self.archive.clone(), store.clone());
        let has_history = tokio::task::spawn_blocking(move || archive.holds_store(&id))
            .await
            .map_err(|e| MoveError::Storage(e.to_string()))??;
        if gone || has_history {
            // Its old history would mix with the new one's (see `wal::moving`).
            return Err(MoveError::Conflict(
                "this process has held the store before; move it to another".into(),
            ));
        }
        let id = store.clone();
        self.place(|p| {
            p.arriving.insert(id);
        })
        .await?;
        let entry = self.dir.adopt_arriving(state)?;
        // The state exists nowhere else here: a snapshot, made durable in sled by a
        // checkpoint before the answer (the log holds no record it could be rebuilt from).
        let rx = entry.addr.send(TakeSnapshot).await;
        if let Some(rx) = rx.map_err(|_| CallError::Stopped)? {
            durable(rx).await?;
        }
        durable(self.dir.wal.submit_unbounded(ItemBody::Checkpoint)).await
    }

    async fn activate(&self, store: &StoreId) -> Result<(), MoveError> {
        let entry = self.arriving(store)?;
        let id = store.clone();
        self.place(|p| {
            p.arriving.remove(&id);
        })
        .await?;
        let (tokens, webhooks) = entry
            .addr
            .send(Arrive)
            .await
            .map_err(|_| CallError::Stopped)?;
        self.dir.arrive(store, &tokens);
        if let Some(d) = &self.deliverer {
            for w in webhooks {
                d.start(store.clone(), w);
            }
        }
        Ok(())
    }
}

async fn durable(rx: tokio::sync::oneshot::Receiver<Durable>) -> Result<(), MoveError> {
    match rx.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(why)) => Err(MoveError::Storage(why.to_string())),
        Err(_) => Err(MoveError::Storage("the write-ahead log stopped".into())),
    }
}
