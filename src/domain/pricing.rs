//! What an order costs: line totals, tax at the store's rate, the delivery fee.

use super::model::StoreConfig;
use super::number::{MONEY_PAISE_MAX, Paise, Qty, mul_div_round};

/// `unit_price × quantity`, rounded half away from zero to the paisa.
pub fn line_total(unit_price: Paise, quantity: Qty) -> Paise {
    let total = mul_div_round(i128::from(unit_price.0), i128::from(quantity.0), 1000);
    debug_assert!(total >= 0 && total <= i128::from(i64::MAX));
    Paise(total as i64)
}

/// What returning `quantity` of a line refunds (API.md "Returns"): the amount
/// `quantity × unit_price`, rounded half away from zero to the paisa as a line total is, plus
/// that amount's tax at `tax_rate_bp`, rounded the same way. Delivery is not refunded.
pub fn refund(unit_price: Paise, quantity: Qty, tax_rate_bp: u32) -> Paise {
    let amount = line_total(unit_price, quantity);
    let tax = mul_div_round(i128::from(amount.0), i128::from(tax_rate_bp), 10_000);
    Paise(amount.0 + tax as i64)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Totals {
    pub subtotal: Paise,
    pub tax: Paise,
    pub delivery_fee: Paise,
    pub total_amount: Paise,
}

/// Totals for the given line totals, or `None` when the amount is beyond `MONEY_PAISE_MAX`.
pub fn totals(store: &StoreConfig, line_totals: impl IntoIterator<Item = Paise>) -> Option<Totals> {
    let mut subtotal: i128 = 0;
    for line in line_totals {
        subtotal += i128::from(line.0);
        if subtotal > i128::from(MONEY_PAISE_MAX) {
            return None;
        }
    }
    let tax = mul_div_round(subtotal, i128::from(store.tax_rate_bp), 10_000);
    let free = store
        .free_delivery_above
        .is_some_and(|above| subtotal >= i128::from(above.0));
    let delivery_fee = if free {
        0
    } else {
        i128::from(store.delivery_fee.0)
    };
    let total = subtotal + tax + delivery_fee;
    if total > i128::from(MONEY_PAISE_MAX) {
        return None;
    }
    Some(Totals {
        subtotal: Paise(subtotal as i64),
        tax: Paise(tax as i64),
        delivery_fee: Paise(delivery_fee as i64),
        total_amount: Paise(total as i64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::StoreId;

    fn store(tax_rate_bp: u32, fee: i64, free_above: Option<i64>) -> StoreConfig {
        StoreConfig {
            store_id: StoreId::parse("S").unwrap(),
            name: "s".into(),
            tax_rate_bp,
            delivery_fee: Paise(fee),
            free_delivery_above: free_above.map(Paise),
            location: None,
            updated_ms: 0,
            utc_offset_minutes: 330,
        }
    }

    #[test]
    fn the_seed_order_totals_49_40() {
        // Goal: the seed's 2 × 14.00 at 5 % with a fee of 20 gives exactly 49.40.
        let line = line_total(Paise(1400), Qty::from_units(2));
        let t = totals(&store(500, 2000, None), [line]).unwrap();
        assert_eq!(t.subtotal, Paise(2800));
        assert_eq!(t.tax, Paise(140));
        assert_eq!(t.total_amount, Paise(4940));
    }

    #[test]
    fn fractional_lines_round_half_away_and_delivery_can_be_free() {
        // 0.25 kg at 52.50 = 13.125 → 13.13; at or above the threshold delivery is free.
        assert_eq!(line_total(Paise(5250), Qty(250)), Paise(1313));
        let t = totals(&store(500, 3000, Some(49_900)), [Paise(49_900)]).unwrap();
        assert_eq!(t.delivery_fee, Paise(0));
        assert_eq!(t.tax, Paise(2495));
        let t = totals(&store(500, 3000, Some(49_900)), [Paise(49_899)]).unwrap();
        assert_eq!(t.delivery_fee, Paise(3000));
    }

    #[test]
    fn refunds_round_the_amount_then_its_tax_half_away_from_zero() {
        // 0.333 kg at 47.50 = 15.8175 → 15.82; 5 % of it = 0.791 → 0.79; refund 16.61.
        assert_eq!(refund(Paise(4750), Qty(333), 500), Paise(1661));
        // 1 piece at 0.10 with 5 %: the tax 0.005 rounds away from zero to 0.01.
        assert_eq!(refund(Paise(10), Qty(1000), 500), Paise(11));
        // 12.5 % of 0.04 = 0.005 → 0.01 as well; no tax, no change.
        assert_eq!(refund(Paise(4), Qty(1000), 1250), Paise(5));
        assert_eq!(refund(Paise(4750), Qty(333), 0), Paise(1582));
        // A whole line refunds its line total plus that total's tax.
        let line = line_total(Paise(1400), Qty::from_units(2));
        assert_eq!(
            refund(Paise(1400), Qty::from_units(2), 500),
            Paise(line.0 + 140)
        );
    }
}
