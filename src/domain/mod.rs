//! The pure core: stock ledger, pricing and quantities. No I/O, no async, no clocks (time
//! comes in as an argument), so every rule here is tested in microseconds.

pub mod ids;
pub mod model;
pub mod number;
pub mod pricing;
pub mod state;
pub mod tokens;

pub use ids::{OrderId, OrderIdCodec, ProductId, ReservationId, StoreId, TokenId};
pub use model::*;
pub use number::{Paise, Qty, Unit};
pub use state::{Command, DomainError, DraftItem, OrderDraft, Outcome, Shortage, StoreState};
pub use tokens::{StoreToken, TOKENS_PER_STORE_MAX, TokenDigest, Tokens};
