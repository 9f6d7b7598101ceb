//! The nouns of a store: its configuration, products, holds, orders and stock movements,
//! and the events that change them. Events are facts: applying one never fails and never
//! needs a decision, which is what lets the write-ahead log replay them verbatim.

use super::ids::{OrderId, ProductId, ReservationId, ReturnId, StoreId, TokenId, WebhookId};
use super::layout::{Layout, added_after};
use super::number::{Paise, Qty, Unit};
use super::tokens::StoreToken;
use super::webhooks::Webhook;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::Arc;

/// Milliseconds since the Unix epoch (UTC). Every clock reading enters the core as one.
pub type TimeMs = i64;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Location {
    /// Degrees × 10^6, so that a location is exact and comparable.
    pub lat_micro: i64,
    pub lon_micro: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoreConfig {
    pub store_id: StoreId,
    pub name: Box<str>,
    /// Tax rate in hundredths of a percent (5 % = 500).
    pub tax_rate_bp: u32,
    pub delivery_fee: Paise,
    pub free_delivery_above: Option<Paise>,
    pub location: Option<Location>,
    pub updated_ms: TimeMs,
    /// The store's clock: its days (analytics) are calendar days at this offset from UTC.
    #[serde(deserialize_with = "utc_offset_minutes")]
    pub utc_offset_minutes: i16,
}

/// India's offset from UTC, the default of a store's `utc_offset_minutes`.
pub const UTC_OFFSET_DEFAULT: i16 = 330;
/// How many days a supplier takes to deliver, unless a product says (`lead_time_days`).
pub const LEAD_TIME_DAYS_DEFAULT: u16 = 2;
/// Days of sales kept in reserve against surprises, unless a product says.
pub const SAFETY_STOCK_DAYS_DEFAULT: u16 = 1;

fn utc_offset_minutes<'de, D: Deserializer<'de>>(d: D) -> Result<i16, D::Error> {
    added_after(Layout::BeforeAnalytics, UTC_OFFSET_DEFAULT, d)
}

fn lead_time_days<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    added_after(Layout::BeforeAnalytics, LEAD_TIME_DAYS_DEFAULT, d)
}

fn safety_stock_days<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    added_after(Layout::BeforeAnalytics, SAFETY_STOCK_DAYS_DEFAULT, d)
}

/// The catalogue part of a product: everything but its stock counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductInfo {
    pub product_id: ProductId,
    pub name: Box<str>,
    pub unit: Unit,
    pub unit_price: Paise,
    pub low_stock_threshold: Qty,
    pub category: Option<Box<str>>,
    /// Days from ordering to the shelf (reorder point).
    #[serde(deserialize_with = "lead_time_days")]
    pub lead_time_days: u16,
    /// Days of sales kept in reserve (reorder point).
    #[serde(deserialize_with = "safety_stock_days")]
    pub safety_stock_days: u16,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub info: ProductInfo,
    /// Units physically in the store.
    pub on_hand: Qty,
    /// Units promised to open holds and unpaid orders; never above `on_hand`.
    pub reserved: Qty,
    pub updated_ms: TimeMs,
    /// The product's newest movement (0: none): the head of its ledger chain.
    pub last_movement_id: u64,
}

impl Product {
    /// What can still be sold: `on_hand - reserved`.
    pub fn current_stock(&self) -> Qty {
        Qty(self.on_hand.0 - self.reserved.0)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReservationLine {
    pub product_id: ProductId,
    pub quantity: Qty,
}

/// A cart hold: units set aside until `expires_ms`, then released unless an order took them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    pub reservation_id: ReservationId,
    pub lines: Vec<ReservationLine>,
    pub created_ms: TimeMs,
    pub expires_ms: TimeMs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReservationEnd {
    Released,
    Expired,
    /// Turned into an order.
    Consumed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PaymentMethod {
    Cod,
    Upi,
    Card,
}

impl PaymentMethod {
    pub fn parse(s: &str) -> Option<PaymentMethod> {
        Some(match s {
            "cod" => PaymentMethod::Cod,
            "upi" => PaymentMethod::Upi,
            "card" => PaymentMethod::Card,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentMethod::Cod => "cod",
            PaymentMethod::Upi => "upi",
            PaymentMethod::Card => "card",
        }
    }

    /// The status an order of this method starts in.
    pub fn initial_status(self) -> OrderStatus {
        match self {
            PaymentMethod::Cod => OrderStatus::Confirmed,
            PaymentMethod::Upi | PaymentMethod::Card => OrderStatus::PendingPayment,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderStatus {
    PendingPayment,
    Confirmed,
    PaymentFailed,
    Cancelled,
    Expired,
    /// Every unit came back in returns. (New variants go last: a variant's place is its
    /// encoding in the log.)
    Returned,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::PendingPayment => "pending_payment",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::PaymentFailed => "payment_failed",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Expired => "expired",
            OrderStatus::Returned => "returned",
        }
    }

    /// Whether the order still holds reserved units.
    pub fn holds_stock(self) -> bool {
        self == OrderStatus::PendingPayment
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: ProductId,
    pub product_name: Box<str>,
    pub quantity: Qty,
    pub unit: Unit,
    pub unit_price: Paise,
    pub line_total: Paise,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub phone: Box<str>,
    pub name: Box<str>,
    pub delivery_address: Box<str>,
}

/// One returned line: what came back and what it refunds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReturnLine {
    pub product_id: ProductId,
    pub quantity: Qty,
    /// `quantity × unit_price` plus its tax at the order's rate (`pricing::refund`).
    pub refund: Paise,
}

/// A return of some or all of a confirmed order's units.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderReturn {
    pub return_id: ReturnId,
    pub lines: Vec<ReturnLine>,
    pub refund_total: Paise,
    /// Whether the units went back on the shelf (`false`: damaged goods, no stock change).
    pub restocked: bool,
    pub reason: Option<Box<str>>,
    pub created_ms: TimeMs,
}

/// An order. Its stored layout grew with returns (the last three fields): data written
/// before them is read in `layout::Layout::BeforeReturns`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct Order {
    pub order_id: OrderId,
    pub store_id: StoreId,
    pub status: OrderStatus,
    pub customer: Customer,
    pub lines: Vec<OrderLine>,
    pub subtotal: Paise,
    pub tax: Paise,
    pub delivery_fee: Paise,
    pub total_amount: Paise,
    pub payment_method: PaymentMethod,
    pub reservation_id: Option<ReservationId>,
    pub created_ms: TimeMs,
    /// For `upi`/`card`: when the order expires if still unpaid (kept after it is settled).
    pub expires_ms: Option<TimeMs>,
    pub updated_ms: TimeMs,
    pub payment_reference: Option<Box<str>>,
    pub cancel_reason: Option<Box<str>>,
    /// The store's tax rate when the order was placed (hundredths of a percent), which its
    /// refunds use. `None` for orders placed before returns, which did not record it: their
    /// refunds use the store's rate of the day of the return.
    pub tax_rate_bp: Option<u32>,
    /// Returns taken, oldest first.
    pub returns: Vec<OrderReturn>,
    /// Σ of the returns' `refund_total`.
    pub refunded_total: Paise,
}

impl Order {
    /// How much of `product` has come back in returns.
    pub fn returned(&self, product: &ProductId) -> Qty {
        let milli = self
            .returns
            .iter()
            .flat_map(|r| &r.lines)
            .filter(|l| &l.product_id == product)
            .map(|l| l.quantity.0)
            .sum();
        Qty(milli)
    }

    pub fn find_return(&self, id: &ReturnId) -> Option<&OrderReturn> {
        self.returns.iter().find(|r| &r.return_id == id)
    }
}

impl Serialize for Order {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Order::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for Order {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Order, D::Error> {
        if super::layout::current() == super::layout::Layout::BeforeReturns {
            OrderBeforeReturns::deserialize(d).map(Order::from)
        } else {
            Order::deserialize(d)
        }
    }
}

/// The layout of [`Order`] before returns; read, never written.
#[derive(Deserialize)]
struct OrderBeforeReturns {
    order_id: OrderId,
    store_id: StoreId,
    status: OrderStatus,
    customer: Customer,
    lines: Vec<OrderLine>,
    subtotal: Paise,
    tax: Paise,
    delivery_fee: Paise,
    total_amount: Paise,
    payment_method: PaymentMethod,
    reservation_id: Option<ReservationId>,
    created_ms: TimeMs,
    expires_ms: Option<TimeMs>,
    updated_ms: TimeMs,
    payment_reference: Option<Box<str>>,
    cancel_reason: Option<Box<str>>,
}

impl From<OrderBeforeReturns> for Order {
    fn from(o: OrderBeforeReturns) -> Order {
        Order {
            order_id: o.order_id,
            store_id: o.store_id,
            status: o.status,
            customer: o.customer,
            lines: o.lines,
            subtotal: o.subtotal,
            tax: o.tax,
            delivery_fee: o.delivery_fee,
            total_amount: o.total_amount,
            payment_method: o.payment_method,
            reservation_id: o.reservation_id,
            created_ms: o.created_ms,
            expires_ms: o.expires_ms,
            updated_ms: o.updated_ms,
            payment_reference: o.payment_reference,
            cancel_reason: o.cancel_reason,
            tax_rate_bp: None,
            returns: Vec::new(),
            refunded_total: Paise(0),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MovementKind {
    Initial,
    Sale,
    Reservation,
    Release,
    Adjustment,
    Cancel,
    TransferIn,
    TransferOut,
    /// Units of a return put back on the shelf: on_hand +q.
    Return,
}

impl MovementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MovementKind::Initial => "initial",
            MovementKind::Sale => "sale",
            MovementKind::Reservation => "reservation",
            MovementKind::Release => "release",
            MovementKind::Adjustment => "adjustment",
            MovementKind::Cancel => "cancel",
            MovementKind::TransferIn => "transfer_in",
            MovementKind::TransferOut => "transfer_out",
            MovementKind::Return => "return",
        }
    }
}

/// One change of one product's counters, with both values after it: the ledger's line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Movement {
    /// Increasing within a store; the ledger's order.
    pub movement_id: u64,
    /// The same product's previous movement (0: none). The ledger is stored per store in
    /// id order (appends), and a product's history is this chain.
    pub prev_movement_id: u64,
    pub product_id: ProductId,
    pub kind: MovementKind,
    /// Change of `on_hand`, thousandths.
    pub on_hand_change: i64,
    /// Change of `reserved`, thousandths.
    pub reserved_change: i64,
    pub on_hand_after: Qty,
    pub reserved_after: Qty,
    /// The order or reservation id, or an adjustment's reason.
    pub reference: Box<str>,
    pub at_ms: TimeMs,
}

/// A fact about a store. `StoreState::apply_event` is the only code that changes state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    StoreSet(StoreConfig),
    /// Catalogue fields of a product; creates it with zero stock if new.
    ProductSet {
        info: ProductInfo,
        at_ms: TimeMs,
    },
    Moved(Movement),
    ReservationOpened(Reservation),
    ReservationClosed {
        reservation_id: ReservationId,
        end: ReservationEnd,
        at_ms: TimeMs,
    },
    /// The whole order after a change (created, paid, cancelled, expired). Shared with the
    /// store's state and the answer, so that the order is built once per change.
    OrderSet(Arc<Order>),
    /// A product's `current_stock` fell to or below its threshold.
    LowStock {
        product_id: ProductId,
        current_stock: Qty,
        threshold: Qty,
        at_ms: TimeMs,
    },
    /// A store token was issued (only its digest is kept). New variants go last: an
    /// event's place in this enum is its encoding in the log.
    TokenIssued(StoreToken),
    TokenRevoked {
        token_id: TokenId,
        at_ms: TimeMs,
    },
    /// Available stock crossed to at or below the threshold (written since events; earlier
    /// logs have `LowStock`, without the name).
    StockLow {
        product_id: ProductId,
        product_name: Box<str>,
        unit: Unit,
        current_stock: Qty,
        threshold: Qty,
        at_ms: TimeMs,
    },
    /// A webhook was registered (or replaced).
    WebhookSet(Webhook),
    WebhookRemoved {
        webhook_id: WebhookId,
        at_ms: TimeMs,
    },
    /// A webhook is done (delivered or not for it) with every event up to `up_to`.
    WebhookDelivered {
        webhook_id: WebhookId,
        up_to: u64,
    },
    /// A webhook gave up on an event after retrying for a day; it moves on past it.
    WebhookFailed {
        webhook_id: WebhookId,
        event_id: u64,
        attempts: u32,
        at_ms: TimeMs,
    },
    /// The whole order after a return (its newest entry in `returns`): applied like
    /// `OrderSet`, told apart so that the return is announced and answered as one.
    OrderReturned(Arc<Order>),
    /// Units sold or back, at the order's prices (`analytics`): `orders` is +1 when an
    /// order is confirmed, −1 when a confirmed one is cancelled.
    Sold {
        lines: Vec<super::analytics::SoldLine>,
        orders: i32,
        at_ms: TimeMs,
    },
    /// An order placed as a step of a saga (a region order), under the saga's key for
    /// this store (its hold's id), so that the step sent again finds it.
    SagaOrder {
        key: Box<str>,
        order_id: OrderId,
        at_ms: TimeMs,
    },
}

impl Event {
    /// The order this fact sets, if it is one (`OrderSet` or `OrderReturned`).
    pub fn order(&self) -> Option<&Arc<Order>> {
        match self {
            Event::OrderSet(o) | Event::OrderReturned(o) => Some(o),
            _ => None,
        }
    }
}
