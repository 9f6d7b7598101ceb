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

text_id!(
    /// A store token's id, `TOK` followed by 16 upper-case hex digits: it names the token
    /// (to revoke it) and is not a secret.
    TokenId
);

text_id!(
    /// A webhook's id, `WH` followed by 16 upper-case hex digits.
    WebhookId
);

impl WebhookId {
    pub fn from_number(n: u64) -> WebhookId {
        WebhookId(format!("WH{n:016X}").into())
    }
}

text_id!(
    /// A return's id, `RET` followed by 16 upper-case hex digits.
    ReturnId
);

impl ReturnId {
    pub fn from_number(n: u64) -> ReturnId {
        ReturnId(format!("RET{n:016X}").into())
    }
}

impl TokenId {
    pub fn from_number(n: u64) -> TokenId {
        TokenId(format!("TOK{n:016X}").into())
    }
}

/// An order inside godown: a global sequence number, tagged (`SEQ_TAG`), or the 32-bit id
/// of an order placed before private ids. Its public form (`ORD` + 16 hex digits, not
/// derivable from the number) is made at the HTTP edge by an [`OrderIdCodec`] with the data
/// directory's secret; inside, `Display` writes `ORD#<seq>` (the ledger's references, logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrderId(pub u64);

/// Set in every id made from a sequence number; ids of the earlier layout are below 2³².
const SEQ_TAG: u64 = 1 << 63;
/// The largest sequence number (so that it fits under the tag).
pub const ORDER_SEQ_MAX: u64 = SEQ_TAG - 1;

/// Order numbers one process may issue: 2³². The processes of a region each take their
/// own partition of the numbers (`serve --order-partition N`) and share the order id key, so
/// an order keeps its number and its public id when its store moves to another process.
pub const ORDER_PARTITION_LEN: u64 = 1 << 32;
/// Partitions: the archive keys order blocks by a 32-bit block number (`wal::views`), which
/// bounds order numbers by 16 × 2³² = 2³⁶, 16 partitions of 2³².
pub const ORDER_PARTITIONS: u8 = 16;

/// The order numbers of partition `p` (below [`ORDER_PARTITIONS`]): partition 0 starts at 1.
pub fn order_partition(p: u8) -> std::ops::Range<u64> {
    let start = u64::from(p) * ORDER_PARTITION_LEN;
    start.max(1)..start + ORDER_PARTITION_LEN
}

/// Ids of orders placed before private ids were a public bijection of a 32-bit sequence
/// number (still read: such orders keep their `ORD` + 8 hex digit ids).
const LEGACY_MUL: u32 = 0x9E37_79B1;
const LEGACY_XOR: u32 = 0x5BD1_E995;
const LEGACY_MUL_INV: u32 = {
    // Newton's iteration for the inverse of an odd number modulo 2^32.
    let mut inv = LEGACY_MUL;
    let mut i = 0;
    while i < 5 {
        inv = inv.wrapping_mul(2u32.wrapping_sub(LEGACY_MUL.wrapping_mul(inv)));
        i += 1;
    }
    inv
};
const _: () = assert!(LEGACY_MUL.wrapping_mul(LEGACY_MUL_INV) == 1);

impl OrderId {
    pub fn from_seq(seq: u64) -> OrderId {
        assert!(
            seq <= ORDER_SEQ_MAX,
            "order sequence numbers stay below 2^63"
        );
        OrderId(seq | SEQ_TAG)
    }

    /// Whether this is the id of an order placed before private ids.
    pub fn is_legacy(self) -> bool {
        self.0 & SEQ_TAG == 0
    }

    /// The sequence number of the order.
    pub fn seq(self) -> u64 {
        if self.is_legacy() {
            u64::from((self.0 as u32 ^ LEGACY_XOR).wrapping_mul(LEGACY_MUL_INV))
        } else {
            self.0 & ORDER_SEQ_MAX
        }
    }

    /// The id of the order with legacy sequence number `seq` (tests of older layouts).
    pub fn legacy(seq: u32) -> OrderId {
        OrderId(u64::from(seq.wrapping_mul(LEGACY_MUL) ^ LEGACY_XOR))
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_legacy() {
            write!(f, "ORD{:08X}", self.0)
        } else {
            write!(f, "ORD#{}", self.seq())
        }
    }
}

/// The public form of order ids: `ORD` + 16 upper-case hex digits, a keyed permutation of the
/// sequence number (a 4-round Feistel network whose round function is SHA-256 of the key,
/// the round and the half). Distinct for distinct orders, never reused, and without the key
/// no id says anything about another. Orders placed before private ids keep `ORD` + 8 hex.
#[derive(Clone)]
pub struct OrderIdCodec {
    key: [u8; 32],
}

/// Feistel rounds: 4 make a pseudo-random permutation from a pseudo-random function.
const FEISTEL_ROUNDS: u8 = 4;

impl OrderIdCodec {
    pub fn new(key: [u8; 32]) -> OrderIdCodec {
        OrderIdCodec { key }
    }

    /// A name for the key that does not reveal it: the first 8 bytes of SHA-256 over a
    /// label and the key, in hex. Two processes can move stores between them only if these
    /// are equal (their orders keep their public ids).
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"godown order id key fingerprint");
        h.update(self.key);
        h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn round(&self, round: u8, half: u32) -> u32 {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.key);
        h.update([round]);
        h.update(half.to_le_bytes());
        let d = h.finalize();
        u32::from_le_bytes([d[0], d[1], d[2], d[3]])
    }

    fn permute(&self, x: u64) -> u64 {
        let (mut l, mut r) = ((x >> 32) as u32, x as u32);
        for round in 0..FEISTEL_ROUNDS {
            (l, r) = (r, l ^ self.round(round, r));
        }
        (u64::from(l) << 32) | u64::from(r)
    }

    fn unpermute(&self, y: u64) -> u64 {
        let (mut l, mut r) = ((y >> 32) as u32, y as u32);
        for round in (0..FEISTEL_ROUNDS).rev() {
            (l, r) = (r ^ self.round(round, l), l);
        }
        (u64::from(l) << 32) | u64::from(r)
    }

    /// The id a client sees.
    pub fn public(&self, id: OrderId) -> String {
        if id.is_legacy() {
            id.to_string()
        } else {
            format!("ORD{:016X}", self.permute(id.seq()))
        }
    }

    /// The order a public id names, if it is well-formed (whether it exists is another
    /// question). The internal form `ORD#<seq>` is not accepted.
    pub fn parse_public(&self, s: &str) -> Option<OrderId> {
        let hex = s.strip_prefix("ORD")?;
        if !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        {
            return None;
        }
        match hex.len() {
            8 => u32::from_str_radix(hex, 16)
                .ok()
                .map(|v| OrderId(u64::from(v))),
            16 => {
                let seq = self.unpermute(u64::from_str_radix(hex, 16).ok()?);
                (seq <= ORDER_SEQ_MAX).then(|| OrderId::from_seq(seq))
            }
            _ => None,
        }
    }

    /// A ledger reference as a client sees it: an order's internal form becomes its public
    /// id; anything else is shown as it is.
    pub fn public_reference(&self, reference: &str) -> String {
        match reference
            .strip_prefix("ORD#")
            .and_then(|n| n.parse::<u64>().ok())
        {
            Some(seq) if seq <= ORDER_SEQ_MAX => self.public(OrderId::from_seq(seq)),
            _ => reference.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

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
    fn public_order_ids_are_a_keyed_permutation_that_tells_nothing_about_neighbours() {
        // Goal: 10,000 consecutive orders get 10,000 distinct ids of the documented shape,
        // each parses back to its order; consecutive ids share no constant difference or
        // xor; another key gives other ids; legacy 8-digit ids still parse and print as they
        // were; malformed or internal forms do not parse.
        let codec = OrderIdCodec::new([7; 32]);
        let mut seen = HashSet::new();
        let mut diffs = HashSet::new();
        let mut xors = HashSet::new();
        let mut last = None;
        for seq in 1..=10_000u64 {
            let id = OrderId::from_seq(seq);
            let public = codec.public(id);
            assert_eq!(public.len(), 19, "{public}");
            assert!(public.starts_with("ORD"));
            assert!(
                public[3..]
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
            );
            assert_eq!(codec.parse_public(&public), Some(id));
            let value = u64::from_str_radix(&public[3..], 16).unwrap();
            if let Some(prev) = last {
                diffs.insert(value.wrapping_sub(prev));
                xors.insert(value ^ prev);
            }
            last = Some(value);
            assert!(seen.insert(public));
        }
        assert!(
            diffs.len() > 9_990 && xors.len() > 9_990,
            "no arithmetic pattern"
        );
        let other = OrderIdCodec::new([8; 32]);
        assert_ne!(
            other.public(OrderId::from_seq(1)),
            codec.public(OrderId::from_seq(1))
        );
        let legacy = OrderId::legacy(1);
        assert_eq!(codec.public(legacy), "ORDC5E69024");
        assert_eq!(codec.parse_public("ORDC5E69024"), Some(legacy));
        assert_eq!(legacy.seq(), 1);
        assert_eq!(codec.parse_public("ORD#1"), None);
        assert_eq!(codec.parse_public("ORDc5e69024"), None);
        assert_eq!(codec.parse_public("ORDC5E6902"), None);
        assert_eq!(
            codec.public_reference("ORD#5"),
            codec.public(OrderId::from_seq(5))
        );
        assert_eq!(
            codec.public_reference("RSV00000000000000FF"),
            "RSV00000000000000FF"
        );
    }

    #[test]
    fn order_ids_round_trip() {
        for seq in [0, 1, 2, 77, u64::from(u32::MAX) + 5, ORDER_SEQ_MAX] {
            assert_eq!(OrderId::from_seq(seq).seq(), seq);
        }
        for seq in [0, 1, 2, 77, u32::MAX] {
            assert_eq!(OrderId::legacy(seq).seq(), u64::from(seq));
        }
        assert_eq!(OrderId::from_seq(12).to_string(), "ORD#12");
        assert_ne!(OrderId::from_seq(1), OrderId::from_seq(2));
        assert_eq!(
            ReservationId::from_number(255).as_str(),
            "RSV00000000000000FF"
        );
    }
}
