//! Batch orders (API.md "Batch orders"): `POST /api/v1/stores/{store_id}/orders/batch`
//! `{orders:[order body…]}` → 200 with one `{status, body}` per order, in order: what
//! `POST /api/v1/stores/{store_id}/orders` would have answered for that order alone.
//!
//! Each order is all or nothing on its own; the orders that pass parsing go to the store
//! as one command (`Command::PlaceBatch`), so the whole batch is one log record and durable
//! as a whole before the answer. `Idempotency-Key` covers the batch: the record carries
//! each order's outcome, and the orders a parse refused are refused again by the same body.

use super::error::ApiError;
use super::handlers::{exec, order_answer, read_order, with_store};
use super::idempotency::Answer;
use super::json::{OrderBody, parse_body, parse_json};
use super::partial::with_unfulfilled;
use super::{AppState, keyed};
use crate::actor::Reply;
use crate::domain::{Command, DomainError, Order, OrderDraft, OrderId, StoreId};
use crate::wal::IdemTag;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use std::sync::Arc;

#[derive(Deserialize)]
struct BatchBody {
    orders: Option<Vec<Box<RawValue>>>,
}

/// One order of the batch: its body (with the path's store), and its draft or the
/// answer it gets without reaching the store.
struct Element {
    body: Bytes,
    parsed: Result<OrderDraft, Answer>,
}

/// Splits the batch into its orders and parses each as the per-store route would.
fn elements(req: &HttpRequest, store: &str, body: &[u8]) -> Result<Vec<Element>, ApiError> {
    let parsed: BatchBody = parse_body(req, body)?;
    let orders = parsed.orders.ok_or_else(|| {
        ApiError::bad_request("orders is required", "Send {\"orders\": [order…]}.")
    })?;
    if orders.is_empty() {
        return Err(ApiError::bad_request(
            "Batch must contain at least one order",
            "Send 1 to 500 orders.",
        ));
    }
    if orders.len() > crate::domain::state::BATCH_ORDERS_MAX {
        return Err(DomainError::TooManyOrders.into());
    }
    let out = orders
        .iter()
        .map(|raw| {
            let raw = Bytes::copy_from_slice(raw.get().as_bytes());
            match with_store(store, raw.clone()) {
                Ok(body) => {
                    let parsed = parse_json::<OrderBody>(&body)
                        .and_then(OrderBody::parse)
                        .map(|p| p.draft)
                        .map_err(|e| e.answer());
                    Element { body, parsed }
                }
                Err(e) => Element {
                    body: raw,
                    parsed: Err(e.answer()),
                },
            }
        })
        .collect();
    Ok(out)
}

/// The batch's answer from each order's outcome (`outcomes` in the order of the elements
/// that reached the store).
async fn render(
    state: &AppState,
    elements: Vec<Element>,
    outcomes: Vec<Result<Order, DomainError>>,
) -> Answer {
    let mut outcomes = outcomes.into_iter();
    let mut items = Vec::with_capacity(elements.len());
    for element in elements {
        let answer = match element.parsed {
            Err(answer) => answer,
            Ok(_) => match outcomes.next() {
                Some(Ok(order)) => {
                    let answer = order_answer(&Ok(order), &state.order_ids);
                    with_unfulfilled(state, &element.body, answer).await
                }
                Some(Err(e)) => ApiError::from(e).answer(),
                None => ApiError::storage("a batch outcome is missing").answer(),
            },
        };
        let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        items.push(serde_json::json!({"status": answer.status, "body": body}));
    }
    Answer {
        status: 200,
        body: Bytes::from(serde_json::to_vec(&items).unwrap_or_default()),
    }
}

async fn place(
    state: &AppState,
    req: &HttpRequest,
    store: &str,
    body: &[u8],
    idem: Option<IdemTag>,
) -> Result<Answer, ApiError> {
    let dir = state.dir()?;
    let elements = elements(req, store, body)?;
    let drafts: Vec<OrderDraft> = elements
        .iter()
        .filter_map(|e| e.parsed.as_ref().ok().cloned())
        .collect();
    let store_id = StoreId::parse(store).ok_or_else(|| ApiError::invalid_id("store_id"))?;
    let outcomes: Vec<Result<Order, DomainError>> = if drafts.is_empty() {
        Vec::new()
    } else {
        let applied = exec(dir, &store_id, Command::PlaceBatch(drafts), idem.clone()).await?;
        match applied.reply {
            Reply::Batch(results) => results
                .into_iter()
                .map(|r| r.map(Arc::unwrap_or_clone))
                .collect(),
            _ => return Err(ApiError::storage("unexpected reply to a batch")),
        }
    };
    for o in &outcomes {
        let outcome = if o.is_ok() { "placed" } else { "refused" };
        metrics::counter!("godown_orders_total", "outcome" => outcome, "reason" => "batch")
            .increment(1);
    }
    let wrote_record = outcomes.iter().any(Result::is_ok);
    let answer = render(state, elements, outcomes).await;
    // A batch that placed nothing wrote no record: its answer is remembered on its own.
    if let (false, Some(tag)) = (wrote_record, &idem) {
        keyed::remember_answer(state, &tag.key, tag.body_hash, &answer).await?;
    }
    Ok(answer)
}

pub async fn post_batch(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    state.require_client(&req)?;
    let store = path.into_inner();
    let work = {
        let (state, req, body) = (state.clone(), req.clone(), body.clone());
        move |idem| async move {
            place(&state, &req, &store, &body, idem)
                .await
                .unwrap_or_else(|e| e.answer())
        }
    };
    let answer = keyed::once_per_key(&state, &req, &body, work).await?;
    Ok(keyed::respond(&answer))
}

/// The answer remembered for a key that placed a batch: the same body parsed again (its
/// refusals are the same), each placed order as it is now.
pub(super) async fn saved_answer(
    state: &AppState,
    req: &HttpRequest,
    body: &[u8],
    results: Vec<Result<OrderId, DomainError>>,
) -> Result<Answer, ApiError> {
    let store = req.match_info().get("store_id").unwrap_or_default();
    let elements = elements(req, store, body)?;
    let mut outcomes = Vec::with_capacity(results.len());
    for r in results {
        outcomes.push(match r {
            Ok(id) => Ok(read_order(state, id)
                .await?
                .ok_or_else(|| ApiError::storage("a remembered order is missing"))?),
            Err(e) => Err(e),
        });
    }
    Ok(render(state, elements, outcomes).await)
}
