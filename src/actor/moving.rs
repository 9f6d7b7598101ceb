//! A store actor's part in moving its store to another process (`crate::moving`).
//!
//! Leaving: [`BeginMoveOut`] hands out the state and starts a tap that keeps a copy of
//! every record the store writes from then on; [`DrainMoveOut`] hands those records over
//! (the last time frozen: no change and no expiry after it). Arriving: the actor starts
//! frozen from the state the other process handed out, [`ReplayMoved`] applies and logs the
//! records that followed it, and [`Arrive`] lets it take changes.

use super::store::{StoreActor, StoreError};
use crate::domain::{Event, Tokens, Webhook};
use crate::wal::ItemBody;
use crate::wal::format::{decode_record, encode_state, view_writes};
use crate::wal::writer::Durable;
use actix::prelude::*;
use tokio::sync::oneshot;

/// Bytes of records a tap holds before the move is given up: the mover drains it every
/// round, so this is only reached when the target cannot keep up with the store.
pub const TAP_BYTES_MAX: usize = 256 << 20;

/// A store's records since its move began.
#[derive(Default)]
pub struct Tap {
    frames: Vec<Vec<u8>>,
    bytes: usize,
    overflowed: bool,
}

impl Tap {
    pub(super) fn push(&mut self, frame: &[u8]) {
        if self.overflowed || self.bytes + frame.len() > TAP_BYTES_MAX {
            self.overflowed = true;
            self.frames = Vec::new();
            return;
        }
        self.bytes += frame.len();
        self.frames.push(frame.to_vec());
    }
}

/// The store's state as it is now, and the counters its history stops at.
pub struct Begun {
    pub state: Vec<u8>,
    pub movements_below: u64,
    pub events_below: u64,
}

/// Starts (or restarts) a move out: the state now, and a tap of the records after it.
pub struct BeginMoveOut;
impl Message for BeginMoveOut {
    type Result = Result<Begun, StoreError>;
}

impl Handler<BeginMoveOut> for StoreActor {
    type Result = MessageResult<BeginMoveOut>;
    fn handle(&mut self, _: BeginMoveOut, _: &mut Self::Context) -> Self::Result {
        if self.frozen {
            return MessageResult(Err(StoreError::Moving));
        }
        self.tap = Some(Tap::default());
        MessageResult(Ok(Begun {
            state: encode_state(&self.state),
            movements_below: self.state.next_movement_id(),
            events_below: self.state.next_event_id(),
        }))
    }
}

/// The records since the last drain; with `freeze`, the store takes no change from now on
/// and `durable` completes once every record it wrote is on disk.
pub struct DrainMoveOut {
    pub freeze: bool,
}

pub struct Drained {
    pub frames: Vec<Vec<u8>>,
    pub durable: Option<oneshot::Receiver<Durable>>,
}

impl Message for DrainMoveOut {
    type Result = Result<Drained, StoreError>;
}

impl Handler<DrainMoveOut> for StoreActor {
    type Result = MessageResult<DrainMoveOut>;
    fn handle(&mut self, msg: DrainMoveOut, _: &mut Self::Context) -> Self::Result {
        let Some(tap) = &mut self.tap else {
            return MessageResult(Err(StoreError::Storage(
                "no move of this store has begun here".into(),
            )));
        };
        if tap.overflowed {
            self.tap = None;
            return MessageResult(Err(StoreError::Storage(
                "the move fell behind the store's changes".into(),
            )));
        }
        let frames = std::mem::take(&mut tap.frames);
        tap.bytes = 0;
        let durable = msg.freeze.then(|| {
            self.frozen = true;
            self.wal.submit_unbounded(ItemBody::Barrier)
        });
        MessageResult(Ok(Drained { frames, durable }))
    }
}

/// Gives up a move out (or freezes a store found leaving at a restart): `frozen` says which.
pub struct SetFrozen(pub bool);
impl Message for SetFrozen {
    type Result = ();
}

impl Handler<SetFrozen> for StoreActor {
    type Result = ();
    fn handle(&mut self, msg: SetFrozen, _: &mut Self::Context) {
        self.frozen = msg.0;
        self.tap = None;
    }
}

/// Records of an arriving store, written by the process it leaves: applied to the state in
/// order and logged here; completes once the last is durable.
pub struct ReplayMoved(pub Vec<Vec<u8>>);
impl Message for ReplayMoved {
    type Result = Result<Option<oneshot::Receiver<Durable>>, StoreError>;
}

impl Handler<ReplayMoved> for StoreActor {
    type Result = MessageResult<ReplayMoved>;
    fn handle(&mut self, msg: ReplayMoved, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.replay_moved(msg.0))
    }
}

impl StoreActor {
    fn replay_moved(
        &mut self,
        frames: Vec<Vec<u8>>,
    ) -> Result<Option<oneshot::Receiver<Durable>>, StoreError> {
        if !self.frozen {
            return Err(StoreError::Storage("the store is not arriving".into()));
        }
        let store = self.state.config.store_id.clone();
        // All checked before any is applied: a bad frame changes nothing.
        let mut records = Vec::with_capacity(frames.len());
        for (i, frame) in frames.iter().enumerate() {
            let record = decode_record(frame, &|| format!("moved record {i}"))
                .map_err(|e| StoreError::Storage(e.to_string()))?;
            if record.store_id != store {
                return Err(StoreError::Storage(format!(
                    "moved record {i} is of store {}",
                    record.store_id
                )));
            }
            records.push(record);
        }
        let mut last = None;
        for (record, frame) in records.into_iter().zip(frames) {
            record.events.iter().for_each(|e| self.state.apply_event(e));
            for order in record.events.iter().filter_map(Event::order) {
                self.state.evict_order(order.order_id);
            }
            let body = ItemBody::Record {
                store_id: store.clone(),
                frame,
                views: view_writes(record),
            };
            last = Some(self.wal.submit_unbounded(body));
        }
        Ok(last)
    }
}

/// An arriving store takes changes from now on; it hands back its tokens and webhooks
/// (they act and are delivered from here now).
pub struct Arrive;
impl Message for Arrive {
    type Result = (Tokens, Vec<Webhook>);
}

impl Handler<Arrive> for StoreActor {
    type Result = MessageResult<Arrive>;
    fn handle(&mut self, _: Arrive, _: &mut Self::Context) -> Self::Result {
        self.frozen = false;
        let webhooks = self.state.webhooks().iter().cloned().collect();
        MessageResult((self.state.tokens().clone(), webhooks))
    }
}
