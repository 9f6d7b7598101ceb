//! Public events: what a store's subscribers and webhooks are told (API.md "Events").
//!
//! They are derived from the facts of a WAL record alone ([`derive`]), so recovery rebuilds
//! exactly the events the live server announced, with the same ids: a record carries the id
//! of its first public event, and each fact gives at most one event ([`public_kind`]), in
//! the record's order. A store's state counts them (`StoreState::next_event_id`).

use super::ids::{ProductId, ReservationId};
use super::model::*;
use super::number::{Qty, Unit};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A public event's type; `as_str` is its name in the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    OrderCreated,
    OrderConfirmed,
    OrderCancelled,
    OrderExpired,
    OrderPaymentFailed,
    ReservationCreated,
    ReservationReleased,
    ReservationExpired,
    StockAdjusted,
    StockLow,
    WebhookFailed,
    OrderReturned,
}

impl EventKind {
    pub const ALL: [EventKind; 12] = [
        EventKind::OrderCreated,
        EventKind::OrderConfirmed,
        EventKind::OrderCancelled,
        EventKind::OrderExpired,
        EventKind::OrderPaymentFailed,
        EventKind::ReservationCreated,
        EventKind::ReservationReleased,
        EventKind::ReservationExpired,
        EventKind::StockAdjusted,
        EventKind::StockLow,
        EventKind::WebhookFailed,
        EventKind::OrderReturned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::OrderCreated => "order.created",
            EventKind::OrderConfirmed => "order.confirmed",
            EventKind::OrderCancelled => "order.cancelled",
            EventKind::OrderExpired => "order.expired",
            EventKind::OrderPaymentFailed => "order.payment_failed",
            EventKind::ReservationCreated => "reservation.created",
            EventKind::ReservationReleased => "reservation.released",
            EventKind::ReservationExpired => "reservation.expired",
            EventKind::StockAdjusted => "stock.adjusted",
            EventKind::StockLow => "stock.low",
            EventKind::WebhookFailed => "webhook.failed",
            EventKind::OrderReturned => "order.returned",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What an event is about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EventData {
    /// The order as it was after the change.
    Order(Arc<Order>),
    /// A hold as it was opened.
    HoldOpened(Reservation),
    /// A hold that ended (released or expired).
    HoldClosed { reservation_id: ReservationId },
    /// A stock adjustment: its movement (product, change, reason, stock after).
    Adjusted(Movement),
    /// Available stock crossed to at or below the product's threshold.
    Low {
        product_id: ProductId,
        product_name: Option<Box<str>>,
        unit: Option<Unit>,
        current_stock: Qty,
        threshold: Qty,
    },
    /// A webhook gave up on an event after retrying for a day.
    WebhookFailed {
        webhook_id: Box<str>,
        event_id: u64,
        attempts: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoreEvent {
    /// Increases within the store; never reused.
    pub id: u64,
    pub kind: EventKind,
    pub at_ms: TimeMs,
    pub data: EventData,
}

/// The public type of the event a fact gives, if it gives one. An order's change is told
/// by its new status alone (so that a replay without the order's history tells the same):
/// a pending order, or a cod order confirmed, was just created; a paid one was confirmed.
pub fn public_kind(event: &Event) -> Option<EventKind> {
    Some(match event {
        Event::OrderSet(o) => match o.status {
            OrderStatus::PendingPayment => EventKind::OrderCreated,
            OrderStatus::Confirmed if o.payment_method == PaymentMethod::Cod => {
                EventKind::OrderCreated
            }
            OrderStatus::Confirmed => EventKind::OrderConfirmed,
            OrderStatus::Cancelled => EventKind::OrderCancelled,
            OrderStatus::Expired => EventKind::OrderExpired,
            OrderStatus::PaymentFailed => EventKind::OrderPaymentFailed,
            // Only a return makes an order `returned` (an `OrderReturned` fact).
            OrderStatus::Returned => EventKind::OrderReturned,
        },
        Event::OrderReturned(_) => EventKind::OrderReturned,
        Event::ReservationOpened(_) => EventKind::ReservationCreated,
        Event::ReservationClosed { end, .. } => match end {
            ReservationEnd::Released => EventKind::ReservationReleased,
            ReservationEnd::Expired => EventKind::ReservationExpired,
            // The order that used it is the event.
            ReservationEnd::Consumed => return None,
        },
        Event::Moved(m) if m.kind == MovementKind::Adjustment => EventKind::StockAdjusted,
        Event::LowStock { .. } | Event::StockLow { .. } => EventKind::StockLow,
        Event::WebhookFailed { .. } => EventKind::WebhookFailed,
        Event::StoreSet(_)
        | Event::ProductSet { .. }
        | Event::Moved(_)
        | Event::TokenIssued(_)
        | Event::TokenRevoked { .. }
        | Event::WebhookSet(_)
        | Event::WebhookRemoved { .. }
        | Event::WebhookDelivered { .. }
        | Event::Sold { .. }
        | Event::SagaOrder { .. } => return None,
    })
}

/// How many public events these facts give.
pub fn public_count(events: &[Event]) -> u64 {
    events.iter().filter(|e| public_kind(e).is_some()).count() as u64
}

/// The public events of a record's facts, numbered from `first_id`: the orders' first (the
/// domain logs a sale's movements before the order they belong to), then the rest in order.
pub fn derive(events: &[Event], first_id: u64) -> Vec<StoreEvent> {
    let mut out = Vec::new();
    let (orders, rest): (Vec<&Event>, Vec<&Event>) = events
        .iter()
        .partition(|e| matches!(e, Event::OrderSet(_) | Event::OrderReturned(_)));
    for event in orders.into_iter().chain(rest) {
        let Some(kind) = public_kind(event) else {
            continue;
        };
        let (at_ms, data) = match event {
            Event::OrderSet(o) | Event::OrderReturned(o) => {
                (o.updated_ms, EventData::Order(o.clone()))
            }
            Event::ReservationOpened(r) => (r.created_ms, EventData::HoldOpened(r.clone())),
            Event::ReservationClosed {
                reservation_id,
                at_ms,
                ..
            } => (
                *at_ms,
                EventData::HoldClosed {
                    reservation_id: reservation_id.clone(),
                },
            ),
            Event::Moved(m) => (m.at_ms, EventData::Adjusted(m.clone())),
            Event::LowStock {
                product_id,
                current_stock,
                threshold,
                at_ms,
            } => (
                *at_ms,
                EventData::Low {
                    product_id: product_id.clone(),
                    product_name: None,
                    unit: None,
                    current_stock: *current_stock,
                    threshold: *threshold,
                },
            ),
            Event::StockLow {
                product_id,
                product_name,
                unit,
                current_stock,
                threshold,
                at_ms,
            } => (
                *at_ms,
                EventData::Low {
                    product_id: product_id.clone(),
                    product_name: Some(product_name.clone()),
                    unit: Some(*unit),
                    current_stock: *current_stock,
                    threshold: *threshold,
                },
            ),
            Event::WebhookFailed {
                webhook_id,
                event_id,
                attempts,
                at_ms,
            } => (
                *at_ms,
                EventData::WebhookFailed {
                    webhook_id: webhook_id.as_str().into(),
                    event_id: *event_id,
                    attempts: *attempts,
                },
            ),
            // public_kind gives a kind only to the facts above.
            _ => continue,
        };
        out.push(StoreEvent {
            id: first_id + out.len() as u64,
            kind,
            at_ms,
            data,
        });
    }
    out
}
