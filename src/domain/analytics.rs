//! Sales analytics of a store (API.md "Analytics").
//!
//! The store emits a `Sold` fact whenever units are sold (a cod order, a payment), come
//! back (a cancellation of a sold order, a restocked return), with the order's own prices;
//! applying it adds to per-product, per-day counters ([`Sales`]) kept in the store's state,
//! so they are in its snapshots and rebuilt by replaying the log. A report reads at most a
//! year of days of those counters, never the ledger. Days are calendar days at the store's
//! `utc_offset_minutes`.

use super::ids::ProductId;
use super::model::{Product, TimeMs};
use super::number::{Qty, mul_div_round};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Milliseconds in a day.
pub const MS_PER_DAY: i64 = 86_400_000;
/// Days of counters kept per product: the longest report is 365 days; older days are
/// dropped as new ones come, so a product's counters are bounded.
pub const DAYS_KEPT: i32 = 400;
/// The window of velocity, `units_sold_28d` and `daily`.
pub const WINDOW_DAYS: i32 = 28;
/// How many products `top_sellers` names.
pub const TOP_SELLERS: usize = 10;
/// The forecast's horizon, and the days of cover a reorder adds above the reorder point.
pub const HORIZON_DAYS: i32 = 7;
/// The forecast's weights for the same weekday 1, 2, 3 and 4 weeks back (newest first):
/// recent weeks count more, and four weeks keep one odd day from steering it.
const WEEK_WEIGHTS: [i64; 4] = [4, 3, 2, 1];

/// The store-local calendar day (days since 1970-01-01) of a moment.
pub fn local_day(at_ms: TimeMs, utc_offset_minutes: i16) -> i32 {
    let local = at_ms + i64::from(utc_offset_minutes) * 60_000;
    local.div_euclid(MS_PER_DAY) as i32
}

/// One product's sales on one day: units in thousandths, revenue in paise (line amounts
/// before tax). Both may be negative on a day when more came back than was sold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaySales {
    pub units: i64,
    pub revenue: i64,
}

/// One line of a `Sold` fact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoldLine {
    pub product_id: ProductId,
    /// Thousandths: positive sold, negative back.
    pub units: i64,
    /// Paise, before tax, at the order's price.
    pub revenue: i64,
}

/// One product's sales by day: `(day, sales)` ascending, at most [`DAYS_KEPT`] days.
///
/// A sorted `Vec`, not a `BTreeMap`: most products sell on few days, and a map of one day
/// costs a whole B-tree leaf (≈ 280 bytes) where this costs 20–80; with a million products
/// that was ≈ 200 MB of the live process (BENCHMARKS.md "Recovery at scale", run 6). New
/// days come last, so adding one is a push. Encoded exactly as the map it replaced (a
/// length, then day and sales pairs), so snapshots written before read back unchanged.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DaySeries(Vec<(i32, DaySales)>);

impl DaySeries {
    /// Adds units and revenue to `day`, and drops the days older than [`DAYS_KEPT`] before it.
    fn add(&mut self, day: i32, units: i64, revenue: i64) {
        let at = match self.0.last() {
            Some((last, _)) if *last == day => self.0.len() - 1,
            Some((last, _)) if *last < day => self.push(day),
            None => self.push(day),
            Some(_) => match self.0.binary_search_by_key(&day, |(d, _)| *d) {
                Ok(i) => i,
                Err(i) => {
                    self.0.insert(i, (day, DaySales::default()));
                    i
                }
            },
        };
        let d = &mut self.0[at].1;
        d.units += units;
        d.revenue += revenue;
        let old = self.0.partition_point(|(d, _)| *d <= day - DAYS_KEPT);
        self.0.drain(..old);
    }

    fn push(&mut self, day: i32) -> usize {
        if self.0.capacity() == 0 {
            // One day first: most products sell on few days (see the type's doc).
            self.0.reserve_exact(1);
        }
        self.0.push((day, DaySales::default()));
        self.0.len() - 1
    }

    fn get(&self, day: i32) -> Option<DaySales> {
        let i = self.0.binary_search_by_key(&day, |(d, _)| *d).ok()?;
        Some(self.0[i].1)
    }

    /// The days in `first..=last`, ascending.
    fn range(&self, first: i32, last: i32) -> &[(i32, DaySales)] {
        let from = self.0.partition_point(|(d, _)| *d < first);
        let to = self.0.partition_point(|(d, _)| *d <= last);
        &self.0[from..to.max(from)]
    }
}

impl Serialize for DaySeries {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(d, s)| (d, s)))
    }
}

impl<'de> Deserialize<'de> for DaySeries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Days;
        impl<'de> serde::de::Visitor<'de> for Days {
            type Value = DaySeries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of days to sales")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<DaySeries, A::Error> {
                // Bounded by what a snapshot can hold: DAYS_KEPT days were written.
                let hint = map.size_hint().unwrap_or(0).min(DAYS_KEPT as usize);
                let mut days: Vec<(i32, DaySales)> = Vec::with_capacity(hint);
                while let Some(entry) = map.next_entry()? {
                    days.push(entry);
                }
                // A map was written in key order; sorting again costs nothing then.
                days.sort_by_key(|(d, _)| *d);
                days.dedup_by_key(|(d, _)| *d);
                Ok(DaySeries(days))
            }
        }
        deserializer.deserialize_map(Days)
    }
}

/// Every product's sales by day, and confirmed orders by day (net of cancellations).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sales {
    by_product: BTreeMap<ProductId, DaySeries>,
    orders_by_day: BTreeMap<i32, i64>,
}

impl Sales {
    /// Adds a `Sold` fact of `day`.
    pub fn record(&mut self, day: i32, lines: &[SoldLine], orders: i32) {
        for l in lines {
            // Looked up before inserting: the id is cloned only on a product's first sale.
            if let Some(days) = self.by_product.get_mut(&l.product_id) {
                days.add(day, l.units, l.revenue);
            } else {
                let mut days = DaySeries::default();
                days.add(day, l.units, l.revenue);
                self.by_product.insert(l.product_id.clone(), days);
            }
        }
        if orders != 0 {
            *self.orders_by_day.entry(day).or_default() += i64::from(orders);
            while self
                .orders_by_day
                .first_key_value()
                .is_some_and(|(k, _)| *k <= day - DAYS_KEPT)
            {
                self.orders_by_day.pop_first();
            }
        }
    }

    /// A product's sales on each of the `n` days ending with `last`, oldest first.
    pub fn daily(&self, product: &ProductId, last: i32, n: i32) -> Vec<(i32, DaySales)> {
        let days = self.by_product.get(product);
        (last - n + 1..=last)
            .map(|d| {
                let s = days.and_then(|m| m.get(d)).unwrap_or_default();
                (d, s)
            })
            .collect()
    }

    /// A product's totals over the `n` days ending with `last`.
    pub fn total(&self, product: &ProductId, last: i32, n: i32) -> DaySales {
        let mut t = DaySales::default();
        if let Some(days) = self.by_product.get(product) {
            for (_, s) in days.range(last - n + 1, last) {
                t.units += s.units;
                t.revenue += s.revenue;
            }
        }
        t
    }

    /// Confirmed orders over the `n` days ending with `last`.
    pub fn orders(&self, last: i32, n: i32) -> i64 {
        self.orders_by_day
            .range(last - n + 1..=last)
            .map(|(_, o)| o)
            .sum()
    }

    /// Products that have counters, in id order.
    pub fn products(&self) -> impl Iterator<Item = &ProductId> {
        self.by_product.keys()
    }
}

/// What `GET …/analytics` tells of a product. Quantities in thousandths, money in paise.
#[derive(Clone, Debug, PartialEq)]
pub struct ProductReport {
    pub units_sold_7d: i64,
    pub units_sold_28d: i64,
    pub revenue_28d: i64,
    /// Units sold in the last 28 days / 28, thousandths (rounded half away from zero).
    pub velocity_per_day: i64,
    /// `current_stock / velocity` in hundredths of a day; `None` when nothing sells.
    pub days_of_cover: Option<i64>,
    pub reorder_point: i64,
    pub suggested_reorder_quantity: i64,
    pub forecast_next_7d: i64,
    /// The last 28 days, oldest first.
    pub daily: Vec<(i32, DaySales)>,
}

/// Reorder point and suggestion of a product that sells `velocity` a day (API.md).
fn reorder(p: &Product, velocity: i64) -> (i64, i64) {
    let days = i64::from(p.info.lead_time_days) + i64::from(p.info.safety_stock_days);
    let point = velocity * days;
    let stock = p.current_stock().0 as i64;
    let mut suggested = (point + i64::from(HORIZON_DAYS) * velocity - stock).max(0);
    if p.info.unit.is_counted() {
        suggested = (suggested + 999) / 1000 * 1000;
    }
    (point, suggested)
}

/// The product's report as of store-local day `today` (the 28-day window ends with it).
pub fn product_report(sales: &Sales, p: &Product, today: i32) -> ProductReport {
    let id = &p.info.product_id;
    let window = sales.total(id, today, WINDOW_DAYS);
    let velocity = mul_div_round(i128::from(window.units), 1, i128::from(WINDOW_DAYS)) as i64;
    let velocity = velocity.max(0);
    let stock = p.current_stock().0 as i64;
    let days_of_cover =
        (velocity > 0).then(|| mul_div_round(i128::from(stock), 100, i128::from(velocity)) as i64);
    let (reorder_point, suggested_reorder_quantity) = reorder(p, velocity);
    let daily = sales.daily(id, today, WINDOW_DAYS);
    let history: Vec<i64> = daily.iter().map(|(_, s)| s.units).collect();
    ProductReport {
        units_sold_7d: sales.total(id, today, HORIZON_DAYS).units,
        units_sold_28d: window.units,
        revenue_28d: window.revenue,
        velocity_per_day: velocity,
        days_of_cover,
        reorder_point,
        suggested_reorder_quantity,
        forecast_next_7d: forecast(&history).iter().sum(),
        daily,
    }
}

/// The next 7 days' units (thousandths), from the last 28 days (oldest first, the last one
/// today): for each day, a weighted mean of the same weekday in the 4 weeks before
/// ([`WEEK_WEIGHTS`]), never below zero. It follows a weekly pattern (a kirana's Sunday is
/// not its Tuesday) and a changing level, in integers; `BENCHMARKS.md` has its back-test.
pub fn forecast(history: &[i64]) -> [i64; HORIZON_DAYS as usize] {
    let n = history.len();
    let mut out = [0; HORIZON_DAYS as usize];
    for (k, slot) in out.iter_mut().enumerate() {
        // Day n + k (0-based from the window's start); the same weekday w weeks back.
        let (mut sum, mut weight) = (0i64, 0i64);
        for (w, wt) in WEEK_WEIGHTS.iter().enumerate() {
            let back = 7 * (w + 1);
            if let Some(i) = (n + k).checked_sub(back).filter(|i| *i < n) {
                sum += history[i] * wt;
                weight += wt;
            }
        }
        *slot = if weight == 0 {
            0
        } else {
            (mul_div_round(i128::from(sum), 1, i128::from(weight)) as i64).max(0)
        };
    }
    out
}

/// The naive forecast the back-test compares with: the 28-day mean, every day.
pub fn naive_forecast(history: &[i64]) -> [i64; HORIZON_DAYS as usize] {
    let mean = mul_div_round(
        i128::from(history.iter().sum::<i64>()),
        1,
        history.len().max(1) as i128,
    ) as i64;
    [mean.max(0); HORIZON_DAYS as usize]
}

/// Mean absolute error of a forecaster over a history: from day 28 on, each day forecasts
/// the next 7 from the 28 before; thousandths per forecast day.
pub fn backtest(history: &[i64], method: fn(&[i64]) -> [i64; HORIZON_DAYS as usize]) -> i64 {
    let (w, h) = (WINDOW_DAYS as usize, HORIZON_DAYS as usize);
    let (mut error, mut count) = (0i64, 0i64);
    for start in 0..history.len().saturating_sub(w + h - 1) {
        let f = method(&history[start..start + w]);
        for (k, predicted) in f.iter().enumerate() {
            error += (predicted - history[start + w + k]).abs();
            count += 1;
        }
    }
    if count == 0 { 0 } else { error / count }
}

/// A store over `days`: confirmed orders, units and revenue, and the 10 best sellers.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreReport {
    pub orders: i64,
    pub units: i64,
    pub revenue: i64,
    /// (product, units, revenue), most units first (then by id).
    pub top_sellers: Vec<(ProductId, i64, i64)>,
}

pub fn store_report(sales: &Sales, today: i32, days: i32) -> StoreReport {
    let mut all: Vec<(ProductId, i64, i64)> = sales
        .products()
        .map(|id| {
            let t = sales.total(id, today, days);
            (id.clone(), t.units, t.revenue)
        })
        .filter(|(_, units, revenue)| *units != 0 || *revenue != 0)
        .collect();
    let units = all.iter().map(|t| t.1).sum();
    let revenue = all.iter().map(|t| t.2).sum();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(TOP_SELLERS);
    StoreReport {
        orders: sales.orders(today, days),
        units,
        revenue,
        top_sellers: all,
    }
}

/// Products at or below their reorder point: (product, reorder point, suggestion).
pub fn reorder_list<'a>(
    sales: &Sales,
    products: impl Iterator<Item = &'a Product>,
    today: i32,
) -> Vec<(&'a Product, i64, i64)> {
    products
        .filter_map(|p| {
            let window = sales.total(&p.info.product_id, today, WINDOW_DAYS);
            let velocity =
                (mul_div_round(i128::from(window.units), 1, i128::from(WINDOW_DAYS)) as i64).max(0);
            let (point, suggested) = reorder(p, velocity);
            (p.current_stock().0 as i64 <= point).then_some((p, point, suggested))
        })
        .collect()
}

/// A quantity in thousandths as a `Qty` (negative totals show as zero).
pub fn qty(milli: i64) -> Qty {
    Qty(milli.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 90 days of a product's sales with a weekly pattern (weekends busier), a slow rise,
    /// and ±25 % noise from a fixed seed: thousandths per day.
    fn generated_history() -> Vec<i64> {
        let weekly = [80, 90, 100, 100, 110, 150, 170]; // percent of the base, Monday first
        let mut seed: u64 = 42;
        (0..90)
            .map(|d| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let noise = (seed >> 33) % 51; // 0..=50 → −25 %..+25 %
                let base = 10_000 + d as i64 * 40; // 10 units a day, rising 0.04 a day
                base * weekly[d % 7] / 100 * (75 + noise as i64) / 100
            })
            .collect()
    }

    #[test]
    fn the_forecast_beats_the_naive_one_on_a_weekly_history() {
        // Goal: on 90 days with a weekly pattern, the weekday forecast's mean absolute error
        // is well below the 28-day mean's (the figures are in BENCHMARKS.md).
        let history = generated_history();
        let ours = backtest(&history, forecast);
        let naive = backtest(&history, naive_forecast);
        let mean = history.iter().sum::<i64>() / history.len() as i64;
        println!(
            "forecast back-test, 90 days, 56 origins × 7 days: MAE weekday-weighted {:.3} units, naive {:.3} units ({:.1} % vs {:.1} % of the mean daily sales {:.3})",
            ours as f64 / 1000.0,
            naive as f64 / 1000.0,
            ours as f64 * 100.0 / mean as f64,
            naive as f64 * 100.0 / mean as f64,
            mean as f64 / 1000.0
        );
        assert!(ours * 10 < naive * 8, "ours {ours}, naive {naive}");
    }

    #[test]
    fn a_flat_history_forecasts_itself_and_an_empty_one_nothing() {
        assert_eq!(forecast(&[2000; 28]), [2000; 7]);
        assert_eq!(forecast(&[]), [0; 7]);
        assert_eq!(naive_forecast(&[0; 28]), [0; 7]);
    }

    /// The map `DaySeries` replaced, as the model of what it must do and how it is encoded.
    type Model = BTreeMap<i32, DaySales>;

    fn model_add(m: &mut Model, day: i32, units: i64) {
        let d = m.entry(day).or_default();
        d.units += units;
        d.revenue += units * 2;
        m.retain(|k, _| *k > day - DAYS_KEPT);
    }

    proptest::proptest! {
        #[test]
        fn a_day_series_does_what_the_map_did_and_encodes_the_same(
            adds in proptest::collection::vec((-5i32..900, -3i64..10), 0..60)
        ) {
            let (mut series, mut model) = (DaySeries::default(), Model::new());
            for (day, units) in adds {
                series.add(day, units, units * 2);
                model_add(&mut model, day, units);
            }
            let flat: Vec<(i32, DaySales)> = model.iter().map(|(d, s)| (*d, *s)).collect();
            proptest::prop_assert_eq!(&series.0, &flat);
            proptest::prop_assert_eq!(series.range(100, 500), &flat.iter().copied()
                .filter(|(d, _)| (100..=500).contains(d)).collect::<Vec<_>>()[..]);
            proptest::prop_assert_eq!(series.get(7), model.get(&7).copied());
            // Snapshots hold it: the bytes are the map's, both ways.
            let config = bincode::config::standard();
            let bytes = bincode::serde::encode_to_vec(&series, config).unwrap();
            proptest::prop_assert_eq!(&bytes, &bincode::serde::encode_to_vec(&model, config).unwrap());
            let (back, _): (DaySeries, usize) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
            proptest::prop_assert_eq!(back, series);
        }
    }

    #[test]
    fn days_turn_at_the_stores_midnight() {
        // 2026-11-25T18:29:59Z is 23:59:59 in India; 18:30:00Z is the next day there.
        let before = 1_795_631_399_000;
        assert_eq!(local_day(before + 1000, 330), local_day(before, 330) + 1);
        assert_eq!(local_day(before, 0), local_day(before + 1000, 0));
        assert_eq!(local_day(-1, 0), -1);
    }
}
