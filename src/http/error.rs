//! `ApiError`: every failure of every route, mapped once to a status and a JSON body
//! `{"error": <stable phrase>, "message": <sentence>, …}` exactly as `shared/API.md` says.

use super::json::{paise_json, qty_json};
use crate::actor::{CallError, StoreError};
use crate::domain::state::LOCK_MILLI_MAX;
use crate::domain::{DomainError, Shortage, TOKENS_PER_STORE_MAX, WEBHOOKS_PER_STORE_MAX};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{Map, Value, json};
use std::fmt;

/// The message of [`ApiError::not_here`] (the search middleware knows it by it).
pub const NOT_HERE: &str = "This process does not serve this store now (it is moving to or from another process). Retry in a second.";

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// The stable phrase clients match on.
    pub error: &'static str,
    pub message: String,
    /// Further fields of the body (`product_id`, `status`, `items`…).
    pub extra: Map<String, Value>,
    pub retry_after_s: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error,
            message: message.into(),
            extra: Map::new(),
            retry_after_s: None,
        }
    }

    pub fn bad_request(error: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, error, message)
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> ApiError {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    pub fn invalid_field(field: &str, why: impl fmt::Display) -> ApiError {
        ApiError::bad_request(
            "Invalid field",
            format!("Field `{field}` is missing or has the wrong type: {why}."),
        )
        .with("field", field)
    }

    pub fn invalid_quantity(what: impl fmt::Display) -> ApiError {
        ApiError::bad_request(
            "Invalid quantity",
            format!(
                "{what}: a quantity must be a number above zero with at most 3 decimals, whole for pieces and packs, and at most 1,000,000,000."
            ),
        )
    }

    pub fn invalid_id(field: &str) -> ApiError {
        ApiError::bad_request(
            "Invalid id",
            format!("`{field}` must be 1 to 128 characters of A-Z a-z 0-9 _ . : -."),
        )
        .with("field", field)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "A valid `Authorization: Bearer` token is required.",
        )
    }

    pub fn forbidden() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "This token may not do this.",
        )
    }

    pub fn not_ready() -> ApiError {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not ready",
            "Recovery is still running; try again shortly.",
        );
        e.retry_after_s = Some(1);
        e
    }

    /// A per-store bound is reached: 503 "Overloaded" (nothing was applied), with why.
    pub fn store_full(message: &str) -> ApiError {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Overloaded", message);
        e.retry_after_s = Some(1);
        e
    }

    /// The store is moving between processes (`crate::moving`): 503 "Store unavailable"
    /// for the second or so of its cutover; nothing was applied.
    pub fn moving() -> ApiError {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Store unavailable",
            "This store is moving to another process; the request was not applied. Retry in a second.",
        );
        e.retry_after_s = Some(1);
        e
    }

    /// The store is arriving here from another process or has left for one: 503 "Store
    /// unavailable" (while a proxy searches the region, 421: ask the next process).
    pub fn not_here() -> ApiError {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Store unavailable",
            NOT_HERE,
        );
        e.retry_after_s = Some(1);
        e
    }

    pub fn overloaded() -> ApiError {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Overloaded",
            "The store cannot keep up right now; the request was not applied. Retry shortly.",
        );
        e.retry_after_s = Some(1);
        e
    }

    pub fn store_not_found() -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "Store not found",
            "No store has this id.",
        )
    }

    pub fn order_not_found() -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "Order not found",
            "No order has this id.",
        )
    }

    /// The log or sled failed: the change is not durable (the process is stopping; a
    /// restart recovers every acknowledged change). 503, so clients retry elsewhere or later.
    pub fn storage(why: impl fmt::Display) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Storage failure",
            format!("The change could not be made durable: {why}."),
        );
        e.retry_after_s = Some(1);
        e
    }

    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("error".into(), Value::from(self.error));
        body.insert("message".into(), Value::from(self.message.clone()));
        for (k, v) in &self.extra {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.error,
            self.message
        )
    }
}

impl ApiError {
    /// This error as a remembered answer (`Idempotency-Key`).
    pub fn answer(&self) -> super::idempotency::Answer {
        super::idempotency::Answer {
            status: self.status.as_u16(),
            body: bytes::Bytes::from(self.body().to_string()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(s) = self.retry_after_s {
            response.insert_header(("Retry-After", s.to_string()));
        }
        response
            .content_type("application/json")
            .body(self.body().to_string())
    }
}

fn shortage_json(s: &Shortage) -> Value {
    json!({
        "product_id": s.product_id.as_str(),
        "product_name": &*s.product_name,
        "requested": qty_json(s.requested),
        "available": qty_json(s.available),
        "shortage": qty_json(crate::domain::Qty(s.requested.0 - s.available.0)),
    })
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> ApiError {
        use DomainError::*;
        match e {
            ProductNotFound(id) => ApiError::new(StatusCode::NOT_FOUND, "Product not found", format!("Product {id} is not in this store."))
                .with("product_id", id.as_str()),
            DuplicateProduct(id) => ApiError::bad_request("Duplicate product", format!("Product {id} appears more than once; send it once with the total quantity."))
                .with("product_id", id.as_str()),
            InvalidQuantity(id) => ApiError::invalid_quantity(format!("Product {id}")).with("product_id", id.as_str()),
            TooManyItems => ApiError::bad_request("Too many items", "At most 500 items per request."),
            TooManyOrders => ApiError::bad_request("Too many orders", "At most 500 orders per batch."),
            NoItems => ApiError::bad_request("Order must contain at least one item", "Send at least one item."),
            PriceChanged { product_id, unit_price } => ApiError::bad_request(
                "Price changed",
                format!("The price of {product_id} is now {unit_price}; review the cart and order again."),
            )
            .with("product_id", product_id.as_str())
            .with("unit_price", paise_json(unit_price)),
            InsufficientStock(shortages) => {
                let first = &shortages[0];
                let message = format!(
                    "Cannot fulfill order. {} has only {} {} available.",
                    first.product_name,
                    first.available,
                    first.unit.sentence_word()
                );
                let mut err = ApiError::bad_request("Insufficient stock", message);
                if let Value::Object(fields) = shortage_json(first) {
                    err.extra = fields;
                }
                err.with("items", Value::Array(shortages.iter().map(shortage_json).collect()))
            }
            TotalTooLarge => ApiError::bad_request("Order too large", "The order's total exceeds what one order may cost."),
            ReservationNotFound => ApiError::new(StatusCode::NOT_FOUND, "Reservation not found", "No open reservation has this id."),
            ReservationExpired => ApiError::new(
                StatusCode::CONFLICT,
                "Reservation expired",
                "The reservation has expired, was already used, or does not exist.",
            ),
            TooManyReservations => ApiError::store_full(
                "This store has 100,000 open holds; one must end (be used, released or expire) first.",
            ),
            TooManyPendingPayments => ApiError::store_full(
                "This store has 100,000 orders awaiting payment; one must be paid, fail or expire first.",
            ),
            OrderNotFound => ApiError::order_not_found(),
            OrderNotPayable(status) => ApiError::new(
                StatusCode::CONFLICT,
                "Order not payable",
                format!("The order is {}; only an order pending payment can be paid.", status.as_str()),
            )
            .with("status", status.as_str()),
            OrderNotCancellable(status) => ApiError::new(
                StatusCode::CONFLICT,
                "Order not cancellable",
                format!("The order is already {}.", status.as_str()),
            )
            .with("status", status.as_str()),
            TooManyUnits => ApiError::bad_request(
                "Too many units",
                format!("One hold or unpaid order may lock at most {} units in all.", LOCK_MILLI_MAX / 1000),
            ),
            TooManyTokens => ApiError::new(
                StatusCode::CONFLICT,
                "Too many tokens",
                format!("A store has at most {TOKENS_PER_STORE_MAX} tokens; revoke one first."),
            ),
            TokenNotFound => ApiError::new(StatusCode::NOT_FOUND, "Token not found", "This store has no live token with this id."),
            TooManyWebhooks => ApiError::new(
                StatusCode::CONFLICT,
                "Too many webhooks",
                format!("A store has at most {WEBHOOKS_PER_STORE_MAX} webhooks; remove one first."),
            ),
            WebhookNotFound => ApiError::new(StatusCode::NOT_FOUND, "Webhook not found", "This store has no webhook with this id."),
            OrderNotReturnable(status) => ApiError::new(
                StatusCode::CONFLICT,
                "Order not returnable",
                format!("The order is {}; only a confirmed order can be returned.", status.as_str()),
            )
            .with("status", status.as_str()),
            // The import route names the CSV line; anywhere else, the row's own error.
            ImportRow { row, error } => ApiError::from(*error).with("row", row),
            InvalidReturnQuantity(id) => ApiError::bad_request(
                "Invalid return quantity",
                format!("Product {id} is not in the order, or not that much of it is left to return."),
            )
            .with("product_id", id.as_str()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Domain(d) => d.into(),
            StoreError::Overloaded => ApiError::overloaded(),
            StoreError::Storage(why) => ApiError::storage(why),
            StoreError::Moving => ApiError::moving(),
        }
    }
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> ApiError {
        match e {
            CallError::StoreNotFound => ApiError::store_not_found(),
            CallError::Overloaded => ApiError::overloaded(),
            CallError::TooManyStores => ApiError::bad_request(
                "Too many stores",
                "This server hosts the most stores it may.",
            ),
            CallError::Stopped => ApiError::storage("the store has stopped"),
            CallError::Moved => ApiError::not_here(),
        }
    }
}
