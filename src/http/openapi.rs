//! The OpenAPI 3 document of this API (`GET /openapi.json`), built here so that each rule
//! is written once: the id pattern, the error responses, the access rule of each route.
//! It must say exactly what the server does (a client generated from it works): the
//! Schemathesis run of `scripts/schemathesis.sh` checks every operation against it, and
//! `tests/openapi.rs` checks that every route is in it.

use serde_json::{Map, Value, json};
use std::sync::OnceLock;

/// Store, product, reservation and token ids (API.md "Ids and limits").
const ID_PATTERN: &str = "^[A-Za-z0-9_.:-]{1,128}$";
/// Text with something other than whitespace in it (Rust's `char::is_whitespace`): names.
const NOT_BLANK: &str =
    "[^\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
/// Public order ids: 16 hex digits, or 8 for orders placed before v2.
const ORDER_ID_PATTERN: &str = "^ORD([0-9A-F]{16}|[0-9A-F]{8})$";

/// Who may call an operation.
#[derive(Clone, Copy)]
enum Access {
    /// No token needed, and none is checked (operations endpoints).
    Open,
    /// Open unless a client token is set; a token that is sent must be valid (401).
    Client,
    /// The admin or the store's token (403 for another store's).
    Store,
    /// The admin only.
    Admin,
}

/// The document, built once.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

fn build() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "godown",
            "version": "2",
            "description": "Inventory and order engine for kirana stores. Contract: shared/API.md (v2). Every error body is {error, message, ...}; Error.error lists every phrase. Quantities are JSON numbers with at most 3 decimals, money at most 2; a store's units decide whether a quantity must be whole (pieces, pack)."
        },
        "paths": with_links(paths()),
        "components": {
            "schemas": schemas(),
            "responses": error_responses(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        }
    })
}

fn paths() -> Value {
    let store = || id_param("store_id");
    let product = || id_param("product_id");
    let order = || {
        param(
            "order_id",
            "path",
            json!({"type": "string", "pattern": ORDER_ID_PATTERN}),
        )
    };
    let limit = || {
        param(
            "limit",
            "query",
            json!({"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
        )
    };
    let idem = param(
        "Idempotency-Key",
        "header",
        json!({"type": "string", "pattern": "^[ -~]{1,128}$"}),
    );
    let place_order = op(
        "Place an order (Idempotency-Key honoured)",
        Access::Client,
        vec![idem.clone()],
        Some("OrderInput"),
        (200, "Order"),
        &[400, 404, 409],
    );
    // The order calls again under their store (`/api/v1/stores/{store_id}/orders…`).
    let in_store = |mut o: Value| {
        if let Some(params) = o["parameters"].as_array_mut() {
            params.insert(0, store());
        }
        o
    };
    let mut store_order = in_store(place_order.clone());
    store_order["summary"] =
        json!("Place an order at this store (a body store_id, if any, must be this store)");
    if let Some(schema) = store_order["requestBody"]["content"]["application/json"].as_object_mut()
    {
        schema.insert("schema".into(), schema_ref("StoreOrderInput"));
    }
    // A cancel's body (a reason) may be left out.
    let mut cancel = op(
        "Cancel an order",
        Access::Store,
        vec![order()],
        Some("CancelInput"),
        (200, "Order"),
        &[400, 404, 409],
    );
    cancel["requestBody"]["required"] = json!(false);
    // The catalogue as CSV, out and in.
    let mut export = op(
        "Export the catalogue as CSV",
        Access::Store,
        vec![store()],
        None,
        (200, "ImportResult"),
        &[400, 404],
    );
    export["responses"]["200"] = json!({"description": "product_id,product_name,unit,unit_price,on_hand,reserved,current_stock,low_stock_threshold,category",
        "content": {"text/csv": {"schema": {"type": "string"}}}});
    let mut import = op(
        "Import products from CSV (all rows or none)",
        Access::Store,
        vec![store()],
        Some("ImportResult"),
        (200, "ImportResult"),
        &[400, 404],
    );
    import["requestBody"]["content"] = json!({"text/csv": {"schema": {"type": "string", "description": "A header naming product_id, product_name, unit, unit_price (required) and on_hand, low_stock_threshold, category (optional), then up to 100,000 rows"}}});
    // The reorder list, as JSON or (Accept: text/csv) as a purchase list.
    let mut reorder = op(
        "Products at or below their reorder point (JSON, or CSV with Accept: text/csv)",
        Access::Store,
        vec![store()],
        None,
        (200, "Reorder"),
        &[400, 404],
    );
    reorder["responses"]["200"]["content"]["text/csv"] = json!({"schema": {"type": "string"}});
    let take_return = op(
        "Take a return of a confirmed order (Idempotency-Key honoured)",
        Access::Store,
        vec![order(), idem.clone()],
        Some("ReturnInput"),
        (201, "Return"),
        &[400, 404, 409],
    );
    let mut events = op(
        "A store's events: a page (oldest first), or Server-Sent Events with Accept: text/event-stream",
        Access::Store,
        vec![
            store(),
            limit(),
            param(
                "after",
                "query",
                json!({"type": "string", "pattern": "^[0-9]{0,19}$", "description": "An event id; empty or absent: from the oldest kept"}),
            ),
            param(
                "Last-Event-ID",
                "header",
                json!({"type": "string", "pattern": "^[0-9]{0,19}$"}),
            ),
        ],
        None,
        (200, "EventPage"),
        &[400, 404],
    );
    events["responses"]["200"]["content"]["text/event-stream"] =
        json!({"schema": {"type": "string"}});
    json!({
        "/api/v1/stores/{store_id}": {
            "put": op("Create or update a store", Access::Admin, vec![store()], Some("StoreInput"), (200, "Store"), &[400]),
            "get": op("Read a store", Access::Client, vec![store()], None, (200, "Store"), &[400, 404]),
        },
        "/api/v1/stores/{store_id}/tokens": {
            "post": op("Issue a store token (shown once)", Access::Admin, vec![store()], None, (201, "IssuedToken"), &[400, 404, 409]),
            "get": op("A store's live tokens, ids only", Access::Admin, vec![store()], None, (200, "TokenList"), &[400, 404]),
        },
        "/api/v1/stores/{store_id}/tokens/{token_id}": {
            "delete": op("Revoke a store token at once", Access::Admin, vec![store(), id_param("token_id")], None, (200, "Revoked"), &[400, 404]),
        },
        "/api/v1/inventory/products/{store_id}/export": {
            "get": export,
        },
        "/api/v1/inventory/products/{store_id}/import": {
            "post": import,
        },
        "/api/v1/inventory/products/{store_id}": {
            "get": op("List products by id", Access::Client,
                vec![store(), limit(), param("after", "query", json!({"type": "string", "pattern": "^[A-Za-z0-9_.:-]{0,128}$", "description": "A product id; empty or absent: from the start"}))],
                None, (200, "ProductPage"), &[400, 404]),
        },
        "/api/v1/inventory/products/{store_id}/{product_id}": {
            "put": op("Create or update a product", Access::Store, vec![store(), product()], Some("ProductInput"), (200, "Product"), &[400, 404]),
            "get": op("Read a product's stock", Access::Client, vec![store(), product()], None, (200, "Product"), &[400, 404]),
        },
        "/api/v1/inventory/products/{store_id}/{product_id}/adjustments": {
            "post": op("Adjust on_hand", Access::Store, vec![store(), product()], Some("AdjustmentInput"), (200, "Adjusted"), &[400, 404]),
        },
        "/": {
            "get": {"summary": "The dashboard (HTML; it asks for a store id and a token)", "security": [],
                    "responses": {"200": {"description": "The page", "content": {"text/html": {"schema": {"type": "string"}}}}}},
        },
        "/api/v1/inventory/products/{store_id}/{product_id}/analytics": {
            "get": op("A product's sales, velocity, reorder point and 7-day forecast", Access::Store, vec![store(), product()], None, (200, "ProductAnalytics"), &[400, 404]),
        },
        "/api/v1/stores/{store_id}/analytics": {
            "get": op("A store's orders, units, revenue and top sellers over `days`", Access::Store,
                vec![store(), param("days", "query", json!({"type": "integer", "minimum": 1, "maximum": 365, "default": 28}))],
                None, (200, "StoreAnalytics"), &[400, 404]),
        },
        "/api/v1/stores/{store_id}/reorder": {
            "get": reorder,
        },
        "/api/v1/inventory/products/{store_id}/{product_id}/movements": {
            "get": op("The product's ledger, newest first", Access::Store,
                vec![store(), product(), limit(), param("after", "query", json!({"type": "string", "pattern": "^([0-9]{1,19})?$", "description": "A movement_id; empty or absent: from the newest"}))],
                None, (200, "MovementPage"), &[400, 404]),
        },
        "/api/v1/inventory/availability": {
            "post": op("Check a cart without changing anything", Access::Client, vec![], Some("AvailabilityInput"), (200, "Availability"), &[400, 404]),
        },
        "/api/v1/orders/": {"post": place_order.clone()},
        "/api/v1/orders": {"post": place_order},
        "/api/v1/regions/{region_id}": {
            "put": op("Create or replace a region: a named list of stores", Access::Admin, vec![id_param("region_id")], Some("RegionInput"), (200, "Region"), &[400]),
            "get": op("Read a region", Access::Admin, vec![id_param("region_id")], None, (200, "Region"), &[400, 404]),
        },
        "/api/v1/regions/{region_id}/orders": {
            "post": op("Place a region order: the nearest store with every item, or with allow_split the fewest stores (Idempotency-Key honoured)", Access::Admin, vec![id_param("region_id"), idem.clone()], Some("RegionOrderInput"), (200, "RegionOrders"), &[400, 404, 409]),
        },
        "/api/v1/transfers": {
            "post": op("Move stock from one store to another, both or neither (Idempotency-Key honoured)", Access::Admin, vec![idem.clone()], Some("TransferInput"), (201, "Transfer"), &[400, 404, 409]),
        },
        "/api/v1/stores/{store_id}/saga-steps": {
            "post": op("A step of a transfer or region order, sent by another process of the region through its proxy (internal; safe to send again)", Access::Admin, vec![store()], Some("SagaStep"), (200, "SagaStepResult"), &[400]),
        },
        "/api/v1/stores/{store_id}/move-out": {
            "post": octet_op(op("A step of moving this store to another process, asked of the process it leaves by `godown cluster move` (internal: a bincode frame in, a frame out)", Access::Admin, vec![store()], Some("MoveStep"), (200, "MoveReply"), &[400, 404, 409]), true),
        },
        "/api/v1/stores/{store_id}/move-in": {
            "post": octet_op(op("A step of moving this store here from another process, sent by `godown cluster move` (internal: a bincode frame in)", Access::Admin, vec![store()], Some("MoveStep"), (200, "MoveAccepted"), &[400, 404, 409]), false),
        },
        "/api/v1/transfers/{transfer_id}": {
            "get": op("Read a transfer", Access::Admin, vec![id_param("transfer_id")], None, (200, "Transfer"), &[404]),
        },
        "/api/v1/orders/{order_id}": {
            "get": op("Read an order", Access::Client, vec![order()], None, (200, "Order"), &[404]),
        },
        "/api/v1/stores/{store_id}/orders": {
            "post": store_order,
            "get": op("The store's orders, newest first", Access::Store,
                vec![store(), limit(),
                     param("status", "query", json!({"type": "string", "enum": ["", "pending_payment", "confirmed", "cancelled", "expired", "payment_failed", "returned"], "description": "empty: any"})),
                     param("since", "query", json!({"type": "string", "pattern": "^([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?Z)?$", "description": "RFC 3339, UTC; empty: any time"})),
                     param("after", "query", json!({"type": "string", "pattern": "^(ORD([0-9A-F]{16}|[0-9A-F]{8}))?$", "description": "An order_id; empty: from the newest"}))],
                None, (200, "OrderList"), &[400, 404]),
        },
        "/api/v1/stores/{store_id}/orders/batch": {
            "post": op("Place up to 500 orders at this store in one call: one {status, body} per order, each what the single route would answer; durable as a whole (Idempotency-Key covers the batch)", Access::Client, vec![store(), idem.clone()], Some("BatchInput"), (200, "BatchResult"), &[400, 404, 409]),
        },
        "/api/v1/stores/{store_id}/orders/{order_id}": {
            "get": in_store(op("Read an order of this store", Access::Client, vec![order()], None, (200, "Order"), &[400, 404])),
        },
        "/api/v1/stores/{store_id}/orders/{order_id}/payment": {
            "post": in_store(op("Payment provider callback", Access::Store, vec![order()], Some("PaymentInput"), (200, "Order"), &[400, 404, 409])),
        },
        "/api/v1/stores/{store_id}/orders/{order_id}/returns": {
            "post": in_store(take_return.clone()),
        },
        "/api/v1/orders/{order_id}/returns": {
            "post": take_return,
        },
        "/api/v1/stores/{store_id}/orders/{order_id}/cancel": {
            "post": in_store(cancel.clone()),
        },
        "/api/v1/orders/{order_id}/payment": {
            "post": op("Payment provider callback", Access::Store, vec![order()], Some("PaymentInput"), (200, "Order"), &[400, 404, 409]),
        },
        "/api/v1/orders/{order_id}/cancel": {
            "post": cancel,
        },
        "/api/v1/stores/{store_id}/events": {
            "get": events,
        },
        "/api/v1/stores/{store_id}/webhooks": {
            "post": op("Register a webhook (its secret is shown only here)", Access::Store, vec![store()], Some("WebhookInput"), (201, "CreatedWebhook"), &[400, 404, 409]),
            "get": op("A store's webhooks, without secrets", Access::Store, vec![store()], None, (200, "WebhookList"), &[400, 404]),
        },
        "/api/v1/stores/{store_id}/webhooks/{webhook_id}": {
            "delete": op("Remove a webhook; delivery stops", Access::Store, vec![store(), id_param("webhook_id")], None, (200, "RemovedWebhook"), &[400, 404]),
        },
        "/api/v1/stores/{store_id}/webhooks/{webhook_id}/deliveries": {
            "get": op("A webhook's recent delivery attempts, newest first", Access::Store,
                vec![store(), id_param("webhook_id"), param("limit", "query", json!({"type": "integer", "minimum": 1, "maximum": 100, "default": 50}))],
                None, (200, "Deliveries"), &[400, 404]),
        },
        "/api/v1/stores/{store_id}/reservations": {
            "post": op("Hold stock for a cart", Access::Client, vec![store()], Some("ReservationInput"), (201, "Reservation"), &[400, 404]),
        },
        "/api/v1/stores/{store_id}/reservations/{reservation_id}": {
            "delete": op("Release a hold", Access::Client, vec![store(), id_param("reservation_id")], None, (200, "Released"), &[400, 404]),
        },
        "/api/v1/stores/{store_id}/alerts/low-stock": {
            "get": op("Products at or below their threshold", Access::Store, vec![store()], None, (200, "LowStock"), &[400, 404]),
        },
        "/health": {"get": plain("The process is up", (200, "Status"), &[])},
        "/ready": {"get": plain("Recovery is done (503 until then)", (200, "Status"), &[503])},
        "/metrics": {"get": {
            "summary": "Prometheus metrics (godown_*)",
            "security": [],
            "responses": {"200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}}
        }},
        "/openapi.json": {"get": {
            "summary": "This document",
            "security": [],
            "responses": {"200": {"description": "OpenAPI 3", "content": {"application/json": {"schema": {"type": "object"}}}}}
        }},
    })
}

/// Gives each operation an id (`get /api/v1/orders/{order_id}` → `get_api_v1_orders_order_id`)
/// and links from what creates a resource to what reads, changes or ends it, so that a
/// client (or a stateful tester) can follow them.
fn with_links(mut paths: Value) -> Value {
    let id_of = |method: &str, path: &str| -> String {
        let path: String = path
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let mut id = format!("{method}{path}");
        while id.contains("__") {
            id = id.replace("__", "_");
        }
        id.trim_end_matches('_').to_string()
    };
    if let Some(paths) = paths.as_object_mut() {
        for (path, ops) in paths.iter_mut() {
            for (method, op) in ops.as_object_mut().into_iter().flatten() {
                op["operationId"] = json!(id_of(method, path));
            }
        }
    }
    let store = json!({"store_id": "$request.path.store_id"});
    let product =
        json!({"store_id": "$request.path.store_id", "product_id": "$request.path.product_id"});
    let order = json!({"order_id": "$response.body#/order_id"});
    let links: [(&str, &str, &str, &[&str], &Value); 6] = [
        (
            "/api/v1/orders/",
            "post",
            "200",
            &[
                "get /api/v1/orders/{order_id}",
                "post /api/v1/orders/{order_id}/payment",
                "post /api/v1/orders/{order_id}/cancel",
                "post /api/v1/orders/{order_id}/returns",
            ],
            &order,
        ),
        (
            "/api/v1/orders",
            "post",
            "200",
            &[
                "get /api/v1/orders/{order_id}",
                "post /api/v1/orders/{order_id}/payment",
                "post /api/v1/orders/{order_id}/cancel",
                "post /api/v1/orders/{order_id}/returns",
            ],
            &order,
        ),
        (
            "/api/v1/stores/{store_id}",
            "put",
            "200",
            &[
                "get /api/v1/stores/{store_id}",
                "get /api/v1/inventory/products/{store_id}",
                "get /api/v1/stores/{store_id}/alerts/low-stock",
                "post /api/v1/stores/{store_id}/tokens",
                "get /api/v1/stores/{store_id}/tokens",
            ],
            &store,
        ),
        (
            "/api/v1/inventory/products/{store_id}/{product_id}",
            "put",
            "200",
            &[
                "get /api/v1/inventory/products/{store_id}/{product_id}",
                "post /api/v1/inventory/products/{store_id}/{product_id}/adjustments",
                "get /api/v1/inventory/products/{store_id}/{product_id}/movements",
            ],
            &product,
        ),
        (
            "/api/v1/stores/{store_id}/reservations",
            "post",
            "201",
            &["delete /api/v1/stores/{store_id}/reservations/{reservation_id}"],
            &json!({"store_id": "$request.path.store_id", "reservation_id": "$response.body#/reservation_id"}),
        ),
        (
            "/api/v1/stores/{store_id}/tokens",
            "post",
            "201",
            &["delete /api/v1/stores/{store_id}/tokens/{token_id}"],
            &json!({"store_id": "$request.path.store_id", "token_id": "$response.body#/token_id"}),
        ),
    ];
    for (path, method, code, targets, parameters) in links {
        let mut map = Map::new();
        for target in targets {
            let (m, p) = target.split_once(' ').expect("method and path");
            let target_id = id_of(m, p);
            map.insert(
                target_id.clone(),
                json!({"operationId": target_id, "parameters": parameters}),
            );
        }
        paths[path][method]["responses"][code]["links"] = Value::Object(map);
    }
    paths
}

fn param(name: &str, place: &str, schema: Value) -> Value {
    json!({"name": name, "in": place, "required": place == "path", "schema": schema})
}

fn id_param(name: &str) -> Value {
    param(
        name,
        "path",
        json!({"type": "string", "pattern": ID_PATTERN}),
    )
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// An operation: its parameters, its body (a schema name), its success and the errors it
/// can answer besides those every operation of its kind can (see below).
fn op(
    summary: &str,
    access: Access,
    parameters: Vec<Value>,
    body: Option<&str>,
    ok: (u16, &str),
    errors: &[u16],
) -> Value {
    let mut codes: Vec<u16> = errors.to_vec();
    // Any /api call: not ready, overloaded or a failed write (503); a token that is sent
    // and not valid (401).
    codes.extend([401, 503]);
    if matches!(access, Access::Store | Access::Admin) {
        codes.push(403);
    }
    if body.is_some() {
        codes.extend([400, 413, 415]);
    }
    let mut responses = Map::new();
    responses.insert(
        ok.0.to_string(),
        json!({"description": ok.1, "content": {"application/json": {"schema": schema_ref(ok.1)}}}),
    );
    codes.sort_unstable();
    codes.dedup();
    for code in codes {
        responses.insert(
            code.to_string(),
            json!({"$ref": format!("#/components/responses/E{code}")}),
        );
    }
    let security = match access {
        Access::Open => json!([]),
        Access::Client => json!([{}, {"bearer": []}]),
        Access::Store | Access::Admin => json!([{"bearer": []}]),
    };
    let who = match access {
        Access::Open => "",
        Access::Client => " (open unless GODOWN_CLIENT_TOKEN is set)",
        Access::Store => " (admin or the store's token)",
        Access::Admin => " (admin)",
    };
    let mut op = json!({
        "summary": format!("{summary}{who}"),
        "parameters": parameters,
        "security": security,
        "responses": responses,
    });
    if let Some(body) = body {
        op["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": schema_ref(body)}}
        });
    }
    op
}

/// An internal operation whose body (and with `octets_out`, whose answer) is a bincode frame.
fn octet_op(mut op: Value, octets_out: bool) -> Value {
    let binary =
        json!({"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}});
    op["requestBody"]["content"] = binary.clone();
    if octets_out {
        op["responses"]["200"]["content"] = binary;
    }
    op
}

/// An operations endpoint: open, no body.
fn plain(summary: &str, ok: (u16, &str), errors: &[u16]) -> Value {
    let mut o = op(summary, Access::Open, vec![], None, ok, &[]);
    let responses = o["responses"].as_object_mut().expect("responses");
    responses.retain(|code, _| code == &ok.0.to_string());
    for code in errors {
        responses.insert(
            code.to_string(),
            json!({"$ref": format!("#/components/responses/E{code}")}),
        );
    }
    o
}

fn error_responses() -> Value {
    let error = |description: &str| json!({"description": description, "content": {"application/json": {"schema": schema_ref("Error")}}});
    let mut e503 = error("Not ready, Overloaded or Storage failure; try again after Retry-After");
    e503["headers"] =
        json!({"Retry-After": {"description": "Whole seconds", "schema": {"type": "integer"}}});
    json!({
        "E400": error("Invalid input: the phrase in `error` says which rule"),
        "E401": error("Unauthorized: no token where one is needed, or a token that is not valid"),
        "E403": error("Forbidden: a valid token without this right"),
        "E404": error("Store, product, order, reservation or token not found"),
        "E409": error("A conflict with the current state (the phrase says which)"),
        "E413": error("Payload too large (over 1 MiB)"),
        "E415": error("Unsupported media type (send application/json)"),
        "E503": e503,
    })
}

/// Every error phrase the server answers with.
const ERROR_PHRASES: &[&str] = &[
    "Insufficient stock",
    "Invalid quantity",
    "Invalid price",
    "Price changed",
    "Duplicate product",
    "Too many items",
    "Too many units",
    "Invalid id",
    "Invalid name",
    "Invalid field",
    "Invalid JSON",
    "Payload too large",
    "Unsupported media type",
    "store_id is required",
    "Order must contain at least one item",
    "No items",
    "Invalid payment method",
    "Invalid payment status",
    "Invalid unit",
    "Invalid tax rate",
    "Invalid location",
    "Invalid ttl",
    "Invalid limit",
    "Invalid after",
    "Invalid query",
    "Invalid idempotency key",
    "Text too long",
    "Order too large",
    "Store not found",
    "Product not found",
    "Order not found",
    "Reservation not found",
    "Token not found",
    "Reservation expired",
    "Order not payable",
    "Order not cancellable",
    "Order not returnable",
    "Invalid CSV",
    "Invalid days",
    "Invalid utc offset",
    "Invalid return quantity",
    "Return must contain at least one item",
    "Transfer must contain at least one item",
    "from_store is required",
    "to_store is required",
    "Same store",
    "Transfer not found",
    "Region not found",
    "Too many orders",
    "Batch must contain at least one order",
    "orders is required",
    "Store unavailable",
    "Move refused",
    "Invalid move step",
    "Invalid region",
    "delivery_location is required",
    "store_ids is required",
    "Idempotency key reused",
    "Too many tokens",
    "Too many webhooks",
    "Webhook not found",
    "Invalid url",
    "Store mismatch",
    "Invalid status",
    "Invalid since",
    "Invalid events",
    "Invalid secret",
    "Unauthorized",
    "Forbidden",
    "Overloaded",
    "Not ready",
    "Not found",
    "Method not allowed",
    "Too many stores",
    "Storage failure",
    "Internal error",
    "Bad request",
    "Request header fields too large",
    "Request timeout",
];

fn qty(description: &str) -> Value {
    json!({"type": "number", "description": description})
}

fn money() -> Value {
    json!({"type": "number", "minimum": 0, "description": "Rupees, at most 2 decimals"})
}

fn time() -> Value {
    json!({"type": "string", "format": "date-time"})
}

fn object(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "required": required, "properties": properties})
}

/// An optional field: absent and `null` both mean "not given".
fn opt(mut schema: Value) -> Value {
    schema["nullable"] = json!(true);
    schema
}

fn schemas() -> Value {
    let id = json!({"type": "string", "pattern": ID_PATTERN});
    let name = json!({"type": "string", "minLength": 1, "maxLength": 200, "pattern": NOT_BLANK});
    let text = opt(json!({"type": "string", "maxLength": 1000}));
    // A quantity in a request: above zero, at most 3 decimals, at most 10⁹ units.
    let quantity = json!({"type": "number", "exclusiveMinimum": true, "minimum": 0, "maximum": 1_000_000_000u64, "multipleOf": 0.001});
    let price = json!({"type": "number", "minimum": 0, "maximum": 10_000_000, "multipleOf": 0.01});
    let location = object(
        &["lat", "lon"],
        json!({
            "lat": {"type": "number", "minimum": -90, "maximum": 90, "multipleOf": 0.000001},
            "lon": {"type": "number", "minimum": -180, "maximum": 180, "multipleOf": 0.000001},
        }),
    );
    let unit = json!({"type": "string", "enum": ["pieces", "kg", "g", "litre", "ml", "pack"]});
    let status = json!({"type": "string", "enum": ["pending_payment", "confirmed", "payment_failed", "cancelled", "expired", "returned"]});
    // (`product_name` and `unit`, as in the seed's body, are accepted and ignored.)
    let item_in = object(
        &["product_id", "quantity"],
        json!({"product_id": id, "quantity": quantity, "unit_price": opt(price.clone())}),
    );
    let items_in = json!({"type": "array", "minItems": 1, "maxItems": 500, "items": item_in});
    json!({
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "properties": {
                "error": {"type": "string", "enum": ERROR_PHRASES},
                "message": {"type": "string"},
            },
            "additionalProperties": true,
        },
        "StoreInput": object(&["name"], json!({
            "name": name,
            "tax_rate_percent": opt(json!({"type": "number", "minimum": 0, "maximum": 100, "multipleOf": 0.01, "default": 5})),
            "delivery_fee": opt(price.clone()),
            "free_delivery_above": opt(price.clone()),
            "location": opt(location.clone()),
            "utc_offset_minutes": opt(json!({"type": "integer", "minimum": -720, "maximum": 840, "default": 330})),
        })),
        "Store": object(&["store_id", "name", "tax_rate_percent", "delivery_fee", "free_delivery_above", "location", "utc_offset_minutes", "updated_at"], json!({
            "store_id": {"type": "string"},
            "name": {"type": "string"},
            "tax_rate_percent": {"type": "number"},
            "delivery_fee": money(),
            "free_delivery_above": {"type": "number", "nullable": true},
            "location": opt(location.clone()),
            "utc_offset_minutes": {"type": "integer"},
            "updated_at": time(),
        })),
        "ProductInput": object(&["product_name", "unit", "unit_price"], json!({
            "product_name": name,
            "unit": unit,
            "unit_price": price,
            "stock": opt(json!({"type": "number", "minimum": 0, "maximum": 1_000_000_000u64, "multipleOf": 0.001})),
            "low_stock_threshold": opt(json!({"type": "number", "minimum": 0, "maximum": 1_000_000_000u64, "multipleOf": 0.001})),
            "category": opt(json!({"type": "string", "maxLength": 200, "pattern": format!("^$|{NOT_BLANK}")})),
            "lead_time_days": opt(json!({"type": "integer", "minimum": 0, "maximum": 365, "default": 2})),
            "safety_stock_days": opt(json!({"type": "integer", "minimum": 0, "maximum": 365, "default": 1})),
        })),
        "Product": object(&["store_id", "product_id", "product_name", "unit", "unit_price", "current_stock", "on_hand", "reserved", "low_stock_threshold", "category", "lead_time_days", "safety_stock_days", "updated_at"], json!({
            "store_id": {"type": "string"},
            "product_id": {"type": "string"},
            "product_name": {"type": "string"},
            "unit": unit,
            "unit_price": money(),
            "current_stock": qty("on_hand - reserved: what can still be sold"),
            "on_hand": qty("Units in the store"),
            "reserved": qty("Units held by open holds and unpaid orders"),
            "low_stock_threshold": qty("An alert at or below this"),
            "category": {"type": "string", "nullable": true},
            "lead_time_days": {"type": "integer"},
            "safety_stock_days": {"type": "integer"},
            "updated_at": time(),
        })),
        "ProductAnalytics": object(&["store_id", "product_id", "current_stock", "units_sold_7d", "units_sold_28d", "revenue_28d", "velocity_per_day", "days_of_cover", "reorder_point", "suggested_reorder_quantity", "forecast_next_7d", "daily"], json!({
            "store_id": {"type": "string"},
            "product_id": {"type": "string"},
            "current_stock": qty("on_hand - reserved"),
            "units_sold_7d": {"type": "number", "description": "sales - cancellations of sold units - restocked returns"},
            "units_sold_28d": {"type": "number"},
            "revenue_28d": {"type": "number", "description": "Rupees, before tax, at the orders' prices"},
            "velocity_per_day": qty("units_sold_28d / 28"),
            "days_of_cover": {"type": "number", "nullable": true, "description": "current_stock / velocity; null when nothing sells"},
            "lead_time_days": {"type": "integer"},
            "safety_stock_days": {"type": "integer"},
            "reorder_point": qty("velocity × (lead_time_days + safety_stock_days)"),
            "suggested_reorder_quantity": qty("max(0, reorder_point + 7 × velocity - current_stock), whole units for pieces and packs"),
            "forecast_next_7d": qty("Units in the next 7 days: per day, the same weekday of the last 4 weeks weighted 4:3:2:1"),
            "daily": {"type": "array", "items": object(&["date", "units", "revenue"], json!({
                "date": {"type": "string", "format": "date"},
                "units": {"type": "number"},
                "revenue": {"type": "number"},
            }))},
        })),
        "StoreAnalytics": object(&["store_id", "days", "orders", "units", "revenue", "top_sellers"], json!({
            "store_id": {"type": "string"},
            "days": {"type": "integer"},
            "orders": {"type": "integer", "description": "Orders confirmed, less those cancelled"},
            "units": {"type": "number"},
            "revenue": {"type": "number"},
            "top_sellers": {"type": "array", "maxItems": 10, "items": object(&["product_id", "product_name", "units", "revenue"], json!({
                "product_id": {"type": "string"},
                "product_name": {"type": "string"},
                "units": {"type": "number"},
                "revenue": {"type": "number"},
            }))},
        })),
        "Reorder": object(&["store_id", "items"], json!({
            "store_id": {"type": "string"},
            "items": {"type": "array", "items": object(&["product_id", "product_name", "current_stock", "reorder_point", "suggested_reorder_quantity"], json!({
                "product_id": {"type": "string"},
                "product_name": {"type": "string"},
                "current_stock": qty("on_hand - reserved"),
                "reorder_point": qty("velocity × (lead + safety days)"),
                "suggested_reorder_quantity": qty("What to order"),
            }))},
        })),
        "ProductPage": object(&["items", "next_after"], json!({
            "items": {"type": "array", "items": schema_ref("Product")},
            "next_after": {"type": "string", "nullable": true},
        })),
        "AdjustmentInput": object(&["quantity_change", "reason"], json!({
            "quantity_change": {"type": "number", "minimum": -1_000_000_000i64, "maximum": 1_000_000_000u64, "multipleOf": 0.001, "not": {"enum": [0]}},
            "reason": name,
        })),
        "Adjusted": object(&["previous_stock", "new_stock", "movement_id"], json!({
            "previous_stock": qty("on_hand before"),
            "new_stock": qty("on_hand after"),
            "movement_id": {"type": "integer"},
        })),
        "MovementPage": object(&["items", "next_after"], json!({
            "items": {"type": "array", "items": object(&["movement_id", "at", "kind", "quantity_change", "reserved_change", "on_hand_after", "reserved_after", "reference"], json!({
                "movement_id": {"type": "integer"},
                "at": time(),
                "kind": {"type": "string", "enum": ["initial", "sale", "reservation", "release", "adjustment", "cancel", "return", "transfer_in", "transfer_out"]},
                "quantity_change": qty("Change of on_hand"),
                "reserved_change": qty("Change of reserved"),
                "on_hand_after": qty("on_hand after"),
                "reserved_after": qty("reserved after"),
                "reference": {"type": "string"},
            }))},
            "next_after": {"type": "integer", "nullable": true},
        })),
        "AvailabilityInput": object(&["store_id", "items"], json!({"store_id": id, "items": items_in, "alternatives": opt(json!({"type": "boolean"}))})),
        "Availability": object(&["all_available", "items"], json!({
            "all_available": {"type": "boolean"},
            "items": {"type": "array", "items": object(&["product_id", "requested", "available", "shortage"], json!({
                "product_id": {"type": "string"},
                "requested": qty("Asked for"),
                "available": qty("current_stock"),
                "shortage": qty("What is missing (0 if none)"),
                "alternatives": {"type": "array", "maxItems": 3, "items": object(&["product_id", "product_name", "unit", "unit_price", "current_stock"], json!({
                    "product_id": {"type": "string"},
                    "product_name": {"type": "string"},
                    "unit": unit,
                    "unit_price": money(),
                    "current_stock": qty("Available now"),
                }))},
            }))},
            "partial": object(&["items", "subtotal"], json!({
                "items": {"type": "array", "items": object(&["product_id", "quantity"], json!({"product_id": {"type": "string"}, "quantity": qty("What an allow_partial order would ship")}))},
                "subtotal": money(),
            })),
        })),
        "OrderInput": object(&["store_id", "items", "payment_method"], json!({
            "store_id": id,
            "customer_phone": text,
            "customer_name": text,
            "delivery_address": text,
            "items": items_in,
            "payment_method": {"type": "string", "enum": ["cod", "upi", "card"]},
            "reservation_id": opt(id.clone()),
            "allow_partial": opt(json!({"type": "boolean"})),
        })),
        "Order": object(&["order_id", "status", "store_id", "customer_phone", "customer_name", "delivery_address", "items", "subtotal", "tax", "delivery_fee", "total_amount", "payment_method", "created_at", "updated_at", "returns", "refunded_total"], json!({
            "order_id": {"type": "string", "pattern": ORDER_ID_PATTERN},
            "status": status,
            "store_id": {"type": "string"},
            "customer_phone": {"type": "string"},
            "customer_name": {"type": "string"},
            "delivery_address": {"type": "string"},
            "items": {"type": "array", "items": object(&["product_id", "product_name", "quantity", "unit", "unit_price", "line_total"], json!({
                "product_id": {"type": "string"},
                "product_name": {"type": "string"},
                "quantity": qty("Units ordered"),
                "unit": unit,
                "unit_price": money(),
                "line_total": money(),
            }))},
            "subtotal": money(),
            "tax": money(),
            "delivery_fee": money(),
            "total_amount": money(),
            "payment_method": {"type": "string", "enum": ["cod", "upi", "card"]},
            "reservation_id": {"type": "string"},
            "payment_reference": {"type": "string"},
            "cancel_reason": {"type": "string"},
            "created_at": time(),
            "updated_at": time(),
            "expires_at": time(),
            "returns": {"type": "array", "items": schema_ref("Return")},
            "refunded_total": money(),
            "unfulfilled": {"type": "array", "description": "allow_partial orders: what did not ship", "items": object(&["product_id", "product_name", "requested", "shipped", "shortage"], json!({
                "product_id": {"type": "string"},
                "product_name": {"type": "string", "nullable": true},
                "requested": qty("Asked for"),
                "shipped": qty("In the order"),
                "shortage": qty("requested - shipped"),
            }))},
        })),
        "OrderList": object(&["items", "next_after"], json!({
            "items": {"type": "array", "items": schema_ref("Order")},
            "next_after": {"type": "string", "nullable": true, "pattern": ORDER_ID_PATTERN},
        })),
        "StoreOrderInput": object(&["items", "payment_method"], json!({
            "store_id": id.clone(),
            "customer_phone": text,
            "customer_name": text,
            "delivery_address": text,
            "items": items_in,
            "payment_method": {"type": "string", "enum": ["cod", "upi", "card"]},
            "reservation_id": opt(id.clone()),
            "allow_partial": opt(json!({"type": "boolean"})),
        })),
        "PaymentInput": object(&["status"], json!({
            "status": {"type": "string", "enum": ["succeeded", "failed"]},
            "reference": text,
        })),
        "CancelInput": object(&[], json!({"reason": text})),
        "ImportResult": object(&["created", "updated", "unchanged"], json!({
            "created": {"type": "integer", "minimum": 0},
            "updated": {"type": "integer", "minimum": 0},
            "unchanged": {"type": "integer", "minimum": 0},
        })),
        "SagaStep": {"type": "object", "description": "One externally tagged step (Check, Stock, Hold, Release, TransferIn, TransferOut, Place, Cancel, Marks) as src/saga/steps.rs defines it"},
        "MoveStep": {"type": "string", "format": "binary", "description": "A checksummed bincode frame of an OutStep or InStep (src/moving.rs)"},
        "MoveReply": {"type": "string", "format": "binary", "description": "A checksummed bincode frame of an OutReply (src/moving.rs)"},
        "MoveAccepted": {"type": "object", "required": ["store_id", "status"], "properties": {"store_id": {"type": "string"}, "status": {"type": "string", "enum": ["ok"]}}},
        "SagaStepResult": {"type": "object", "description": "{\"Ok\": answer} or {\"Err\": refusal}: the step's result, refusals included"},
        "BatchInput": object(&["orders"], json!({
            "orders": {"type": "array", "minItems": 1, "maxItems": 500, "items": {"description": "an order body (OrderInput; store_id optional, and if given this store); anything else is that order's 400, in its place in the answer"}},
        })),
        "BatchResult": {"type": "array", "items": object(&["status", "body"], json!({
            "status": {"type": "integer"},
            "body": {"type": "object", "description": "the Order, or the Error, that the single route would answer"},
        }))},
        "RegionInput": object(&["name", "store_ids"], json!({
            "name": name,
            "store_ids": {"type": "array", "minItems": 1, "maxItems": 1000, "uniqueItems": true, "items": id},
        })),
        "Region": object(&["region_id", "name", "store_ids", "updated_at"], json!({
            "region_id": {"type": "string"},
            "name": {"type": "string"},
            "store_ids": {"type": "array", "items": {"type": "string"}},
            "updated_at": time(),
        })),
        "RegionOrderInput": object(&["items", "payment_method", "delivery_location"], json!({
            "customer_phone": text,
            "customer_name": text,
            "delivery_address": text,
            "items": items_in,
            "payment_method": {"type": "string", "enum": ["cod", "upi", "card"]},
            "delivery_location": location,
            "allow_split": opt(json!({"type": "boolean", "default": false})),
        })),
        "RegionOrders": object(&["orders"], json!({
            "orders": {"type": "array", "items": schema_ref("Order")},
        })),
        "TransferInput": object(&["from_store", "to_store", "items"], json!({
            "from_store": id,
            "to_store": id,
            "items": {"type": "array", "minItems": 1, "maxItems": 500, "items": object(&["product_id", "quantity"], json!({"product_id": id, "quantity": quantity}))},
            "reference": text,
        })),
        "Transfer": object(&["transfer_id", "from_store", "to_store", "items", "status", "created_at"], json!({
            "transfer_id": {"type": "string", "pattern": "^TRF[0-9A-F]{16}$"},
            "from_store": {"type": "string"},
            "to_store": {"type": "string"},
            "items": {"type": "array", "items": object(&["product_id", "quantity"], json!({
                "product_id": {"type": "string"},
                "quantity": qty("Units moved"),
            }))},
            "status": {"type": "string", "enum": ["completed", "pending", "failed"]},
            "reference": {"type": "string"},
            "failure_reason": {"type": "string"},
            "created_at": time(),
        })),
        "ReturnInput": object(&["items"], json!({
            "items": {"type": "array", "minItems": 1, "maxItems": 500, "items": object(&["product_id", "quantity"], json!({"product_id": id, "quantity": quantity}))},
            "restock": opt(json!({"type": "boolean", "default": true})),
            "reason": text,
        })),
        "Return": object(&["return_id", "order_id", "items", "refund_total", "restocked", "created_at"], json!({
            "return_id": {"type": "string", "pattern": "^RET[0-9A-F]{16}$"},
            "order_id": {"type": "string", "pattern": ORDER_ID_PATTERN},
            "items": {"type": "array", "items": object(&["product_id", "quantity", "refund"], json!({
                "product_id": {"type": "string"},
                "quantity": qty("Units returned"),
                "refund": money(),
            }))},
            "refund_total": money(),
            "restocked": {"type": "boolean"},
            "reason": {"type": "string"},
            "created_at": time(),
        })),
        "ReservationInput": object(&["items"], json!({
            "items": items_in,
            "ttl_seconds": opt(json!({"type": "number", "multipleOf": 1, "minimum": 1, "maximum": 86400, "default": 900})),
        })),
        "Reservation": object(&["reservation_id", "store_id", "items", "created_at", "expires_at"], json!({
            "reservation_id": {"type": "string", "pattern": "^RSV[0-9A-F]{16}$"},
            "store_id": {"type": "string"},
            "items": {"type": "array", "items": object(&["product_id", "quantity"], json!({
                "product_id": {"type": "string"},
                "quantity": qty("Units held"),
            }))},
            "created_at": time(),
            "expires_at": time(),
        })),
        "Released": object(&["reservation_id", "status"], json!({
            "reservation_id": {"type": "string"},
            "status": {"type": "string", "enum": ["released"]},
        })),
        "LowStock": object(&["store_id", "items"], json!({
            "store_id": {"type": "string"},
            "items": {"type": "array", "items": object(&["product_id", "product_name", "current_stock", "low_stock_threshold"], json!({
                "product_id": {"type": "string"},
                "product_name": {"type": "string"},
                "current_stock": qty("on_hand - reserved"),
                "low_stock_threshold": qty("The product's threshold"),
            }))},
        })),
        "IssuedToken": object(&["token_id", "token", "store_id", "created_at"], json!({
            "token_id": {"type": "string", "pattern": "^TOK[0-9A-F]{16}$"},
            "token": {"type": "string", "description": "Shown only here; godown keeps only its SHA-256 digest"},
            "store_id": {"type": "string"},
            "created_at": time(),
        })),
        "TokenList": object(&["store_id", "items"], json!({
            "store_id": {"type": "string"},
            "items": {"type": "array", "items": object(&["token_id", "created_at"], json!({
                "token_id": {"type": "string"},
                "created_at": time(),
            }))},
        })),
        "Revoked": object(&["token_id", "status"], json!({
            "token_id": {"type": "string"},
            "status": {"type": "string", "enum": ["revoked"]},
        })),
        "Status": object(&["status"], json!({"status": {"type": "string"}})),
        "Event": object(&["id", "type", "store_id", "created_at", "data"], json!({
            "id": {"type": "integer", "minimum": 1},
            "type": {"type": "string", "enum": crate::domain::EventKind::ALL.map(|k| k.as_str())},
            "store_id": {"type": "string"},
            "created_at": time(),
            "data": {"type": "object", "description": "order.*: the order; reservation.created: the hold; reservation.released/expired: {reservation_id}; stock.adjusted: {product_id, movement_id, quantity_change, reason, on_hand, reserved, current_stock}; stock.low: {product_id, product_name, unit, current_stock, low_stock_threshold}; webhook.failed: {webhook_id, event_id, attempts}"},
        })),
        "WebhookInput": object(&["url", "events"], json!({
            "url": {"type": "string", "maxLength": 2048, "pattern": "^https?://[^/?#\\s]+", "description": "http:// or https://"},
            "events": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": std::iter::once("*").chain(crate::domain::EventKind::ALL.map(|k| k.as_str())).collect::<Vec<_>>()}, "description": "[\"*\"] for every type"},
            "secret": opt(json!({"type": "string", "minLength": 16, "maxLength": 256, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"})),
        })),
        "CreatedWebhook": object(&["webhook_id", "url", "events", "secret", "created_at", "delivered_to"], json!({
            "webhook_id": {"type": "string", "pattern": "^WH[0-9A-F]{16}$"},
            "url": {"type": "string"},
            "events": {"type": "array", "items": {"type": "string"}},
            "secret": {"type": "string", "description": "The HMAC-SHA256 key of Godown-Signature; shown only here"},
            "created_at": time(),
            "delivered_to": {"type": "integer", "description": "Every event up to this id is done for this webhook"},
        })),
        "WebhookList": object(&["items"], json!({
            "items": {"type": "array", "items": object(&["webhook_id", "url", "events", "created_at", "delivered_to"], json!({
                "webhook_id": {"type": "string"},
                "url": {"type": "string"},
                "events": {"type": "array", "items": {"type": "string"}},
                "created_at": time(),
                "delivered_to": {"type": "integer"},
            }))},
        })),
        "RemovedWebhook": object(&["webhook_id", "status"], json!({
            "webhook_id": {"type": "string"},
            "status": {"type": "string", "enum": ["removed"]},
        })),
        "Deliveries": object(&["items"], json!({
            "items": {"type": "array", "items": object(&["event_id", "attempt", "status", "response_status", "at", "next_attempt_at"], json!({
                "event_id": {"type": "integer"},
                "attempt": {"type": "integer", "minimum": 1},
                "status": {"type": "string", "enum": ["delivered", "retrying", "failed"]},
                "response_status": {"type": "integer", "nullable": true},
                "at": time(),
                "next_attempt_at": {"type": "string", "format": "date-time", "nullable": true},
            }))},
        })),
        "EventPage": object(&["items", "next_after"], json!({
            "items": {"type": "array", "items": schema_ref("Event")},
            "next_after": {"type": "integer", "nullable": true},
        })),
    })
}

/// The methods the document gives a route pattern (`/api/v1/stores/{store_id}`), for the
/// `Allow` header of a 405.
pub fn allowed_methods(pattern: &str) -> Option<String> {
    let ops = document()["paths"].get(pattern)?.as_object()?;
    let methods: Vec<String> = ops.keys().map(|m| m.to_ascii_uppercase()).collect();
    Some(methods.join(", "))
}
