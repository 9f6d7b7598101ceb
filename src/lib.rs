//! # godown
//!
//! An inventory and order engine for kirana stores that never sells stock it does not have.
//!
//! # Layout
//! - [`domain`]: the pure core — quantities, money, a store's stock ledger, pricing. No I/O.
pub mod domain;
pub mod wal;
