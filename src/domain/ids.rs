//! Identifiers, parsed once at the edge so the core only ever sees valid ones.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest store, product or reservation id, in bytes: long enough for any ULID- or
/// UUID-based scheme with a prefix, short enough to keep keys and logs compact.
pub const ID_LEN_MAX: usize = 128;

/// Whether `s` is 1..=128 bytes of `[A-Za-z0-9_.:-]`.
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= ID_LEN_MAX
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(Box<str>);

        impl $name {
            /// Accepts only a valid id (see [`is_valid_id`]).
            pub fn parse(s: &str) -> Option<Self> {
                is_valid_id(s).then(|| Self(s.into()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_id!(
    /// A store's id, chosen by its owner (`STORE-01K8…`).
    StoreId
);
text_id!(
    /// A product's id within a store (`GP1759847855933`).
    ProductId
);
text_id!(
    /// A cart hold's id, `RSV` followed by 16 upper-case hex digits.
    ReservationId
);

impl ReservationId {
    pub fn from_number(n: u64) -> ReservationId {
        ReservationId(format!("RSV{n:016X}").into())
    }
}

/// An order id: `ORD` followed by 8 upper-case hex digits, i.e. a 32-bit number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrderId(pub u32);

/// Order ids are a bijection of a global sequence number: unique without any claim or
/// lookup, yet not guessable at a glance (`ORD00000001`, `ORD00000002`… would invite it).
const ORDER_MUL: u32 = 0x9E37_79B1;
const ORDER_XOR: u32 = 0x5BD1_E995;
const ORDER_MUL_INV: u32 = {
    // Newton's iteration for the inverse of an odd number modulo 2^32.
    let mut inv = ORDER_MUL;
    let mut i = 0;
    while i < 5 {
        inv = inv.wrapping_mul(2u32.wrapping_sub(ORDER_MUL.wrapping_mul(inv)));
        i += 1;
    }
    inv
};
const _: () = assert!(ORDER_MUL.wrapping_mul(ORDER_MUL_INV) == 1);

impl OrderId {
    pub fn from_seq(seq: u32) -> OrderId {
        OrderId(seq.wrapping_mul(ORDER_MUL) ^ ORDER_XOR)
    }

    /// The sequence number this id was made from.
    pub fn seq(self) -> u32 {
        (self.0 ^ ORDER_XOR).wrapping_mul(ORDER_MUL_INV)
    }

    pub fn parse(s: &str) -> Option<OrderId> {
        let hex = s.strip_prefix("ORD")?;
        if hex.len() != 8
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        {
            return None;
        }
        u32::from_str_radix(hex, 16).ok().map(OrderId)
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ORD{:08X}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_only_the_contract_alphabet() {
        assert!(StoreId::parse("STORE-01K8NJ40V9KFKX2Y2FMK466WFH").is_some());
        assert!(ProductId::parse("a.b:c_d-9").is_some());
        assert!(ProductId::parse("").is_none());
        assert!(ProductId::parse("has space").is_none());
        assert!(ProductId::parse(&"x".repeat(129)).is_none());
        assert!(ProductId::parse(&"x".repeat(128)).is_some());
        assert!(StoreId::parse("ünï").is_none());
    }

    #[test]
    fn order_ids_round_trip() {
        let id = OrderId(0x20F3C25C);
        assert_eq!(id.to_string(), "ORD20F3C25C");
        assert_eq!(OrderId::parse("ORD20F3C25C"), Some(id));
        for seq in [0, 1, 2, 77, u32::MAX] {
            assert_eq!(OrderId::from_seq(seq).seq(), seq);
        }
        assert_ne!(OrderId::from_seq(1), OrderId::from_seq(2));
        assert_eq!(OrderId::parse("ORD20f3c25c"), None);
        assert_eq!(OrderId::parse("ORD20F3C25"), None);
        assert_eq!(
            ReservationId::from_number(255).as_str(),
            "RSV00000000000000FF"
        );
    }
}
