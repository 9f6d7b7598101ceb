//! Webhooks: where a store's events are POSTed (API.md "Webhooks"). A webhook is state of
//! its store like a token, in the log and the snapshots, and so is how far its delivery has
//! got (`delivered_to`): a restart resumes where it stopped, never skipping, never starting
//! over. Delivery itself (HTTP, retries, signatures) is outside the domain.

use super::events::EventKind;
use super::ids::WebhookId;
use super::model::TimeMs;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most webhooks per store: a few integrations (an SMS gateway, a supplier, a dashboard);
/// each costs a delivery task and its queue.
pub const WEBHOOKS_PER_STORE_MAX: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub webhook_id: WebhookId,
    pub url: Box<str>,
    /// The event types it wants; empty: every type (`["*"]`).
    pub kinds: Vec<EventKind>,
    /// The HMAC key of its signatures. Kept (it must sign), shown only when it is made.
    pub secret: Box<str>,
    pub created_ms: TimeMs,
    /// Every event of the store up to this id is done for this webhook (delivered, not
    /// wanted, or failed). A new webhook starts at the store's newest event.
    pub delivered_to: u64,
}

impl Webhook {
    pub fn wants(&self, kind: EventKind) -> bool {
        self.kinds.is_empty() || self.kinds.contains(&kind)
    }
}

/// A store's webhooks by id.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Webhooks(BTreeMap<WebhookId, Webhook>);

impl Webhooks {
    pub fn get(&self, id: &WebhookId) -> Option<&Webhook> {
        self.0.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Webhook> {
        self.0.values()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn insert(&mut self, webhook: Webhook) {
        self.0.insert(webhook.webhook_id.clone(), webhook);
    }

    pub(super) fn remove(&mut self, id: &WebhookId) {
        self.0.remove(id);
    }

    /// Moves a webhook's cursor forward (never back).
    pub(super) fn advance(&mut self, id: &WebhookId, up_to: u64) {
        if let Some(w) = self.0.get_mut(id) {
            w.delivered_to = w.delivered_to.max(up_to);
        }
    }
}
