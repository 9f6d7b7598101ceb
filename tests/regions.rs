//! Regions and region orders, black box (API.md "Regions, routing and transfers"): the
//! nearest store that has everything, splits over the fewest stores, all or nothing across
//! stores, idempotency, and `kill -9` in the middle of a split order.

mod common;

use bytes::Bytes;
use common::*;
use serde_json::{Value, json};

/// Three Mumbai-area stores: `NEAR` (Colaba), `MID` (Dadar), `FAR` (Thane); the customer
/// is in Colaba. Rice `R` (kg) and noodles `N` (pieces) at 50.00 and 14.00 everywhere.
async fn setup(server: &TestServer, stock: [(&str, u32, u32); 3]) {
    let places = [
        ("NEAR", 18.9067, 72.8147),
        ("MID", 19.0178, 72.8478),
        ("FAR", 19.2183, 72.9781),
    ];
    for (store, lat, lon) in places {
        let body = json!({"name": store, "location": {"lat": lat, "lon": lon}});
        let r = server
            .admin("PUT", &format!("/api/v1/stores/{store}"), body)
            .await;
        assert_eq!(r.status, 200, "{:?}", r.json());
    }
    for (store, rice, noodles) in stock {
        server
            .put_product(store, "R", "kg", json!(50), json!(rice))
            .await;
        server
            .put_product(store, "N", "pieces", json!(14), json!(noodles))
            .await;
    }
    let body = json!({"name": "Mumbai", "store_ids": ["FAR", "MID", "NEAR"]});
    let r = server.admin("PUT", "/api/v1/regions/MUM", body).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
}

fn region_order(items: &[(&str, Value)], allow_split: bool) -> Value {
    let mut body = order("ignored", items);
    let body = body.as_object_mut().unwrap();
    body.remove("store_id");
    body.insert(
        "delivery_location".into(),
        json!({"lat": 18.9100, "lon": 72.8200}),
    );
    body.insert("allow_split".into(), json!(allow_split));
    json!(body)
}

async fn place(server: &TestServer, body: Value, key: Option<&str>) -> (u16, Value) {
    let auth = format!("Bearer {ADMIN}");
    let mut headers = vec![("authorization", auth.as_str())];
    if let Some(key) = key {
        headers.push(("idempotency-key", key));
    }
    let r = server
        .req("POST", "/api/v1/regions/MUM/orders", &headers, Some(body))
        .await;
    (r.status, r.json())
}

fn stores_of(r: &Value) -> Vec<String> {
    r["orders"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"))
        .iter()
        .map(|o| o["store_id"].as_str().unwrap().to_string())
        .collect()
}

/// (on_hand, reserved) of a product.
async fn counts(server: &TestServer, store: &str, product: &str) -> (Value, Value) {
    let p = server.product(store, product).await;
    (p["on_hand"].clone(), p["reserved"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_goes_to_the_nearest_store_that_has_everything() {
    // Goal: the nearest complete store wins; a nearer store short of one item loses to a
    // farther complete one; without a single complete store a split uses the fewest
    // stores; nothing possible is 400 with the region's totals, and changes nothing.
    let dir = temp_dir();
    let mut server = TestServer::start(&dir.path().join("db"), &[]).await;
    setup(&server, [("NEAR", 10, 2), ("MID", 10, 10), ("FAR", 3, 10)]).await;

    let r = server
        .admin("GET", "/api/v1/regions/MUM", json!(null))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["store_ids"], json!(["FAR", "MID", "NEAR"]));

    let (status, r) = place(
        &server,
        region_order(&[("R", json!(1)), ("N", json!(2))], false),
        None,
    )
    .await;
    assert_eq!(
        (status, stores_of(&r)),
        (200, vec!["NEAR".to_string()]),
        "{r}"
    );
    assert_eq!(r["orders"][0]["status"], json!("confirmed"));
    assert_eq!(server.stock("NEAR", "N").await, json!(0));

    // NEAR has no noodles left: MID (farther, complete) takes the order.
    let (status, r) = place(
        &server,
        region_order(&[("R", json!(1)), ("N", json!(1))], false),
        None,
    )
    .await;
    assert_eq!(
        (status, stores_of(&r)),
        (200, vec!["MID".to_string()]),
        "{r}"
    );

    // 12 kg of rice: no store has it; 9 (NEAR) + 9 (MID) can. Without allow_split: 400.
    let (status, r) = place(&server, region_order(&[("R", json!(12))], false), None).await;
    assert_eq!(
        (status, r["error"].clone()),
        (400, json!("Insufficient stock")),
        "{r}"
    );
    assert_eq!(
        r["items"],
        json!([{"product_id": "R", "requested": 12, "available": 21}])
    );
    let (status, r) = place(&server, region_order(&[("R", json!(12))], true), None).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(stores_of(&r), ["NEAR", "MID"], "two stores, nearest first");
    assert_eq!(r["orders"][0]["items"][0]["quantity"], json!(9));
    assert_eq!(r["orders"][1]["items"][0]["quantity"], json!(3));
    assert_eq!(server.stock("NEAR", "R").await, json!(0));
    assert_eq!(server.stock("MID", "R").await, json!(6));

    // More than the whole region has: 400 naming the region's total; nothing changes.
    let (status, r) = place(
        &server,
        region_order(&[("R", json!(10)), ("N", json!(1))], true),
        None,
    )
    .await;
    assert_eq!(
        (status, r["error"].clone()),
        (400, json!("Insufficient stock")),
        "{r}"
    );
    assert_eq!(
        r["items"],
        json!([{"product_id": "R", "requested": 10, "available": 9}])
    );
    assert_eq!(counts(&server, "MID", "R").await, (json!(6), json!(0)));
    assert_eq!(counts(&server, "FAR", "R").await, (json!(3), json!(0)));

    // Unknown region, missing location, store token: refused.
    let r = server
        .admin("GET", "/api/v1/regions/NOPE", json!(null))
        .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (404, json!("Region not found"))
    );
    let mut body = region_order(&[("R", json!(1))], false);
    body.as_object_mut().unwrap().remove("delivery_location");
    let (status, r) = place(&server, body, None).await;
    assert_eq!(
        (status, r["error"].clone()),
        (400, json!("delivery_location is required"))
    );
    let r = server
        .req(
            "POST",
            "/api/v1/regions/MUM/orders",
            &[],
            Some(region_order(&[("R", json!(1))], false)),
        )
        .await;
    assert_eq!(r.status, 401);

    // The region is on disk: after kill -9 it is still there.
    let before = server
        .admin("GET", "/api/v1/regions/MUM", json!(null))
        .await
        .json();
    server.kill9();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    let after = server
        .admin("GET", "/api/v1/regions/MUM", json!(null))
        .await;
    assert_eq!((after.status, after.json()), (200, before));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_in_the_second_store_undoes_the_first() {
    // Goal: a split order whose second store refuses (its price differs from the one the
    // client saw) leaves every store as it was: the first store's order is cancelled and
    // its stock back, no hold is left; the same key then gets the same refusal.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    setup(&server, [("NEAR", 5, 0), ("MID", 0, 0), ("FAR", 5, 0)]).await;
    server
        .put_product("FAR", "R", "kg", json!(55), json!(5))
        .await;

    let items = [("R", json!(8))];
    let mut body = region_order(&items, true);
    body["items"][0]["unit_price"] = json!(50);
    let (status, r) = place(&server, body.clone(), Some("split-1")).await;
    assert_eq!(
        (status, r["error"].clone()),
        (400, json!("Price changed")),
        "{r}"
    );
    assert_eq!(counts(&server, "NEAR", "R").await, (json!(5), json!(0)));
    assert_eq!(counts(&server, "FAR", "R").await, (json!(5), json!(0)));
    let path = "/api/v1/inventory/products/NEAR/R/movements?limit=10";
    let moves = server.admin("GET", path, json!(null)).await.json();
    let kinds: Vec<&str> = moves["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds[..3], ["cancel", "sale", "reservation"], "{moves}");
    let (status, again) = place(&server, body, Some("split-1")).await;
    assert_eq!((status, again), (400, r));

    // Idempotency on success: the same orders again, stock taken once.
    let (s1, first) = place(&server, region_order(&items, true), Some("split-2")).await;
    let (s2, again) = place(&server, region_order(&items, true), Some("split-2")).await;
    assert_eq!((s1, s2), (200, 200), "{first}");
    assert_eq!(first, again);
    assert_eq!(counts(&server, "NEAR", "R").await, (json!(0), json!(0)));
    assert_eq!(counts(&server, "FAR", "R").await, (json!(2), json!(0)));
}

/// Starts a server that aborts right after `point`, sends one keyed split order of 8 kg
/// (5 from NEAR, 3 from FAR), and waits for the process to be gone.
async fn crash_at(data: &std::path::Path, point: &str) {
    let env = [("GODOWN_TEST_SAGA_CRASH", point)];
    let mut server = TestServer::start_with_env(data, &[], &env).await;
    setup(&server, [("NEAR", 5, 0), ("MID", 0, 0), ("FAR", 5, 0)]).await;
    let body = region_order(&[("R", json!(8))], true);
    let auth = format!("Bearer {ADMIN}");
    let headers = [
        ("authorization", auth.as_str()),
        ("idempotency-key", "crash-1"),
    ];
    let path = "/api/v1/regions/MUM/orders";
    let sent = server
        .conn()
        .await
        .send("POST", path, &headers, Some(Bytes::from(body.to_string())))
        .await;
    assert!(
        sent.is_err(),
        "{point}: no answer comes from a process that died"
    );
    server.wait_gone().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_a_split_order_ends_all_or_nothing() {
    // Goal: killed before the decision to commit, a split order is undone (holds
    // released); killed after it (even with one store's order placed), it is completed:
    // both orders exist after restart and the retry with the same key gets them.
    for (point, completed) in [
        ("region:started", false),
        ("region:held", false),
        ("region:committing", true),
        ("region:placed", true),
    ] {
        let dir = temp_dir();
        let data = dir.path().join("db");
        crash_at(&data, point).await;
        let server = TestServer::start(&data, &[]).await;
        let (near, far) = (
            counts(&server, "NEAR", "R").await,
            counts(&server, "FAR", "R").await,
        );
        let expected = if completed {
            ((json!(0), json!(0)), (json!(2), json!(0)))
        } else {
            ((json!(5), json!(0)), (json!(5), json!(0)))
        };
        assert_eq!((near, far), expected, "{point}: after recovery");
        let (status, r) = place(
            &server,
            region_order(&[("R", json!(8))], true),
            Some("crash-1"),
        )
        .await;
        assert_eq!(status, 200, "{point}: {r}");
        assert_eq!(stores_of(&r), ["NEAR", "FAR"], "{point}");
        assert_eq!(
            counts(&server, "NEAR", "R").await,
            (json!(0), json!(0)),
            "{point}"
        );
        assert_eq!(
            counts(&server, "FAR", "R").await,
            (json!(2), json!(0)),
            "{point}"
        );
        let listed = server
            .admin("GET", "/api/v1/stores/FAR/orders", json!(null))
            .await
            .json();
        assert_eq!(
            listed["items"].as_array().map(Vec::len),
            Some(1),
            "{point}: one order at FAR: {listed}"
        );
    }
}
