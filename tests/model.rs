//! The pure core against a deliberately simple reference model (proptest).
//!
//! Random sequences of adjust / reserve / release / order (cod and upi, with and without a
//! hold, whole or partial) / pay / cancel / return (restocked or not) / expire run against
//! `StoreState` and against plain maps. After
//! every step both agree on accept-or-refuse, on every product's `on_hand` and
//! `reserved`, and on every order's status and refunds; `reserved <= on_hand`; the ledger's movements add up to the counters; and a
//! snapshot taken at any point plus the events after it rebuilds exactly the live state.

use godown::domain::state::{DraftItem, OrderDraft};
use godown::domain::*;
use godown::wal::format::{decode_state, encode_state};
use proptest::prelude::*;
use std::collections::BTreeMap;

const PRODUCTS: usize = 4;

fn pid(i: usize) -> ProductId {
    ProductId::parse(&format!("P{i}")).unwrap()
}

#[derive(Clone, Debug)]
enum Op {
    Adjust(usize, i64),
    Reserve(Vec<(usize, u64)>, i64),
    Release(usize),
    Order {
        lines: Vec<(usize, u64)>,
        online: bool,
        hold: Option<usize>,
        /// `allow_partial`: ship what is there.
        partial: bool,
    },
    Pay(usize, bool),
    Cancel(usize),
    /// Units of an order back: (order, lines, restock).
    Return(usize, Vec<(usize, u64)>, bool),
    Advance(i64),
}

fn lines() -> impl Strategy<Value = Vec<(usize, u64)>> {
    proptest::collection::btree_map(0..PRODUCTS, 1u64..6, 1..4)
        .prop_map(|m| m.into_iter().collect())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..PRODUCTS, -8i64..12).prop_map(|(p, d)| Op::Adjust(p, d)),
        (lines(), 1i64..5).prop_map(|(l, t)| Op::Reserve(l, t)),
        (0usize..8).prop_map(Op::Release),
        (
            lines(),
            any::<bool>(),
            proptest::option::of(0usize..8),
            any::<bool>()
        )
            .prop_map(|(lines, online, hold, partial)| Op::Order {
                lines,
                online,
                hold,
                partial
            }),
        (0usize..8, any::<bool>()).prop_map(|(i, ok)| Op::Pay(i, ok)),
        (0usize..8).prop_map(Op::Cancel),
        (
            0usize..8,
            proptest::collection::btree_map(0..PRODUCTS, 1u64..3, 1..3),
            any::<bool>()
        )
            .prop_map(|(i, l, restock)| Op::Return(i, l.into_iter().collect(), restock)),
        (1i64..4).prop_map(Op::Advance),
    ]
}

type Lines = Vec<(usize, u64)>;

/// The reference: counters in whole units, holds and orders as plain lists.
#[derive(Default, Debug)]
struct Model {
    on_hand: [u64; PRODUCTS],
    reserved: [u64; PRODUCTS],
    /// reservation number → (lines, expires_at)
    holds: BTreeMap<u64, (Lines, i64)>,
    /// order number → (lines, status, expires_at)
    orders: BTreeMap<u32, (Lines, &'static str, i64)>,
    /// order number → units returned per product
    returned: BTreeMap<u32, [u64; PRODUCTS]>,
}

/// What one returned unit refunds: 10.00 plus 5 % tax, in paise.
const REFUND_PER_UNIT: i64 = 1050;

impl Model {
    fn available(&self, p: usize) -> u64 {
        self.on_hand[p] - self.reserved[p]
    }

    fn expire(&mut self, now: i64) {
        let due: Vec<u64> = self
            .holds
            .iter()
            .filter(|(_, (_, t))| *t <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            let (lines, _) = self.holds.remove(&k).unwrap();
            for (p, q) in lines {
                self.reserved[p] -= q;
            }
        }
        for (lines, status, t) in self.orders.values_mut() {
            if *status == "pending" && *t <= now {
                *status = "expired";
                for (p, q) in lines.iter() {
                    self.reserved[*p] -= q;
                }
            }
        }
    }
}

const UNIT: u64 = 1000;
const TTL_PAY: i64 = 3;

fn store() -> StoreState {
    let config = StoreConfig {
        store_id: StoreId::parse("S").unwrap(),
        name: "S".into(),
        tax_rate_bp: 500,
        delivery_fee: Paise(2000),
        free_delivery_above: None,
        location: None,
        updated_ms: 0,
        utc_offset_minutes: 330,
    };
    StoreState::new(config)
}

fn run(ops: Vec<Op>, snapshot_at: usize) -> Result<(), TestCaseError> {
    let mut state = store();
    let mut model = Model::default();
    let mut log: Vec<Event> = Vec::new();
    let mut now: i64 = 0;
    for i in 0..PRODUCTS {
        let info = ProductInfo {
            product_id: pid(i),
            name: format!("P{i}").into(),
            unit: Unit::Pieces,
            unit_price: Paise(1000),
            low_stock_threshold: Qty::from_units(2),
            category: None,
            lead_time_days: 2,
            safety_stock_days: 1,
        };
        let (_, events) = state
            .execute(
                Command::SetProduct {
                    info,
                    stock: Some(Qty::from_units(5)),
                },
                now,
            )
            .unwrap();
        log.extend(events);
        model.on_hand[i] = 5;
    }
    let mut snapshot: Option<(Vec<u8>, usize)> = None;
    let (mut next_hold, mut next_order) = (1u64, 1u32);
    let mut hold_ids: Vec<u64> = Vec::new();
    let mut order_ids: Vec<u32> = Vec::new();
    for (step, op) in ops.into_iter().enumerate() {
        if step == snapshot_at {
            snapshot = Some((encode_state(&state), log.len()));
        }
        // The actor expires what is due before every command; so does the model.
        let (_, events) = state.execute(Command::ExpireDue, now).unwrap();
        log.extend(events);
        model.expire(now);
        let (command, expect_ok) = match op.clone() {
            Op::Adjust(p, d) => {
                let ok = d != 0 && model.on_hand[p] as i64 + d >= model.reserved[p] as i64;
                if ok {
                    model.on_hand[p] = (model.on_hand[p] as i64 + d) as u64;
                }
                (
                    Command::Adjust {
                        product_id: pid(p),
                        change_milli: d * UNIT as i64,
                        reason: "r".into(),
                    },
                    ok,
                )
            }
            Op::Reserve(lines, ttl) => {
                let ok = lines.iter().all(|&(p, q)| q <= model.available(p));
                let n = next_hold;
                next_hold += 1;
                if ok {
                    for &(p, q) in &lines {
                        model.reserved[p] += q;
                    }
                    model.holds.insert(n, (lines.clone(), now + ttl));
                    hold_ids.push(n);
                }
                let lines = lines
                    .iter()
                    .map(|&(p, q)| ReservationLine {
                        product_id: pid(p),
                        quantity: Qty::from_units(q),
                    })
                    .collect();
                (
                    Command::Reserve {
                        reservation_id: ReservationId::from_number(n),
                        lines,
                        ttl_ms: ttl,
                    },
                    ok,
                )
            }
            Op::Release(i) => {
                let n = hold_ids.get(i).copied().unwrap_or(999);
                let ok = match model.holds.remove(&n) {
                    Some((lines, _)) => {
                        lines.iter().for_each(|&(p, q)| model.reserved[p] -= q);
                        true
                    }
                    None => false,
                };
                (
                    Command::Release {
                        reservation_id: ReservationId::from_number(n),
                    },
                    ok,
                )
            }
            Op::Order {
                lines: requested,
                online,
                hold,
                partial,
            } => {
                let hold_n = hold.map(|i| hold_ids.get(i).copied().unwrap_or(999));
                let held: Vec<(usize, u64)> = match hold_n {
                    None => Vec::new(),
                    Some(n) => model
                        .holds
                        .get(&n)
                        .map(|(l, _)| l.clone())
                        .unwrap_or_default(),
                };
                let hold_ok = hold_n.is_none_or(|n| model.holds.contains_key(&n));
                let held_of =
                    |p: usize| held.iter().find(|(hp, _)| *hp == p).map_or(0, |(_, q)| *q);
                // A partial order ships min(requested, available) per line (whole units:
                // the model's products are pieces) and drops empty lines.
                let lines: Vec<(usize, u64)> = if partial {
                    requested
                        .iter()
                        .map(|&(p, q)| (p, q.min(model.available(p) + held_of(p))))
                        .filter(|&(_, q)| q > 0)
                        .collect()
                } else {
                    requested.clone()
                };
                let ok = hold_ok
                    && !lines.is_empty()
                    && lines
                        .iter()
                        .all(|&(p, q)| q <= model.available(p) + held_of(p));
                let n = next_order;
                next_order += 1;
                if ok {
                    if let Some(h) = hold_n {
                        model.holds.remove(&h);
                        for &(p, q) in &held {
                            model.reserved[p] -= q;
                        }
                    }
                    for &(p, q) in &lines {
                        if online {
                            model.reserved[p] += q;
                        } else {
                            model.on_hand[p] -= q;
                        }
                    }
                    let status = if online { "pending" } else { "confirmed" };
                    model
                        .orders
                        .insert(n, (lines.clone(), status, now + TTL_PAY));
                    order_ids.push(n);
                }
                let draft = OrderDraft {
                    order_id: OrderId(u64::from(n)),
                    customer: Customer {
                        phone: "".into(),
                        name: "".into(),
                        delivery_address: "".into(),
                    },
                    items: requested
                        .iter()
                        .map(|&(p, q)| DraftItem {
                            product_id: pid(p),
                            quantity: Qty::from_units(q),
                            unit_price: None,
                        })
                        .collect(),
                    payment_method: if online {
                        PaymentMethod::Upi
                    } else {
                        PaymentMethod::Cod
                    },
                    reservation_id: hold_n.map(ReservationId::from_number),
                    payment_ttl_ms: TTL_PAY,
                    allow_partial: partial,
                    saga_key: None,
                };
                (Command::PlaceOrder(Box::new(draft)), ok)
            }
            Op::Pay(i, succeeded) => {
                let n = order_ids.get(i).copied().unwrap_or(999);
                let ok = match model.orders.get_mut(&n) {
                    Some((lines, status, _)) if *status == "pending" => {
                        for &(p, q) in lines.iter() {
                            model.reserved[p] -= q;
                            if succeeded {
                                model.on_hand[p] -= q;
                            }
                        }
                        *status = if succeeded { "confirmed" } else { "failed" };
                        true
                    }
                    _ => false,
                };
                (
                    Command::Pay {
                        order_id: OrderId(u64::from(n)),
                        succeeded,
                        reference: None,
                    },
                    ok,
                )
            }
            Op::Cancel(i) => {
                let n = order_ids.get(i).copied().unwrap_or(999);
                let back = model.returned.get(&n).copied().unwrap_or_default();
                let ok = match model.orders.get_mut(&n) {
                    Some((lines, status, _)) if *status == "pending" || *status == "confirmed" => {
                        for &(p, q) in lines.iter() {
                            if *status == "pending" {
                                model.reserved[p] -= q;
                            } else {
                                // Units already returned were dealt with by their return.
                                model.on_hand[p] += q - back[p];
                            }
                        }
                        *status = "cancelled";
                        true
                    }
                    _ => false,
                };
                (
                    Command::Cancel {
                        order_id: OrderId(u64::from(n)),
                        reason: None,
                    },
                    ok,
                )
            }
            Op::Return(i, items, restock) => {
                let n = order_ids.get(i).copied().unwrap_or(999);
                let back = model.returned.entry(n).or_default();
                let ok = match model.orders.get_mut(&n) {
                    Some((lines, status, _)) if *status == "confirmed" => {
                        let sold = |p: usize| lines.iter().find(|l| l.0 == p).map(|l| l.1);
                        let fits = items
                            .iter()
                            .all(|&(p, q)| sold(p).is_some_and(|s| q <= s - back[p]));
                        if fits {
                            for &(p, q) in &items {
                                back[p] += q;
                                if restock {
                                    model.on_hand[p] += q;
                                }
                            }
                            if lines.iter().all(|&(p, q)| back[p] == q) {
                                *status = "returned";
                            }
                        }
                        fits
                    }
                    _ => false,
                };
                let items = items
                    .iter()
                    .map(|&(p, q)| ReturnItem {
                        product_id: pid(p),
                        quantity: Qty::from_units(q),
                    })
                    .collect();
                let draft = ReturnDraft {
                    order_id: OrderId(u64::from(n)),
                    return_id: ReturnId::from_number(step as u64),
                    items,
                    restock,
                    reason: None,
                };
                (Command::Return(Box::new(draft)), ok)
            }
            Op::Advance(ms) => {
                now += ms;
                continue;
            }
        };
        let before = encode_state(&state);
        match state.execute(command, now) {
            Ok((_, events)) => {
                prop_assert!(expect_ok, "core accepted what the model refuses: {op:?}");
                log.extend(events);
            }
            Err(e) => {
                prop_assert!(
                    !expect_ok,
                    "core refused what the model accepts: {op:?}: {e}"
                );
                prop_assert_eq!(before, encode_state(&state), "a refusal changed nothing");
            }
        }
        for p in 0..PRODUCTS {
            let product = state.product(&pid(p)).unwrap();
            prop_assert_eq!(
                product.on_hand.0,
                model.on_hand[p] * UNIT,
                "on_hand of P{} after {:?}",
                p,
                op
            );
            prop_assert_eq!(
                product.reserved.0,
                model.reserved[p] * UNIT,
                "reserved of P{} after {:?}",
                p,
                op
            );
            prop_assert!(product.reserved <= product.on_hand);
        }
        for (n, (_, status, _)) in &model.orders {
            let order = state.order(OrderId(u64::from(*n))).unwrap();
            let back: u64 = model.returned.get(n).map_or(0, |b| b.iter().sum());
            let want = match *status {
                "pending" => OrderStatus::PendingPayment,
                "confirmed" => OrderStatus::Confirmed,
                "failed" => OrderStatus::PaymentFailed,
                "cancelled" => OrderStatus::Cancelled,
                "expired" => OrderStatus::Expired,
                _ => OrderStatus::Returned,
            };
            prop_assert_eq!(order.status, want, "order {} after {:?}", n, op);
            prop_assert_eq!(order.refunded_total.0, back as i64 * REFUND_PER_UNIT);
        }
        state.check_invariants();
    }
    // Analytics agree with the ledger: units sold = sales − cancellations of sold units −
    // restocked returns (every step of this test is on day 0).
    for p in 0..PRODUCTS {
        let mut sold = 0i64;
        for e in &log {
            if let Event::Moved(m) = e
                && m.product_id == pid(p)
            {
                // A sale takes units off the shelf; a cancel or a restocked return puts
                // them back: either way, sold moves against on_hand.
                if matches!(
                    m.kind,
                    MovementKind::Sale | MovementKind::Cancel | MovementKind::Return
                ) {
                    sold -= m.on_hand_change;
                }
            }
        }
        let counted = state.sales().total(&pid(p), 0, 1).units;
        prop_assert_eq!(counted, sold, "units sold of P{}", p);
    }
    // The ledger adds up to the counters.
    for p in 0..PRODUCTS {
        let (mut on_hand, mut reserved) = (0i64, 0i64);
        for e in &log {
            if let Event::Moved(m) = e
                && m.product_id == pid(p)
            {
                on_hand += m.on_hand_change;
                reserved += m.reserved_change;
                prop_assert_eq!(m.on_hand_after.0 as i64, on_hand);
                prop_assert_eq!(m.reserved_after.0 as i64, reserved);
            }
        }
        let product = state.product(&pid(p)).unwrap();
        prop_assert_eq!(
            (on_hand, reserved),
            (product.on_hand.0 as i64, product.reserved.0 as i64)
        );
    }
    // Replaying every event from scratch, or from the snapshot, rebuilds the live state.
    let mut replayed = store();
    log.iter().for_each(|e| replayed.apply_event(e));
    prop_assert_eq!(encode_state(&replayed), encode_state(&state));
    if let Some((bytes, at)) = snapshot {
        let mut restored = decode_state(&bytes, &|| "snapshot".into()).unwrap();
        log[at..].iter().for_each(|e| restored.apply_event(e));
        prop_assert_eq!(encode_state(&restored), encode_state(&state));
        prop_assert_eq!(
            restored.next_deadline_ms(),
            state.next_deadline_ms(),
            "deadline index rebuilt"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_core_matches_the_model(ops in proptest::collection::vec(op(), 1..60), snapshot_at in 0usize..60) {
        run(ops, snapshot_at)?;
    }
}

/// A store with one product of `units` pieces at ₹1.
fn big_store(units: u64) -> StoreState {
    let mut s = store();
    s.execute(
        Command::SetProduct {
            info: ProductInfo {
                product_id: pid(0),
                name: "p".into(),
                unit: Unit::Pieces,
                unit_price: Paise(100),
                low_stock_threshold: Qty::ZERO,
                category: None,
                lead_time_days: 2,
                safety_stock_days: 1,
            },
            stock: Some(Qty::from_units(units)),
        },
        0,
    )
    .unwrap();
    s
}

#[test]
fn per_store_bounds_on_open_holds_and_unpaid_orders_refuse_and_change_nothing() {
    // Goal: the 100,001st open hold and the 100,001st order awaiting payment of one store are
    // refused with their own errors and change nothing (no event, stock as before); once one
    // ends (released, paid), the next is accepted. Cod orders are not bounded by this.
    use godown::domain::state::{OPEN_RESERVATIONS_MAX, PENDING_PAYMENTS_MAX};
    let mut s = big_store(1_000_000);
    let line = || {
        vec![ReservationLine {
            product_id: pid(0),
            quantity: Qty::from_units(1),
        }]
    };
    let hold = |n: u64| Command::Reserve {
        reservation_id: ReservationId::from_number(n),
        lines: line(),
        ttl_ms: 3_600_000,
    };
    for n in 0..OPEN_RESERVATIONS_MAX as u64 {
        s.execute(hold(n), 0).unwrap();
    }
    let before = s.product(&pid(0)).unwrap().clone();
    let refused = s.execute(hold(u64::MAX), 0);
    assert!(
        matches!(refused, Err(DomainError::TooManyReservations)),
        "{refused:?}"
    );
    assert_eq!(s.product(&pid(0)).unwrap(), &before, "nothing changed");
    s.execute(
        Command::Release {
            reservation_id: ReservationId::from_number(0),
        },
        0,
    )
    .unwrap();
    s.execute(hold(u64::MAX), 0).unwrap();

    let mut s = big_store(1_000_000);
    let order = |n: u32, method: PaymentMethod| {
        Command::PlaceOrder(Box::new(OrderDraft {
            order_id: OrderId(u64::from(n)),
            customer: Customer {
                phone: "".into(),
                name: "".into(),
                delivery_address: "".into(),
            },
            items: vec![DraftItem {
                product_id: pid(0),
                quantity: Qty::from_units(1),
                unit_price: None,
            }],
            payment_method: method,
            reservation_id: None,
            payment_ttl_ms: 3_600_000,
            allow_partial: false,
            saga_key: None,
        }))
    };
    for n in 1..=PENDING_PAYMENTS_MAX as u32 {
        s.execute(order(n, PaymentMethod::Upi), 0).unwrap();
    }
    let before = s.product(&pid(0)).unwrap().clone();
    let refused = s.execute(order(u32::MAX, PaymentMethod::Upi), 0);
    assert!(
        matches!(refused, Err(DomainError::TooManyPendingPayments)),
        "{refused:?}"
    );
    assert_eq!(s.product(&pid(0)).unwrap(), &before, "nothing changed");
    s.execute(order(u32::MAX - 1, PaymentMethod::Cod), 0)
        .unwrap();
    s.execute(
        Command::Pay {
            order_id: OrderId(1),
            succeeded: true,
            reference: None,
        },
        0,
    )
    .unwrap();
    s.execute(order(u32::MAX, PaymentMethod::Upi), 0).unwrap();
}

#[test]
fn one_call_locks_at_most_lock_milli_max_and_a_refusal_changes_nothing() {
    // Goal: a hold or an unpaid order over LOCK_MILLI_MAX units in all is refused with
    // TooManyUnits and nothing changes; exactly the bound is accepted; a cod order (which
    // sells at once, locking nothing) is not bounded by it.
    use godown::domain::state::LOCK_MILLI_MAX;
    let mut s = big_store(100_000);
    let max = LOCK_MILLI_MAX / 1000;
    let hold = |n: u64, units: u64| Command::Reserve {
        reservation_id: ReservationId::from_number(n),
        lines: vec![ReservationLine {
            product_id: pid(0),
            quantity: Qty::from_units(units),
        }],
        ttl_ms: 3_600_000,
    };
    let order = |n: u64, units: u64, method: PaymentMethod| {
        Command::PlaceOrder(Box::new(OrderDraft {
            order_id: OrderId(n),
            customer: Customer {
                phone: "".into(),
                name: "".into(),
                delivery_address: "".into(),
            },
            items: vec![DraftItem {
                product_id: pid(0),
                quantity: Qty::from_units(units),
                unit_price: None,
            }],
            payment_method: method,
            reservation_id: None,
            payment_ttl_ms: 3_600_000,
            allow_partial: false,
            saga_key: None,
        }))
    };
    let before = s.product(&pid(0)).unwrap().clone();
    let refused = s.execute(hold(1, max + 1), 0);
    assert!(
        matches!(refused, Err(DomainError::TooManyUnits)),
        "{refused:?}"
    );
    let refused = s.execute(order(1, max + 1, PaymentMethod::Card), 0);
    assert!(
        matches!(refused, Err(DomainError::TooManyUnits)),
        "{refused:?}"
    );
    assert_eq!(s.product(&pid(0)).unwrap(), &before, "nothing changed");
    s.execute(hold(2, max), 0).unwrap();
    s.execute(order(2, max, PaymentMethod::Upi), 0).unwrap();
    s.execute(order(3, max + 1, PaymentMethod::Cod), 0).unwrap();
    let p = s.product(&pid(0)).unwrap();
    assert_eq!(p.reserved, Qty::from_units(2 * max));
}

#[test]
fn tokens_and_webhooks_per_store_are_bounded_and_a_refusal_changes_nothing() {
    // Goal: the 65th live token and the 17th webhook of a store are refused with their own
    // errors and no event; after a revocation / removal the next is accepted.
    use godown::domain::{TOKENS_PER_STORE_MAX, WEBHOOKS_PER_STORE_MAX};
    let mut s = big_store(1);
    for n in 0..TOKENS_PER_STORE_MAX as u64 {
        let issue = Command::IssueToken {
            token_id: TokenId::from_number(n),
            digest: [n as u8; 32],
        };
        s.execute(issue, 0).unwrap();
    }
    let issue = |n: u64| Command::IssueToken {
        token_id: TokenId::from_number(n),
        digest: [0xEE; 32],
    };
    let refused = s.execute(issue(1000), 0);
    assert!(
        matches!(refused, Err(DomainError::TooManyTokens)),
        "{refused:?}"
    );
    assert_eq!(s.tokens().len(), TOKENS_PER_STORE_MAX);
    let revoke = Command::RevokeToken {
        token_id: TokenId::from_number(0),
    };
    s.execute(revoke, 0).unwrap();
    s.execute(issue(1000), 0).unwrap();

    let hook = |n: u64| {
        Command::AddWebhook(Box::new(Webhook {
            webhook_id: WebhookId::from_number(n),
            url: "http://127.0.0.1/".into(),
            kinds: Vec::new(),
            secret: "0123456789abcdef".into(),
            created_ms: 0,
            delivered_to: 0,
        }))
    };
    for n in 0..WEBHOOKS_PER_STORE_MAX as u64 {
        s.execute(hook(n), 0).unwrap();
    }
    let before = s.next_event_id();
    let refused = s.execute(hook(1000), 0);
    assert!(
        matches!(refused, Err(DomainError::TooManyWebhooks)),
        "{refused:?}"
    );
    assert_eq!(
        (s.webhooks().len(), s.next_event_id()),
        (WEBHOOKS_PER_STORE_MAX, before)
    );
    let remove = Command::RemoveWebhook {
        webhook_id: WebhookId::from_number(0),
    };
    s.execute(remove, 0).unwrap();
    s.execute(hook(1000), 0).unwrap();
}

/// One order of a generated batch: lines (product index 0..=PRODUCTS: the last is not in
/// the catalogue), payment, partial, and whether it claims a stale price.
type BatchOrder = (Vec<(usize, u64)>, bool, bool, bool);

fn batch_order() -> impl Strategy<Value = BatchOrder> {
    let lines = proptest::collection::btree_map(0..=PRODUCTS, 1u64..6, 1..4)
        .prop_map(|m| m.into_iter().collect::<Vec<_>>());
    (
        lines,
        any::<bool>(),
        any::<bool>(),
        proptest::bool::weighted(0.1),
    )
}

fn batch_draft(n: u64, (lines, online, partial, stale): &BatchOrder) -> OrderDraft {
    OrderDraft {
        order_id: OrderId::from_seq(n),
        customer: Customer {
            phone: "".into(),
            name: "".into(),
            delivery_address: "".into(),
        },
        items: lines
            .iter()
            .map(|&(p, q)| DraftItem {
                product_id: pid(p),
                quantity: Qty::from_units(q),
                unit_price: stale.then_some(Paise(999)),
            })
            .collect(),
        payment_method: if *online {
            PaymentMethod::Upi
        } else {
            PaymentMethod::Cod
        },
        reservation_id: None,
        payment_ttl_ms: 60_000,
        allow_partial: *partial,
        saga_key: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Goal (issue 17): a batch and the same orders sent one by one leave identical state
    /// (byte for byte), with the same outcome for each order.
    #[test]
    fn a_batch_leaves_the_state_that_its_orders_one_by_one_leave(
        orders in proptest::collection::vec(batch_order(), 1..40),
    ) {
        let mut one_by_one = big_store(12);
        for i in 1..PRODUCTS {
            let info = ProductInfo {
                product_id: pid(i),
                name: format!("P{i}").into(),
                unit: Unit::Pieces,
                unit_price: Paise(100),
                low_stock_threshold: Qty::from_units(2),
                category: None,
                lead_time_days: 2,
                safety_stock_days: 1,
            };
            let command = Command::SetProduct { info, stock: Some(Qty::from_units(7)) };
            one_by_one.execute(command, 0).unwrap();
        }
        let mut batched = decode_state(&encode_state(&one_by_one), &|| "copy".into()).unwrap();
        let drafts: Vec<OrderDraft> = orders
            .iter()
            .enumerate()
            .map(|(i, o)| batch_draft(i as u64 + 1, o))
            .collect();
        let singles: Vec<Result<OrderId, DomainError>> = drafts
            .iter()
            .map(|d| {
                let id = d.order_id;
                one_by_one
                    .execute(Command::PlaceOrder(Box::new(d.clone())), 5)
                    .map(|_| id)
            })
            .collect();
        let (outcome, _) = batched.execute(Command::PlaceBatch(drafts), 5).unwrap();
        let Outcome::Batch(results) = outcome else { panic!("a batch outcome") };
        prop_assert_eq!(results, singles);
        prop_assert_eq!(encode_state(&batched), encode_state(&one_by_one));
        batched.check_invariants();
    }
}
