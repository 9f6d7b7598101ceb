//! Carts (API.md "Partial fulfilment and alternatives"): the availability check, with
//! substitutes for short lines and what a partial order would ship; and the `unfulfilled`
//! list of an `allow_partial` order's answer, worked out from the request and the order, so
//! a retry with the same `Idempotency-Key` (and so the same body) gets the same list
//! without anything more being stored.

use super::error::ApiError;
use super::idempotency::Answer;
use super::json::*;
use super::{AppState, json_response};
use crate::actor::{Availability, GetProduct};
use crate::domain::state::shippable;
use crate::domain::{Paise, Qty, pricing};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use serde_json::{Value, json};

/// `POST /api/v1/inventory/availability`: each line's stock, changing nothing; with
/// `"alternatives": true`, substitutes for short lines and what a partial order would ship.
pub async fn post_availability(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    state.require_client(&req)?;
    let dir = state.dir()?;
    let parsed: AvailabilityBody = parse_body(&req, &body)?;
    let store_id = match parsed.store_id.as_deref() {
        None | Some("") => {
            return Err(ApiError::bad_request(
                "store_id is required",
                "Name the store to check.",
            ));
        }
        Some(s) => parse_store_id(s)?,
    };
    let no_items = ApiError::bad_request("No items", "Send at least one item to check.");
    let items = parse_items(parsed.items, no_items)?;
    let with_alternatives = parsed.alternatives == Some(true);
    let check = Availability {
        lines: items
            .into_iter()
            .map(|i| (i.product_id, i.quantity))
            .collect(),
        alternatives: with_alternatives,
    };
    let lines = dir.call(&store_id, check).await??;
    let all_available = lines.iter().all(|l| l.available >= l.requested);
    let mut ships = Vec::new();
    let mut subtotal = Paise(0);
    let mut items = Vec::with_capacity(lines.len());
    for l in &lines {
        let mut item = json!({
            "product_id": l.product_id.as_str(),
            "requested": qty_json(l.requested),
            "available": qty_json(l.available),
            "shortage": qty_json(Qty(l.requested.0.saturating_sub(l.available.0))),
        });
        if with_alternatives && l.available < l.requested {
            let alternatives: Vec<Value> = l
                .alternatives
                .iter()
                .map(|p| {
                    json!({
                        "product_id": p.info.product_id.as_str(),
                        "product_name": &*p.info.name,
                        "unit": p.info.unit.as_str(),
                        "unit_price": paise_json(p.info.unit_price),
                        "current_stock": qty_json(p.current_stock()),
                    })
                })
                .collect();
            item["alternatives"] = Value::Array(alternatives);
        }
        items.push(item);
        let ship = shippable(l.requested, l.available, l.counted);
        if ship > Qty::ZERO {
            subtotal = Paise(subtotal.0 + pricing::line_total(l.unit_price, ship).0);
            ships.push(json!({"product_id": l.product_id.as_str(), "quantity": qty_json(ship)}));
        }
    }
    let mut answer = json!({"all_available": all_available, "items": items});
    if with_alternatives {
        answer["partial"] = json!({"items": ships, "subtotal": paise_json(subtotal)});
    }
    Ok(json_response(StatusCode::OK, &answer))
}

/// The requested lines of an `allow_partial` order body; `None` for any other body.
fn requested(body: &[u8]) -> Option<ParsedOrder> {
    // Most orders are not partial: a byte search spares them a second parse.
    if !body.windows(13).any(|w| w == b"allow_partial") {
        return None;
    }
    let parsed: OrderBody = parse_json(body).ok()?;
    if parsed.allow_partial != Some(true) {
        return None;
    }
    parsed.parse().ok()
}

/// `answer` (a placed order) with `unfulfilled` added when `body` asked for a partial order.
pub async fn with_unfulfilled(state: &AppState, body: &[u8], answer: Answer) -> Answer {
    if answer.status != 200 {
        return answer;
    }
    let Some(request) = requested(body) else {
        return answer;
    };
    let Ok(mut view) = serde_json::from_slice::<Value>(&answer.body) else {
        return answer;
    };
    let lines = view["items"].as_array().cloned().unwrap_or_default();
    let mut unfulfilled = Vec::new();
    for item in &request.draft.items {
        let line = lines
            .iter()
            .find(|l| l["product_id"] == item.product_id.as_str());
        // The answer writes quantities exactly (at most 3 decimals): its text parses back.
        let shipped = line
            .map(|l| l["quantity"].to_string())
            .and_then(|t| Qty::parse(&t).ok())
            .unwrap_or(Qty::ZERO);
        if shipped >= item.quantity {
            continue;
        }
        let name = match line {
            Some(l) => l["product_name"].clone(),
            None => product_name(state, &request, &item.product_id).await,
        };
        unfulfilled.push(json!({
            "product_id": item.product_id.as_str(),
            "product_name": name,
            "requested": qty_json(item.quantity),
            "shipped": qty_json(shipped),
            "shortage": qty_json(Qty(item.quantity.0 - shipped.0)),
        }));
    }
    view["unfulfilled"] = Value::Array(unfulfilled);
    Answer {
        status: answer.status,
        body: Bytes::from(view.to_string()),
    }
}

/// A dropped line's product name, from its store (null if it cannot be had).
async fn product_name(
    state: &AppState,
    request: &ParsedOrder,
    product: &crate::domain::ProductId,
) -> Value {
    let Ok(dir) = state.dir() else {
        return Value::Null;
    };
    match dir
        .call(&request.store_id, GetProduct(product.clone()))
        .await
    {
        Ok(Some(p)) => json!(&*p.info.name),
        _ => Value::Null,
    }
}
