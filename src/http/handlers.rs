//! One function per route. Each: auth → parse → ask the store → wait until durable → render.

use super::error::ApiError;
use super::idempotency::Answer;
use super::json::*;
use super::partial::with_unfulfilled;
use super::{AppState, Caller, json_response, keyed};
use crate::actor::{
    Applied, Directory, Exec, GetProduct, GetStore, LedgerHead, ListProducts, LowStock, Reply,
    now_ms,
};
use crate::domain::*;
use crate::wal::{IdemTag, LedgerError};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

type Data = web::Data<AppState>;
type ApiResult = Result<HttpResponse, ApiError>;

/// Sends a command to its store and waits until its effect is on disk.
pub async fn exec(
    dir: &Directory,
    store_id: &StoreId,
    command: Command,
    idem: Option<IdemTag>,
) -> Result<Applied, ApiError> {
    let mut applied = dir
        .call(
            store_id,
            Exec {
                command,
                idem,
                at_ms: None,
                given_ids: false,
            },
        )
        .await??;
    if let Some(rx) = applied.durable.take() {
        match rx.await {
            Ok(Ok(_seq)) => {}
            Ok(Err(why)) => return Err(ApiError::storage(why)),
            Err(_) => return Err(ApiError::storage("the write-ahead log stopped")),
        }
    }
    Ok(applied)
}

fn ok(body: &impl serde::Serialize) -> HttpResponse {
    json_response(StatusCode::OK, body)
}

pub async fn health() -> HttpResponse {
    ok(&json!({"status": "ok"}))
}

pub async fn ready(state: Data) -> ApiResult {
    state.dir()?;
    Ok(ok(&json!({"status": "ready"})))
}

/// The OpenAPI 3 document of this API (see `openapi`).
pub async fn openapi() -> HttpResponse {
    ok(super::openapi::document())
}

pub async fn not_found() -> ApiResult {
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such resource.",
    ))
}

// ---------- stores ----------

pub async fn put_store(
    state: Data,
    req: HttpRequest,
    path: web::Path<String>,
    body: Bytes,
) -> ApiResult {
    state.require_admin(&req)?;
    let dir = state.dir()?;
    let store_id = parse_store_id(&path)?;
    let parsed: StoreBody = parse_body(&req, &body)?;
    let config = parsed.into_config(store_id.clone(), now_ms())?;
    dir.get_or_create(&config)?;
    let applied = exec(dir, &store_id, Command::SetStore(config), None).await?;
    match applied.reply {
        Reply::Store(c) => Ok(ok(&StoreView::from(&c))),
        _ => Err(ApiError::storage("unexpected reply")),
    }
}

pub async fn get_store(state: Data, req: HttpRequest, path: web::Path<String>) -> ApiResult {
    // Open to read, but a token that is sent must be valid.
    state.caller(&req)?;
    let dir = state.dir()?;
    let store_id = parse_store_id(&path)?;
    let config = dir.call(&store_id, GetStore).await?;
    Ok(ok(&StoreView::from(&config)))
}

// ---------- products ----------

fn store_and_product(path: &(String, String)) -> Result<(StoreId, ProductId), ApiError> {
    Ok((
        parse_store_id(&path.0)?,
        parse_product_id(Some(&path.1), "product_id")?,
    ))
}

async fn product_or_404(
    dir: &Directory,
    store_id: &StoreId,
    product_id: &ProductId,
) -> Result<Product, ApiError> {
    dir.call(store_id, GetProduct(product_id.clone()))
        .await?
        .ok_or_else(|| DomainError::ProductNotFound(product_id.clone()).into())
}

pub async fn put_product(
    state: Data,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    state.require_store(&req, &path.0)?;
    let dir = state.dir()?;
    let (store_id, product_id) = store_and_product(&path)?;
    let parsed: ProductBody = parse_body(&req, &body)?;
    let command = parsed.into_command(product_id)?;
    let applied = exec(dir, &store_id, command, None).await?;
    match applied.reply {
        Reply::Product(p) => Ok(ok(&ProductView::new(&store_id, &p))),
        _ => Err(ApiError::storage("unexpected reply")),
    }
}

pub async fn get_product(
    state: Data,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> ApiResult {
    state.require_client(&req)?;
    let dir = state.dir()?;
    let (store_id, product_id) = store_and_product(&path)?;
    let p = product_or_404(dir, &store_id, &product_id).await?;
    Ok(ok(&ProductView::new(&store_id, &p)))
}

#[derive(Deserialize)]
pub struct PageQuery {
    limit: Option<String>,
    after: Option<String>,
}

fn page_query(req: &HttpRequest) -> Result<PageQuery, ApiError> {
    parse_query(req)
}

pub async fn list_products(state: Data, req: HttpRequest, path: web::Path<String>) -> ApiResult {
    state.require_client(&req)?;
    let dir = state.dir()?;
    let store_id = parse_store_id(&path)?;
    let q = page_query(&req)?;
    let limit = parse_limit(q.limit.as_deref(), PAGE_DEFAULT, PAGE_MAX)?;
    let after = match q.after.as_deref() {
        None | Some("") => None,
        Some(s) => Some(parse_product_id(Some(s), "after")?),
    };
    let (items, more) = dir.call(&store_id, ListProducts { after, limit }).await?;
    let next_after = if more {
        items.last().map(|p| p.info.product_id.to_string())
    } else {
        None
    };
    let views: Vec<ProductView> = items
        .iter()
        .map(|p| ProductView::new(&store_id, p))
        .collect();
    Ok(ok(&json!({"items": views, "next_after": next_after})))
}

pub async fn post_adjustment(
    state: Data,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    state.require_store(&req, &path.0)?;
    let dir = state.dir()?;
    let (store_id, product_id) = store_and_product(&path)?;
    let parsed: AdjustmentBody = parse_body(&req, &body)?;
    let change_milli = parse_signed_qty(parsed.quantity_change.as_ref(), "quantity_change")?;
    let reason = parse_name(parsed.reason.as_deref(), "reason")?;
    let applied = exec(
        dir,
        &store_id,
        Command::Adjust {
            product_id,
            change_milli,
            reason,
        },
        None,
    )
    .await?;
    match applied.reply {
        Reply::Adjusted {
            previous,
            new,
            movement_id,
        } => Ok(ok(&json!({
            "previous_stock": qty_json(previous),
            "new_stock": qty_json(new),
            "movement_id": movement_id,
        }))),
        _ => Err(ApiError::storage("unexpected reply")),
    }
}

pub async fn get_movements(
    state: Data,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> ApiResult {
    state.require_store(&req, &path.0)?;
    let dir = state.dir()?;
    let (store_id, product_id) = store_and_product(&path)?;
    let q = page_query(&req)?;
    let limit = parse_limit(q.limit.as_deref(), PAGE_DEFAULT, PAGE_MAX)?;
    let after = match q.after.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<u64>().map_err(|_| {
            ApiError::bad_request("Invalid after", "`after` must be a movement_id.")
        })?),
    };
    let (head, barrier) = dir
        .call(&store_id, LedgerHead(product_id.clone()))
        .await?
        .ok_or_else(|| ApiError::from(DomainError::ProductNotFound(product_id.clone())))?;
    match barrier.await {
        Ok(Ok(_)) => {}
        _ => return Err(ApiError::storage("the write-ahead log stopped")),
    }
    let archive = state.archive.clone();
    let page = web::block(move || archive.ledger_page(&store_id, &product_id, head, after, limit))
        .await
        .map_err(ApiError::storage)?
        .map_err(|e| match e {
            LedgerError::UnknownAfter => ApiError::bad_request(
                "Invalid after",
                "`after` is not a movement of this product.",
            ),
            LedgerError::Storage(e) => ApiError::storage(e),
        })?;
    let (movements, more) = (page.movements, page.more);
    let next_after = if more {
        movements.last().map(|m| m.movement_id)
    } else {
        None
    };
    let items: Vec<MovementView> = movements
        .iter()
        .map(|m| MovementView::new(m, &state.order_ids))
        .collect();
    Ok(ok(&json!({"items": items, "next_after": next_after})))
}

pub async fn get_low_stock(state: Data, req: HttpRequest, path: web::Path<String>) -> ApiResult {
    let (dir, store_id) = state.store_route(&req, &path)?;
    let products = dir.call(&store_id, LowStock).await?;
    let items: Vec<_> = products
        .iter()
        .map(|p| {
            json!({
                "product_id": p.info.product_id.as_str(),
                "product_name": &*p.info.name,
                "current_stock": qty_json(p.current_stock()),
                "low_stock_threshold": qty_json(p.info.low_stock_threshold),
            })
        })
        .collect();
    Ok(ok(&json!({"store_id": store_id.as_str(), "items": items})))
}

// ---------- reservations ----------

pub async fn post_reservation(
    state: Data,
    req: HttpRequest,
    path: web::Path<String>,
    body: Bytes,
) -> ApiResult {
    state.require_client(&req)?;
    let dir = state.dir()?;
    let store_id = parse_store_id(&path)?;
    let parsed: ReservationBody = parse_body(&req, &body)?;
    let no_items = ApiError::bad_request("No items", "Send at least one item to hold.");
    let items = parse_items(parsed.items, no_items)?;
    let ttl_s = parse_ttl(parsed.ttl_seconds.as_ref())?;
    let lines = items
        .into_iter()
        .map(|i| ReservationLine {
            product_id: i.product_id,
            quantity: i.quantity,
        })
        .collect();
    let command = Command::Reserve {
        reservation_id: ReservationId::from_number(0),
        lines,
        ttl_ms: ttl_s * 1000,
    };
    let applied = exec(dir, &store_id, command, None).await?;
    match applied.reply {
        Reply::Reservation(r) => Ok(json_response(
            StatusCode::CREATED,
            &ReservationView::new(&store_id, &r),
        )),
        _ => Err(ApiError::storage("unexpected reply")),
    }
}

pub async fn delete_reservation(
    state: Data,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> ApiResult {
    state.require_client(&req)?;
    let dir = state.dir()?;
    let store_id = parse_store_id(&path.0)?;
    // A malformed id is a bad request; a well-formed one that names no open hold, a 404.
    let reservation_id =
        ReservationId::parse(&path.1).ok_or_else(|| ApiError::invalid_id("reservation_id"))?;
    let applied = exec(dir, &store_id, Command::Release { reservation_id }, None).await?;
    match applied.reply {
        Reply::Released(id) => Ok(ok(
            &json!({"reservation_id": id.as_str(), "status": "released"}),
        )),
        _ => Err(ApiError::storage("unexpected reply")),
    }
}

// ---------- orders ----------

/// An order from the archive, read on a blocking thread.
pub(super) async fn read_order(state: &AppState, id: OrderId) -> Result<Option<Order>, ApiError> {
    let archive = state.archive.clone();
    web::block(move || archive.order(id))
        .await
        .map_err(ApiError::storage)?
        .map_err(ApiError::storage)
}

/// The order a path names: `/api/v1/orders/{order_id}…`, or under its store
/// (`/api/v1/stores/{store_id}/orders/{order_id}…`), where an order of another store is
/// not found. One handler serves both routes.
pub(super) async fn order_by_path(state: &AppState, req: &HttpRequest) -> Result<Order, ApiError> {
    let info = req.match_info();
    let id = info
        .get("order_id")
        .and_then(|p| state.order_ids.parse_public(p))
        .ok_or_else(ApiError::order_not_found)?;
    let order = read_order(state, id)
        .await?
        .ok_or_else(ApiError::order_not_found)?;
    if state.dir()?.is_away(&order.store_id) {
        // Its history is here, but another process serves the store.
        return Err(ApiError::not_here());
    }
    match info.get("store_id") {
        Some(store) if store != order.store_id.as_str() => Err(ApiError::order_not_found()),
        _ => Ok(order),
    }
}

pub async fn get_order(state: Data, req: HttpRequest) -> ApiResult {
    state.require_client(&req)?;
    state.dir()?;
    let order = order_by_path(&state, &req).await?;
    Ok(ok(&OrderView::new(&order, false, &state.order_ids)))
}

/// Changes an order for `caller` (the admin or the order's store).
async fn change_order(
    state: &AppState,
    caller: &Caller,
    req: &HttpRequest,
    make: impl FnOnce(OrderId) -> Command,
) -> ApiResult {
    let dir = state.dir()?;
    let order = order_by_path(state, req).await?;
    caller.store(&order.store_id)?;
    let applied = exec(dir, &order.store_id, make(order.order_id), None).await?;
    match applied.reply {
        Reply::Order(o) => Ok(ok(&OrderView::new(&o, false, &state.order_ids))),
        _ => Err(ApiError::storage("unexpected reply")),
    }
}

pub async fn post_payment(state: Data, req: HttpRequest, body: Bytes) -> ApiResult {
    let caller = state.caller(&req)?;
    caller.any_store()?;
    state.dir()?;
    let parsed: PaymentBody = parse_body(&req, &body)?;
    let succeeded = match parsed.status.as_deref() {
        Some("succeeded") => true,
        Some("failed") => false,
        _ => {
            return Err(ApiError::bad_request(
                "Invalid payment status",
                "`status` must be succeeded or failed.",
            ));
        }
    };
    let reference = match parsed.reference.as_deref() {
        None => None,
        Some(r) => Some(parse_text(Some(r), "reference")?),
    };
    change_order(&state, &caller, &req, |order_id| Command::Pay {
        order_id,
        succeeded,
        reference,
    })
    .await
}

pub async fn post_cancel(state: Data, req: HttpRequest, body: Bytes) -> ApiResult {
    let caller = state.caller(&req)?;
    caller.any_store()?;
    state.dir()?;
    let reason = if body.is_empty() {
        None
    } else {
        let parsed: CancelBody = parse_body(&req, &body)?;
        match parsed.reason.as_deref() {
            None => None,
            Some(r) => Some(parse_text(Some(r), "reason")?),
        }
    };
    change_order(&state, &caller, &req, |order_id| Command::Cancel {
        order_id,
        reason,
    })
    .await
}

/// Places an order; `Ok` carries the created order. Counted in `godown_orders_total`.
async fn place_order(
    state: &AppState,
    req: &HttpRequest,
    body: &[u8],
    idem: Option<IdemTag>,
) -> Result<Order, ApiError> {
    let result = try_place_order(state, req, body, idem).await;
    let (outcome, reason) = match &result {
        Ok(_) => ("placed", ""),
        Err(e) => ("refused", e.error),
    };
    metrics::counter!("godown_orders_total", "outcome" => outcome, "reason" => reason).increment(1);
    result
}

async fn try_place_order(
    state: &AppState,
    req: &HttpRequest,
    body: &[u8],
    idem: Option<IdemTag>,
) -> Result<Order, ApiError> {
    let dir = state.dir()?;
    let parsed: OrderBody = parse_body(req, body)?;
    let ParsedOrder { store_id, draft } = parsed.parse()?;
    let applied = exec(dir, &store_id, Command::PlaceOrder(Box::new(draft)), idem).await?;
    match applied.reply {
        Reply::Order(o) => Ok(Arc::unwrap_or_clone(o)),
        _ => Err(ApiError::storage("unexpected reply")),
    }
}

/// The answer to placing an order: the order as created, or the refusal.
pub(super) fn order_answer(result: &Result<Order, ApiError>, ids: &OrderIdCodec) -> Answer {
    match result {
        Ok(order) => Answer {
            status: 200,
            body: Bytes::from(
                serde_json::to_vec(&OrderView::new(order, true, ids)).unwrap_or_default(),
            ),
        },
        Err(e) => e.answer(),
    }
}

/// `POST /api/v1/stores/{store_id}/orders`: `POST /api/v1/orders/` with that store (a
/// body naming another store is 400 "Store mismatch").
pub async fn post_store_order(state: Data, req: HttpRequest, body: Bytes) -> ApiResult {
    let store = req
        .match_info()
        .get("store_id")
        .unwrap_or_default()
        .to_string();
    let body = with_store(&store, body)?;
    post_order(state, req, body).await
}

/// The order body with `store_id` set to `store`: added when absent (as text, so that every
/// number keeps the exact form it was sent in), refused when it names another store. A
/// body that is not a JSON object is passed on as it is, to be refused as usual.
pub(super) fn with_store(store: &str, body: Bytes) -> Result<Bytes, ApiError> {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(&body) else {
        return Ok(body);
    };
    match map.get("store_id") {
        Some(serde_json::Value::String(s)) if s == store => Ok(body),
        None => {
            let open = body.iter().position(|&b| b == b'{').unwrap_or(0);
            let field = serde_json::to_string(store).unwrap_or_default();
            let mut out = Vec::with_capacity(body.len() + field.len() + 16);
            out.extend_from_slice(&body[..=open]);
            out.extend_from_slice(b"\"store_id\":");
            out.extend_from_slice(field.as_bytes());
            let rest = &body[open + 1..];
            if rest.iter().any(|b| !b.is_ascii_whitespace() && *b != b'}') {
                out.push(b',');
            }
            out.extend_from_slice(rest);
            Ok(Bytes::from(out))
        }
        Some(_) => Err(ApiError::bad_request(
            "Store mismatch",
            "The body's `store_id` is not the store of the path.",
        )),
    }
}

pub async fn post_order(state: Data, req: HttpRequest, body: Bytes) -> ApiResult {
    state.require_client(&req)?;
    let work = {
        let (state, req, body) = (state.clone(), req.clone(), body.clone());
        move |idem| async move {
            let result = place_order(&state, &req, &body, idem).await;
            order_answer(&result, &state.order_ids)
        }
    };
    let answer = keyed::once_per_key(&state, &req, &body, work).await?;
    Ok(keyed::respond(
        &with_unfulfilled(&state, &body, answer).await,
    ))
}
