//! Returns (API.md "Returns"): `POST /api/v1/orders/{order_id}/returns`, and the same under
//! the order's store. The admin or the order's store token may take one; `Idempotency-Key`
//! is honoured as for orders.

use super::error::ApiError;
use super::handlers::{exec, order_by_path};
use super::idempotency::Answer;
use super::json::*;
use super::{AppState, keyed};
use crate::actor::Reply;
use crate::domain::*;
use crate::wal::IdemTag;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
struct ReturnItemBody {
    product_id: Option<String>,
    quantity: Option<Raw>,
}

#[derive(Deserialize)]
struct ReturnBody {
    items: Option<Vec<Obj<ReturnItemBody>>>,
    restock: Option<bool>,
    reason: Option<String>,
}

impl ReturnBody {
    fn into_draft(self, order_id: OrderId) -> Result<ReturnDraft, ApiError> {
        let no_items = ApiError::bad_request(
            "Return must contain at least one item",
            "Send at least one item to return.",
        );
        // The items of an order, without prices: parsed (ids, quantities, size, duplicates)
        // exactly as an order's are.
        let items = self.items.map(|items| {
            let as_order_item = |i: Obj<ReturnItemBody>| {
                Obj(ItemBody {
                    product_id: i.0.product_id,
                    quantity: i.0.quantity,
                    unit_price: None,
                })
            };
            items.into_iter().map(as_order_item).collect()
        });
        let items = parse_items(items, no_items)?
            .into_iter()
            .map(|i| ReturnItem {
                product_id: i.product_id,
                quantity: i.quantity,
            })
            .collect();
        let reason = match self.reason.as_deref() {
            None => None,
            Some(r) => Some(parse_text(Some(r), "reason")?),
        };
        Ok(ReturnDraft {
            order_id,
            return_id: ReturnId::from_number(0),
            items,
            restock: self.restock.unwrap_or(true),
            reason,
        })
    }
}

/// `POST …/orders/{order_id}/returns` → 201 the return.
pub async fn post_return(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let caller = state.caller(&req)?;
    caller.any_store()?;
    state.dir()?;
    // Who may return is settled before the key is looked at: a refusal for the wrong
    // caller is not the key's answer.
    let order = order_by_path(&state, &req).await?;
    caller.store(&order.store_id)?;
    let (store_id, order_id) = (order.store_id, order.order_id);
    let work = {
        let (state, req, body) = (state.clone(), req.clone(), body.clone());
        move |idem| async move {
            let result = take_return(&state, &req, &body, &store_id, order_id, idem).await;
            return_answer(&result, &state.order_ids)
        }
    };
    let answer = keyed::once_per_key(&state, &req, &body, work).await?;
    Ok(keyed::respond(&answer))
}

/// Parses the body and has the order's store take the return; `Ok` is the order after it
/// and the new return's id.
async fn take_return(
    state: &AppState,
    req: &HttpRequest,
    body: &[u8],
    store_id: &StoreId,
    order_id: OrderId,
    idem: Option<IdemTag>,
) -> Result<(Arc<Order>, ReturnId), ApiError> {
    let dir = state.dir()?;
    let parsed: ReturnBody = parse_body(req, body)?;
    let command = Command::Return(Box::new(parsed.into_draft(order_id)?));
    let applied = exec(dir, store_id, command, idem).await?;
    match (applied.outcome, applied.reply) {
        (Outcome::Returned { return_id, .. }, Reply::Order(order)) => Ok((order, return_id)),
        _ => Err(ApiError::storage("unexpected reply")),
    }
}

/// The answer to taking a return: 201 and the return, or the refusal.
pub(super) fn return_answer(
    result: &Result<(Arc<Order>, ReturnId), ApiError>,
    ids: &OrderIdCodec,
) -> Answer {
    let view = match result {
        Ok((order, id)) => order
            .find_return(id)
            .map(|r| ReturnView::new(order, r, ids)),
        Err(e) => return e.answer(),
    };
    match view {
        Some(view) => Answer {
            status: 201,
            body: Bytes::from(serde_json::to_vec(&view).unwrap_or_default()),
        },
        None => ApiError::storage("a return is missing from its order").answer(),
    }
}
