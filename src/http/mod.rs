//! HTTP: actix-web routes per `shared/API.md`. Handlers parse requests into domain types,
//! ask the store's actor, wait for durability, and render JSON. Errors are `ApiError`.

mod analytics;
pub mod auth;
mod batch;
mod catalogue_csv;
mod dashboard;
pub mod error;
pub mod events;
mod handlers;
mod keyed;
mod listing;
mod moves;
pub mod openapi;
mod partial;
mod regions;
mod returns;
mod scrape;
mod tokens;
mod webhooks;
pub use handlers::exec;
pub mod idempotency;
pub mod json;

use crate::actor::Directory;
use crate::domain::{OrderIdCodec, StoreId};
use crate::wal::Archive;
use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
pub use auth::{Auth, Caller};
pub use error::ApiError;
use std::sync::{Arc, OnceLock};

/// Largest request body: 1 MiB holds a 500-line order many times over.
pub const BODY_BYTES_MAX: usize = 1 << 20;

pub struct AppState {
    /// Set once recovery is done; until then the API answers 503 "Not ready".
    pub directory: OnceLock<Arc<Directory>>,
    /// Reads of orders, the ledger and remembered answers (see `wal::archive`).
    pub archive: Archive,
    /// Public order ids (keyed with the data directory's secret).
    pub order_ids: OrderIdCodec,
    pub auth: Auth,
    pub idem: Arc<idempotency::IdemTable>,
    /// Public events, live, once durable (the views hand them over).
    pub bus: Arc<crate::wal::EventBus>,
    /// The hosts webhooks may point at (`None`: any).
    pub webhook_hosts: Option<Vec<String>>,
    /// Runs transfers and region orders; set once recovery is done.
    pub sagas: OnceLock<Arc<crate::saga::Sagas>>,
    /// Delivers webhooks; set once recovery is done.
    pub deliverer: OnceLock<Arc<crate::delivery::Deliverer>>,
    /// This process's side of store moves; set once recovery is done.
    pub moves: OnceLock<Arc<crate::moving::Moves>>,
    /// A random id drawn at the start, shown to a probe (`cluster::PROBE_HEADER`): the
    /// mover learns from it which process nginx sends a store's calls to.
    pub instance: String,
    /// Event streams open now (the bus also counts webhook tasks, which are not streams).
    pub sse_streams: Arc<std::sync::atomic::AtomicUsize>,
    /// Set to true when the server shuts down: event streams end.
    pub closing: tokio::sync::watch::Sender<bool>,
}

impl AppState {
    pub fn new(archive: Archive, auth: Auth, order_ids: OrderIdCodec) -> AppState {
        AppState {
            directory: OnceLock::new(),
            archive,
            order_ids,
            auth,
            idem: Arc::default(),
            bus: Arc::default(),
            sse_streams: Arc::default(),
            deliverer: OnceLock::new(),
            moves: OnceLock::new(),
            instance: format!("{:016x}", fastrand::u64(..)),
            sagas: OnceLock::new(),
            webhook_hosts: None,
            closing: tokio::sync::watch::channel(false).0,
        }
    }

    pub fn dir(&self) -> Result<&Arc<Directory>, ApiError> {
        self.directory.get().ok_or_else(ApiError::not_ready)
    }

    pub fn caller(&self, req: &HttpRequest) -> Result<Caller, ApiError> {
        let stores = self.directory.get().map(|d| &*d.tokens);
        self.auth.caller(req, stores)
    }

    /// Store settings and tokens.
    pub fn require_admin(&self, req: &HttpRequest) -> Result<(), ApiError> {
        self.caller(req)?.admin()
    }

    /// A store's catalogue, ledger and alerts.
    /// A store-scoped route's preliminaries: the caller may act for `store` (the admin or
    /// that store's token), the stores are up, and the id is valid.
    pub fn store_route(
        &self,
        req: &HttpRequest,
        store: &str,
    ) -> Result<(&Arc<Directory>, StoreId), ApiError> {
        self.require_store(req, store)?;
        let dir = self.dir()?;
        Ok((dir, json::parse_store_id(store)?))
    }

    pub fn require_store(&self, req: &HttpRequest, store: &str) -> Result<(), ApiError> {
        let caller = self.caller(req)?;
        caller.any_store()?;
        match StoreId::parse(store) {
            Some(store) => caller.store(&store),
            // A store token never acts for a malformed id; the admin learns it is malformed.
            None if caller == Caller::Admin => Ok(()),
            None => Err(ApiError::forbidden()),
        }
    }

    /// Placing orders and reading stock.
    pub fn require_client(&self, req: &HttpRequest) -> Result<(), ApiError> {
        self.caller(req)?.client(self.auth.has_client())
    }
}

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    use handlers::*;
    cfg.app_data(web::PayloadConfig::new(BODY_BYTES_MAX))
        // Resources, not bare routes: another method on these paths is 405, not 404.
        .service(web::resource("/").get(dashboard::index))
        .service(web::resource("/dashboard.css").get(dashboard::css))
        .service(web::resource("/dashboard.js").get(dashboard::js))
        .service(web::resource("/health").get(health))
        .service(web::resource("/ready").get(ready))
        .service(web::resource("/metrics").get(scrape::metrics))
        .service(web::resource("/openapi.json").get(openapi))
        .service(
            web::resource("/api/v1/stores/{store_id}")
                .get(get_store)
                .put(put_store),
        )
        .service(
            web::resource("/api/v1/stores/{store_id}/tokens")
                .get(tokens::list)
                .post(tokens::issue),
        )
        .service(
            web::resource("/api/v1/stores/{store_id}/tokens/{token_id}").delete(tokens::revoke),
        )
        .service(web::resource("/api/v1/stores/{store_id}/events").get(events::events))
        .service(web::resource("/api/v1/stores/{store_id}/analytics").get(analytics::store))
        .service(web::resource("/api/v1/stores/{store_id}/reorder").get(analytics::reorder))
        .service(
            web::resource("/api/v1/inventory/products/{store_id}/{product_id}/analytics")
                .get(analytics::product),
        )
        .service(
            web::resource("/api/v1/stores/{store_id}/webhooks")
                .get(webhooks::list)
                .post(webhooks::create),
        )
        .service(
            web::resource("/api/v1/stores/{store_id}/webhooks/{webhook_id}")
                .delete(webhooks::remove),
        )
        .service(
            web::resource("/api/v1/stores/{store_id}/webhooks/{webhook_id}/deliveries")
                .get(webhooks::deliveries),
        )
        .service(web::resource("/api/v1/stores/{store_id}/reservations").post(post_reservation))
        .service(
            web::resource("/api/v1/stores/{store_id}/reservations/{reservation_id}")
                .delete(delete_reservation),
        )
        .service(web::resource("/api/v1/stores/{store_id}/alerts/low-stock").get(get_low_stock))
        .service(web::resource("/api/v1/inventory/availability").post(partial::post_availability))
        .service(web::resource("/api/v1/inventory/products/{store_id}").get(list_products))
        // Before `…/{store_id}/{product_id}`, which would take these names as product ids.
        .service(
            web::resource("/api/v1/inventory/products/{store_id}/export")
                .get(catalogue_csv::export),
        )
        .service(
            web::resource("/api/v1/inventory/products/{store_id}/import")
                .app_data(web::PayloadConfig::new(catalogue_csv::IMPORT_BYTES_MAX))
                .post(catalogue_csv::import),
        )
        .service(
            web::resource("/api/v1/inventory/products/{store_id}/{product_id}")
                .get(get_product)
                .put(put_product),
        )
        .service(
            web::resource("/api/v1/inventory/products/{store_id}/{product_id}/adjustments")
                .post(post_adjustment),
        )
        .service(
            web::resource("/api/v1/inventory/products/{store_id}/{product_id}/movements")
                .get(get_movements),
        )
        .service(
            web::resource("/api/v1/regions/{region_id}")
                .put(regions::put_region)
                .get(regions::get_region),
        )
        .service(
            web::resource("/api/v1/regions/{region_id}/orders").post(regions::post_region_order),
        )
        .service(web::resource("/api/v1/transfers").post(regions::post_transfer))
        .service(
            web::resource("/api/v1/stores/{store_id}/saga-steps").post(regions::post_saga_step),
        )
        .service(
            web::resource("/api/v1/stores/{store_id}/move-out")
                .app_data(web::PayloadConfig::new(moves::MOVE_BODY_MAX))
                .post(moves::post_move_out),
        )
        .service(
            web::resource("/api/v1/stores/{store_id}/move-in")
                .app_data(web::PayloadConfig::new(moves::MOVE_BODY_MAX))
                .post(moves::post_move_in),
        )
        .service(web::resource("/api/v1/transfers/{transfer_id}").get(regions::get_transfer))
        .service(web::resource(["/api/v1/orders", "/api/v1/orders/"]).post(post_order))
        .service(web::resource("/api/v1/orders/{order_id}").get(get_order))
        .service(web::resource("/api/v1/orders/{order_id}/payment").post(post_payment))
        .service(web::resource("/api/v1/orders/{order_id}/cancel").post(post_cancel))
        .service(web::resource("/api/v1/orders/{order_id}/returns").post(returns::post_return))
        // The same handlers under the store (a proxy can route by path alone).
        .service(
            web::resource("/api/v1/stores/{store_id}/orders")
                .get(listing::list_orders)
                .post(post_store_order),
        )
        .service(web::resource("/api/v1/stores/{store_id}/orders/batch").post(batch::post_batch))
        .service(web::resource("/api/v1/stores/{store_id}/orders/{order_id}").get(get_order))
        .service(
            web::resource("/api/v1/stores/{store_id}/orders/{order_id}/payment").post(post_payment),
        )
        .service(
            web::resource("/api/v1/stores/{store_id}/orders/{order_id}/cancel").post(post_cancel),
        )
        .service(
            web::resource("/api/v1/stores/{store_id}/orders/{order_id}/returns")
                .post(returns::post_return),
        )
        .default_service(web::to(not_found));
}

/// Longest `X-Request-Id` taken from a client; a longer or odd one is replaced by ours.
const REQUEST_ID_LEN_MAX: usize = 128;

/// The methods that get a label of their own in request metrics (any other is `other`, so
/// that a client inventing methods cannot grow the metrics).
const METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];

/// Gives every request an id (the client's `X-Request-Id` when it is sane, else a new one),
/// logs within a span that carries it, returns it in `X-Request-Id`, and counts the
/// request by route template, method and status, with its latency.
pub async fn request_context(
    req: ServiceRequest,
    next: actix_web::middleware::Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    use tracing::Instrument;
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= REQUEST_ID_LEN_MAX
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:016x}", fastrand::u64(..)));
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let method = METHODS
        .into_iter()
        .find(|m| *m == req.method().as_str())
        .unwrap_or("other");
    let started = std::time::Instant::now();
    let span = tracing::info_span!("request", id = %id);
    let mut res = next.call(req).instrument(span.clone()).await?;
    let (status, ms) = (res.status().as_u16(), started.elapsed().as_millis() as u64);
    span.in_scope(|| match status {
        500.. => tracing::warn!(%route, method, status, ms, "request failed"),
        _ => tracing::debug!(%route, method, status, ms, "request done"),
    });
    if let Ok(value) = header::HeaderValue::from_str(&id) {
        res.headers_mut()
            .insert(header::HeaderName::from_static("x-request-id"), value);
    }
    let status = res.status().as_u16().to_string();
    metrics::counter!("godown_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("godown_http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    Ok(res)
}

/// While a proxy searches for the node that holds an order or a store (it sends
/// [`crate::cluster::SEARCH_HEADER`]), "Store not found" and "Order not found" answer 421
/// (not here: ask the next node) instead of 404, and so does a store that has moved away or
/// is still arriving ([`error::ApiError::not_here`]). Nothing else changes.
pub async fn cluster_search(
    req: ServiceRequest,
    next: actix_web::middleware::Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    use actix_web::http::StatusCode;
    let searching = req.headers().contains_key(crate::cluster::SEARCH_HEADER);
    let instance = req
        .headers()
        .contains_key(crate::cluster::PROBE_HEADER)
        .then(|| {
            req.app_data::<web::Data<AppState>>()
                .map(|s| s.instance.clone())
        })
        .flatten();
    let mut res = next.call(req).await?.map_into_boxed_body();
    if let Some(id) = instance.and_then(|i| header::HeaderValue::from_str(&i).ok()) {
        let name = header::HeaderName::from_static(crate::cluster::INSTANCE_HEADER);
        res.headers_mut().insert(name, id);
    }
    if !searching
        || !matches!(
            res.status(),
            StatusCode::NOT_FOUND | StatusCode::SERVICE_UNAVAILABLE
        )
    {
        return Ok(res);
    }
    let res_status = res.status();
    let (req, res) = res.into_parts();
    let (head, body) = res.into_parts();
    let bytes = actix_web::body::to_bytes(body).await.unwrap_or_default();
    let body = serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_default();
    let miss = match (res_status, body["error"].as_str()) {
        (StatusCode::NOT_FOUND, Some(e)) => e == "Store not found" || e == "Order not found",
        // Arriving here, or gone from here: another process serves the store. (A store
        // frozen for its cutover answers 503 plainly: the client retries in a second.)
        _ => body["message"].as_str() == Some(error::NOT_HERE),
    };
    let mut res = head.set_body(BoxBody::new(bytes));
    if miss {
        *res.status_mut() = StatusCode::MISDIRECTED_REQUEST;
    }
    Ok(ServiceResponse::new(req, res))
}

/// Rewrites any error response that is not already JSON (actix's own 404/405/413/400
/// answers are plain text) into the contract's `{"error", "message"}` shape.
pub async fn json_errors(
    req: ServiceRequest,
    next: actix_web::middleware::Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<BoxBody>>, actix_web::Error> {
    let res = next.call(req).await?;
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !status.is_client_error() && !status.is_server_error() || is_json {
        return Ok(res.map_body(|_, b| EitherBody::left(b.boxed())));
    }
    let (phrase, message) = match status.as_u16() {
        413 => (
            "Payload too large",
            "The request body is larger than this route takes (1 MiB; a CSV import 50 MiB).",
        ),
        404 => ("Not found", "There is no such resource."),
        405 => (
            "Method not allowed",
            "This resource does not support this method.",
        ),
        415 => (
            "Unsupported media type",
            "Send the body as JSON with `Content-Type: application/json`.",
        ),
        400 => ("Bad request", "The request could not be read."),
        _ => ("Internal error", "Something went wrong on our side."),
    };
    let err = ApiError::new(status, phrase, message);
    let (req, _) = res.into_parts();
    let mut response = actix_web::ResponseError::error_response(&err);
    if status == actix_web::http::StatusCode::METHOD_NOT_ALLOWED
        && let Some(allow) = req
            .match_pattern()
            .and_then(|p| openapi::allowed_methods(&p))
        && let Ok(value) = header::HeaderValue::from_str(&allow)
    {
        response.headers_mut().insert(header::ALLOW, value);
    }
    Ok(ServiceResponse::new(req, response).map_body(|_, b| EitherBody::right(b)))
}

pub(crate) fn json_response(
    status: actix_web::http::StatusCode,
    body: &impl serde::Serialize,
) -> HttpResponse {
    match serde_json::to_vec(body) {
        Ok(bytes) => HttpResponse::build(status)
            .content_type("application/json")
            .body(bytes),
        Err(e) => actix_web::ResponseError::error_response(&ApiError::new(
            actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
            e.to_string(),
        )),
    }
}
