//! Exact decimal quantities and money.
//!
//! Stock is counted in integer thousandths of a unit (`Qty`) and money in integer paise
//! (`Paise`). Both are parsed from the decimal *text* of a JSON number, so `0.1` is exactly
//! 100 thousandths and `0.0001` is an error, never a rounding. No `f64` is involved.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Largest quantity anywhere (a line, a hold, `on_hand`): one billion units, in thousandths.
/// Chosen so that `QTY_MILLI_MAX * PRICE_PAISE_MAX / 1000` fits an `i64` with room to spare.
pub const QTY_MILLI_MAX: u64 = 1_000_000_000 * 1000;
/// Largest unit price: ten million rupees, in paise.
pub const PRICE_PAISE_MAX: i64 = 10_000_000 * 100;
/// Largest order total we will compute (ten trillion rupees): beyond it an order is refused.
pub const MONEY_PAISE_MAX: i64 = 1_000_000_000_000_000;

const _: () =
    assert!((QTY_MILLI_MAX as i128) * (PRICE_PAISE_MAX as i128) / 1000 < i64::MAX as i128);

/// Why a decimal text was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalError {
    /// Not a JSON number at all (a string, `null`, garbage).
    NotANumber,
    /// More fractional digits than the scale allows.
    TooPrecise,
    /// Below zero.
    Negative,
    /// Larger than the caller's maximum.
    TooLarge,
}

/// Parses the text of a JSON number into an integer scaled by `10^scale`, exactly.
///
/// Accepts `-`, digits, a fraction and an exponent (`1e2`, `0.2500`, `2.5E-1`); refuses any
/// value whose exact decimal expansion needs more than `scale` fractional digits.
pub fn parse_scaled(text: &str, scale: u32, max: u128) -> Result<i128, DecimalError> {
    let bytes = text.trim().as_bytes();
    let (negative, rest) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        _ => (false, bytes),
    };
    let mut digits: Vec<u8> = Vec::with_capacity(rest.len());
    let mut exponent: i64 = 0; // value = digits * 10^exponent
    let mut i = 0;
    let mut int_digits = 0;
    while i < rest.len() && rest[i].is_ascii_digit() {
        digits.push(rest[i] - b'0');
        i += 1;
        int_digits += 1;
    }
    if int_digits == 0 {
        return Err(DecimalError::NotANumber);
    }
    if i < rest.len() && rest[i] == b'.' {
        i += 1;
        let start = i;
        while i < rest.len() && rest[i].is_ascii_digit() {
            digits.push(rest[i] - b'0');
            exponent -= 1;
            i += 1;
        }
        if i == start {
            return Err(DecimalError::NotANumber);
        }
    }
    if i < rest.len() && (rest[i] == b'e' || rest[i] == b'E') {
        i += 1;
        let exp_negative = match rest.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let start = i;
        let mut e: i64 = 0;
        while i < rest.len() && rest[i].is_ascii_digit() {
            e = (e * 10 + i64::from(rest[i] - b'0')).min(1_000_000);
            i += 1;
        }
        if i == start {
            return Err(DecimalError::NotANumber);
        }
        exponent += if exp_negative { -e } else { e };
    }
    if i != rest.len() {
        return Err(DecimalError::NotANumber);
    }
    // Drop trailing zeros of the mantissa: they never make a value more precise.
    while digits.len() > 1 && *digits.last().unwrap_or(&1) == 0 {
        digits.pop();
        exponent += 1;
    }
    let first_nonzero = digits.iter().position(|&d| d != 0);
    let Some(first_nonzero) = first_nonzero else {
        return Ok(0);
    };
    let digits = &digits[first_nonzero..];
    let scaled_exponent = exponent + i64::from(scale);
    if scaled_exponent < 0 {
        return Err(DecimalError::TooPrecise);
    }
    if negative {
        return Err(DecimalError::Negative);
    }
    // digits.len() + scaled_exponent bounds the number of decimal digits of the result.
    if digits.len() as i64 + scaled_exponent > 38 {
        return Err(DecimalError::TooLarge);
    }
    let mut value: u128 = 0;
    for &d in digits {
        value = value * 10 + u128::from(d);
    }
    for _ in 0..scaled_exponent {
        value *= 10;
    }
    if value > max {
        return Err(DecimalError::TooLarge);
    }
    Ok(value as i128)
}

/// Writes `value / 10^scale` as the shortest exact decimal (`42`, `9.75`, `-0.5`).
pub fn format_scaled(value: i128, scale: u32, out: &mut String) {
    use std::fmt::Write;
    let divisor = 10i128.pow(scale);
    if value < 0 {
        out.push('-');
    }
    let magnitude = value.unsigned_abs();
    let whole = magnitude / divisor as u128;
    let mut fraction = magnitude % divisor as u128;
    let _ = write!(out, "{whole}");
    if fraction != 0 {
        let mut width = scale as usize;
        while fraction.is_multiple_of(10) {
            fraction /= 10;
            width -= 1;
        }
        let _ = write!(out, ".{fraction:0width$}");
    }
}

/// A quantity of stock in thousandths of its unit; never negative.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Qty(pub u64);

impl Qty {
    pub const ZERO: Qty = Qty(0);

    /// Parses a JSON number's text as a quantity (at most 3 fractional digits, at most
    /// one billion units, zero allowed: callers decide whether zero is meaningful).
    pub fn parse(text: &str) -> Result<Qty, DecimalError> {
        parse_scaled(text, 3, u128::from(QTY_MILLI_MAX)).map(|v| Qty(v as u64))
    }

    pub fn from_units(units: u64) -> Qty {
        Qty(units * 1000)
    }

    pub fn milli(self) -> u64 {
        self.0
    }

    pub fn is_whole(self) -> bool {
        self.0.is_multiple_of(1000)
    }
}

impl fmt::Display for Qty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        format_scaled(i128::from(self.0), 3, &mut s);
        f.write_str(&s)
    }
}

/// An amount of money in paise (1/100 rupee).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Paise(pub i64);

impl Paise {
    /// Parses a JSON number's text as rupees with at most 2 fractional digits.
    pub fn parse(text: &str, max: i64) -> Result<Paise, DecimalError> {
        parse_scaled(text, 2, max as u128).map(|v| Paise(v as i64))
    }
}

impl fmt::Display for Paise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        format_scaled(i128::from(self.0), 2, &mut s);
        f.write_str(&s)
    }
}

/// The unit a product is sold in. `Pieces` and `Pack` are counted in whole units only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Unit {
    Pieces,
    Kg,
    G,
    Litre,
    Ml,
    Pack,
}

impl Unit {
    pub fn parse(s: &str) -> Option<Unit> {
        Some(match s {
            "pieces" => Unit::Pieces,
            "kg" => Unit::Kg,
            "g" => Unit::G,
            "litre" => Unit::Litre,
            "ml" => Unit::Ml,
            "pack" => Unit::Pack,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Pieces => "pieces",
            Unit::Kg => "kg",
            Unit::G => "g",
            Unit::Litre => "litre",
            Unit::Ml => "ml",
            Unit::Pack => "pack",
        }
    }

    /// Whether quantities of this unit must be whole numbers.
    pub fn is_counted(self) -> bool {
        matches!(self, Unit::Pieces | Unit::Pack)
    }

    /// The word used in a sentence: "42 units", "9.75 kg".
    pub fn sentence_word(self) -> &'static str {
        if self.is_counted() {
            "units"
        } else {
            self.as_str()
        }
    }
}

/// `value * numerator / denominator`, rounded half away from zero.
pub fn mul_div_round(value: i128, numerator: i128, denominator: i128) -> i128 {
    debug_assert!(denominator > 0);
    let product = value * numerator;
    let half = denominator / 2;
    if product >= 0 {
        (product + half) / denominator
    } else {
        (product - half) / denominator
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_exactly_or_not_at_all() {
        // Goal: every accepted spelling maps to the exact thousandths; every too-precise or
        // malformed one is refused rather than rounded.
        assert_eq!(Qty::parse("2"), Ok(Qty(2000)));
        assert_eq!(Qty::parse("0.25"), Ok(Qty(250)));
        assert_eq!(Qty::parse("0.2500"), Ok(Qty(250)));
        assert_eq!(Qty::parse("1e2"), Ok(Qty(100_000)));
        assert_eq!(Qty::parse("2.5E-1"), Ok(Qty(250)));
        assert_eq!(Qty::parse("1000000000"), Ok(Qty(QTY_MILLI_MAX)));
        assert_eq!(Qty::parse("0.0001"), Err(DecimalError::TooPrecise));
        assert_eq!(Qty::parse("1000000000.001"), Err(DecimalError::TooLarge));
        assert_eq!(Qty::parse("-1"), Err(DecimalError::Negative));
        assert_eq!(Qty::parse("\"2\""), Err(DecimalError::NotANumber));
        assert_eq!(Qty::parse("null"), Err(DecimalError::NotANumber));
        assert_eq!(Qty::parse("1e999999999"), Err(DecimalError::TooLarge));
        assert_eq!(Qty::parse("0e5"), Ok(Qty(0)));
        assert_eq!(Qty::parse("1."), Err(DecimalError::NotANumber));
    }

    #[test]
    fn money_formats_as_shortest_decimal() {
        // Goal: output numbers read like the contract's examples (49.4, 42, 9.75).
        assert_eq!(Paise(4940).to_string(), "49.4");
        assert_eq!(Paise(1400).to_string(), "14");
        assert_eq!(Paise(5).to_string(), "0.05");
        assert_eq!(Qty(9750).to_string(), "9.75");
        assert_eq!(Qty(42000).to_string(), "42");
        assert_eq!(Qty(1).to_string(), "0.001");
        assert_eq!(Paise::parse("49.40", PRICE_PAISE_MAX), Ok(Paise(4940)));
        assert_eq!(
            Paise::parse("0.001", PRICE_PAISE_MAX),
            Err(DecimalError::TooPrecise)
        );
    }

    #[test]
    fn rounding_is_half_away_from_zero() {
        assert_eq!(mul_div_round(2800, 500, 10_000), 140);
        assert_eq!(mul_div_round(25, 1, 10), 3);
        assert_eq!(mul_div_round(-25, 1, 10), -3);
        assert_eq!(mul_div_round(24, 1, 10), 2);
    }
}
