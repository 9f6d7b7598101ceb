//! Store tokens and the access rule of every route (API.md "Auth"), black box: each
//! protected route × {no token, a wrong token, another store's token, the store's own
//! token, the admin token}, a revocation that takes effect at once, and tokens that survive
//! `kill -9`.

mod common;

use common::*;
use godown::client::Response;
use serde_json::{Value, json};

const CLIENT: &str = "test-client-token";

/// Who sends a request in the matrix.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Nobody,
    Wrong,
    OtherStore,
    OwnStore,
    Client,
    Admin,
}

struct Tokens {
    own: String,
    other: String,
}

impl Who {
    fn header(self, t: &Tokens) -> Option<String> {
        match self {
            Who::Nobody => None,
            Who::Wrong => Some("gdt_0000".into()),
            Who::OtherStore => Some(t.other.clone()),
            Who::OwnStore => Some(t.own.clone()),
            Who::Client => Some(CLIENT.into()),
            Who::Admin => Some(ADMIN.into()),
        }
    }
}

async fn send(
    server: &TestServer,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> =
        auth.iter().map(|a| ("authorization", a.as_str())).collect();
    if let Some(bytes) = body.as_ref().and_then(|b| b["octets"].as_array()) {
        let bytes: Vec<u8> = bytes.iter().map(|b| b.as_u64().unwrap() as u8).collect();
        headers.push(("content-type", "application/octet-stream"));
        let mut conn = godown::client::Conn::connect(server.addr).await.unwrap();
        let body = Some(bytes::Bytes::from(bytes));
        return conn.send(method, path, &headers, body).await.unwrap();
    }
    server.req(method, path, &headers, body).await
}

/// A body of raw bytes (a move step's frame), as [`send`] takes it.
fn octets<T: serde::Serialize>(step: &T) -> Value {
    json!({"octets": godown::wal::format::encode_frame(step)})
}

async fn issue_token(server: &TestServer, store: &str) -> (String, String) {
    let r = server
        .admin("POST", &format!("/api/v1/stores/{store}/tokens"), json!({}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let body = r.json();
    let id = body["token_id"].as_str().unwrap().to_string();
    let token = body["token"].as_str().unwrap().to_string();
    assert!(id.starts_with("TOK") && id.len() == 19, "{id}");
    assert_eq!(body["store_id"], json!(store));
    (id, token)
}

/// Places an order at store A as the admin; returns its id.
async fn place(server: &TestServer, method: &str) -> String {
    let mut body = order("A", &[("P", json!(1))]);
    body["payment_method"] = json!(method);
    let r = send(server, Some(ADMIN), "POST", "/api/v1/orders/", Some(body)).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    r.json()["order_id"].as_str().unwrap().to_string()
}

/// Every route with an access rule: a fresh, valid request to it (so that an allowed
/// caller gets a 2xx), and whether a store token may call it.
#[derive(Clone, Copy, Debug)]
enum Route {
    PutStore,
    IssueToken,
    ListTokens,
    RevokeToken,
    PutProduct,
    Adjust,
    Movements,
    LowStock,
    Pay,
    Cancel,
    StorePay,
    StoreCancel,
    Return,
    StoreReturn,
    Export,
    ProductAnalytics,
    StoreAnalytics,
    Reorder,
    ListOrders,
    Events,
    AddWebhook,
    ListWebhooks,
    RemoveWebhook,
    Deliveries,
    SagaSteps,
    MoveOut,
    MoveIn,
}

const STORE_ROUTES: [Route; 27] = [
    Route::PutStore,
    Route::IssueToken,
    Route::ListTokens,
    Route::RevokeToken,
    Route::PutProduct,
    Route::Adjust,
    Route::Movements,
    Route::LowStock,
    Route::Pay,
    Route::Cancel,
    Route::StorePay,
    Route::StoreCancel,
    Route::Return,
    Route::StoreReturn,
    Route::Export,
    Route::ProductAnalytics,
    Route::StoreAnalytics,
    Route::Reorder,
    Route::ListOrders,
    Route::Events,
    Route::AddWebhook,
    Route::ListWebhooks,
    Route::RemoveWebhook,
    Route::Deliveries,
    Route::SagaSteps,
    Route::MoveOut,
    Route::MoveIn,
];

/// Registers a webhook of store A as the admin; returns its id.
async fn add_webhook(server: &TestServer) -> String {
    let body = json!({"url": "http://127.0.0.1:9/", "events": ["stock.low"]});
    let r = server
        .admin("POST", "/api/v1/stores/A/webhooks", body)
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    r.json()["webhook_id"].as_str().unwrap().to_string()
}

impl Route {
    fn admin_only(self) -> bool {
        matches!(
            self,
            Route::PutStore
                | Route::IssueToken
                | Route::ListTokens
                | Route::RevokeToken
                | Route::SagaSteps
                | Route::MoveOut
                | Route::MoveIn
        )
    }

    async fn request(self, server: &TestServer, n: usize) -> (&'static str, String, Value) {
        let p = "/api/v1/inventory/products/A";
        match self {
            Route::PutStore => ("PUT", "/api/v1/stores/A".into(), json!({"name": "A"})),
            Route::IssueToken => ("POST", "/api/v1/stores/A/tokens".into(), json!({})),
            Route::ListTokens => ("GET", "/api/v1/stores/A/tokens".into(), Value::Null),
            Route::RevokeToken => {
                let (id, _) = issue_token(server, "A").await;
                (
                    "DELETE",
                    format!("/api/v1/stores/A/tokens/{id}"),
                    Value::Null,
                )
            }
            Route::PutProduct => (
                "PUT",
                format!("{p}/N{n}"),
                json!({"product_name": "New", "unit": "pieces", "unit_price": 5, "stock": 3}),
            ),
            Route::Adjust => (
                "POST",
                format!("{p}/P/adjustments"),
                json!({"quantity_change": 1, "reason": "count"}),
            ),
            Route::Movements => ("GET", format!("{p}/P/movements"), Value::Null),
            Route::LowStock => (
                "GET",
                "/api/v1/stores/A/alerts/low-stock".into(),
                Value::Null,
            ),
            Route::Pay => {
                let id = place(server, "upi").await;
                let path = format!("/api/v1/orders/{id}/payment");
                ("POST", path, json!({"status": "succeeded"}))
            }
            Route::Cancel => {
                let id = place(server, "cod").await;
                ("POST", format!("/api/v1/orders/{id}/cancel"), json!({}))
            }
            Route::StorePay => {
                let id = place(server, "upi").await;
                let path = format!("/api/v1/stores/A/orders/{id}/payment");
                ("POST", path, json!({"status": "succeeded"}))
            }
            Route::StoreCancel => {
                let id = place(server, "cod").await;
                let path = format!("/api/v1/stores/A/orders/{id}/cancel");
                ("POST", path, json!({}))
            }
            Route::Return => {
                let id = place(server, "cod").await;
                let path = format!("/api/v1/orders/{id}/returns");
                (
                    "POST",
                    path,
                    json!({"items": [{"product_id": "P", "quantity": 1}]}),
                )
            }
            Route::StoreReturn => {
                let id = place(server, "cod").await;
                let path = format!("/api/v1/stores/A/orders/{id}/returns");
                (
                    "POST",
                    path,
                    json!({"items": [{"product_id": "P", "quantity": 1}]}),
                )
            }
            Route::Export => ("GET", format!("{p}/export"), Value::Null),
            Route::ProductAnalytics => ("GET", format!("{p}/P/analytics"), Value::Null),
            Route::StoreAnalytics => ("GET", "/api/v1/stores/A/analytics".into(), Value::Null),
            Route::Reorder => ("GET", "/api/v1/stores/A/reorder".into(), Value::Null),
            Route::ListOrders => ("GET", "/api/v1/stores/A/orders".into(), Value::Null),
            Route::Events => ("GET", "/api/v1/stores/A/events".into(), Value::Null),
            Route::AddWebhook => (
                "POST",
                "/api/v1/stores/A/webhooks".into(),
                json!({"url": "http://127.0.0.1:9/", "events": ["stock.low"]}),
            ),
            Route::ListWebhooks => ("GET", "/api/v1/stores/A/webhooks".into(), Value::Null),
            Route::RemoveWebhook => {
                let id = add_webhook(server).await;
                (
                    "DELETE",
                    format!("/api/v1/stores/A/webhooks/{id}"),
                    Value::Null,
                )
            }
            Route::Deliveries => {
                let id = add_webhook(server).await;
                let path = format!("/api/v1/stores/A/webhooks/{id}/deliveries");
                ("GET", path, Value::Null)
            }
            // Another process's saga step: the admin token only (what the proxy carries).
            Route::SagaSteps => (
                "POST",
                "/api/v1/stores/A/saga-steps".into(),
                json!({"Marks": {"hold": null, "transfer": null}}),
            ),
            // A store move's steps (bincode frames): giving up a move that never began
            // changes nothing; activating a store that is not arriving is refused (409).
            Route::MoveOut => (
                "POST",
                "/api/v1/stores/A/move-out".into(),
                octets(&godown::moving::OutStep::Abort),
            ),
            Route::MoveIn => (
                "POST",
                "/api/v1/stores/A/move-in".into(),
                octets(&godown::moving::InStep::Activate),
            ),
        }
    }
}

/// Two stores, A (with product P) and B, and a token for each.
async fn setup(server: &TestServer) -> (Tokens, String) {
    for store in ["A", "B"] {
        server.put_store(store).await;
        server
            .put_product(store, "P", "pieces", json!(10), json!(1000))
            .await;
    }
    let (own_id, own) = issue_token(server, "A").await;
    let (_, other) = issue_token(server, "B").await;
    (Tokens { own, other }, own_id)
}

/// An adjustment of A's product P with `token`; its status.
async fn adjust(server: &TestServer, token: String) -> u16 {
    let path = "/api/v1/inventory/products/A/P/adjustments";
    let body = json!({"quantity_change": 1, "reason": "count"});
    send(server, Some(&token), "POST", path, Some(body))
        .await
        .status
}

/// What a refused request to `path` could have changed: A's product P, products, tokens,
/// webhooks and the order the path names.
async fn fingerprint(server: &TestServer, path: &str) -> Value {
    let p = server.product("A", "P").await;
    let products = server.get("/api/v1/inventory/products/A").await.json();
    let tokens = server.get("/api/v1/stores/A/tokens").await.json();
    let webhooks = server.get("/api/v1/stores/A/webhooks").await.json();
    let mut segments = path.split('/');
    let order_id = segments
        .by_ref()
        .find(|s| *s == "orders")
        .and(segments.next());
    let order = match order_id {
        Some(id) => {
            let o = server.get(&format!("/api/v1/orders/{id}")).await.json();
            json!([o["status"], o["refunded_total"]])
        }
        None => Value::Null,
    };
    json!([
        p["on_hand"],
        p["reserved"],
        products["items"],
        tokens["items"],
        webhooks["items"],
        order
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_store_route_answers_each_caller_as_written() {
    // Goal: 401 without a token or with a wrong one, 403 for another store's token (and for
    // a store's own token on admin routes, and the client token), 2xx for the store's own
    // token and the admin; and no refused request changes anything.
    let dir = temp_dir();
    let env = [("GODOWN_CLIENT_TOKEN", CLIENT)];
    let server = TestServer::start_with_env(&dir.path().join("db"), &[], &env).await;
    let (tokens, _) = setup(&server).await;
    let mut n = 0;
    for route in STORE_ROUTES {
        for who in [
            Who::Nobody,
            Who::Wrong,
            Who::OtherStore,
            Who::Client,
            Who::OwnStore,
            Who::Admin,
        ] {
            n += 1;
            let want = match who {
                Who::Nobody | Who::Wrong => 401,
                Who::OtherStore | Who::Client => 403,
                Who::OwnStore if route.admin_only() => 403,
                Who::Admin if matches!(route, Route::MoveIn) => 409,
                Who::OwnStore | Who::Admin => 200,
            };
            let (method, path, body) = route.request(&server, n).await;
            let body = (!body.is_null()).then_some(body);
            let before = fingerprint(&server, &path).await;
            let r = send(&server, who.header(&tokens).as_deref(), method, &path, body).await;
            let got = if r.status == 201 { 200 } else { r.status };
            assert_eq!(got, want, "{route:?} as {who:?}: {:?}", r.json());
            if want != 200 {
                let after = fingerprint(&server, &path).await;
                assert_eq!(after, before, "{route:?} as {who:?} changed something");
            }
            let phrase = match want {
                401 => json!("Unauthorized"),
                403 => json!("Forbidden"),
                _ => continue,
            };
            assert_eq!(r.json()["error"], phrase, "{route:?} as {who:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_routes_need_a_valid_token_once_the_client_token_is_set() {
    // Goal: with GODOWN_CLIENT_TOKEN set, orders, holds and stock reads answer 401 without
    // a token or with a wrong one, and accept the client token, any store's token and the
    // admin's (admin > store > client).
    let dir = temp_dir();
    let env = [("GODOWN_CLIENT_TOKEN", CLIENT)];
    let server = TestServer::start_with_env(&dir.path().join("db"), &[], &env).await;
    let (tokens, _) = setup(&server).await;
    let order_id = place(&server, "cod").await;
    for who in [
        Who::Nobody,
        Who::Wrong,
        Who::Client,
        Who::OtherStore,
        Who::OwnStore,
        Who::Admin,
    ] {
        let token = who.header(&tokens);
        let token = token.as_deref();
        let hold = json!({"items": [{"product_id": "P", "quantity": 1}]});
        let calls: Vec<(&str, String, Option<Value>)> = vec![
            ("GET", "/api/v1/inventory/products/A/P".into(), None),
            ("GET", "/api/v1/inventory/products/A".into(), None),
            (
                "POST",
                "/api/v1/inventory/availability".into(),
                Some(json!({"store_id": "A", "items": [{"product_id": "P", "quantity": 1}]})),
            ),
            ("GET", format!("/api/v1/orders/{order_id}"), None),
            (
                "POST",
                "/api/v1/orders/".into(),
                Some(order("A", &[("P", json!(1))])),
            ),
            ("POST", "/api/v1/stores/A/reservations".into(), Some(hold)),
            ("GET", format!("/api/v1/stores/A/orders/{order_id}"), None),
            (
                "POST",
                "/api/v1/stores/A/orders".into(),
                Some(
                    json!({"items": [{"product_id": "P", "quantity": 1}], "payment_method": "cod"}),
                ),
            ),
        ];
        let want = if matches!(who, Who::Nobody | Who::Wrong) {
            401
        } else {
            200
        };
        for (method, path, body) in calls {
            let r = send(&server, token, method, &path, body).await;
            let got = if r.status == 201 { 200 } else { r.status };
            assert_eq!(got, want, "{method} {path} as {who:?}: {:?}", r.json());
        }
    }
    // Nothing refused placed an order or a hold: 4 accepted callers × 2 orders of 1 unit
    // (plain and per-store path), plus the setup's order; 4 holds of 1.
    let p = server.product("A", "P").await;
    assert_eq!(
        (p["on_hand"].clone(), p["reserved"].clone()),
        (json!(991), json!(4))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_fails_at_once_and_tokens_survive_kill_9() {
    // Goal: revocation is immediate (the next request is 401); a live token, and the
    // revocation, hold after SIGKILL and restart; the listing shows ids, never secrets.
    let dir = temp_dir();
    let db = dir.path().join("db");
    let mut server = TestServer::start(&db, &[]).await;
    let (tokens, own_id) = setup(&server).await;
    let (_, kept) = issue_token(&server, "A").await;
    assert_eq!(adjust(&server, tokens.own.clone()).await, 200);
    let r = server
        .admin(
            "DELETE",
            &format!("/api/v1/stores/A/tokens/{own_id}"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json(), json!({"token_id": own_id, "status": "revoked"}));
    assert_eq!(
        adjust(&server, tokens.own.clone()).await,
        401,
        "revoked at once"
    );
    let r = server
        .admin(
            "DELETE",
            &format!("/api/v1/stores/A/tokens/{own_id}"),
            json!({}),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (404, json!("Token not found"))
    );
    let listed = server.get("/api/v1/stores/A/tokens").await.json();
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    assert!(
        !listed.to_string().contains(&kept),
        "the listing never shows a token"
    );
    server.kill9();
    let server = TestServer::start(&db, &[]).await;
    assert_eq!(
        adjust(&server, kept.clone()).await,
        200,
        "a token survives kill -9"
    );
    assert_eq!(
        adjust(&server, tokens.own.clone()).await,
        401,
        "so does its revocation"
    );
    assert_eq!(
        adjust(&server, tokens.other.clone()).await,
        403,
        "and its store"
    );
}
