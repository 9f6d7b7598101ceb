//! `serve --demo`: the demo catalogue (`data/demo.json`: the seed's store and product plus
//! a kirana catalogue) and 90 days of generated sales before today, so that analytics, the
//! reorder list and the dashboard have a past. The history is deterministic (a fixed
//! seed); it goes through the stores' own commands, dated in the past, and ends with a
//! stocktake that puts every product back at its `demo.json` stock.

use crate::actor::{Directory, Exec, Reply, now_ms};
use crate::domain::analytics::{MS_PER_DAY, local_day};
use crate::domain::*;
use crate::http::json::{ProductBody, StoreBody, parse_json, parse_product_id, parse_store_id};

/// The demo catalogue.
pub const DEMO_JSON: &str = include_str!("../data/demo.json");
/// Days of generated sales before today.
pub const HISTORY_DAYS: i32 = 90;
/// The history's seed: the same demo on every machine.
const HISTORY_SEED: u64 = 20_261_126;
/// Orders a demo store takes on an ordinary day, before the weekday's share.
const ORDERS_PER_DAY: u32 = 14;
/// Each weekday's share of an ordinary day's orders, percent, Monday first.
const WEEKDAY_PERCENT: [u32; 7] = [90, 85, 95, 100, 115, 140, 150];
/// A store's hours, local: orders come between opening and closing.
const OPENS_MS: i64 = 8 * 3_600_000;
const OPEN_FOR_MS: i64 = 13 * 3_600_000;
/// One order in this many is cancelled an hour later, one in `RETURN_EVERY` has a line
/// brought back the next morning.
const CANCEL_EVERY: u32 = 50;
const RETURN_EVERY: u32 = 80;

/// Loads the catalogue and its history; `Ok` is (stores, products, orders of history).
pub async fn load_demo(dir: &Directory) -> Result<(usize, usize, usize), String> {
    let demo: serde_json::Value = serde_json::from_str(DEMO_JSON).map_err(|e| e.to_string())?;
    let stores = demo["stores"].as_array().ok_or("demo.json: no stores")?;
    let now = now_ms();
    let mut rng = fastrand::Rng::with_seed(HISTORY_SEED);
    let (mut products, mut orders) = (0, 0);
    for store in stores {
        let store_id =
            parse_store_id(store["store_id"].as_str().unwrap_or("")).map_err(|e| e.message)?;
        let body: StoreBody = parse_json(store.to_string().as_bytes()).map_err(|e| e.message)?;
        let config = body
            .into_config(store_id.clone(), now)
            .map_err(|e| e.message)?;
        let offset_ms = i64::from(config.utc_offset_minutes) * 60_000;
        let first_day = local_day(now, config.utc_offset_minutes) - HISTORY_DAYS;
        let opened = i64::from(first_day) * MS_PER_DAY - offset_ms;
        dir.get_or_create(&config).map_err(|e| e.to_string())?;
        let mut history = History {
            dir,
            store: store_id.clone(),
            waiting: Vec::new(),
        };
        history.run(Command::SetStore(config), opened).await?;
        let mut catalogue = Vec::new();
        for p in store["products"]
            .as_array()
            .ok_or("demo.json: no products")?
        {
            let product_id =
                parse_product_id(p["product_id"].as_str(), "product_id").map_err(|e| e.message)?;
            let body: ProductBody = parse_json(p.to_string().as_bytes()).map_err(|e| e.message)?;
            let command = body.into_command(product_id).map_err(|e| e.message)?;
            history.run(command.clone(), opened).await?;
            catalogue.push(command);
        }
        products += catalogue.len();
        for day in first_day..first_day + HISTORY_DAYS {
            let day_start = i64::from(day) * MS_PER_DAY - offset_ms;
            orders += history.day(&mut rng, &catalogue, day, day_start).await?;
        }
        // The stocktake: every product at its catalogue stock again, today.
        for command in catalogue {
            history.run(command, now).await?;
        }
        history.durable().await?;
    }
    Ok((stores.len(), products, orders))
}

/// Commands of one store, sent in order and made durable together at the end.
struct History<'a> {
    dir: &'a Directory,
    store: StoreId,
    waiting: Vec<tokio::sync::oneshot::Receiver<crate::wal::writer::Durable>>,
}

impl History<'_> {
    /// Runs `command` as of `at_ms`; a refusal is returned, not an error.
    async fn try_run(
        &mut self,
        command: Command,
        at_ms: TimeMs,
    ) -> Result<Result<Reply, DomainError>, String> {
        let exec = Exec {
            command,
            idem: None,
            at_ms: Some(at_ms),
            given_ids: false,
        };
        match self
            .dir
            .call(&self.store, exec)
            .await
            .map_err(|e| e.to_string())?
        {
            Ok(mut applied) => {
                self.waiting.extend(applied.durable.take());
                Ok(Ok(applied.reply))
            }
            Err(crate::actor::StoreError::Domain(e)) => Ok(Err(e)),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn run(&mut self, command: Command, at_ms: TimeMs) -> Result<Reply, String> {
        self.try_run(command, at_ms)
            .await?
            .map_err(|e| format!("demo history: {e}"))
    }

    async fn durable(&mut self) -> Result<(), String> {
        for rx in self.waiting.drain(..) {
            rx.await
                .map_err(|_| "the log stopped".to_string())?
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// One day's orders (a few cancelled, a few with a line returned); how many.
    async fn day(
        &mut self,
        rng: &mut fastrand::Rng,
        catalogue: &[Command],
        day: i32,
        day_start: TimeMs,
    ) -> Result<usize, String> {
        let weekday = (day + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
        let n = ORDERS_PER_DAY * WEEKDAY_PERCENT[weekday] / 100 * rng.u32(80..=120) / 100;
        let mut times: Vec<TimeMs> = (0..n)
            .map(|_| day_start + OPENS_MS + rng.i64(0..OPEN_FOR_MS))
            .collect();
        times.sort_unstable();
        for at in &times {
            let draft = draft(rng, catalogue);
            let order = self.place(draft, *at).await?;
            let k = rng.u32(0..CANCEL_EVERY * RETURN_EVERY);
            if k.is_multiple_of(CANCEL_EVERY) {
                let cancel = Command::Cancel {
                    order_id: order.order_id,
                    reason: Some("customer changed their mind".into()),
                };
                self.run(cancel, at + 3_600_000).await?;
            } else if k % RETURN_EVERY == 1 {
                let line = &order.lines[0];
                let draft = ReturnDraft {
                    order_id: order.order_id,
                    return_id: ReturnId::from_number(0),
                    items: vec![ReturnItem {
                        product_id: line.product_id.clone(),
                        quantity: line.quantity,
                    }],
                    restock: true,
                    reason: Some("not needed".into()),
                };
                let next_morning = day_start + MS_PER_DAY + OPENS_MS;
                self.run(Command::Return(Box::new(draft)), next_morning)
                    .await?;
            }
        }
        Ok(times.len())
    }

    /// Places an order; a short product gets a supplier's delivery first.
    async fn place(
        &mut self,
        draft: OrderDraft,
        at: TimeMs,
    ) -> Result<std::sync::Arc<Order>, String> {
        let command = Command::PlaceOrder(Box::new(draft.clone()));
        match self.try_run(command, at).await? {
            Ok(Reply::Order(o)) => return Ok(o),
            Ok(_) => return Err("demo history: unexpected reply".into()),
            Err(DomainError::InsufficientStock(short)) => {
                for s in short {
                    let delivery = Command::Adjust {
                        product_id: s.product_id,
                        change_milli: (s.requested.0 * 10).max(20_000) as i64,
                        reason: "supplier delivery".into(),
                    };
                    self.run(delivery, at).await?;
                }
            }
            Err(e) => return Err(format!("demo history: {e}")),
        }
        match self.run(Command::PlaceOrder(Box::new(draft)), at).await? {
            Reply::Order(o) => Ok(o),
            _ => Err("demo history: unexpected reply".into()),
        }
    }
}

/// A cod basket of 1 to 4 products, the catalogue's first products more often (a shop's
/// staples sell more than its spices), in quantities that suit each unit.
fn draft(rng: &mut fastrand::Rng, catalogue: &[Command]) -> OrderDraft {
    let mut items: Vec<DraftItem> = Vec::new();
    for _ in 0..rng.usize(1..=4) {
        // The smaller of two draws: index i comes up about (2(n − i) − 1) / n² of the time.
        let i = rng
            .usize(..catalogue.len())
            .min(rng.usize(..catalogue.len()));
        let Command::SetProduct { info, .. } = &catalogue[i] else {
            continue;
        };
        if items.iter().any(|d| d.product_id == info.product_id) {
            continue;
        }
        let quantity = match info.unit {
            Unit::Pieces | Unit::Pack => Qty::from_units(rng.u64(1..=3)),
            Unit::Kg | Unit::Litre => Qty(250 * rng.u64(1..=8)),
            // Sold by the gram or millilitre: what ₹30 to ₹200 buys (a gram of saffron, a
            // quarter litre of loose oil).
            Unit::G | Unit::Ml => {
                let budget = rng.u64(3_000..=20_000);
                Qty::from_units((budget / info.unit_price.0.max(1) as u64).clamp(1, 500))
            }
        };
        items.push(DraftItem {
            product_id: info.product_id.clone(),
            quantity,
            unit_price: None,
        });
    }
    let names = ["Asha", "Ravi", "Meena", "Imran", "Lakshmi", "Joseph"];
    let name = names[rng.usize(..names.len())];
    OrderDraft {
        order_id: OrderId(0),
        customer: Customer {
            phone: format!("98{:08}", rng.u32(0..100_000_000)).into(),
            name: name.into(),
            delivery_address: "Andheri West, Mumbai".into(),
        },
        items,
        payment_method: PaymentMethod::Cod,
        reservation_id: None,
        payment_ttl_ms: 0,
        allow_partial: false,
        saga_key: None,
    }
}
