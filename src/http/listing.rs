//! `GET /api/v1/stores/{store_id}/orders?status=&since=&limit=&after=` (API.md "Per-store
//! paths"): a store's orders, newest first, from the store order index (`wal::views`).
//! Each page reads at most [`SCAN_PER_ITEM`] × `limit` orders: with a rare `status`, a page
//! may hold fewer than `limit` and still have a `next_after` to go on from.

use super::error::ApiError;
use super::json::parse_query;
use super::json::{OrderView, PAGE_DEFAULT, PAGE_MAX, parse_limit};
use super::{AppState, json_response};
use crate::actor::GetStore;
use crate::domain::{OrderId, OrderStatus, TimeMs};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

/// Orders read per order shown, at most, when a filter skips some.
const SCAN_PER_ITEM: usize = 10;

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    since: Option<String>,
    limit: Option<String>,
    after: Option<String>,
}

/// The statuses a listing filters by.
fn parse_status(s: &str) -> Result<OrderStatus, ApiError> {
    use OrderStatus::*;
    [PendingPayment, Confirmed, Cancelled, Expired, PaymentFailed, Returned]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| {
            ApiError::bad_request(
                "Invalid status",
                "`status` must be pending_payment, confirmed, cancelled, expired, payment_failed or returned.",
            )
        })
}

fn parse_since(s: &str) -> Result<TimeMs, ApiError> {
    let t = humantime::parse_rfc3339_weak(s)
        .map_err(|_| ApiError::bad_request("Invalid since", "`since` must be an RFC 3339 time."))?;
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| ApiError::bad_request("Invalid since", "`since` is before 1970."))?;
    Ok(ms.as_millis() as TimeMs)
}

pub async fn list_orders(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (dir, store_id) = state.store_route(&req, &path)?;
    let q = parse_query::<ListQuery>(&req)?;
    let status = q
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(parse_status)
        .transpose()?;
    let since = q
        .since
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(parse_since)
        .transpose()?;
    let limit = parse_limit(q.limit.as_deref(), PAGE_DEFAULT, PAGE_MAX)?;
    let below = match q.after.as_deref().filter(|s| !s.is_empty()) {
        None => u64::MAX,
        Some(s) => state
            .order_ids
            .parse_public(s)
            .map(OrderId::seq)
            .ok_or_else(|| {
                ApiError::bad_request("Invalid after", "`after` must be an order_id.")
            })?,
    };
    dir.call(&store_id, GetStore).await?;
    let budget = limit * SCAN_PER_ITEM;
    let (archive, store) = (state.archive.clone(), store_id.clone());
    let (orders, next) = web::block(move || -> Result<_, crate::wal::WalError> {
        let seqs = archive.store_orders_below(&store, below, budget)?;
        let mut orders = Vec::new();
        let mut last_seen = None;
        let mut exhausted = seqs.len() < budget;
        for seq in seqs {
            last_seen = Some(seq);
            let Some(order) = archive.order(OrderId::from_seq(seq))? else {
                continue;
            };
            if since.is_some_and(|t| order.created_ms < t) {
                exhausted = true;
                break;
            }
            if status.is_none_or(|s| s == order.status) {
                orders.push(order);
                if orders.len() == limit {
                    break;
                }
            }
        }
        // More may follow unless the index (or `since`) ran out before the page filled.
        let full = orders.len() == limit;
        let next = if full || !exhausted { last_seen } else { None };
        Ok((orders, next))
    })
    .await
    .map_err(ApiError::storage)?
    .map_err(ApiError::storage)?;
    let items: Vec<OrderView> = orders
        .iter()
        .map(|o| OrderView::new(o, false, &state.order_ids))
        .collect();
    // A cursor: the public id of the last order read (for an order placed before private
    // ids, an id of the same number, which `after` reads the same).
    let next_after = next.map(|seq| state.order_ids.public(OrderId::from_seq(seq)));
    Ok(json_response(
        StatusCode::OK,
        &json!({"items": items, "next_after": next_after}),
    ))
}
