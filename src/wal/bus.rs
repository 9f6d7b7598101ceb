//! Live public events, once durable: the views receive a record's events only after its
//! batch is on disk, and hand them here, in log order. Each store with subscribers has a
//! broadcast channel of bounded size: publishing never waits, and a subscriber that falls
//! more than [`SUBSCRIBER_BUFFER`] events behind is told so (it lagged) and dropped by its
//! reader, so a slow subscriber can neither grow memory nor slow a store.

use crate::domain::{StoreEvent, StoreId};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::broadcast;

/// Events a subscriber may be behind before it is dropped: a burst of a busy store's
/// orders (about a second of them at 1,000 a second).
pub const SUBSCRIBER_BUFFER: usize = 1024;

#[derive(Default)]
pub struct EventBus {
    channels: RwLock<HashMap<StoreId, broadcast::Sender<Arc<StoreEvent>>>>,
}

impl EventBus {
    /// Live events of `store` from now on.
    pub fn subscribe(&self, store: &StoreId) -> broadcast::Receiver<Arc<StoreEvent>> {
        let mut channels = self.channels.write().unwrap_or_else(|e| e.into_inner());
        channels
            .entry(store.clone())
            .or_insert_with(|| broadcast::channel(SUBSCRIBER_BUFFER).0)
            .subscribe()
    }

    /// Hands durable events to `store`'s subscribers, if it has any.
    pub fn publish(&self, store: &StoreId, events: &[Arc<StoreEvent>]) {
        let unused = {
            let channels = self.channels.read().unwrap_or_else(|e| e.into_inner());
            let Some(tx) = channels.get(store) else {
                return;
            };
            for event in events {
                // An error means no subscriber is left.
                let _ = tx.send(event.clone());
            }
            tx.receiver_count() == 0
        };
        if unused {
            let mut channels = self.channels.write().unwrap_or_else(|e| e.into_inner());
            if channels
                .get(store)
                .is_some_and(|tx| tx.receiver_count() == 0)
            {
                channels.remove(store);
            }
        }
    }

    /// Subscribers of every store.
    pub fn subscribers(&self) -> usize {
        let channels = self.channels.read().unwrap_or_else(|e| e.into_inner());
        channels.values().map(|tx| tx.receiver_count()).sum()
    }
}
