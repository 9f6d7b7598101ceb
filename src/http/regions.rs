//! Regions, region orders and transfers (API.md "Regions, routing and transfers"; admin).
//! The work is `crate::saga`'s; this parses, answers, and honours `Idempotency-Key`.

use super::error::ApiError;
use super::idempotency::Answer;
use super::json::*;
use super::{AppState, json_response, keyed};
use crate::domain::region::RegionShort;
use crate::domain::{Order, ReservationLine, StoreId};
use crate::saga::region::{Region, RegionRequest, stamp};
use crate::saga::transfer::Transfer;
use crate::saga::{Phase, Plan, Saga, SagaError, Sagas};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

type Data = web::Data<AppState>;
type ApiResult = Result<HttpResponse, ApiError>;

impl From<SagaError> for ApiError {
    fn from(e: SagaError) -> ApiError {
        match e {
            SagaError::Domain { error, .. } => error.into(),
            SagaError::Call { error, .. } => error.into(),
            SagaError::Overloaded { .. } => ApiError::overloaded(),
            SagaError::Storage(why) => ApiError::storage(why),
            SagaError::Unreachable { store, .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Store unavailable",
                format!(
                    "The process that holds store {store} is not answering; the change will complete once it is back (retry with the same Idempotency-Key to see it)."
                ),
            ),
            SagaError::RegionNotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                "Region not found",
                "There is no region with this id.",
            ),
            SagaError::RegionShort(short) => short_answer(&short),
            SagaError::InvalidRegion(why) => ApiError::bad_request("Invalid region", why),
            SagaError::KeyReused => ApiError::new(
                StatusCode::CONFLICT,
                "Idempotency key reused",
                "This Idempotency-Key was used with a different request body.",
            ),
            SagaError::SameStore => ApiError::bad_request(
                "Same store",
                "A transfer moves stock between two different stores.",
            ),
        }
    }
}

fn short_answer(short: &[RegionShort]) -> ApiError {
    let items: Vec<Value> = short
        .iter()
        .map(|s| {
            json!({
                "product_id": s.product_id.as_str(),
                "requested": qty_json(s.requested),
                "available": qty_json(s.available),
            })
        })
        .collect();
    ApiError::bad_request(
        "Insufficient stock",
        "No store, or set of stores allowed, in this region has every item.",
    )
    .with("items", Value::Array(items))
}

/// A region id: the same alphabet and length as a store id.
fn parse_region_id(s: &str) -> Result<StoreId, ApiError> {
    parse_store_id(s).map_err(|_| ApiError::invalid_id("region_id"))
}

fn sagas(state: &AppState) -> Result<&Arc<Sagas>, ApiError> {
    state.sagas.get().ok_or_else(ApiError::not_ready)
}

fn region_view(r: &Region) -> Value {
    json!({
        "region_id": r.region_id.as_str(),
        "name": &*r.name,
        "store_ids": r.store_ids.iter().map(StoreId::as_str).collect::<Vec<_>>(),
        "updated_at": rfc3339(r.updated_ms),
    })
}

#[derive(Deserialize)]
struct RegionBody {
    name: Option<String>,
    store_ids: Option<Vec<String>>,
}

pub async fn put_region(
    state: Data,
    req: HttpRequest,
    path: web::Path<String>,
    body: Bytes,
) -> ApiResult {
    state.require_admin(&req)?;
    let sagas = sagas(&state)?;
    let region_id = parse_region_id(&path)?;
    let parsed: RegionBody = parse_body(&req, &body)?;
    let name = parse_name(parsed.name.as_deref(), "name")?;
    let store_ids = parsed
        .store_ids
        .ok_or_else(|| ApiError::bad_request("store_ids is required", "List the region's stores."))?
        .iter()
        .map(|s| parse_store_id(s))
        .collect::<Result<Vec<_>, _>>()?;
    let region = sagas.regions.put(stamp(region_id, name, store_ids)).await?;
    Ok(json_response(StatusCode::OK, &region_view(&region)))
}

pub async fn get_region(state: Data, req: HttpRequest, path: web::Path<String>) -> ApiResult {
    state.require_admin(&req)?;
    let region_id = parse_region_id(&path)?;
    let region = sagas(&state)?
        .regions
        .get(&region_id)
        .ok_or(SagaError::RegionNotFound)?;
    Ok(json_response(StatusCode::OK, &region_view(&region)))
}

/// An order body without `store_id` (serde's `flatten` would lose the object checks).
#[derive(Deserialize)]
struct RegionOrderBody {
    customer_phone: Option<String>,
    customer_name: Option<String>,
    delivery_address: Option<String>,
    items: Option<Vec<Obj<ItemBody>>>,
    payment_method: Option<String>,
    delivery_location: Option<Obj<LocationBody>>,
    allow_split: Option<bool>,
}

fn parse_region_order(req: &HttpRequest, body: &[u8]) -> Result<RegionRequest, ApiError> {
    let parsed: RegionOrderBody = parse_body(req, body)?;
    // The same checks as an order's; the store is what routing chooses.
    let order = OrderBody {
        store_id: Some("region".into()),
        customer_phone: parsed.customer_phone,
        customer_name: parsed.customer_name,
        delivery_address: parsed.delivery_address,
        items: parsed.items,
        payment_method: parsed.payment_method,
        reservation_id: None,
        allow_partial: None,
    };
    let order = order.parse()?.draft;
    let delivery_location = match parsed.delivery_location {
        Some(Obj(l)) => l.parse("delivery_location")?,
        None => {
            return Err(ApiError::bad_request(
                "delivery_location is required",
                "Say where the order goes: {lat, lon}.",
            ));
        }
    };
    Ok(RegionRequest {
        customer: order.customer,
        items: order.items,
        payment_method: order.payment_method,
        delivery_location,
        allow_split: parsed.allow_split == Some(true),
    })
}

pub async fn post_region_order(
    state: Data,
    req: HttpRequest,
    path: web::Path<String>,
    body: Bytes,
) -> ApiResult {
    state.require_admin(&req)?;
    let region_id = parse_region_id(&path)?;
    run_keyed(state, req, body, move |sagas, req, body, idem| async move {
        let request = parse_region_order(&req, &body)?;
        Ok(sagas.region_order(&region_id, request, idem).await?)
    })
    .await
}

/// Starts a saga once per `Idempotency-Key` (see `keyed`) and answers with how it ended.
async fn run_keyed<F, Fut>(state: Data, req: HttpRequest, body: Bytes, start: F) -> ApiResult
where
    F: FnOnce(Arc<Sagas>, HttpRequest, Bytes, Option<crate::wal::IdemTag>) -> Fut + 'static,
    Fut: std::future::Future<Output = Result<Saga, ApiError>> + 'static,
{
    let work = {
        let (state, req, body) = (state.clone(), req.clone(), body.clone());
        move |idem| async move {
            let run = async { start(sagas(&state)?.clone(), req, body, idem).await };
            match run.await {
                Ok(saga) => saga_answer(&state, &saga)
                    .await
                    .unwrap_or_else(|e| e.answer()),
                Err(e) => e.answer(),
            }
        }
    };
    let answer = keyed::once_per_key(&state, &req, &body, work).await?;
    Ok(keyed::respond(&answer))
}

#[derive(Deserialize)]
struct TransferBody {
    from_store: Option<String>,
    to_store: Option<String>,
    items: Option<Vec<Obj<ItemBody>>>,
    reference: Option<String>,
}

fn parse_transfer(req: &HttpRequest, body: &[u8]) -> Result<Transfer, ApiError> {
    let parsed: TransferBody = parse_body(req, body)?;
    let store = |s: Option<&str>, error: &'static str| match s {
        None | Some("") => Err(ApiError::bad_request(error, "Name both stores.")),
        Some(s) => parse_store_id(s),
    };
    let from_store = store(parsed.from_store.as_deref(), "from_store is required")?;
    let to_store = store(parsed.to_store.as_deref(), "to_store is required")?;
    let no_items = ApiError::bad_request(
        "Transfer must contain at least one item",
        "Send at least one item.",
    );
    let lines = parse_items(parsed.items, no_items)?
        .into_iter()
        .map(|i| ReservationLine {
            product_id: i.product_id,
            quantity: i.quantity,
        })
        .collect();
    let reference = match parsed.reference.as_deref() {
        None => None,
        Some(r) => Some(parse_text(Some(r), "reference")?),
    };
    Ok(Transfer {
        from_store,
        to_store,
        lines,
        reference,
    })
}

pub async fn post_transfer(state: Data, req: HttpRequest, body: Bytes) -> ApiResult {
    state.require_admin(&req)?;
    run_keyed(state, req, body, |sagas, req, body, idem| async move {
        let transfer = parse_transfer(&req, &body)?;
        Ok(sagas.transfer(transfer, idem).await?)
    })
    .await
}

pub async fn get_transfer(state: Data, req: HttpRequest, path: web::Path<String>) -> ApiResult {
    state.require_admin(&req)?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "Transfer not found",
            "There is no transfer with this id.",
        )
    };
    let id = path.into_inner();
    if !id.starts_with("TRF") {
        return Err(not_found());
    }
    let saga = sagas(&state)?.read(&id).await?.ok_or_else(not_found)?;
    match &saga.plan {
        Plan::Transfer(t) => Ok(json_response(StatusCode::OK, &transfer_view(&saga, t))),
        Plan::Region(_) => Err(not_found()),
    }
}

fn transfer_view(saga: &Saga, t: &Transfer) -> Value {
    let (status, reason) = match &saga.phase {
        Phase::Completed => ("completed", None),
        Phase::Failed(why) => ("failed", Some(&**why)),
        Phase::Started | Phase::Committing => ("pending", None),
    };
    let mut view = json!({
        "transfer_id": &*saga.id,
        "from_store": t.from_store.as_str(),
        "to_store": t.to_store.as_str(),
        "items": t.lines.iter().map(|l| json!({
            "product_id": l.product_id.as_str(),
            "quantity": qty_json(l.quantity),
        })).collect::<Vec<_>>(),
        "status": status,
        "created_at": rfc3339(saga.created_ms),
    });
    if let Some(r) = &t.reference {
        view["reference"] = json!(&**r);
    }
    if let Some(why) = reason {
        view["failure_reason"] = json!(why);
    }
    view
}

/// A step of another process's saga at a store of this one (`saga::steps`; admin only,
/// reached through the region's proxy). The answer is the step's result as JSON, refusals
/// included: only a failure to run it at all is an HTTP error.
pub async fn post_saga_step(
    state: Data,
    req: HttpRequest,
    path: web::Path<String>,
    body: Bytes,
) -> ApiResult {
    state.require_admin(&req)?;
    let dir = state.dir()?;
    let store = parse_store_id(&path)?;
    let step: crate::saga::steps::Step = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("Invalid JSON", format!("Not a saga step: {e}")))?;
    let result = crate::saga::steps::run_local(dir, &store, step).await;
    Ok(json_response(StatusCode::OK, &result))
}

/// The answer a saga that ended gives (also to a retry with its `Idempotency-Key`): a
/// completed transfer (201) or region order (200, its orders as they are now).
pub(super) async fn saga_answer(state: &AppState, saga: &Saga) -> Result<Answer, ApiError> {
    let (status, body) = match &saga.plan {
        Plan::Transfer(t) => (201, transfer_view(saga, t)),
        Plan::Region(r) => {
            let mut orders = Vec::with_capacity(r.parts.len());
            for (part, &id) in r.parts.iter().zip(&r.orders) {
                // Read where its store lives (another process's orders are not here).
                let order: Order = sagas(state)?
                    .order(&part.store_id, id)
                    .await?
                    .ok_or_else(|| ApiError::storage("a region order's order is missing"))?;
                orders.push(
                    serde_json::to_value(OrderView::new(&order, true, &state.order_ids))
                        .unwrap_or_default(),
                );
            }
            (200, json!({"orders": orders}))
        }
    };
    Ok(Answer {
        status,
        body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
    })
}

/// The answer remembered for a key that ran saga `id`.
pub(super) async fn saved_saga_answer(state: &AppState, id: &str) -> Result<Answer, ApiError> {
    let saga = sagas(state)?
        .read(id)
        .await?
        .ok_or_else(|| ApiError::storage("a remembered saga is missing"))?;
    saga_answer(state, &saga).await
}
