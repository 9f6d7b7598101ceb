//! The pure core: stock ledger, pricing and quantities. No I/O, no async, no clocks (time
//! comes in as an argument), so every rule here is tested in microseconds.

pub mod analytics;
pub mod events;
pub mod ids;
pub mod layout;
pub mod model;
pub mod number;
pub mod pricing;
pub mod region;
pub mod state;
pub mod tokens;
pub mod webhooks;

pub use events::{EventData, EventKind, StoreEvent};
pub use ids::{
    OrderId, OrderIdCodec, ProductId, ReservationId, ReturnId, StoreId, TokenId, WebhookId,
};
pub use model::*;
pub use number::{Paise, Qty, Unit};
pub use state::{
    Command, DomainError, DraftItem, ImportRow, OrderDraft, Outcome, ReturnDraft, ReturnItem,
    Shortage, StoreState,
};
pub use tokens::{StoreToken, TOKENS_PER_STORE_MAX, TokenDigest, Tokens};
pub use webhooks::{WEBHOOKS_PER_STORE_MAX, Webhook, Webhooks};
