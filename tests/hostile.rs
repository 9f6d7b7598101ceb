//! Hostile input, in process: generated requests against the real HTTP app (routes, JSON
//! error middleware, store actors, the log), a fixed number of cases from a fixed seed so
//! that CI runs the same ones every time. `HOSTILE_CASES=200000` runs a long campaign.
//!
//! Oracles, for every request: the server does not panic; no answer is a 5xx; every error
//! answer has the JSON shape `{"error": …, "message": …}`; and a request that is refused
//! (any 4xx) changes nothing: every store's stock (on hand and reserved, per product) and
//! the log's last sequence number are the same before and after it.
//!
//! Requests: every route of the API with valid and malformed path ids; bodies that start
//! from a valid one and are then mutated (a field removed, retyped, made huge, negative,
//! fractional past 3 digits, deeply nested, an array instead of an object, bad UTF-8,
//! truncated, random bytes); with no token, a wrong token, or the admin token.

mod common;

use actix_web::{App, test, web};
use common::in_process_directory;
use godown::actor::{Directory, ListProducts, ManualClock};
use godown::domain::*;
use godown::http::{AppState, Auth};
use godown::wal::{Archive, Storage};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};
use std::sync::Arc;

const ADMIN: &str = "hostile-admin";
/// Cases in CI: a few thousand, well under a minute.
const CASES_DEFAULT: u32 = 3_000;
const STORE: &str = "HOSTILE";

/// A valid body for each kind of request, to be mutated.
fn seed_bodies() -> Vec<Value> {
    vec![
        json!({"store_id": STORE, "customer_phone": "9876543210", "customer_name": "A",
               "delivery_address": "B", "items": [{"product_id": "P1", "quantity": 1}],
               "payment_method": "cod"}),
        json!({"items": [{"product_id": "P2", "quantity": 0.5}], "ttl_seconds": 60}),
        json!({"product_name": "Rice", "unit": "kg", "unit_price": 80.5, "stock": 10.25,
               "low_stock_threshold": 1, "category": "Staples"}),
        json!({"name": "Store", "tax_rate_percent": 5, "delivery_fee": 20,
               "free_delivery_above": 500, "location": {"lat": 19.07, "lon": 72.87}}),
        json!({"quantity_change": -1, "reason": "damaged"}),
        json!({"status": "succeeded", "reference": "UPI-1"}),
        json!({"store_id": STORE, "items": [{"product_id": "P1", "quantity": 2}]}),
        json!({"reason": "customer asked"}),
        json!({"items": [{"product_id": "P1", "quantity": 1}], "restock": true, "reason": "torn"}),
    ]
}

/// Replacement values that break types and ranges.
fn nasty_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(0.0001)),
        Just(json!(1e300)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!("")),
        Just(json!("x".repeat(5000))),
        Just(json!([1, 2, 3])),
        Just(json!({"a": {"b": []}})),
        Just(json!(true)),
        Just(json!(["P1", 1, null])),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9 *#%]{0,40}".prop_map(|s| json!(s)),
    ]
}

/// A mutation of a JSON body, applied to its serialised bytes where JSON cannot say it.
#[derive(Clone, Debug)]
enum Mutation {
    None,
    RemoveField(usize),
    Retype(usize, Value),
    RetypeItem(usize, Value),
    WrapInArray,
    Deep(usize),
    Truncate(usize),
    BadUtf8,
    Garbage(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        Just(Mutation::None),
        (0usize..8).prop_map(Mutation::RemoveField),
        ((0usize..8), nasty_value()).prop_map(|(i, v)| Mutation::Retype(i, v)),
        ((0usize..4), nasty_value()).prop_map(|(i, v)| Mutation::RetypeItem(i, v)),
        Just(Mutation::WrapInArray),
        (1usize..5000).prop_map(Mutation::Deep),
        (0usize..200).prop_map(Mutation::Truncate),
        Just(Mutation::BadUtf8),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Mutation::Garbage),
    ]
}

fn apply(mut body: Value, m: &Mutation) -> Vec<u8> {
    let keys: Vec<String> = body
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    match m {
        Mutation::None => {}
        Mutation::RemoveField(i) => {
            if let Some(k) = keys.get(i % keys.len().max(1)) {
                body.as_object_mut().unwrap().remove(k);
            }
        }
        Mutation::Retype(i, v) => {
            if let Some(k) = keys.get(i % keys.len().max(1)) {
                body[k] = v.clone();
            }
        }
        Mutation::RetypeItem(i, v) => {
            if let Some(item) = body["items"].get_mut(0).and_then(Value::as_object_mut) {
                let k: Vec<String> = item.keys().cloned().collect();
                if let Some(k) = k.get(i % k.len().max(1)) {
                    item.insert(k.clone(), v.clone());
                }
            }
        }
        Mutation::WrapInArray => body = json!([body]),
        Mutation::Deep(n) => {
            let text = format!("{}{}", "[".repeat(*n), "]".repeat(*n));
            return format!("{{\"items\": {text}}}").into_bytes();
        }
        Mutation::Truncate(n) => {
            let mut b = body.to_string().into_bytes();
            b.truncate(*n);
            return b;
        }
        Mutation::BadUtf8 => {
            let mut b = body.to_string().into_bytes();
            b.pop();
            b.extend_from_slice(b",\"x\":\"\xff\xfe\"}");
            return b;
        }
        Mutation::Garbage(bytes) => return bytes.clone(),
    }
    body.to_string().into_bytes()
}

/// Path templates: `{S}` a store, `{P}` a product, `{O}` an order, `{R}` a hold.
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v1/orders/"),
    ("GET", "/api/v1/orders/{O}"),
    ("POST", "/api/v1/orders/{O}/payment"),
    ("POST", "/api/v1/orders/{O}/cancel"),
    ("POST", "/api/v1/orders/{O}/returns"),
    ("POST", "/api/v1/stores/{S}/orders/{O}/returns"),
    ("PUT", "/api/v1/stores/{S}"),
    ("GET", "/api/v1/stores/{S}"),
    ("POST", "/api/v1/stores/{S}/reservations"),
    ("DELETE", "/api/v1/stores/{S}/reservations/{R}"),
    ("GET", "/api/v1/stores/{S}/alerts/low-stock"),
    ("POST", "/api/v1/inventory/availability"),
    ("GET", "/api/v1/inventory/products/{S}"),
    ("GET", "/api/v1/inventory/products/{S}/{P}"),
    ("PUT", "/api/v1/inventory/products/{S}/{P}"),
    ("POST", "/api/v1/inventory/products/{S}/{P}/adjustments"),
    (
        "GET",
        "/api/v1/inventory/products/{S}/{P}/movements?limit=5",
    ),
    ("POST", "/api/v1/stores/{S}/tokens"),
    ("GET", "/api/v1/stores/{S}/tokens"),
    ("DELETE", "/api/v1/stores/{S}/tokens/{R}"),
    ("GET", "/api/v1/stores/{S}/events?after=0"),
    ("GET", "/api/v1/stores/{S}/analytics?days=7"),
    ("GET", "/api/v1/stores/{S}/reorder"),
    ("GET", "/api/v1/inventory/products/{S}/{P}/analytics"),
    ("GET", "/api/v1/inventory/products/{S}/export"),
    ("POST", "/api/v1/stores/{S}/webhooks"),
    ("GET", "/api/v1/stores/{S}/webhooks"),
    ("DELETE", "/api/v1/stores/{S}/webhooks/{R}"),
    ("GET", "/api/v1/stores/{S}/webhooks/{R}/deliveries"),
    ("POST", "/api/v1/stores/{S}/orders/batch"),
    ("POST", "/api/v1/stores/{S}/saga-steps"),
    ("POST", "/api/v1/stores/{S}/move-out"),
    ("POST", "/api/v1/stores/{S}/move-in"),
    ("POST", "/api/v1/transfers"),
    ("GET", "/api/v1/transfers/{R}"),
    ("PUT", "/api/v1/regions/{S}"),
    ("GET", "/api/v1/regions/{S}"),
    ("POST", "/api/v1/regions/{S}/orders"),
    ("GET", "/health"),
    ("POST", "/metrics"),
    ("PATCH", "/api/v1/orders/{O}"),
];

const IDS: &[&str] = &[
    STORE,
    "P1",
    "P2",
    "NOPE",
    "a*b",
    "",
    "%00",
    "ORD0000000000000000",
    "ORD1",
    "RSV1",
    "TOK0000000000000001",
    "..",
    "x%20y",
    "ü",
];

#[derive(Clone, Debug)]
struct Case {
    route: usize,
    ids: [usize; 4],
    body: usize,
    mutation: Mutation,
    token: u8,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0..ROUTES.len(),
        [0..IDS.len(), 0..IDS.len(), 0..IDS.len(), 0..IDS.len()],
        0..seed_bodies().len(),
        mutation(),
        0u8..4,
    )
        .prop_map(|(route, ids, body, mutation, token)| Case {
            route,
            ids,
            body,
            mutation,
            token,
        })
}

/// Every store's stock, product by product, and the log's last sequence number.
async fn digest(dir: &Directory) -> (Vec<(String, u64, u64)>, u64) {
    let mut all = Vec::new();
    for id in dir.store_ids() {
        let list = ListProducts {
            after: None,
            limit: 1000,
        };
        let (products, _) = dir.call(&id, list).await.unwrap();
        for p in products {
            all.push((
                format!("{id}/{}", p.info.product_id),
                p.on_hand.0,
                p.reserved.0,
            ));
        }
    }
    all.sort();
    let seq = dir
        .wal
        .stats
        .last_seq
        .load(std::sync::atomic::Ordering::Acquire);
    (all, seq)
}

#[actix_web::test]
async fn hostile_requests_get_json_4xx_and_change_nothing() {
    let dir_tmp = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir_tmp.path()).unwrap();
    // Time stands still: a hold or an unpaid order never expires behind a refused request
    // (expiry is a change, and would be blamed on it).
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let dir = Arc::new(in_process_directory(&storage, 900_000).with_clock(clock));
    let state = web::Data::new(AppState::new(
        Archive::new(storage.clone()),
        Auth::new(Some(ADMIN), None),
        OrderIdCodec::new([3; 32]),
    ));
    let _ = state.directory.set(dir.clone());
    let regions = godown::saga::region::Regions::load(dir_tmp.path()).unwrap();
    let sagas = godown::saga::Sagas::new(dir.clone(), Archive::new(storage.clone()), regions, None);
    let _ = state.sagas.set(Arc::new(sagas));
    let moves = godown::moving::Moves::new(
        dir.clone(),
        Archive::new(storage),
        dir_tmp.path(),
        godown::moving::Placements::default(),
        state.order_ids.fingerprint(),
        None,
    );
    let _ = state.moves.set(Arc::new(moves));
    let app = test::init_service(
        App::new()
            .app_data(state.clone())
            .wrap(actix_web::middleware::from_fn(godown::http::json_errors))
            .configure(godown::http::routes),
    )
    .await;
    let admin = ("authorization", format!("Bearer {ADMIN}"));
    // A store with two products, an order and a hold to aim at.
    let setup = [
        (
            "PUT",
            format!("/api/v1/stores/{STORE}"),
            json!({"name": "H"}),
        ),
        (
            "PUT",
            format!("/api/v1/inventory/products/{STORE}/P1"),
            json!({"product_name": "One", "unit": "pieces", "unit_price": 10, "stock": 1000}),
        ),
        (
            "PUT",
            format!("/api/v1/inventory/products/{STORE}/P2"),
            json!({"product_name": "Two", "unit": "kg", "unit_price": 80, "stock": 500}),
        ),
    ];
    for (method, path, body) in setup {
        let req = test::TestRequest::default()
            .method(method.parse().unwrap())
            .uri(&path)
            .insert_header(admin.clone())
            .insert_header(("content-type", "application/json"))
            .set_payload(body.to_string())
            .to_request();
        let resp = test::call_service(&app, req).await;
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
    }
    let order_req = test::TestRequest::post()
        .uri("/api/v1/orders/")
        .insert_header(("content-type", "application/json"))
        .set_payload(seed_bodies()[0].to_string())
        .to_request();
    let order: Value = test::call_and_read_body_json(&app, order_req).await;
    let order_id = order["order_id"].as_str().unwrap().to_string();
    let token_req = test::TestRequest::post()
        .uri(&format!("/api/v1/stores/{STORE}/tokens"))
        .insert_header(admin.clone())
        .to_request();
    let token: Value = test::call_and_read_body_json(&app, token_req).await;
    let store_auth = (
        "authorization",
        format!("Bearer {}", token["token"].as_str().unwrap()),
    );

    let cases = std::env::var("HOSTILE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES_DEFAULT);
    let mut runner = TestRunner::new_with_rng(
        Config::with_cases(cases),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let strategy = case();
    let (mut refused, mut accepted) = (0u32, 0u32);
    for n in 0..cases {
        let c = strategy.new_tree(&mut runner).unwrap().current();
        let (method, template) = ROUTES[c.route];
        let path = template
            .replace("{S}", IDS[c.ids[0]])
            .replace("{P}", IDS[c.ids[1]])
            .replace(
                "{O}",
                if c.ids[2] < 3 {
                    &order_id
                } else {
                    IDS[c.ids[2]]
                },
            )
            .replace("{R}", IDS[c.ids[3]]);
        let body = apply(seed_bodies()[c.body].clone(), &c.mutation);
        let mut req = test::TestRequest::default()
            .method(method.parse().unwrap())
            .insert_header(("content-type", "application/json"))
            .set_payload(body.clone());
        req = match std::panic::catch_unwind(|| actix_web::http::Uri::try_from(path.as_str())) {
            Ok(Ok(_)) => req.uri(&path),
            _ => continue, // not a request line a client could send
        };
        req = match c.token {
            0 => req,
            1 => req.insert_header(("authorization", "Bearer wrong")),
            2 => req.insert_header(store_auth.clone()),
            _ => req.insert_header(admin.clone()),
        };
        let before = digest(&dir).await;
        let resp = test::call_service(&app, req.to_request()).await;
        let status = resp.status();
        let bytes = test::read_body(resp).await;
        let what = || format!("case {n}: {method} {path} {c:?} → {status}: {bytes:?}");
        assert!(!status.is_server_error(), "{}", what());
        if status.is_client_error() {
            refused += 1;
            let e: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("{}", what()));
            assert!(
                e["error"].is_string() && e["message"].is_string(),
                "{}",
                what()
            );
            assert_eq!(
                digest(&dir).await,
                before,
                "a refused request changed state: {}",
                what()
            );
        } else {
            accepted += 1;
        }
    }
    eprintln!("hostile: {cases} cases, {refused} refused (4xx), {accepted} accepted");
    assert!(
        refused > cases / 2,
        "the generator mostly produces bad requests"
    );
}
