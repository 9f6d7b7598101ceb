//! A store's state and the only rules that change it.
//!
//! `StoreState::execute` checks a command completely, and only then turns it into events;
//! `StoreState::apply_event` is the single place where state changes. Replaying the events
//! of the write-ahead log therefore rebuilds exactly the state the actor had.

use super::analytics::{Sales, SoldLine};
use super::events;
use super::ids::{OrderId, ProductId, ReservationId, ReturnId, TokenId, WebhookId};
use super::model::*;
use super::number::{Paise, QTY_MILLI_MAX, Qty};
use super::pricing;
use super::tokens::{StoreToken, TOKENS_PER_STORE_MAX, TokenDigest, Tokens};
use super::webhooks::{WEBHOOKS_PER_STORE_MAX, Webhook, Webhooks};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// Most lines in one order, hold or availability check: a big kirana basket is ~100 lines;
/// 500 keeps one command's work (and one WAL record) small and bounded.
pub const ITEMS_MAX: usize = 500;
/// Most orders in one batch (API.md "Batch orders"): one batch is one log record, and 500
/// orders of a few lines each keep it well under a megabyte.
pub const BATCH_ORDERS_MAX: usize = 500;
/// Most open holds per store: bounds the actor's memory against abandoned carts.
pub const OPEN_RESERVATIONS_MAX: usize = 100_000;
/// Most orders awaiting payment per store: each keeps its units reserved and a deadline in
/// the actor's memory until paid or expired. Far above any store's checkouts in one payment
/// window (15 minutes), it bounds what unpaid orders can lock and hold in memory.
pub const PENDING_PAYMENTS_MAX: usize = 100_000;

/// Most units (all lines together, in thousandths) one hold or unpaid order may lock: a
/// wholesale cart of 10,000 units passes, while one anonymous call cannot tie up a whole
/// godown's stock for up to 24 hours.
pub const LOCK_MILLI_MAX: u64 = 10_000 * 1000;

/// How long a store remembers the transfers it received (their ids), so that a transfer
/// resumed after a crash adds its units once: resumption happens when the sending side
/// starts again, and a process down for a month is a restore from backup, not a restart.
pub const TRANSFER_RECEIPTS_KEPT_MS: TimeMs = 30 * 24 * 3600 * 1000;

/// One item that cannot be had in the quantity asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shortage {
    pub product_id: ProductId,
    pub product_name: Box<str>,
    pub unit: super::number::Unit,
    pub requested: Qty,
    pub available: Qty,
}

/// Why a command was refused. Nothing changed when one of these is returned.
#[derive(Clone, Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum DomainError {
    #[error("product {0} not found")]
    ProductNotFound(ProductId),
    #[error("product {0} appears twice")]
    DuplicateProduct(ProductId),
    #[error("the quantity of {0} is not valid")]
    InvalidQuantity(ProductId),
    #[error("too many items")]
    TooManyItems,
    #[error("no items")]
    NoItems,
    #[error("price of {product_id} changed")]
    PriceChanged {
        product_id: ProductId,
        unit_price: Paise,
    },
    #[error("insufficient stock")]
    InsufficientStock(Vec<Shortage>),
    #[error("order total too large")]
    TotalTooLarge,
    #[error("reservation not found")]
    ReservationNotFound,
    #[error("reservation expired")]
    ReservationExpired,
    #[error("too many open reservations")]
    TooManyReservations,
    #[error("too many orders awaiting payment")]
    TooManyPendingPayments,
    #[error("order not found")]
    OrderNotFound,
    #[error("order not payable")]
    OrderNotPayable(OrderStatus),
    #[error("order not cancellable")]
    OrderNotCancellable(OrderStatus),
    #[error("too many units locked by one call")]
    TooManyUnits,
    #[error("too many tokens")]
    TooManyTokens,
    #[error("token not found")]
    TokenNotFound,
    #[error("too many webhooks")]
    TooManyWebhooks,
    #[error("webhook not found")]
    WebhookNotFound,
    #[error("order not returnable")]
    OrderNotReturnable(OrderStatus),
    /// Not in the order, or more than was sold less what already came back.
    #[error("invalid return quantity of {0}")]
    InvalidReturnQuantity(ProductId),
    /// Row `row` (from 0) of an import was refused; nothing of the import was applied.
    #[error("import row {row}: {error}")]
    ImportRow { row: usize, error: Box<DomainError> },
    /// More than [`BATCH_ORDERS_MAX`] orders in one batch. New variants go last: a
    /// refusal's place in this enum is its encoding in a batch's log record.
    #[error("too many orders in one batch")]
    TooManyOrders,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DraftItem {
    pub product_id: ProductId,
    pub quantity: Qty,
    /// The price the client saw; refused if it differs from the catalogue.
    pub unit_price: Option<Paise>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct OrderDraft {
    pub order_id: OrderId,
    pub customer: Customer,
    pub items: Vec<DraftItem>,
    pub payment_method: PaymentMethod,
    pub reservation_id: Option<ReservationId>,
    /// How long an unpaid `upi`/`card` order holds its stock.
    pub payment_ttl_ms: i64,
    /// Ship what is there: each line min(requested, available), whole units for counted
    /// products, lines with nothing dropped (API.md "Partial fulfilment").
    pub allow_partial: bool,
    /// Placed by a saga under this key (`saga::steps`): noted with the order, so that the
    /// step sent again finds the order instead of placing another.
    pub saga_key: Option<Box<str>>,
}

/// One line of a return: a product of the order and how much of it comes back.
#[derive(Clone, Debug, PartialEq)]
pub struct ReturnItem {
    pub product_id: ProductId,
    pub quantity: Qty,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReturnDraft {
    pub order_id: OrderId,
    /// Chosen by the actor (a fresh random id), like a hold's.
    pub return_id: ReturnId,
    pub items: Vec<ReturnItem>,
    /// Put the units back on the shelf (`false`: damaged goods, no stock change).
    pub restock: bool,
    pub reason: Option<Box<str>>,
}

/// A product as a catalogue import states it: `None` leaves the current value (a new
/// product: no stock change from zero, threshold 0, no category).
#[derive(Clone, Debug, PartialEq)]
pub struct ImportRow {
    pub product_id: ProductId,
    pub name: Box<str>,
    pub unit: super::number::Unit,
    pub unit_price: Paise,
    /// Sets `on_hand` like `stock` in a product update.
    pub on_hand: Option<Qty>,
    pub low_stock_threshold: Option<Qty>,
    pub category: Option<Option<Box<str>>>,
}

/// What a line can ship of `requested` when `available` is there: all of it, or what is
/// there, in whole units for products counted in pieces or packs.
pub fn shippable(requested: Qty, available: Qty, counted: bool) -> Qty {
    let q = requested.min(available);
    if counted { Qty(q.0 - q.0 % 1000) } else { q }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    SetStore(StoreConfig),
    SetProduct {
        info: ProductInfo,
        stock: Option<Qty>,
    },
    Adjust {
        product_id: ProductId,
        change_milli: i64,
        reason: Box<str>,
    },
    Reserve {
        reservation_id: ReservationId,
        lines: Vec<ReservationLine>,
        ttl_ms: i64,
    },
    Release {
        reservation_id: ReservationId,
    },
    PlaceOrder(Box<OrderDraft>),
    /// Places each order on its own (each all or nothing), as one change: one log record.
    PlaceBatch(Vec<OrderDraft>),
    Pay {
        order_id: OrderId,
        succeeded: bool,
        reference: Option<Box<str>>,
    },
    Cancel {
        order_id: OrderId,
        reason: Option<Box<str>>,
    },
    /// Takes back units of a confirmed order (API.md "Returns").
    Return(Box<ReturnDraft>),
    /// Sets many products at once, all or nothing (CSV import).
    Import(Vec<ImportRow>),
    /// Adds a transfer's units (movements `transfer_in`), once per transfer id: the same
    /// transfer again changes nothing (it is resumed after a crash).
    TransferIn {
        transfer_id: Box<str>,
        lines: Vec<ReservationLine>,
    },
    /// Sends the units a transfer holds (the hold `reservation_id`) out of the store:
    /// movements `transfer_out` (−q on_hand, −q reserved), and the hold is closed.
    TransferOut {
        reservation_id: ReservationId,
        transfer_id: Box<str>,
    },
    ExpireDue,
    /// Issues a token with this digest; the actor picks a fresh `token_id`.
    IssueToken {
        token_id: TokenId,
        digest: TokenDigest,
    },
    RevokeToken {
        token_id: TokenId,
    },
    /// Registers a webhook; the actor picks a fresh `webhook_id`. It gets the store's
    /// events from the next one on.
    AddWebhook(Box<Webhook>),
    RemoveWebhook {
        webhook_id: WebhookId,
    },
    /// The webhook is done with every event up to `up_to`.
    WebhookProgress {
        webhook_id: WebhookId,
        up_to: u64,
    },
    /// The webhook gave up on `event_id` (a `webhook.failed` event) and moves past it.
    WebhookGaveUp {
        webhook_id: WebhookId,
        event_id: u64,
        attempts: u32,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    StoreSet,
    ProductSet(ProductId),
    Adjusted {
        previous: Qty,
        new: Qty,
        movement_id: u64,
    },
    Reserved(Reservation),
    Released(ReservationId),
    Order(OrderId),
    /// Each order of a batch: placed, or why not.
    Batch(Vec<Result<OrderId, DomainError>>),
    Returned {
        order_id: OrderId,
        return_id: ReturnId,
    },
    Imported {
        created: usize,
        updated: usize,
        unchanged: usize,
    },
    /// A transfer's units are in (`fresh`: by this command; else by an earlier one).
    TransferredIn {
        fresh: bool,
    },
    TransferredOut,
    Expired {
        count: usize,
    },
    TokenIssued(StoreToken),
    TokenRevoked(TokenId),
    WebhookSet(Box<Webhook>),
    WebhookRemoved(WebhookId),
    WebhookProgressed,
}

/// What settling a line does to the counters.
#[derive(Clone, Copy)]
enum Settle {
    /// Held units leave the shelf (a paid order): on_hand −q, reserved −q.
    Sell,
    /// Held units go back to sale: reserved −q.
    Release,
    /// Sold units come back (a cancelled confirmed order): on_hand +q.
    Restock,
    /// Held units leave for another store: on_hand −q, reserved −q.
    Send,
}

impl Settle {
    fn movement(self, quantity: Qty) -> (MovementKind, i64, i64) {
        let q = quantity.0 as i64;
        match self {
            Settle::Sell => (MovementKind::Sale, -q, -q),
            Settle::Release => (MovementKind::Release, 0, -q),
            Settle::Restock => (MovementKind::Cancel, q, 0),
            Settle::Send => (MovementKind::TransferOut, -q, -q),
        }
    }
}

/// Something with a deadline: a hold, or an order waiting for payment.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Deadline {
    Hold(ReservationId),
    Order(OrderId),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoreState {
    pub config: StoreConfig,
    products: BTreeMap<ProductId, Product>,
    reservations: BTreeMap<ReservationId, Reservation>,
    /// Open orders (always) and recently touched ones (until the actor evicts them).
    orders: BTreeMap<OrderId, Arc<Order>>,
    next_movement_id: u64,
    /// (Fields added since the first layout go last: see `StoreStateBeforeTokens`.)
    tokens: Tokens,
    /// The id of the store's next public event (see `events`).
    next_event_id: u64,
    webhooks: Webhooks,
    /// Sales by product and day, from the `Sold` facts (analytics).
    #[serde(deserialize_with = "sales_since_analytics")]
    sales: Sales,
    /// What sagas did here, by key, for [`TRANSFER_RECEIPTS_KEPT_MS`]: a transfer that
    /// moved stock in or out (its id → when), an order placed for a saga's hold (the
    /// hold's id → when, and the order).
    #[serde(deserialize_with = "receipts_since_transfers")]
    sagas: BTreeMap<Box<str>, (TimeMs, Option<OrderId>)>,
    /// Derived from `reservations` and `orders`; rebuilt after a snapshot is loaded.
    #[serde(skip)]
    deadlines: BTreeSet<(TimeMs, Deadline)>,
}

type SagaMarks = BTreeMap<Box<str>, (TimeMs, Option<OrderId>)>;

fn receipts_since_transfers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SagaMarks, D::Error> {
    super::layout::added_after(super::layout::Layout::BeforeTransfers, BTreeMap::new(), d)
}

fn sales_since_analytics<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Sales, D::Error> {
    super::layout::added_after(super::layout::Layout::BeforeAnalytics, Sales::default(), d)
}

/// What `p` lacks for `requested` units, counting `held` (a hold's units) as its own.
fn shortage_of(p: &Product, requested: Qty, held: Qty) -> Option<Shortage> {
    let available = Qty(p.current_stock().0 + held.0);
    (requested > available).then(|| Shortage {
        product_id: p.info.product_id.clone(),
        product_name: p.info.name.clone(),
        unit: p.info.unit,
        requested,
        available,
    })
}

/// Refuses a hold or unpaid order that would lock more than [`LOCK_MILLI_MAX`].
fn check_lock(quantities: impl Iterator<Item = Qty>) -> Result<(), DomainError> {
    let total: u64 = quantities.map(|q| q.0).sum();
    if total > LOCK_MILLI_MAX {
        return Err(DomainError::TooManyUnits);
    }
    Ok(())
}

/// Checks an order's returns: no line back more than it sold, each refund the sum of its
/// lines, the order's `refunded_total` the sum of its returns, `returned` exactly when
/// every unit is back. `Err` says what is wrong.
pub fn check_returns(o: &Order) -> Result<(), String> {
    let id = o.order_id;
    let mut all_back = !o.returns.is_empty();
    for l in &o.lines {
        let back = o.returned(&l.product_id);
        if back > l.quantity {
            return Err(format!("{id}: more of {} returned than sold", l.product_id));
        }
        all_back &= back == l.quantity;
    }
    for r in &o.returns {
        let sum: i64 = r.lines.iter().map(|l| l.refund.0).sum();
        if r.refund_total.0 != sum {
            return Err(format!("{id}: return {} refunds {sum}", r.return_id));
        }
    }
    let refunded: i64 = o.returns.iter().map(|r| r.refund_total.0).sum();
    if o.refunded_total.0 != refunded {
        return Err(format!("{id}: refunded_total is not the returns' sum"));
    }
    if (o.status == OrderStatus::Returned) != all_back {
        return Err(format!("{id}: `returned` is not \"every unit back\""));
    }
    Ok(())
}

/// Refuses a list of items that is empty, too long, or names a product twice.
fn check_item_list<'a>(ids: impl Iterator<Item = &'a ProductId>) -> Result<(), DomainError> {
    let mut seen = HashSet::new();
    for id in ids {
        if seen.len() == ITEMS_MAX {
            return Err(DomainError::TooManyItems);
        }
        if !seen.insert(id) {
            return Err(DomainError::DuplicateProduct(id.clone()));
        }
    }
    if seen.is_empty() {
        return Err(DomainError::NoItems);
    }
    Ok(())
}

/// The layout of [`StoreState`] before store tokens: snapshots written by earlier versions
/// decode into this and become a state with no tokens.
#[derive(Deserialize)]
pub struct StoreStateBeforeTokens {
    config: StoreConfig,
    products: BTreeMap<ProductId, Product>,
    reservations: BTreeMap<ReservationId, Reservation>,
    orders: BTreeMap<OrderId, Arc<Order>>,
    next_movement_id: u64,
}

impl From<StoreStateBeforeTokens> for StoreState {
    fn from(old: StoreStateBeforeTokens) -> StoreState {
        StoreState {
            config: old.config,
            products: old.products,
            reservations: old.reservations,
            orders: old.orders,
            next_movement_id: old.next_movement_id,
            tokens: Tokens::default(),
            next_event_id: 1,
            webhooks: Webhooks::default(),
            sales: Sales::default(),
            sagas: BTreeMap::new(),
            deadlines: BTreeSet::new(),
        }
    }
}

/// The layout of [`StoreState`] with tokens and before events (never released; read so
/// that no data directory of any build is left behind).
#[derive(Deserialize)]
pub struct StoreStateBeforeEvents {
    before: StoreStateBeforeTokens,
    tokens: Tokens,
}

impl From<StoreStateBeforeEvents> for StoreState {
    fn from(old: StoreStateBeforeEvents) -> StoreState {
        let mut state = StoreState::from(old.before);
        state.tokens = old.tokens;
        state
    }
}

impl StoreState {
    pub fn new(config: StoreConfig) -> StoreState {
        StoreState {
            config,
            products: BTreeMap::new(),
            reservations: BTreeMap::new(),
            orders: BTreeMap::new(),
            next_movement_id: 1,
            tokens: Tokens::default(),
            next_event_id: 1,
            webhooks: Webhooks::default(),
            sales: Sales::default(),
            sagas: BTreeMap::new(),
            deadlines: BTreeSet::new(),
        }
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    pub fn webhooks(&self) -> &Webhooks {
        &self.webhooks
    }

    pub fn sales(&self) -> &Sales {
        &self.sales
    }

    /// Whether the transfer `transfer_id` moved stock in or out of this store (in the last
    /// [`TRANSFER_RECEIPTS_KEPT_MS`]).
    pub fn has_transferred(&self, transfer_id: &str) -> bool {
        self.sagas.contains_key(transfer_id)
    }

    /// The order a saga placed here under `key` (its hold's id), if it did.
    pub fn saga_order(&self, key: &str) -> Option<OrderId> {
        self.sagas.get(key).and_then(|(_, order)| *order)
    }

    /// The id the store's next ledger movement will take.
    pub fn next_movement_id(&self) -> u64 {
        self.next_movement_id
    }

    /// The id the store's next public event will have.
    pub fn next_event_id(&self) -> u64 {
        self.next_event_id
    }

    pub fn product(&self, id: &ProductId) -> Option<&Product> {
        self.products.get(id)
    }

    /// Products in id order, strictly after `after`.
    pub fn products_after<'a>(
        &'a self,
        after: Option<&ProductId>,
    ) -> impl Iterator<Item = &'a Product> + 'a {
        use std::ops::Bound;
        let lower = match after {
            Some(a) => Bound::Excluded(a.clone()),
            None => Bound::Unbounded,
        };
        self.products
            .range((lower, Bound::Unbounded))
            .map(|(_, p)| p)
    }

    pub fn products(&self) -> impl Iterator<Item = &Product> {
        self.products.values()
    }

    pub fn product_count(&self) -> usize {
        self.products.len()
    }

    pub fn order(&self, id: OrderId) -> Option<&Arc<Order>> {
        self.orders.get(&id)
    }

    pub fn orders(&self) -> impl Iterator<Item = &Order> {
        self.orders.values().map(|o| &**o)
    }

    pub fn order_count(&self) -> usize {
        self.orders.len()
    }

    pub fn reservation(&self, id: &ReservationId) -> Option<&Reservation> {
        self.reservations.get(id)
    }

    pub fn reservations(&self) -> impl Iterator<Item = &Reservation> {
        self.reservations.values()
    }

    /// The earliest deadline of any hold or unpaid order.
    pub fn next_deadline_ms(&self) -> Option<TimeMs> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Forgets a finished order (it lives on in the order archive). Open orders stay.
    pub fn evict_order(&mut self, id: OrderId) -> bool {
        match self.orders.get(&id) {
            Some(order) if !order.status.holds_stock() => {
                self.orders.remove(&id);
                true
            }
            _ => false,
        }
    }

    /// Brings back an order read from the archive, unless a newer copy is in memory.
    pub fn restore_order(&mut self, order: Order) {
        assert!(!order.status.holds_stock(), "open orders are never evicted");
        self.orders
            .entry(order.order_id)
            .or_insert_with(|| Arc::new(order));
    }

    /// Rebuilds derived indexes after deserialising a snapshot.
    pub fn rebuild_indexes(&mut self) {
        self.deadlines.clear();
        for r in self.reservations.values() {
            self.deadlines
                .insert((r.expires_ms, Deadline::Hold(r.reservation_id.clone())));
        }
        for o in self.orders.values() {
            if let (true, Some(t)) = (o.status.holds_stock(), o.expires_ms) {
                self.deadlines.insert((t, Deadline::Order(o.order_id)));
            }
        }
    }

    /// Checks `command` and, if it is allowed, applies it and returns the events it made.
    /// On `Err`, nothing changed.
    pub fn execute(
        &mut self,
        command: Command,
        now_ms: TimeMs,
    ) -> Result<(Outcome, Vec<Event>), DomainError> {
        let mut events = Vec::new();
        let outcome = match command {
            Command::SetStore(config) => {
                self.emit(&mut events, Event::StoreSet(config));
                Outcome::StoreSet
            }
            Command::SetProduct { info, stock } => {
                self.set_product(&mut events, info, stock, now_ms)?
            }
            Command::Adjust {
                product_id,
                change_milli,
                reason,
            } => self.adjust(&mut events, product_id, change_milli, reason, now_ms)?,
            Command::Reserve {
                reservation_id,
                lines,
                ttl_ms,
            } => self.reserve(&mut events, reservation_id, lines, ttl_ms, now_ms)?,
            Command::Release { reservation_id } => {
                let r = self
                    .reservations
                    .get(&reservation_id)
                    .ok_or(DomainError::ReservationNotFound)?;
                let r = r.clone();
                self.close_hold(&mut events, &r, ReservationEnd::Released, now_ms);
                Outcome::Released(reservation_id)
            }
            Command::PlaceOrder(draft) => self.place_order(&mut events, *draft, now_ms)?,
            Command::PlaceBatch(drafts) => {
                if drafts.len() > BATCH_ORDERS_MAX {
                    return Err(DomainError::TooManyOrders);
                }
                // `place_order` changes nothing when it refuses, so each order stands alone.
                let results = drafts
                    .into_iter()
                    .map(|draft| {
                        let id = draft.order_id;
                        self.place_order(&mut events, draft, now_ms).map(|_| id)
                    })
                    .collect();
                Outcome::Batch(results)
            }
            Command::Pay {
                order_id,
                succeeded,
                reference,
            } => self.pay(&mut events, order_id, succeeded, reference, now_ms)?,
            Command::Cancel { order_id, reason } => {
                self.cancel(&mut events, order_id, reason, now_ms)?
            }
            Command::Return(draft) => self.take_return(&mut events, *draft, now_ms)?,
            Command::Import(rows) => self.import(&mut events, rows, now_ms)?,
            Command::TransferIn { transfer_id, lines } => {
                self.transfer_in(&mut events, transfer_id, lines, now_ms)?
            }
            Command::TransferOut {
                reservation_id,
                transfer_id,
            } => {
                let r = self
                    .reservations
                    .get(&reservation_id)
                    .ok_or(DomainError::ReservationNotFound)?
                    .clone();
                let lines = r.lines.iter().map(|l| (&l.product_id, l.quantity));
                self.settle_lines(&mut events, lines, Settle::Send, &transfer_id, now_ms);
                let closed = Event::ReservationClosed {
                    reservation_id,
                    end: ReservationEnd::Consumed,
                    at_ms: now_ms,
                };
                self.emit(&mut events, closed);
                Outcome::TransferredOut
            }
            Command::ExpireDue => self.expire_due(&mut events, now_ms),
            Command::IssueToken { token_id, digest } => {
                if self.tokens.len() >= TOKENS_PER_STORE_MAX {
                    return Err(DomainError::TooManyTokens);
                }
                let token = StoreToken {
                    token_id,
                    digest,
                    created_ms: now_ms,
                };
                self.emit(&mut events, Event::TokenIssued(token.clone()));
                Outcome::TokenIssued(token)
            }
            Command::RevokeToken { token_id } => {
                if self.tokens.get(&token_id).is_none() {
                    return Err(DomainError::TokenNotFound);
                }
                let event = Event::TokenRevoked {
                    token_id: token_id.clone(),
                    at_ms: now_ms,
                };
                self.emit(&mut events, event);
                Outcome::TokenRevoked(token_id)
            }
            Command::AddWebhook(_)
            | Command::RemoveWebhook { .. }
            | Command::WebhookProgress { .. }
            | Command::WebhookGaveUp { .. } => {
                self.webhook_command(&mut events, command, now_ms)?
            }
        };
        Ok((outcome, events))
    }

    fn webhook_command(
        &mut self,
        events: &mut Vec<Event>,
        command: Command,
        now_ms: TimeMs,
    ) -> Result<Outcome, DomainError> {
        let known = |id: &WebhookId| self.webhooks.get(id).is_some();
        let outcome = match command {
            Command::AddWebhook(mut webhook) => {
                if self.webhooks.len() >= WEBHOOKS_PER_STORE_MAX {
                    return Err(DomainError::TooManyWebhooks);
                }
                webhook.created_ms = now_ms;
                webhook.delivered_to = self.next_event_id - 1;
                self.emit(events, Event::WebhookSet((*webhook).clone()));
                Outcome::WebhookSet(webhook)
            }
            Command::RemoveWebhook { webhook_id } if known(&webhook_id) => {
                let event = Event::WebhookRemoved {
                    webhook_id: webhook_id.clone(),
                    at_ms: now_ms,
                };
                self.emit(events, event);
                Outcome::WebhookRemoved(webhook_id)
            }
            Command::WebhookProgress { webhook_id, up_to } if known(&webhook_id) => {
                let up_to = up_to.min(self.next_event_id - 1);
                if self
                    .webhooks
                    .get(&webhook_id)
                    .is_some_and(|w| w.delivered_to < up_to)
                {
                    self.emit(events, Event::WebhookDelivered { webhook_id, up_to });
                }
                Outcome::WebhookProgressed
            }
            Command::WebhookGaveUp {
                webhook_id,
                event_id,
                attempts,
            } if known(&webhook_id) => {
                let event = Event::WebhookFailed {
                    webhook_id,
                    event_id,
                    attempts,
                    at_ms: now_ms,
                };
                self.emit(events, event);
                Outcome::WebhookProgressed
            }
            _ => return Err(DomainError::WebhookNotFound),
        };
        Ok(outcome)
    }

    /// Whether a product update may set `info` and `stock`: whole units for products
    /// counted in pieces, and a stock no lower than what is held.
    fn check_product(&self, info: &ProductInfo, stock: Option<Qty>) -> Result<(), DomainError> {
        let id = &info.product_id;
        let counted = info.unit.is_counted();
        if stock.is_some_and(|s| counted && !s.is_whole())
            || (counted && !info.low_stock_threshold.is_whole())
        {
            return Err(DomainError::InvalidQuantity(id.clone()));
        }
        let Some(p) = self.products.get(id) else {
            return Ok(());
        };
        if counted && (!p.on_hand.is_whole() || !p.reserved.is_whole()) {
            return Err(DomainError::InvalidQuantity(id.clone()));
        }
        if let Some(stock) = stock
            && stock < p.reserved
        {
            return Err(DomainError::InsufficientStock(vec![Shortage {
                product_id: id.clone(),
                product_name: p.info.name.clone(),
                unit: p.info.unit,
                requested: Qty(p.on_hand.0 - stock.0),
                available: p.current_stock(),
            }]));
        }
        Ok(())
    }

    fn set_product(
        &mut self,
        events: &mut Vec<Event>,
        info: ProductInfo,
        stock: Option<Qty>,
        now_ms: TimeMs,
    ) -> Result<Outcome, DomainError> {
        self.check_product(&info, stock)?;
        let id = info.product_id.clone();
        match self.products.get(&id) {
            None => {
                let stock = stock.unwrap_or(Qty::ZERO);
                self.emit(
                    events,
                    Event::ProductSet {
                        info,
                        at_ms: now_ms,
                    },
                );
                self.move_stock(
                    events,
                    &id,
                    MovementKind::Initial,
                    stock.0 as i64,
                    0,
                    "initial".into(),
                    now_ms,
                );
            }
            Some(p) => {
                let on_hand = p.on_hand;
                self.emit(
                    events,
                    Event::ProductSet {
                        info,
                        at_ms: now_ms,
                    },
                );
                if let Some(stock) = stock.filter(|s| *s != on_hand) {
                    let change = stock.0 as i64 - on_hand.0 as i64;
                    let reason: Box<str> = "catalogue update".into();
                    self.move_stock(
                        events,
                        &id,
                        MovementKind::Adjustment,
                        change,
                        0,
                        reason,
                        now_ms,
                    );
                }
            }
        }
        Ok(Outcome::ProductSet(id))
    }

    fn adjust(
        &mut self,
        events: &mut Vec<Event>,
        product_id: ProductId,
        change_milli: i64,
        reason: Box<str>,
        now_ms: TimeMs,
    ) -> Result<Outcome, DomainError> {
        let p = self
            .products
            .get(&product_id)
            .ok_or_else(|| DomainError::ProductNotFound(product_id.clone()))?;
        if change_milli == 0 || (p.info.unit.is_counted() && change_milli % 1000 != 0) {
            return Err(DomainError::InvalidQuantity(product_id));
        }
        let previous = p.on_hand;
        let new = previous.0 as i128 + i128::from(change_milli);
        if new < i128::from(p.reserved.0) {
            return Err(DomainError::InsufficientStock(vec![Shortage {
                product_id: product_id.clone(),
                product_name: p.info.name.clone(),
                unit: p.info.unit,
                requested: Qty(change_milli.unsigned_abs()),
                available: p.current_stock(),
            }]));
        }
        if new > i128::from(QTY_MILLI_MAX) {
            return Err(DomainError::InvalidQuantity(product_id));
        }
        let movement_id = self.next_movement_id;
        self.move_stock(
            events,
            &product_id,
            MovementKind::Adjustment,
            change_milli,
            0,
            reason,
            now_ms,
        );
        Ok(Outcome::Adjusted {
            previous,
            new: Qty(new as u64),
            movement_id,
        })
    }

    fn transfer_in(
        &mut self,
        events: &mut Vec<Event>,
        transfer_id: Box<str>,
        lines: Vec<ReservationLine>,
        now_ms: TimeMs,
    ) -> Result<Outcome, DomainError> {
        if self.sagas.contains_key(&transfer_id) {
            return Ok(Outcome::TransferredIn { fresh: false });
        }
        self.check_lines(lines.iter().map(|l| (&l.product_id, l.quantity)))?;
        for l in &lines {
            let p = &self.products[&l.product_id];
            if p.on_hand.0 + l.quantity.0 > QTY_MILLI_MAX {
                return Err(DomainError::InvalidQuantity(l.product_id.clone()));
            }
        }
        for l in &lines {
            let q = l.quantity.0 as i64;
            let kind = MovementKind::TransferIn;
            self.move_stock(
                events,
                &l.product_id,
                kind,
                q,
                0,
                transfer_id.clone(),
                now_ms,
            );
        }
        Ok(Outcome::TransferredIn { fresh: true })
    }

    /// Checks the lines (products known, each once, quantities valid for their unit) and
    /// returns their products in line order: each looked up once, for the caller too.
    fn check_lines<'a>(
        &self,
        lines: impl Iterator<Item = (&'a ProductId, Qty)>,
    ) -> Result<Vec<&Product>, DomainError> {
        let mut seen = HashSet::new();
        let mut products = Vec::with_capacity(lines.size_hint().0.min(ITEMS_MAX));
        for (id, qty) in lines {
            if products.len() == ITEMS_MAX {
                return Err(DomainError::TooManyItems);
            }
            let p = self
                .products
                .get(id)
                .ok_or_else(|| DomainError::ProductNotFound(id.clone()))?;
            if !seen.insert(id) {
                return Err(DomainError::DuplicateProduct(id.clone()));
            }
            if qty == Qty::ZERO || (p.info.unit.is_counted() && !qty.is_whole()) {
                return Err(DomainError::InvalidQuantity(id.clone()));
            }
            products.push(p);
        }
        if products.is_empty() {
            return Err(DomainError::NoItems);
        }
        Ok(products)
    }

    fn reserve(
        &mut self,
        events: &mut Vec<Event>,
        reservation_id: ReservationId,
        lines: Vec<ReservationLine>,
        ttl_ms: i64,
        now_ms: TimeMs,
    ) -> Result<Outcome, DomainError> {
        assert!(ttl_ms > 0);
        assert!(
            !self.reservations.contains_key(&reservation_id),
            "reservation ids are fresh"
        );
        self.check_lines(lines.iter().map(|l| (&l.product_id, l.quantity)))?;
        check_lock(lines.iter().map(|l| l.quantity))?;
        let shortages: Vec<Shortage> = lines
            .iter()
            .filter_map(|l| self.shortage(&l.product_id, l.quantity, Qty::ZERO))
            .collect();
        if !shortages.is_empty() {
            return Err(DomainError::InsufficientStock(shortages));
        }
        if self.reservations.len() >= OPEN_RESERVATIONS_MAX {
            return Err(DomainError::TooManyReservations);
        }
        let reservation = Reservation {
            reservation_id,
            lines,
            created_ms: now_ms,
            expires_ms: now_ms + ttl_ms,
        };
        let reference: Box<str> = reservation.reservation_id.as_str().into();
        for line in &reservation.lines {
            let q = line.quantity.0 as i64;
            self.move_stock(
                events,
                &line.product_id,
                MovementKind::Reservation,
                0,
                q,
                reference.clone(),
                now_ms,
            );
        }
        self.emit(events, Event::ReservationOpened(reservation.clone()));
        Ok(Outcome::Reserved(reservation))
    }

    /// The shortage of `requested` when `held` units are already set aside for the asker.
    fn shortage(&self, id: &ProductId, requested: Qty, held: Qty) -> Option<Shortage> {
        shortage_of(&self.products[id], requested, held)
    }

    /// Orders awaiting payment: every deadline is a hold's or such an order's.
    fn pending_payments(&self) -> usize {
        debug_assert!(self.deadlines.len() >= self.reservations.len());
        self.deadlines.len() - self.reservations.len()
    }

    fn place_order(
        &mut self,
        events: &mut Vec<Event>,
        mut draft: OrderDraft,
        now_ms: TimeMs,
    ) -> Result<Outcome, DomainError> {
        assert!(
            !self.orders.contains_key(&draft.order_id),
            "order ids are fresh"
        );
        let hold = match &draft.reservation_id {
            None => None,
            Some(id) => match self.reservations.get(id) {
                Some(r) if r.expires_ms > now_ms => Some(r.clone()),
                _ => return Err(DomainError::ReservationExpired),
            },
        };
        let held_of = |id: &ProductId| -> Qty {
            hold.as_ref()
                .and_then(|h| h.lines.iter().find(|l| &l.product_id == id))
                .map_or(Qty::ZERO, |l| l.quantity)
        };
        let products = self.check_lines(draft.items.iter().map(|i| (&i.product_id, i.quantity)))?;
        if draft.payment_method.initial_status() == OrderStatus::PendingPayment {
            check_lock(draft.items.iter().map(|i| i.quantity))?;
        }
        for (item, p) in draft.items.iter().zip(&products) {
            let price = p.info.unit_price;
            if item.unit_price.is_some_and(|p| p != price) {
                return Err(DomainError::PriceChanged {
                    product_id: item.product_id.clone(),
                    unit_price: price,
                });
            }
        }
        let shortages: Vec<Shortage> = draft
            .items
            .iter()
            .zip(&products)
            .filter_map(|(i, p)| shortage_of(p, i.quantity, held_of(&i.product_id)))
            .collect();
        if !shortages.is_empty() && draft.allow_partial {
            // Each short line ships what is there; a line with nothing is dropped.
            for s in &shortages {
                let counted = s.unit.is_counted();
                let ship = shippable(s.requested, s.available, counted);
                if let Some(item) = draft
                    .items
                    .iter_mut()
                    .find(|i| i.product_id == s.product_id)
                {
                    item.quantity = ship;
                }
            }
            draft.items.retain(|i| i.quantity > Qty::ZERO);
            if !draft.items.is_empty() {
                return self.place_order(events, draft, now_ms);
            }
        }
        if !shortages.is_empty() {
            return Err(DomainError::InsufficientStock(shortages));
        }
        let lines: Vec<OrderLine> = draft
            .items
            .iter()
            .zip(&products)
            .map(|(i, p)| {
                let info = &p.info;
                OrderLine {
                    product_id: i.product_id.clone(),
                    product_name: info.name.clone(),
                    quantity: i.quantity,
                    unit: info.unit,
                    unit_price: info.unit_price,
                    line_total: pricing::line_total(info.unit_price, i.quantity),
                }
            })
            .collect();
        let totals = pricing::totals(&self.config, lines.iter().map(|l| l.line_total))
            .ok_or(DomainError::TotalTooLarge)?;
        if draft.payment_method.initial_status() == OrderStatus::PendingPayment
            && self.pending_payments() >= PENDING_PAYMENTS_MAX
        {
            return Err(DomainError::TooManyPendingPayments);
        }

        // Everything is checked: from here on only events.
        let reference: Box<str> = draft.order_id.to_string().into();
        let status = draft.payment_method.initial_status();
        if let Some(h) = &hold {
            self.emit(
                events,
                Event::ReservationClosed {
                    reservation_id: h.reservation_id.clone(),
                    end: ReservationEnd::Consumed,
                    at_ms: now_ms,
                },
            );
            for l in &h.lines {
                let used = draft
                    .items
                    .iter()
                    .find(|i| i.product_id == l.product_id)
                    .map_or(Qty::ZERO, |i| i.quantity);
                let unused = l.quantity.0.saturating_sub(used.0) as i64;
                if unused > 0 {
                    let r: Box<str> = h.reservation_id.as_str().into();
                    self.move_stock(
                        events,
                        &l.product_id,
                        MovementKind::Release,
                        0,
                        -unused,
                        r,
                        now_ms,
                    );
                }
            }
        }
        for item in &draft.items {
            let q = item.quantity.0 as i64;
            let used = held_of(&item.product_id).0.min(item.quantity.0) as i64;
            match status {
                OrderStatus::Confirmed => self.move_stock(
                    events,
                    &item.product_id,
                    MovementKind::Sale,
                    -q,
                    -used,
                    reference.clone(),
                    now_ms,
                ),
                _ if q > used => self.move_stock(
                    events,
                    &item.product_id,
                    MovementKind::Reservation,
                    0,
                    q - used,
                    reference.clone(),
                    now_ms,
                ),
                _ => {}
            }
        }
        let expires_ms = status
            .holds_stock()
            .then_some(now_ms + draft.payment_ttl_ms);
        let order = Order {
            order_id: draft.order_id,
            store_id: self.config.store_id.clone(),
            status,
            customer: draft.customer,
            lines,
            subtotal: totals.subtotal,
            tax: totals.tax,
            delivery_fee: totals.delivery_fee,
            total_amount: totals.total_amount,
            payment_method: draft.payment_method,
            reservation_id: draft.reservation_id,
            created_ms: now_ms,
            expires_ms,
            updated_ms: now_ms,
            payment_reference: None,
            cancel_reason: None,
            tax_rate_bp: Some(self.config.tax_rate_bp),
            returns: Vec::new(),
            refunded_total: Paise(0),
        };
        if status == OrderStatus::Confirmed {
            self.sold(events, &order, 1, now_ms);
        }
        self.emit(events, Event::OrderSet(Arc::new(order)));
        if let Some(key) = draft.saga_key {
            let order_id = draft.order_id;
            self.emit(
                events,
                Event::SagaOrder {
                    key,
                    order_id,
                    at_ms: now_ms,
                },
            );
        }
        Ok(Outcome::Order(draft.order_id))
    }

    fn pay(
        &mut self,
        events: &mut Vec<Event>,
        order_id: OrderId,
        succeeded: bool,
        reference: Option<Box<str>>,
        now_ms: TimeMs,
    ) -> Result<Outcome, DomainError> {
        let order = self
            .orders
            .get(&order_id)
            .ok_or(DomainError::OrderNotFound)?;
        if order.status != OrderStatus::PendingPayment {
            return Err(DomainError::OrderNotPayable(order.status));
        }
        let (settle, status) = if succeeded {
            (Settle::Sell, OrderStatus::Confirmed)
        } else {
            (Settle::Release, OrderStatus::PaymentFailed)
        };
        self.settle_order(events, order_id, settle, status, now_ms, |o| {
            o.payment_reference = reference
        });
        Ok(Outcome::Order(order_id))
    }

    fn cancel(
        &mut self,
        events: &mut Vec<Event>,
        order_id: OrderId,
        reason: Option<Box<str>>,
        now_ms: TimeMs,
    ) -> Result<Outcome, DomainError> {
        let order = self
            .orders
            .get(&order_id)
            .ok_or(DomainError::OrderNotFound)?;
        let settle = match order.status {
            OrderStatus::PendingPayment => Settle::Release,
            OrderStatus::Confirmed => Settle::Restock,
            other => return Err(DomainError::OrderNotCancellable(other)),
        };
        self.settle_order(
            events,
            order_id,
            settle,
            OrderStatus::Cancelled,
            now_ms,
            |o| o.cancel_reason = reason,
        );
        Ok(Outcome::Order(order_id))
    }

    /// Checks a return against the order (confirmed; each line at most what was sold less
    /// what came back), then restocks (movement `return`) and records it on the order.
    fn take_return(
        &mut self,
        events: &mut Vec<Event>,
        draft: ReturnDraft,
        now_ms: TimeMs,
    ) -> Result<Outcome, DomainError> {
        let order = self
            .orders
            .get(&draft.order_id)
            .ok_or(DomainError::OrderNotFound)?;
        if order.status != OrderStatus::Confirmed {
            return Err(DomainError::OrderNotReturnable(order.status));
        }
        check_item_list(draft.items.iter().map(|i| &i.product_id))?;
        let rate = order.tax_rate_bp.unwrap_or(self.config.tax_rate_bp);
        let mut lines = Vec::with_capacity(draft.items.len());
        for item in &draft.items {
            let id = &item.product_id;
            let line = order
                .lines
                .iter()
                .find(|l| &l.product_id == id)
                .ok_or_else(|| DomainError::InvalidReturnQuantity(id.clone()))?;
            if item.quantity == Qty::ZERO || (line.unit.is_counted() && !item.quantity.is_whole()) {
                return Err(DomainError::InvalidQuantity(id.clone()));
            }
            if item.quantity.0 > line.quantity.0 - order.returned(id).0 {
                return Err(DomainError::InvalidReturnQuantity(id.clone()));
            }
            if draft.restock {
                let p = self
                    .products
                    .get(id)
                    .ok_or_else(|| DomainError::ProductNotFound(id.clone()))?;
                if p.on_hand.0 + item.quantity.0 > QTY_MILLI_MAX {
                    return Err(DomainError::InvalidQuantity(id.clone()));
                }
            }
            lines.push(ReturnLine {
                product_id: id.clone(),
                quantity: item.quantity,
                refund: pricing::refund(line.unit_price, item.quantity, rate),
            });
        }

        // Everything is checked: from here on only events.
        let mut order = Order::clone(order);
        if draft.restock {
            let reference: Box<str> = draft.order_id.to_string().into();
            let mut back = Vec::with_capacity(lines.len());
            for l in &lines {
                let q = l.quantity.0 as i64;
                let (id, r) = (&l.product_id, reference.clone());
                self.move_stock(events, id, MovementKind::Return, q, 0, r, now_ms);
                let price = order
                    .lines
                    .iter()
                    .find(|o| &o.product_id == id)
                    .map(|o| o.unit_price);
                let amount = pricing::line_total(price.unwrap_or_default(), l.quantity);
                back.push(SoldLine {
                    product_id: id.clone(),
                    units: -q,
                    revenue: -amount.0,
                });
            }
            let at_ms = now_ms;
            self.emit(
                events,
                Event::Sold {
                    lines: back,
                    orders: 0,
                    at_ms,
                },
            );
        }
        let refund_total = Paise(lines.iter().map(|l| l.refund.0).sum());
        order.returns.push(OrderReturn {
            return_id: draft.return_id.clone(),
            lines,
            refund_total,
            restocked: draft.restock,
            reason: draft.reason,
            created_ms: now_ms,
        });
        order.refunded_total = Paise(order.refunded_total.0 + refund_total.0);
        if order
            .lines
            .iter()
            .all(|l| order.returned(&l.product_id) == l.quantity)
        {
            order.status = OrderStatus::Returned;
        }
        order.updated_ms = now_ms;
        self.emit(events, Event::OrderReturned(Arc::new(order)));
        Ok(Outcome::Returned {
            order_id: draft.order_id,
            return_id: draft.return_id,
        })
    }

    /// Applies every row as a product update would, or none: each row is checked against
    /// the state first (a product twice is refused, so no row depends on another), then
    /// all are applied. A row that changes nothing makes no event.
    fn import(
        &mut self,
        events: &mut Vec<Event>,
        rows: Vec<ImportRow>,
        now_ms: TimeMs,
    ) -> Result<Outcome, DomainError> {
        let refused = |row: usize| {
            move |e| DomainError::ImportRow {
                row,
                error: Box::new(e),
            }
        };
        let mut seen = HashSet::with_capacity(rows.len());
        let mut changes = Vec::with_capacity(rows.len());
        let mut unchanged = 0;
        for (i, row) in rows.into_iter().enumerate() {
            if !seen.insert(row.product_id.clone()) {
                return Err(refused(i)(DomainError::DuplicateProduct(row.product_id)));
            }
            let current = self.products.get(&row.product_id);
            let info = ProductInfo {
                low_stock_threshold: row
                    .low_stock_threshold
                    .or(current.map(|p| p.info.low_stock_threshold))
                    .unwrap_or(Qty::ZERO),
                category: row
                    .category
                    .unwrap_or_else(|| current.and_then(|p| p.info.category.clone())),
                product_id: row.product_id,
                lead_time_days: current.map_or(LEAD_TIME_DAYS_DEFAULT, |p| p.info.lead_time_days),
                safety_stock_days: current
                    .map_or(SAFETY_STOCK_DAYS_DEFAULT, |p| p.info.safety_stock_days),
                name: row.name,
                unit: row.unit,
                unit_price: row.unit_price,
            };
            if current.is_some_and(|p| p.info == info && row.on_hand.is_none_or(|s| s == p.on_hand))
            {
                unchanged += 1;
                continue;
            }
            self.check_product(&info, row.on_hand).map_err(refused(i))?;
            changes.push((info, row.on_hand));
        }

        // Every row is checked: from here on only events.
        let created = changes
            .iter()
            .filter(|(info, _)| !self.products.contains_key(&info.product_id))
            .count();
        let updated = changes.len() - created;
        for (info, stock) in changes {
            self.set_product(events, info, stock, now_ms)
                .expect("checked above");
        }
        Ok(Outcome::Imported {
            created,
            updated,
            unchanged,
        })
    }

    fn expire_due(&mut self, events: &mut Vec<Event>, now_ms: TimeMs) -> Outcome {
        let mut count = 0;
        while let Some((t, what)) = self.deadlines.first().cloned() {
            if t > now_ms {
                break;
            }
            count += 1;
            match what {
                Deadline::Hold(id) => {
                    let r = self.reservations[&id].clone();
                    self.close_hold(events, &r, ReservationEnd::Expired, now_ms);
                }
                Deadline::Order(id) => {
                    self.settle_order(
                        events,
                        id,
                        Settle::Release,
                        OrderStatus::Expired,
                        now_ms,
                        |_| {},
                    );
                }
            }
        }
        Outcome::Expired { count }
    }

    /// Moves every line of an order one way, then records the order's new status.
    fn settle_order(
        &mut self,
        events: &mut Vec<Event>,
        order_id: OrderId,
        settle: Settle,
        status: OrderStatus,
        now_ms: TimeMs,
        edit: impl FnOnce(&mut Order),
    ) {
        let mut order = Order::clone(&self.orders[&order_id]);
        // Units already returned were dealt with by their return.
        let lines = order
            .lines
            .iter()
            .map(|l| {
                (
                    &l.product_id,
                    Qty(l.quantity.0 - order.returned(&l.product_id).0),
                )
            })
            .filter(|(_, q)| *q > Qty::ZERO);
        let reference: Box<str> = order_id.to_string().into();
        self.settle_lines(events, lines, settle, &reference, now_ms);
        match settle {
            Settle::Sell => self.sold(events, &order, 1, now_ms),
            Settle::Restock => self.sold(events, &order, -1, now_ms),
            Settle::Release | Settle::Send => {}
        }
        order.status = status;
        order.updated_ms = now_ms;
        edit(&mut order);
        self.emit(events, Event::OrderSet(Arc::new(order)));
    }

    /// Emits the `Sold` fact of an order's units not yet returned: sold (`sign` 1) or back
    /// (−1), at the order's prices; its count of confirmed orders moves by `sign`.
    fn sold(&mut self, events: &mut Vec<Event>, order: &Order, sign: i32, now_ms: TimeMs) {
        let lines = order
            .lines
            .iter()
            .filter_map(|l| {
                let q = Qty(l.quantity.0 - order.returned(&l.product_id).0);
                (q > Qty::ZERO).then(|| SoldLine {
                    product_id: l.product_id.clone(),
                    units: i64::from(sign) * q.0 as i64,
                    revenue: i64::from(sign) * pricing::line_total(l.unit_price, q).0,
                })
            })
            .collect();
        let at_ms = now_ms;
        self.emit(
            events,
            Event::Sold {
                lines,
                orders: sign,
                at_ms,
            },
        );
    }

    fn close_hold(
        &mut self,
        events: &mut Vec<Event>,
        r: &Reservation,
        end: ReservationEnd,
        now_ms: TimeMs,
    ) {
        let lines = r.lines.iter().map(|l| (&l.product_id, l.quantity));
        let reference: Box<str> = r.reservation_id.as_str().into();
        self.settle_lines(events, lines, Settle::Release, &reference, now_ms);
        let closed = Event::ReservationClosed {
            reservation_id: r.reservation_id.clone(),
            end,
            at_ms: now_ms,
        };
        self.emit(events, closed);
    }

    /// One movement per line, as `settle` says, all with the same reference.
    fn settle_lines<'a>(
        &mut self,
        events: &mut Vec<Event>,
        lines: impl Iterator<Item = (&'a ProductId, Qty)>,
        settle: Settle,
        reference: &str,
        now_ms: TimeMs,
    ) {
        for (product_id, quantity) in lines {
            let (kind, on_hand, reserved) = settle.movement(quantity);
            let reference = reference.into();
            self.move_stock(
                events, product_id, kind, on_hand, reserved, reference, now_ms,
            );
        }
    }

    /// Emits one movement of `id`'s counters (and a low-stock event if it crosses the line).
    #[allow(clippy::too_many_arguments)]
    fn move_stock(
        &mut self,
        events: &mut Vec<Event>,
        id: &ProductId,
        kind: MovementKind,
        on_hand_change: i64,
        reserved_change: i64,
        reference: Box<str>,
        now_ms: TimeMs,
    ) {
        let p = &self.products[id];
        let before = p.current_stock();
        let on_hand_after = p.on_hand.0 as i64 + on_hand_change;
        let reserved_after = p.reserved.0 as i64 + reserved_change;
        assert!(
            reserved_after >= 0 && reserved_after <= on_hand_after,
            "checked before any event"
        );
        let movement = Movement {
            movement_id: self.next_movement_id,
            prev_movement_id: p.last_movement_id,
            product_id: id.clone(),
            kind,
            on_hand_change,
            reserved_change,
            on_hand_after: Qty(on_hand_after as u64),
            reserved_after: Qty(reserved_after as u64),
            reference,
            at_ms: now_ms,
        };
        self.emit(events, Event::Moved(movement));
        let p = &self.products[id];
        let after = p.current_stock();
        let threshold = p.info.low_stock_threshold;
        if before > threshold && after <= threshold {
            let low = Event::StockLow {
                product_id: id.clone(),
                product_name: p.info.name.clone(),
                unit: p.info.unit,
                current_stock: after,
                threshold,
                at_ms: now_ms,
            };
            self.emit(events, low);
        }
    }

    fn emit(&mut self, events: &mut Vec<Event>, event: Event) {
        self.apply_event(&event);
        events.push(event);
    }

    /// Applies one fact. Used both live and when replaying the log; never fails.
    pub fn apply_event(&mut self, event: &Event) {
        if events::public_kind(event).is_some() {
            self.next_event_id += 1;
        }
        match event {
            Event::StoreSet(config) => self.config = config.clone(),
            Event::ProductSet { info, at_ms } => match self.products.get_mut(&info.product_id) {
                Some(p) => {
                    p.info = info.clone();
                    p.updated_ms = *at_ms;
                }
                None => {
                    let p = Product {
                        info: info.clone(),
                        on_hand: Qty::ZERO,
                        reserved: Qty::ZERO,
                        updated_ms: *at_ms,
                        last_movement_id: 0,
                    };
                    self.products.insert(info.product_id.clone(), p);
                }
            },
            Event::Moved(m) => {
                let p = self
                    .products
                    .get_mut(&m.product_id)
                    .expect("a movement follows its product's creation");
                assert_eq!(
                    p.on_hand.0 as i64 + m.on_hand_change,
                    m.on_hand_after.0 as i64,
                    "on_hand is conserved"
                );
                assert_eq!(
                    p.reserved.0 as i64 + m.reserved_change,
                    m.reserved_after.0 as i64,
                    "reserved is conserved"
                );
                assert!(
                    m.reserved_after <= m.on_hand_after,
                    "available is never negative"
                );
                p.on_hand = m.on_hand_after;
                p.reserved = m.reserved_after;
                p.updated_ms = m.at_ms;
                p.last_movement_id = m.movement_id;
                self.next_movement_id = self.next_movement_id.max(m.movement_id + 1);
                if matches!(m.kind, MovementKind::TransferIn | MovementKind::TransferOut) {
                    self.saga_mark(&m.reference, m.at_ms, None);
                }
            }
            Event::ReservationOpened(r) => {
                self.deadlines
                    .insert((r.expires_ms, Deadline::Hold(r.reservation_id.clone())));
                self.reservations
                    .insert(r.reservation_id.clone(), r.clone());
            }
            Event::ReservationClosed { reservation_id, .. } => {
                if let Some(r) = self.reservations.remove(reservation_id) {
                    self.deadlines
                        .remove(&(r.expires_ms, Deadline::Hold(r.reservation_id)));
                }
            }
            Event::OrderSet(order) | Event::OrderReturned(order) => {
                if let Some(old) = self.orders.get(&order.order_id)
                    && let Some(t) = old.expires_ms
                {
                    self.deadlines.remove(&(t, Deadline::Order(order.order_id)));
                }
                if let (true, Some(t)) = (order.status.holds_stock(), order.expires_ms) {
                    self.deadlines.insert((t, Deadline::Order(order.order_id)));
                }
                self.orders.insert(order.order_id, order.clone());
            }
            Event::LowStock { .. } => {}
            Event::Sold {
                lines,
                orders,
                at_ms,
            } => {
                let day = super::analytics::local_day(*at_ms, self.config.utc_offset_minutes);
                self.sales.record(day, lines, *orders);
            }
            Event::SagaOrder {
                key,
                order_id,
                at_ms,
            } => self.saga_mark(key, *at_ms, Some(*order_id)),
            Event::TokenIssued(token) => self.tokens.insert(token.clone()),
            Event::TokenRevoked { token_id, .. } => self.tokens.remove(token_id),
            Event::StockLow { .. } => {}
            Event::WebhookSet(w) => self.webhooks.insert(w.clone()),
            Event::WebhookRemoved { webhook_id, .. } => self.webhooks.remove(webhook_id),
            Event::WebhookDelivered { webhook_id, up_to } => {
                self.webhooks.advance(webhook_id, *up_to)
            }
            // Its own event (this one) is after the failed one: done up to the failed one.
            Event::WebhookFailed {
                webhook_id,
                event_id,
                ..
            } => self.webhooks.advance(webhook_id, *event_id),
        }
    }

    /// Notes what a saga did here under `key` at `at_ms`, forgetting marks older than
    /// [`TRANSFER_RECEIPTS_KEPT_MS`] (by the log's own times, so replay forgets the same).
    fn saga_mark(&mut self, key: &str, at_ms: TimeMs, order: Option<OrderId>) {
        if !self.sagas.contains_key(key) {
            let horizon = at_ms - TRANSFER_RECEIPTS_KEPT_MS;
            self.sagas.retain(|_, (t, _)| *t >= horizon);
        }
        self.sagas.insert(key.into(), (at_ms, order));
    }

    /// Checks every invariant of the whole state; for tests and recovery.
    pub fn check_invariants(&self) {
        let mut held: HashMap<&ProductId, u64> = HashMap::new();
        for r in self.reservations.values() {
            for l in &r.lines {
                *held.entry(&l.product_id).or_default() += l.quantity.0;
            }
        }
        for o in self.orders.values().filter(|o| o.status.holds_stock()) {
            for l in &o.lines {
                *held.entry(&l.product_id).or_default() += l.quantity.0;
            }
        }
        for o in self.orders.values() {
            check_returns(o).unwrap();
        }
        for (id, p) in &self.products {
            assert!(p.reserved <= p.on_hand, "{id}: reserved above on_hand");
            assert_eq!(
                p.reserved.0,
                held.get(id).copied().unwrap_or(0),
                "{id}: reserved equals open holds"
            );
        }
    }
}
