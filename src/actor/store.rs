use crate::domain::analytics;
use crate::domain::events;
use crate::domain::*;
use crate::wal::format::{IdemTag, WalRecord, encode_record, encode_state, view_writes};
use crate::wal::writer::Durable;
use crate::wal::{Archive, ItemBody, WalHandle, WalItem};
use actix::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;

/// Messages a store's mailbox holds beyond the in-flight gate (see `Directory`).
pub const MAILBOX_CAPACITY: usize = 1024;
/// Finished orders kept in a store's memory once their latest state is durable in the order
/// archive. The archive is then as good as memory (a cancel reads the order back), so only
/// a few are kept: 64 × 1,000 stores × ~1 KiB stays under 64 MiB.
pub const RECENT_ORDERS_MAX: usize = 64;
/// How often a store checks deadlines and evicts old orders: expiry is exact to this.
pub const TICK: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("overloaded")]
    Overloaded,
    #[error("storage failure: {0}")]
    Storage(String),
    /// The store is moving between processes (`crate::moving`): retry shortly.
    #[error("the store is moving")]
    Moving,
}

/// What a successful command hands back: the outcome, what to show, and when it is durable.
pub struct Applied {
    pub outcome: Outcome,
    pub reply: Reply,
    /// Completes once the change is on disk; `None` when nothing changed.
    pub durable: Option<oneshot::Receiver<Durable>>,
}

#[derive(Clone, Debug)]
pub enum Reply {
    Store(StoreConfig),
    Product(Box<Product>),
    Adjusted {
        previous: Qty,
        new: Qty,
        movement_id: u64,
    },
    Reservation(Reservation),
    Released(ReservationId),
    Order(Arc<Order>),
    /// Each order of a batch as placed, or why not.
    Batch(Vec<Result<Arc<Order>, DomainError>>),
    Token(StoreToken),
    TokenRevoked(TokenId),
    Webhook(Box<Webhook>),
    WebhookRemoved(WebhookId),
    None,
}

/// Executes a command. The actor assigns fresh order and reservation ids itself.
pub struct Exec {
    pub command: Command,
    pub idem: Option<IdemTag>,
    /// When the command happened, for generated history (the demo's past days); `None`,
    /// as for every request: now, by the store's clock.
    pub at_ms: Option<TimeMs>,
    /// Keep the hold id the command carries instead of choosing a fresh one: a saga's step
    /// (`crate::saga`) names its hold before it runs, so that the step sent again after a
    /// crash finds it. The saga draws it from the OS's CSPRNG, as the actor would.
    pub given_ids: bool,
}

impl Message for Exec {
    type Result = Result<Applied, StoreError>;
}

pub struct GetStore;
impl Message for GetStore {
    type Result = StoreConfig;
}

pub struct GetProduct(pub ProductId);
impl Message for GetProduct {
    type Result = Option<Product>;
}

pub struct ListProducts {
    pub after: Option<ProductId>,
    pub limit: usize,
}
impl Message for ListProducts {
    type Result = (Vec<Product>, bool);
}

/// Analytics of a store as of its today (its clock, at its UTC offset).
pub enum Analytics {
    Product(ProductId),
    Store { days: i32 },
    Reorder,
}

pub enum AnalyticsReply {
    /// The product, its report and the store's today; `None`: no such product.
    Product(Option<Box<(Product, analytics::ProductReport, i32)>>),
    /// The report and the top sellers' names, in its order.
    Store(analytics::StoreReport, Vec<Box<str>>),
    /// Products at or below their reorder point, with that point and the suggestion.
    Reorder(Vec<(Product, i64, i64)>),
}

impl Message for Analytics {
    type Result = AnalyticsReply;
}

pub struct LowStock;
impl Message for LowStock {
    type Result = Vec<Product>;
}

#[derive(Clone, Debug)]
pub struct AvailabilityLine {
    pub product_id: ProductId,
    pub requested: Qty,
    pub available: Qty,
    /// Sold in whole units (pieces, packs).
    pub counted: bool,
    pub unit_price: Paise,
    /// Substitutes for a short line, when asked for (see [`alternatives`]).
    pub alternatives: Vec<Product>,
}

/// Checks a cart: each line's stock, and (`alternatives`) substitutes for short ones.
pub struct Availability {
    pub lines: Vec<(ProductId, Qty)>,
    pub alternatives: bool,
}
impl Message for Availability {
    type Result = Result<Vec<AvailabilityLine>, DomainError>;
}

/// Most substitutes offered for one short line (API.md).
pub const ALTERNATIVES_MAX: usize = 3;

/// Substitutes for `short` (`requested` of it): products of the same store and category,
/// not in the cart, with at least `requested` available, closest in price first, then by
/// id; at most [`ALTERNATIVES_MAX`]. A product with no category has none.
pub fn alternatives<'a>(
    products: impl Iterator<Item = &'a Product>,
    short: &Product,
    requested: Qty,
    cart: &[(ProductId, Qty)],
) -> Vec<Product> {
    let Some(category) = short.info.category.as_deref() else {
        return Vec::new();
    };
    let price = short.info.unit_price.0;
    let mut found: Vec<&Product> = products
        .filter(|p| p.info.category.as_deref() == Some(category))
        .filter(|p| !cart.iter().any(|(id, _)| *id == p.info.product_id))
        .filter(|p| p.current_stock() >= requested)
        .collect();
    found.sort_by_key(|p| {
        (
            (p.info.unit_price.0 - price).abs(),
            p.info.product_id.clone(),
        )
    });
    found.into_iter().take(ALTERNATIVES_MAX).cloned().collect()
}

/// A product's newest movement id, and a barrier that completes once every change this
/// store made so far is durable (and so readable from the ledger in sled).
pub struct LedgerHead(pub ProductId);
impl Message for LedgerHead {
    type Result = Option<(u64, oneshot::Receiver<Durable>)>;
}

impl Handler<LedgerHead> for StoreActor {
    type Result = MessageResult<LedgerHead>;
    fn handle(&mut self, msg: LedgerHead, _: &mut Self::Context) -> Self::Result {
        let Some(head) = self.state.product(&msg.0).map(|p| p.last_movement_id) else {
            return MessageResult(None);
        };
        self.wal.claim();
        let (tx, rx) = oneshot::channel();
        self.wal.submit(WalItem {
            weight: 0,
            body: ItemBody::Barrier,
            done: Some(tx),
            mark: None,
        });
        MessageResult(Some((head, rx)))
    }
}

/// Writes the store's state as a snapshot; completes when it is durable.
pub struct TakeSnapshot;
impl Message for TakeSnapshot {
    type Result = Option<oneshot::Receiver<Durable>>;
}

/// Releases everything whose deadline has passed, now; completes when that is durable.
pub struct ExpireNow;
impl Message for ExpireNow {
    type Result = Option<oneshot::Receiver<Durable>>;
}

pub struct StoreActor {
    pub(super) state: StoreState,
    pub(super) wal: WalHandle,
    /// Where evicted orders are read back from (off this thread).
    archive: Archive,
    /// Set for a store created in this process: its first record must create it.
    fresh: bool,
    /// Items this actor has submitted to the WAL, and how many of them are durable.
    submitted: u64,
    durable: Arc<AtomicU64>,
    /// Orders in the order they were touched, with the item that touched them; an entry
    /// is current only if `last_touch` still names that item.
    recent: VecDeque<(OrderId, u64)>,
    last_touch: HashMap<OrderId, u64>,
    shared: Shared,
    /// While the store is being moved out: its records since the move began.
    pub(super) tap: Option<super::moving::Tap>,
    /// Takes no change and runs no expiry: leaving for, or arriving from, another process.
    pub(super) frozen: bool,
}

/// What every store of a process shares.
pub struct Shared {
    pub payment_ttl_ms: i64,
    /// The next order sequence number.
    pub order_seq: Arc<AtomicU64>,
    /// The end of the process's order numbers: none is issued at or past it.
    pub order_seq_end: u64,
    /// Deadlines are set and checked by it.
    pub clock: Arc<dyn super::Clock>,
    /// Kept in step with each store's tokens.
    pub tokens: Arc<super::TokenIndex>,
}

impl StoreActor {
    pub fn new(
        state: StoreState,
        wal: WalHandle,
        archive: Archive,
        fresh: bool,
        shared: Shared,
    ) -> StoreActor {
        let recent = state.orders().map(|o| (o.order_id, 0)).collect();
        let last_touch = state.orders().map(|o| (o.order_id, 0)).collect();
        StoreActor {
            state,
            wal,
            archive,
            fresh,
            submitted: 0,
            durable: Arc::new(AtomicU64::new(0)),
            recent,
            last_touch,
            shared,
            tap: None,
            frozen: false,
        }
    }

    /// Hands events to the WAL. The room was claimed by the caller.
    pub(super) fn log(
        &mut self,
        events: Vec<Event>,
        idem: Option<IdemTag>,
        batch: Option<Vec<Result<OrderId, DomainError>>>,
        wait: bool,
    ) -> Option<oneshot::Receiver<Durable>> {
        // The state has applied these events: its counter is past their public ones.
        let first_event_id = self.state.next_event_id() - events::public_count(&events);
        let record = WalRecord {
            store_id: self.state.config.store_id.clone(),
            events,
            idem,
            first_event_id,
            batch,
        };
        let frame = encode_record(&record);
        if let Some(tap) = &mut self.tap {
            tap.push(&frame);
        }
        self.submitted += 1;
        for event in &record.events {
            if let Some(o) = event.order() {
                self.recent.push_back((o.order_id, self.submitted));
                self.last_touch.insert(o.order_id, self.submitted);
            }
        }
        let store_id = record.store_id.clone();
        let views = view_writes(record);
        let (done, rx) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let body = ItemBody::Record {
            store_id,
            frame,
            views,
        };
        self.wal.submit(WalItem {
            weight: 0,
            body,
            done,
            mark: Some((self.durable.clone(), self.submitted)),
        });
        rx
    }

    /// A fresh order id from the process-wide order sequence.
    fn fresh_order_id(&mut self) -> Result<OrderId, StoreError> {
        let seq = self.shared.order_seq.fetch_add(1, Ordering::Relaxed);
        if seq >= self.shared.order_seq_end {
            // Never into another process's partition: refuse (503) and say why.
            tracing::error!("this process has issued all the order numbers of its partition");
            return Err(StoreError::Storage(
                "order numbers of this process's partition are used up".into(),
            ));
        }
        Ok(OrderId::from_seq(seq))
    }

    /// The order a command changes, if it was evicted from memory (it is in the archive).
    fn evicted_order(&self, command: &Command) -> Option<OrderId> {
        match command {
            Command::Pay { order_id, .. } | Command::Cancel { order_id, .. }
                if self.state.order(*order_id).is_none() =>
            {
                Some(*order_id)
            }
            Command::Return(draft) if self.state.order(draft.order_id).is_none() => {
                Some(draft.order_id)
            }
            _ => None,
        }
    }

    /// Takes an order read back from the archive into memory, so a command can change it.
    fn restore_order(&mut self, order: Order) {
        if order.store_id == self.state.config.store_id
            && self.state.order(order.order_id).is_none()
        {
            let id = order.order_id;
            self.state.restore_order(order);
            self.recent.push_back((id, 0));
            self.last_touch.insert(id, 0);
        }
    }

    /// Releases what is due. Its record goes ahead of whatever command comes next.
    fn expire_due(&mut self, wait: bool) -> Option<oneshot::Receiver<Durable>> {
        let now = self.shared.clock.now_ms();
        if self.frozen || self.state.next_deadline_ms().is_none_or(|t| t > now) {
            return None;
        }
        // Expiry is not optional: it goes to the log even past the in-flight bound.
        self.wal.claim();
        let (_, events) = self
            .state
            .execute(Command::ExpireDue, now)
            .expect("expiry cannot fail");
        self.log(events, None, None, wait)
    }

    /// Forgets finished orders that are durable in the archive, oldest first.
    fn evict(&mut self) {
        let durable = self.durable.load(Ordering::Acquire);
        while self.recent.len() > RECENT_ORDERS_MAX {
            let Some(&(id, seq)) = self.recent.front() else {
                break;
            };
            if seq > durable {
                break;
            }
            self.recent.pop_front();
            if self.last_touch.get(&id) == Some(&seq) && self.state.evict_order(id) {
                self.last_touch.remove(&id);
            }
        }
    }

    fn reply_for(&self, outcome: &Outcome) -> Reply {
        match outcome {
            Outcome::StoreSet => Reply::Store(self.state.config.clone()),
            Outcome::ProductSet(id) => self
                .state
                .product(id)
                .map_or(Reply::None, |p| Reply::Product(Box::new(p.clone()))),
            Outcome::Adjusted {
                previous,
                new,
                movement_id,
            } => Reply::Adjusted {
                previous: *previous,
                new: *new,
                movement_id: *movement_id,
            },
            Outcome::Reserved(r) => Reply::Reservation(r.clone()),
            Outcome::Released(id) => Reply::Released(id.clone()),
            Outcome::Order(id) => self
                .state
                .order(*id)
                .map_or(Reply::None, |o| Reply::Order(o.clone())),
            Outcome::Returned { order_id, .. } => self
                .state
                .order(*order_id)
                .map_or(Reply::None, |o| Reply::Order(o.clone())),
            Outcome::Batch(results) => Reply::Batch(
                results
                    .iter()
                    .map(|r| {
                        r.clone().and_then(|id| {
                            self.state
                                .order(id)
                                .cloned()
                                .ok_or(DomainError::OrderNotFound)
                        })
                    })
                    .collect(),
            ),
            Outcome::Expired { .. }
            | Outcome::Imported { .. }
            | Outcome::TransferredIn { .. }
            | Outcome::TransferredOut => Reply::None,
            Outcome::TokenIssued(t) => Reply::Token(t.clone()),
            Outcome::TokenRevoked(id) => Reply::TokenRevoked(id.clone()),
            Outcome::WebhookSet(w) => Reply::Webhook(w.clone()),
            Outcome::WebhookRemoved(id) => Reply::WebhookRemoved(id.clone()),
            Outcome::WebhookProgressed => Reply::None,
        }
    }
}

impl Actor for StoreActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY + 64);
        if self.fresh {
            self.wal.claim();
            let create = Event::StoreSet(self.state.config.clone());
            self.log(vec![create], None, None, false);
        }
        ctx.run_interval(TICK, |actor, _| {
            actor.expire_due(false);
            actor.evict();
        });
    }
}

impl Handler<Exec> for StoreActor {
    type Result = ActorResponse<Self, Result<Applied, StoreError>>;

    fn handle(&mut self, msg: Exec, ctx: &mut Self::Context) -> Self::Result {
        let Some(id) = self.evicted_order(&msg.command) else {
            return ActorResponse::reply(self.exec(msg));
        };
        // Read the evicted order back on a blocking thread, not this one (other stores
        // share it); `wait` keeps this store's mailbox closed meanwhile, so nothing can
        // change the order between the read and the command.
        let (tx, rx) = oneshot::channel();
        let archive = self.archive.clone();
        let read = async move { tokio::task::spawn_blocking(move || archive.order(id)).await };
        ctx.wait(read.into_actor(self).map(move |read, actor, _| {
            let result = match read {
                Ok(Ok(order)) => {
                    if let Some(order) = order {
                        actor.restore_order(order);
                    }
                    actor.exec(msg)
                }
                Ok(Err(e)) => Err(StoreError::Storage(e.to_string())),
                Err(e) => Err(StoreError::Storage(e.to_string())),
            };
            let _ = tx.send(result);
        }));
        ActorResponse::r#async(fut::wrap_future(async move {
            rx.await
                .unwrap_or_else(|_| Err(StoreError::Storage("the store stopped".into())))
        }))
    }
}

/// Fault injection for tests (`tests/crash.rs`): an order for the store named in this
/// environment variable panics inside its actor. Never set it in production.
pub const PANIC_IN_STORE_ENV: &str = "GODOWN_TEST_PANIC_IN_STORE";

/// 64 bits from the OS's CSPRNG, or a refusal (503) naming what they were for.
fn random_u64(what: &str) -> Result<u64, StoreError> {
    getrandom::u64().map_err(|e| StoreError::Storage(format!("no randomness for {what}: {e}")))
}

fn injected_panic(store: &StoreId) -> bool {
    static STORE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    STORE
        .get_or_init(|| std::env::var(PANIC_IN_STORE_ENV).ok())
        .as_deref()
        == Some(store.as_str())
}

impl StoreActor {
    fn exec(&mut self, msg: Exec) -> Result<Applied, StoreError> {
        if self.frozen {
            return Err(StoreError::Moving);
        }
        if matches!(msg.command, Command::PlaceOrder(_))
            && injected_panic(&self.state.config.store_id)
        {
            panic!("injected fault: {PANIC_IN_STORE_ENV}");
        }
        self.expire_due(false);
        let mut command = msg.command;
        if let Command::PlaceOrder(draft) = &mut command {
            draft.payment_ttl_ms = self.shared.payment_ttl_ms;
        }
        if let Command::PlaceBatch(drafts) = &mut command {
            for draft in drafts {
                draft.payment_ttl_ms = self.shared.payment_ttl_ms;
                if !msg.given_ids {
                    draft.order_id = self.fresh_order_id()?;
                }
            }
        }
        match &mut command {
            _ if msg.given_ids => {}
            Command::PlaceOrder(draft) => draft.order_id = self.fresh_order_id()?,
            Command::Reserve { reservation_id, .. } => loop {
                // A hold's id is a capability: 64 bits from the OS's CSPRNG. If that ever
                // fails, refuse (503) rather than fall back to a guessable number.
                let id = ReservationId::from_number(random_u64("a reservation id")?);
                if self.state.reservation(&id).is_none() {
                    *reservation_id = id;
                    break;
                }
            },
            Command::Return(draft) => {
                // Unique within its order: the order's returns are its namespace.
                let order = self.state.order(draft.order_id);
                loop {
                    let id = ReturnId::from_number(random_u64("a return id")?);
                    if order.is_none_or(|o| o.find_return(&id).is_none()) {
                        draft.return_id = id;
                        break;
                    }
                }
            }
            Command::IssueToken { token_id, .. } => loop {
                let id = TokenId::from_number(random_u64("a token id")?);
                if self.state.tokens().get(&id).is_none() {
                    *token_id = id;
                    break;
                }
            },
            Command::AddWebhook(webhook) => loop {
                let id = WebhookId::from_number(random_u64("a webhook id")?);
                if self.state.webhooks().get(&id).is_none() {
                    webhook.webhook_id = id;
                    break;
                }
            },
            _ => {}
        }
        if !self.wal.try_claim() {
            return Err(StoreError::Overloaded);
        }
        let now_ms = msg.at_ms.unwrap_or_else(|| self.shared.clock.now_ms());
        let result = self.state.execute(command, now_ms);
        let (outcome, events) = match result {
            Ok(ok) => ok,
            Err(e) => {
                self.wal.release_claim();
                return Err(e.into());
            }
        };
        let reply = self.reply_for(&outcome);
        if matches!(outcome, Outcome::TokenIssued(_) | Outcome::TokenRevoked(_)) {
            let store = &self.state.config.store_id;
            self.shared.tokens.set_store(store, self.state.tokens());
        }
        let durable = if events.is_empty() {
            self.wal.release_claim();
            None
        } else {
            let batch = match &outcome {
                Outcome::Batch(results) => Some(results.clone()),
                _ => None,
            };
            self.log(events, msg.idem, batch, true)
        };
        Ok(Applied {
            outcome,
            reply,
            durable,
        })
    }
}

impl Handler<GetStore> for StoreActor {
    type Result = MessageResult<GetStore>;
    fn handle(&mut self, _: GetStore, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.state.config.clone())
    }
}

impl Handler<GetProduct> for StoreActor {
    type Result = MessageResult<GetProduct>;
    fn handle(&mut self, msg: GetProduct, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.state.product(&msg.0).cloned())
    }
}

impl Handler<ListProducts> for StoreActor {
    type Result = MessageResult<ListProducts>;
    fn handle(&mut self, msg: ListProducts, _: &mut Self::Context) -> Self::Result {
        let mut items: Vec<Product> = self
            .state
            .products_after(msg.after.as_ref())
            .take(msg.limit + 1)
            .cloned()
            .collect();
        let more = items.len() > msg.limit;
        items.truncate(msg.limit);
        MessageResult((items, more))
    }
}

impl Handler<LowStock> for StoreActor {
    type Result = MessageResult<LowStock>;
    fn handle(&mut self, _: LowStock, _: &mut Self::Context) -> Self::Result {
        let low = self
            .state
            .products()
            .filter(|p| p.current_stock() <= p.info.low_stock_threshold)
            .cloned()
            .collect();
        MessageResult(low)
    }
}

impl Handler<Analytics> for StoreActor {
    type Result = MessageResult<Analytics>;
    fn handle(&mut self, msg: Analytics, _: &mut Self::Context) -> Self::Result {
        let state = &self.state;
        let today =
            analytics::local_day(self.shared.clock.now_ms(), state.config.utc_offset_minutes);
        MessageResult(match msg {
            Analytics::Product(id) => AnalyticsReply::Product(state.product(&id).map(|p| {
                let report = analytics::product_report(state.sales(), p, today);
                Box::new((p.clone(), report, today))
            })),
            Analytics::Store { days } => {
                let report = analytics::store_report(state.sales(), today, days);
                let names = report
                    .top_sellers
                    .iter()
                    .map(|(id, ..)| {
                        state
                            .product(id)
                            .map_or_else(|| id.as_str().into(), |p| p.info.name.clone())
                    })
                    .collect();
                AnalyticsReply::Store(report, names)
            }
            Analytics::Reorder => AnalyticsReply::Reorder(
                analytics::reorder_list(state.sales(), state.products(), today)
                    .into_iter()
                    .map(|(p, point, suggested)| (p.clone(), point, suggested))
                    .collect(),
            ),
        })
    }
}

impl Handler<Availability> for StoreActor {
    type Result = MessageResult<Availability>;
    fn handle(&mut self, msg: Availability, _: &mut Self::Context) -> Self::Result {
        let mut lines = Vec::with_capacity(msg.lines.len());
        for (id, requested) in msg.lines.iter().cloned() {
            let Some(p) = self.state.product(&id) else {
                return MessageResult(Err(DomainError::ProductNotFound(id)));
            };
            if p.info.unit.is_counted() && !requested.is_whole() {
                return MessageResult(Err(DomainError::InvalidQuantity(id)));
            }
            let short = p.current_stock() < requested;
            let alternatives = if msg.alternatives && short {
                alternatives(self.state.products(), p, requested, &msg.lines)
            } else {
                Vec::new()
            };
            lines.push(AvailabilityLine {
                product_id: id,
                requested,
                available: p.current_stock(),
                counted: p.info.unit.is_counted(),
                unit_price: p.info.unit_price,
                alternatives,
            });
        }
        MessageResult(Ok(lines))
    }
}

impl Handler<TakeSnapshot> for StoreActor {
    type Result = MessageResult<TakeSnapshot>;
    fn handle(&mut self, _: TakeSnapshot, _: &mut Self::Context) -> Self::Result {
        let state = encode_state(&self.state);
        self.wal.claim();
        let (tx, rx) = oneshot::channel();
        self.submitted += 1;
        let body = ItemBody::Snapshot {
            store_id: self.state.config.store_id.clone(),
            state,
        };
        self.wal.submit(WalItem {
            weight: 0,
            body,
            done: Some(tx),
            mark: Some((self.durable.clone(), self.submitted)),
        });
        MessageResult(Some(rx))
    }
}

impl Handler<ExpireNow> for StoreActor {
    type Result = MessageResult<ExpireNow>;
    fn handle(&mut self, _: ExpireNow, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.expire_due(true))
    }
}

/// The store's live tokens (ids and dates; their digests stay inside).
pub struct ListTokens;
impl Message for ListTokens {
    type Result = Vec<StoreToken>;
}

impl Handler<ListTokens> for StoreActor {
    type Result = MessageResult<ListTokens>;
    fn handle(&mut self, _: ListTokens, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.state.tokens().iter().cloned().collect())
    }
}

/// The store's webhooks (with their secrets: for the deliverer, never shown again).
pub struct ListWebhooks;
impl Message for ListWebhooks {
    type Result = Vec<Webhook>;
}

impl Handler<ListWebhooks> for StoreActor {
    type Result = MessageResult<ListWebhooks>;
    fn handle(&mut self, _: ListWebhooks, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.state.webhooks().iter().cloned().collect())
    }
}

/// What a saga step left in this store (see `crate::saga`): whether the hold is still
/// open, and whether the transfer moved stock here (in or out).
pub struct SagaMarks {
    pub hold: Option<ReservationId>,
    pub transfer: Option<Box<str>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Marks {
    pub hold_open: bool,
    pub transferred: bool,
    /// The order a saga placed for the hold, if it did.
    pub order: Option<OrderId>,
}

impl Message for SagaMarks {
    type Result = Marks;
}

impl Handler<SagaMarks> for StoreActor {
    type Result = MessageResult<SagaMarks>;
    fn handle(&mut self, msg: SagaMarks, _: &mut Self::Context) -> Self::Result {
        let order = msg
            .hold
            .as_ref()
            .and_then(|h| self.state.saga_order(h.as_str()));
        MessageResult(Marks {
            hold_open: msg
                .hold
                .is_some_and(|h| self.state.reservation(&h).is_some()),
            transferred: msg.transfer.is_some_and(|t| self.state.has_transferred(&t)),
            order,
        })
    }
}

/// A store's location and what it has available of each product (zero for a product it
/// does not sell), for routing a region order.
pub struct StockOf(pub Vec<ProductId>);

impl Message for StockOf {
    type Result = (Option<Location>, Vec<Qty>);
}

impl Handler<StockOf> for StoreActor {
    type Result = MessageResult<StockOf>;
    fn handle(&mut self, msg: StockOf, _: &mut Self::Context) -> Self::Result {
        let available = msg
            .0
            .iter()
            .map(|id| {
                self.state
                    .product(id)
                    .map_or(Qty::ZERO, |p| p.current_stock())
            })
            .collect();
        MessageResult((self.state.config.location.clone(), available))
    }
}
