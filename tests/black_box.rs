//! The foundation, black box: the real binary, its HTTP contract, and exact stock under
//! concurrency. Each test starts its own server on a free port with its own data directory.

mod common;

use bytes::Bytes;
use common::*;
use serde_json::{Value, json};

/// The seed document's order body, verbatim.
/// The seed's order body for `quantity` units: the file the README's walkthrough posts
/// (`data/test_order_2_units.json`, `data/test_order_50_units.json`), else built the same.
fn seed_order(quantity: u32) -> Value {
    let path = format!(
        "{}/data/test_order_{quantity}_units.json",
        env!("CARGO_MANIFEST_DIR")
    );
    if let Ok(text) = std::fs::read_to_string(&path) {
        return serde_json::from_str(&text).expect("the seed body is JSON");
    }
    json!({
      "store_id": "STORE-01K8NJ40V9KFKX2Y2FMK466WFH",
      "customer_phone": "9876543210",
      "customer_name": "Test Customer",
      "delivery_address": "123 Test Street, Mumbai, Maharashtra 400001",
      "items": [
        {
          "product_id": "GP1759847855933",
          "product_name": "Maggi 2-Minute Noodles Masala",
          "quantity": quantity,
          "unit": "pieces",
          "unit_price": 14
        }
      ],
      "payment_method": "cod"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_documents_five_tests_pass() {
    // Goal: the seed's walkthrough (44 → order 2 → 42 → order 50 refused → still 42) gives
    // the seed's answers against the real binary started with --demo.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &["--demo"]).await;
    let path = format!("/api/v1/inventory/products/{SEED_STORE}/{MAGGI}");

    // Test 1: initial stock.
    let r = server.req("GET", &path, &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["current_stock"], 44);
    assert_eq!(r.json()["product_name"], "Maggi 2-Minute Noodles Masala");

    // Test 2: an order of 2 units.
    let r = server.post("/api/v1/orders/", seed_order(2)).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let o = r.json();
    let id = o["order_id"].as_str().unwrap();
    assert!(id.starts_with("ORD") && id.len() == 19, "{id}");
    assert!(
        id[3..]
            .chars()
            .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c))
    );
    assert_eq!(o["total_amount"].to_string(), "49.4");
    assert_eq!(o["status"], "confirmed");
    assert_eq!(o["payment_method"], "cod");

    // Test 3: stock reduced.
    assert_eq!(
        server.req("GET", &path, &[], None).await.json()["current_stock"],
        42
    );

    // Test 4: 50 units refused with the seed's error.
    let r = server.post("/api/v1/orders/", seed_order(50)).await;
    assert_eq!(r.status, 400);
    let e = r.json();
    assert_eq!(e["error"], "Insufficient stock");
    assert_eq!(
        e["message"],
        "Cannot fulfill order. Maggi 2-Minute Noodles Masala has only 42 units available."
    );
    assert_eq!(e["product_id"], MAGGI);
    assert_eq!(e["product_name"], "Maggi 2-Minute Noodles Masala");
    assert_eq!(
        (
            e["requested"].clone(),
            e["available"].clone(),
            e["shortage"].clone()
        ),
        (json!(50), json!(42), json!(8))
    );
    assert_eq!(e["items"].as_array().unwrap().len(), 1);

    // Test 5: stock unchanged.
    assert_eq!(
        server.req("GET", &path, &[], None).await.json()["current_stock"],
        42
    );

    // And the order reads back by id (also without the trailing slash on create).
    let r = server
        .req("GET", &format!("/api/v1/orders/{id}"), &[], None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["items"][0]["quantity"], 2);
    let r = server.post("/api/v1/orders", seed_order(1)).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_item_order_is_all_or_nothing() {
    // Goal: an order whose last item is short changes no item; one that fits reduces each
    // item by exactly its quantity.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    server.put_store("S1").await;
    server
        .put_product("S1", "A", "pieces", json!(10), json!(5))
        .await;
    server
        .put_product("S1", "B", "kg", json!(52.5), json!(3.5))
        .await;
    server
        .put_product("S1", "C", "pack", json!(30), json!(1))
        .await;

    let r = server
        .post(
            "/api/v1/orders/",
            order(
                "S1",
                &[("A", json!(2)), ("B", json!(1.25)), ("C", json!(2))],
            ),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["product_id"], "C");
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1);
    for (p, want) in [("A", json!(5)), ("B", json!(3.5)), ("C", json!(1))] {
        assert_eq!(server.stock("S1", p).await, want, "{p} unchanged");
    }

    // Two short items are both listed, the first in request order on top.
    let r = server
        .post(
            "/api/v1/orders/",
            order("S1", &[("B", json!(4)), ("C", json!(2))]),
        )
        .await;
    assert_eq!(r.status, 400);
    let e = r.json();
    assert_eq!(e["product_id"], "B");
    assert_eq!(
        e["message"],
        "Cannot fulfill order. Product B has only 3.5 kg available."
    );
    assert_eq!(e["items"].as_array().unwrap().len(), 2);

    let r = server
        .post(
            "/api/v1/orders/",
            order(
                "S1",
                &[("A", json!(2)), ("B", json!(1.25)), ("C", json!(1))],
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    // 2×10 + 1.25×52.5 (=65.625 → 65.63) + 30 = 115.63; tax 5 % = 5.78; fee 20.
    assert_eq!(r.json()["subtotal"].to_string(), "115.63");
    assert_eq!(r.json()["tax"].to_string(), "5.78");
    assert_eq!(r.json()["total_amount"].to_string(), "141.41");
    for (p, want) in [("A", json!(3)), ("B", json!(2.25)), ("C", json!(0))] {
        assert_eq!(server.stock("S1", p).await, want, "{p} reduced exactly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flash_sale_sells_exactly_the_stock() {
    // Goal: 64 concurrent clients send 400 one-unit orders for 100 units: exactly 100
    // succeed, the rest are refused as insufficient, and the stock ends at 0, never below.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    server.put_store("FLASH").await;
    server
        .put_product("FLASH", "HOT", "pieces", json!(99), json!(100))
        .await;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (addr, next) = (server.addr, next.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = godown::client::Conn::connect(addr).await.unwrap();
            let (mut ok, mut short) = (0, 0);
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 400 {
                let r = conn
                    .post_json("/api/v1/orders/", &order("FLASH", &[("HOT", json!(1))]))
                    .await
                    .unwrap();
                match r.status {
                    200 => ok += 1,
                    400 => {
                        assert_eq!(r.json()["error"], "Insufficient stock");
                        short += 1
                    }
                    s => panic!("unexpected status {s}: {:?}", r.json()),
                }
            }
            (ok, short)
        }));
    }
    let (mut ok, mut short) = (0, 0);
    for t in tasks {
        let (o, s) = t.await.unwrap();
        ok += o;
        short += s;
    }
    assert_eq!(ok, 100);
    assert_eq!(short, 300);
    let p = server.product("FLASH", "HOT").await;
    assert_eq!(p["current_stock"], 0);
    assert_eq!(p["on_hand"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fractional_stock_is_exact() {
    // Goal: 10 kg less 0.25 kg is exactly 9.75 kg; 0.0001 kg is refused, never rounded.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    server.put_store("K").await;
    server
        .put_product("K", "RICE", "kg", json!(64), json!(10))
        .await;
    let r = server
        .post("/api/v1/orders/", order("K", &[("RICE", json!(0.25))]))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json()["items"][0]["line_total"], 16);
    assert_eq!(server.stock("K", "RICE").await.to_string(), "9.75");
    for bad in [
        json!(0.0001),
        json!(0),
        json!(-1),
        json!("1"),
        Value::Null,
        json!(1_000_000_001),
    ] {
        let r = server
            .post("/api/v1/orders/", order("K", &[("RICE", bad.clone())]))
            .await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.json()["error"], "Invalid quantity", "{bad}");
    }
    // Exponents and trailing zeros are fine when the value is exact.
    let r = server
        .post("/api/v1/orders/", order("K", &[("RICE", json!(0.2500))]))
        .await;
    assert_eq!(r.status, 200);
    let body = r#"{"store_id":"K","items":[{"product_id":"RICE","quantity":2.5E-1}],"payment_method":"cod"}"#;
    let r = server
        .conn()
        .await
        .send("POST", "/api/v1/orders/", &[], Some(body.into()))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(server.stock("K", "RICE").await.to_string(), "9.25");
    // Pieces must be whole.
    server
        .put_product("K", "EGG", "pieces", json!(7), json!(30))
        .await;
    let r = server
        .post("/api/v1/orders/", order("K", &[("EGG", json!(1.5))]))
        .await;
    assert_eq!(r.json()["error"], "Invalid quantity");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_json_error() {
    // Goal: each refusal in the contract's Numbers / Ids / Orders sections has its status
    // and phrase, and no plain-text error ever leaks out.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &["--demo"]).await;
    let o = |items: Value| json!({"store_id": SEED_STORE, "items": items, "payment_method": "cod"});
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"items": [{"product_id": MAGGI, "quantity": 1}], "payment_method": "cod"}),
            400,
            "store_id is required",
        ),
        (
            json!({"store_id": SEED_STORE, "items": [], "payment_method": "cod"}),
            400,
            "Order must contain at least one item",
        ),
        (
            json!({"store_id": SEED_STORE, "payment_method": "cod"}),
            400,
            "Order must contain at least one item",
        ),
        (
            json!({"store_id": "NOPE", "items": [{"product_id": MAGGI, "quantity": 1}], "payment_method": "cod"}),
            404,
            "Store not found",
        ),
        (
            o(json!([{"product_id": "NOPE", "quantity": 1}])),
            404,
            "Product not found",
        ),
        (
            json!({"store_id": SEED_STORE, "items": [{"product_id": MAGGI, "quantity": 1}], "payment_method": "gold"}),
            400,
            "Invalid payment method",
        ),
        (
            o(json!([{"product_id": MAGGI, "quantity": 1}, {"product_id": MAGGI, "quantity": 2}])),
            400,
            "Duplicate product",
        ),
        (
            o(json!([{"product_id": MAGGI, "quantity": 1, "unit_price": 13}])),
            400,
            "Price changed",
        ),
        (
            o(json!([{"product_id": MAGGI, "quantity": 1, "unit_price": 14.001}])),
            400,
            "Invalid price",
        ),
        (
            o(json!([{"product_id": "bad id!", "quantity": 1}])),
            400,
            "Invalid id",
        ),
        (
            json!({"store_id": "x".repeat(129), "items": [{"product_id": MAGGI, "quantity": 1}], "payment_method": "cod"}),
            400,
            "Invalid id",
        ),
        (
            json!({"store_id": 7, "items": [], "payment_method": "cod"}),
            400,
            "Invalid field",
        ),
    ];
    for (body, status, phrase) in cases {
        let r = server.post("/api/v1/orders/", body.clone()).await;
        assert_eq!(
            (r.status, r.json()["error"].as_str().unwrap_or("")),
            (status, phrase),
            "{body}"
        );
        assert!(r.json()["message"].is_string(), "{body}");
    }
    let r = server
        .post(
            "/api/v1/orders/",
            o(json!([{"product_id": MAGGI, "quantity": 1, "unit_price": 14}])),
        )
        .await;
    assert_eq!(r.status, 200, "a matching price is fine");
    let price = server
        .post(
            "/api/v1/orders/",
            o(json!([{"product_id": MAGGI, "quantity": 1, "unit_price": 15}])),
        )
        .await;
    assert_eq!(price.json()["unit_price"], 14, "names the current price");

    let many: Vec<Value> = (0..501)
        .map(|i| json!({"product_id": format!("P{i}"), "quantity": 1}))
        .collect();
    let r = server.post("/api/v1/orders/", o(Value::Array(many))).await;
    assert_eq!(r.json()["error"], "Too many items");

    let mut conn = server.conn().await;
    let big = bytes::Bytes::from(vec![b' '; (1 << 20) + 10]);
    let r = conn
        .send("POST", "/api/v1/orders/", &[], Some(big))
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (413, json!("Payload too large"))
    );
    let r = server
        .conn()
        .await
        .send("POST", "/api/v1/orders/", &[], Some("{nope".into()))
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("Invalid JSON"))
    );
    let r = server
        .conn()
        .await
        .send(
            "POST",
            "/api/v1/orders/",
            &[("content-type", "text/plain")],
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (415, json!("Unsupported media type"))
    );
    let r = server
        .req("GET", "/api/v1/orders/ORD00000000", &[], None)
        .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (404, json!("Order not found"))
    );
    let r = server.req("GET", "/no/such/route", &[], None).await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].is_string());
    let r = server.req("DELETE", "/api/v1/orders/", &[], None).await;
    assert_eq!(r.status, 405);
    assert!(r.json()["error"].is_string());

    // Catalogue writes need the admin token.
    let body = json!({"product_name": "X", "unit": "pieces", "unit_price": 1});
    let r = server
        .req(
            "PUT",
            &format!("/api/v1/inventory/products/{SEED_STORE}/X"),
            &[],
            Some(body.clone()),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (401, json!("Unauthorized"))
    );
    let r = server
        .req(
            "PUT",
            &format!("/api/v1/inventory/products/{SEED_STORE}/X"),
            &[("authorization", "Bearer wrong")],
            Some(body),
        )
        .await;
    assert_eq!(r.status, 401);
    let r = server
        .req("PUT", "/api/v1/stores/NEW", &[], Some(json!({"name": "n"})))
        .await;
    assert_eq!(r.status, 401);
    let r = server
        .admin(
            "PUT",
            &format!("/api/v1/inventory/products/{SEED_STORE}/Y"),
            json!({"product_name": "Y", "unit": "box", "unit_price": 1}),
        )
        .await;
    assert_eq!(r.json()["error"], "Invalid unit");
    let r = server
        .admin(
            "PUT",
            &format!("/api/v1/inventory/products/{SEED_STORE}/Y"),
            json!({"product_name": "Y", "unit": "kg", "unit_price": -1}),
        )
        .await;
    assert_eq!(r.json()["error"], "Invalid price");
    let r = server
        .admin(
            "PUT",
            &format!("/api/v1/inventory/products/{SEED_STORE}/Y"),
            json!({"product_name": "Y", "unit": "kg", "unit_price": 10_000_000.01}),
        )
        .await;
    assert_eq!(r.json()["error"], "Invalid price");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_products_listing_and_availability() {
    // Goal: the catalogue endpoints round-trip, listing pages by product id, and the
    // availability check reports shortages without changing anything.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    let r = server
        .admin("PUT", "/api/v1/stores/S9", json!({"name": "Nine", "tax_rate_percent": 12.5, "delivery_fee": 30, "free_delivery_above": 499, "location": {"lat": 12.9716, "lon": 77.5946}}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let s = server.get("/api/v1/stores/S9").await.json();
    assert_eq!(
        (
            s["tax_rate_percent"].to_string(),
            s["free_delivery_above"].clone()
        ),
        ("12.5".into(), json!(499))
    );
    assert_eq!(s["location"]["lat"].to_string(), "12.9716");
    assert_eq!(
        server.get("/api/v1/stores/NOPE").await.json()["error"],
        "Store not found"
    );
    for i in 0..5 {
        server
            .put_product("S9", &format!("P{i}"), "pieces", json!(10), json!(i))
            .await;
    }
    let page = server
        .get("/api/v1/inventory/products/S9?limit=2")
        .await
        .json();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_after"], "P1");
    let page = server
        .get("/api/v1/inventory/products/S9?limit=2&after=P3")
        .await
        .json();
    assert_eq!(page["items"][0]["product_id"], "P4");
    assert_eq!(page["next_after"], Value::Null);
    assert_eq!(
        server
            .get("/api/v1/inventory/products/S9?limit=0")
            .await
            .json()["error"],
        "Invalid limit"
    );
    assert_eq!(
        server.get("/api/v1/inventory/products/S9/P9").await.json()["error"],
        "Product not found"
    );

    let r = server
        .post("/api/v1/inventory/availability", json!({"store_id": "S9", "items": [{"product_id": "P2", "quantity": 1}, {"product_id": "P3", "quantity": 5}]}))
        .await;
    assert_eq!(r.status, 200);
    let a = r.json();
    assert_eq!(a["all_available"], false);
    assert_eq!(a["items"][1]["shortage"], 2);
    assert_eq!(server.stock("S9", "P3").await, 3);

    // Updating a product's stock is an adjustment; other fields change in place.
    let r = server
        .admin("PUT", "/api/v1/inventory/products/S9/P3", json!({"product_name": "Renamed", "unit": "pieces", "unit_price": 11, "stock": 7, "category": "Snacks"}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        (
            r.json()["on_hand"].clone(),
            r.json()["product_name"].clone()
        ),
        (json!(7), json!("Renamed"))
    );
    let r = server
        .admin(
            "POST",
            "/api/v1/inventory/products/S9/P3/adjustments",
            json!({"quantity_change": -2, "reason": "damaged"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(
        (
            r.json()["previous_stock"].clone(),
            r.json()["new_stock"].clone()
        ),
        (json!(7), json!(5))
    );
    let r = server
        .admin(
            "POST",
            "/api/v1/inventory/products/S9/P3/adjustments",
            json!({"quantity_change": -6, "reason": "lost"}),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("Insufficient stock"))
    );
    let r = server
        .admin(
            "POST",
            "/api/v1/inventory/products/S9/P3/adjustments",
            json!({"quantity_change": 0, "reason": "nothing"}),
        )
        .await;
    assert_eq!(r.json()["error"], "Invalid quantity");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_smoke_runs_clean() {
    // Goal: `godown load` against the real binary, briefly and bounded by request count:
    // no 5xx, no transport errors, and the flash check finds no oversell. No speed is asserted.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    let target = format!("http://{}", server.addr);
    let runs: [&[&str]; 3] = [
        &[
            "--scenario",
            "flash",
            "--flash-stock",
            "50",
            "--requests",
            "300",
            "--clients",
            "16",
        ],
        &[
            "--scenario",
            "mixed",
            "--stores",
            "3",
            "--products",
            "20",
            "--requests",
            "600",
            "--clients",
            "8",
        ],
        &[
            "--scenario",
            "throughput",
            "--stores",
            "2",
            "--products",
            "10",
            "--requests",
            "300",
            "--clients",
            "8",
        ],
    ];
    for args in runs {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_godown"))
            .args(["load", "--target", &target, "--json", "--quiet"])
            .args(args)
            .env("GODOWN_ADMIN_TOKEN", ADMIN)
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(report["failed"], json!({}), "{args:?}");
        if args[1] == "flash" {
            assert_eq!(report["ok"], 50, "exactly the stock is sold");
            assert_eq!(report["short"], 250);
            assert!(report["flash_check"].as_str().unwrap().starts_with("ok"));
        }
    }
    let r = tokio::process::Command::new(env!("CARGO_BIN_EXE_godown"))
        .args([
            "load",
            "--target",
            "http://10.0.0.1:8000",
            "--requests",
            "1",
        ])
        .output()
        .await
        .unwrap();
    assert!(!r.status.success(), "a remote target is refused");
    assert!(String::from_utf8_lossy(&r.stderr).contains("--allow-remote"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoints_answer() {
    // Goal: /health, /ready, /metrics (godown_ names) and /openapi.json (an OpenAPI 3
    // document listing every error phrase the contract names) are served.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    assert_eq!(server.req("GET", "/health", &[], None).await.status, 200);
    assert_eq!(server.req("GET", "/ready", &[], None).await.status, 200);
    let m = server.req("GET", "/metrics", &[], None).await;
    let text = String::from_utf8_lossy(&m.body).to_string();
    assert!(text.contains("godown_wal_records_total"), "{text}");
    assert!(text.contains("godown_views_pending_orders"), "{text}");
    assert!(
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .all(|l| l.starts_with("godown_"))
    );
    let doc = server.req("GET", "/openapi.json", &[], None).await.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let phrases = doc["components"]["schemas"]["Error"]["properties"]["error"]["enum"].to_string();
    for phrase in [
        "Insufficient stock",
        "Invalid quantity",
        "Invalid price",
        "Price changed",
        "Invalid id",
        "Payload too large",
        "Invalid JSON",
        "Too many items",
        "Duplicate product",
        "store_id is required",
        "Order must contain at least one item",
        "Store not found",
        "Product not found",
        "Invalid payment method",
        "Idempotency key reused",
        "Order not found",
        "Order not payable",
        "Invalid payment status",
        "Order not cancellable",
        "Invalid ttl",
        "Reservation not found",
        "Reservation expired",
        "Unauthorized",
        "Forbidden",
        "Overloaded",
        "Unsupported media type",
    ] {
        assert!(
            phrases.contains(&format!("\"{phrase}\"")),
            "{phrase} missing from openapi.json"
        );
    }
    assert!(doc["paths"]["/api/v1/orders/"]["post"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_sets_the_server_up() {
    // Goal: `serve --config FILE` takes the listen address, data directory and admin token
    // from the file; an unknown key in it is refused at start-up.
    use std::io::BufRead;
    let dir = temp_dir();
    let config = dir.path().join("godown.json");
    let db = dir.path().join("db");
    let body = json!({"listen": "127.0.0.1:0", "data_dir": db, "admin_token": "from-file", "payment_ttl_seconds": 60});
    std::fs::write(&config, body.to_string()).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_godown"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("GODOWN_ADMIN_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .rsplit("http://")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut ready = false;
    for _ in 0..500 {
        if let Ok(mut c) = godown::client::Conn::connect(addr).await
            && c.get("/ready").await.is_ok_and(|r| r.status == 200)
        {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ready);
    let mut c = godown::client::Conn::connect(addr).await.unwrap();
    let store = Some(bytes::Bytes::from(json!({"name": "Cfg"}).to_string()));
    let r = c
        .send(
            "PUT",
            "/api/v1/stores/CFG",
            &[("authorization", "Bearer from-file")],
            store.clone(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "the file's admin token works");
    let r = c
        .send(
            "PUT",
            "/api/v1/stores/CFG",
            &[("authorization", "Bearer other")],
            store,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    let _ = child.kill();
    let _ = child.wait();
    assert!(db.exists(), "the file's data_dir is used");

    std::fs::write(&config, json!({"lisen": "127.0.0.1:0"}).to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_godown"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_ids_wrong_methods_and_bad_utf8_get_their_json_errors() {
    // Goal (regressions from the hostile-input campaign): a malformed reservation id is 400
    // "Invalid id" (not 404); another method on an operations path is 405 with the JSON
    // error shape (not 404); bytes that are not UTF-8, even inside a field godown ignores,
    // make the body 400 "Invalid JSON" and change nothing.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &["--demo"]).await;
    let r = server
        .req(
            "DELETE",
            &format!("/api/v1/stores/{SEED_STORE}/reservations/a*b"),
            &[],
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("Invalid id"))
    );
    for path in ["/health", "/ready", "/metrics", "/openapi.json"] {
        let r = server.req("POST", path, &[], Some(json!({}))).await;
        assert_eq!(
            (r.status, r.json()["error"].clone()),
            (405, json!("Method not allowed")),
            "{path}"
        );
    }
    let mut body = order(SEED_STORE, &[(MAGGI, json!(1))])
        .to_string()
        .into_bytes();
    body.pop(); // the closing brace
    body.extend_from_slice(b",\"note\":\"\xff\xfe\"}");
    let mut conn = server.conn().await;
    let r = conn
        .send(
            "POST",
            "/api/v1/orders/",
            &[("content-type", "application/json")],
            Some(Bytes::from(body)),
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("Invalid JSON"))
    );
    assert_eq!(server.stock(SEED_STORE, MAGGI).await, 44);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_gets_the_first_answer_even_while_another_body_with_its_key_is_in_flight() {
    // Goal (regression: 36 of 300 tries answered 409): a retry with the same key and body as
    // a durable first request gets that first answer, also when a request with the same key
    // and another body arrives at the same moment; that one alone gets 409. Method: 100 keys,
    // each acknowledged once, then the retry and the other body sent concurrently.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    server.put_store("IDEM").await;
    server
        .put_product("IDEM", "P", "pieces", json!(5), json!(1_000_000))
        .await;
    let send = |key: String, quantity: u64| {
        let addr = server.addr;
        tokio::spawn(async move {
            let mut conn = godown::client::Conn::connect(addr).await.unwrap();
            let body = order("IDEM", &[("P", json!(quantity))]).to_string();
            let r = conn
                .send(
                    "POST",
                    "/api/v1/orders/",
                    &[("idempotency-key", key.as_str())],
                    Some(Bytes::from(body)),
                )
                .await
                .unwrap();
            (r.status, r.json()["order_id"].clone())
        })
    };
    for i in 0..100 {
        let key = format!("race-{i}");
        let (status, first) = send(key.clone(), 1).await.unwrap();
        assert_eq!(status, 200);
        let other = send(key.clone(), 2);
        let retry = send(key.clone(), 1);
        let (retry, other) = (retry.await.unwrap(), other.await.unwrap());
        assert_eq!(retry, (200, first), "try {i}: the retry");
        assert_eq!(other.0, 409, "try {i}: the other body");
    }
    assert_eq!(server.stock("IDEM", "P").await, 1_000_000 - 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrays_in_place_of_objects_are_refused_naming_the_field() {
    // Goal (regression: an item `["GP…", 1, null]` placed an order, `"location":[19.0,72.8]`
    // was stored): a nested body given as an array is 400 naming its field, and nothing
    // changes; the same values as objects are accepted.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &["--demo"]).await;
    let mut body = order(SEED_STORE, &[]);
    body["items"] = json!([[MAGGI, 1, null]]);
    let r = server.post("/api/v1/orders/", body).await;
    let e = r.json();
    assert_eq!(r.status, 400, "{e}");
    assert!(e.to_string().contains("items[0]"), "{e}");
    assert_eq!(server.stock(SEED_STORE, MAGGI).await, 44);
    let r = server
        .admin(
            "PUT",
            "/api/v1/stores/ARRAYS",
            json!({"name": "Arrays", "location": [19.0, 72.8]}),
        )
        .await;
    let e = r.json();
    assert_eq!(r.status, 400, "{e}");
    assert!(e.to_string().contains("location"), "{e}");
    assert_eq!(server.get("/api/v1/stores/ARRAYS").await.status, 404);
    let r = server
        .admin(
            "PUT",
            "/api/v1/stores/ARRAYS",
            json!({"name": "Arrays", "location": {"lat": 19.0, "lon": 72.8}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_request_head_is_cut_off() {
    // Goal: a slow client (half a request head, then nothing) cannot hold a connection open:
    // the server answers 408 with the JSON error shape and closes it within
    // REQUEST_HEAD_TIMEOUT; the test gives up, and fails, at twice that.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    socket
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let limit = godown::server::REQUEST_HEAD_TIMEOUT * 2;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(limit, socket.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the connection was still open after {limit:?}"
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 408") && text.ends_with(r#"{"error":"Request timeout","message":"The request head did not arrive in time."}"#),
        "unexpected answer: {text}"
    );
}

/// Sends `request` on a fresh connection and reads the answer until the server closes it.
async fn raw_exchange(server: &TestServer, request: &[u8]) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // The server may answer and close before it has read everything: ignore a reset.
    let _ = socket.write_all(request).await;
    let mut answer = Vec::new();
    let limit = std::time::Duration::from_secs(10);
    let _ = tokio::time::timeout(limit, socket.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_http_parser_refuses_get_json_errors_and_never_panic_it() {
    // Goal: what actix-http refuses before the app sees it gets the JSON error shape: a
    // header name of 64 KiB (which panicked actix-http 3.20 and dropped the connection), a
    // head over its 128 KiB buffer, a request target of 64 KiB, too many headers, a bad
    // Transfer-Encoding; and the server serves on after each.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    let long = "x".repeat(64 * 1024);
    let huge = "v".repeat(140 * 1024);
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(String, u16, &str)> = vec![
        (
            format!("GET /health HTTP/1.1\r\n{long}: v\r\n\r\n"),
            400,
            "Bad request",
        ),
        (
            format!("GET /health HTTP/1.1\r\nX-Big: {huge}\r\n\r\n"),
            431,
            "Request header fields too large",
        ),
        (format!("GET /{long} HTTP/1.1\r\n\r\n"), 400, "Bad request"),
        (
            format!("GET /health HTTP/1.1\r\n{many}\r\n"),
            431,
            "Request header fields too large",
        ),
        (
            "POST /api/v1/orders/ HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".into(),
            400,
            "Bad request",
        ),
    ];
    for (request, status, error) in cases {
        let (got, body) = raw_exchange(&server, request.as_bytes()).await;
        let what = &request[..request.len().min(60)];
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(error)),
            "{what}"
        );
        assert!(body["message"].is_string(), "{what}");
        assert_eq!(
            server.get("/health").await.status,
            200,
            "serving on after {what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_store_order_paths_answer_like_the_plain_ones() {
    // Goal: POST /api/v1/stores/{store}/orders places with the path's store (a body naming
    // another is 400 "Store mismatch", nothing placed); GET, payment and cancel under the
    // store act on its orders and answer 404 for another store's; the numbers of a body
    // keep their exact form when the store is filled in.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    for store in ["S1", "S2"] {
        server.put_store(store).await;
        server
            .put_product(store, "RICE", "kg", json!(80), json!(10))
            .await;
    }
    let mut body = order("S1", &[("RICE", json!(0.25))]);
    body.as_object_mut().unwrap().remove("store_id");
    let r = server.post("/api/v1/stores/S1/orders", body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.json());
    let placed = r.json();
    assert_eq!(
        (
            placed["store_id"].clone(),
            placed["items"][0]["quantity"].clone()
        ),
        (json!("S1"), json!(0.25))
    );
    let id = placed["order_id"].as_str().unwrap().to_string();
    // Exact text: 0.2500 is 0.25; 0.0001 is refused as with the plain route.
    let raw = r#"{"items":[{"product_id":"RICE","quantity":0.0001}],"payment_method":"cod"}"#;
    let mut c = server.conn().await;
    let r = c
        .send(
            "POST",
            "/api/v1/stores/S1/orders",
            &[("content-type", "application/json")],
            Some(bytes::Bytes::from(raw)),
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("Invalid quantity"))
    );
    body["store_id"] = json!("S2");
    let r = server.post("/api/v1/stores/S1/orders", body).await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("Store mismatch"))
    );
    assert_eq!(
        server.stock("S2", "RICE").await,
        json!(10),
        "nothing placed"
    );

    let plain = server.get(&format!("/api/v1/orders/{id}")).await.json();
    let scoped = server
        .get(&format!("/api/v1/stores/S1/orders/{id}"))
        .await
        .json();
    assert_eq!(plain, scoped);
    let other = server.get(&format!("/api/v1/stores/S2/orders/{id}")).await;
    assert_eq!(
        (other.status, other.json()["error"].clone()),
        (404, json!("Order not found"))
    );
    let r = server
        .admin(
            "POST",
            &format!("/api/v1/stores/S2/orders/{id}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 404, "another store's order is not cancelled");
    let r = server
        .admin(
            "POST",
            &format!("/api/v1/stores/S1/orders/{id}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (200, json!("cancelled"))
    );
    assert_eq!(server.stock("S1", "RICE").await, json!(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternatives_and_a_partial_order_agree_on_what_ships() {
    // Goal: availability offers at most 3 substitutes of the same category with enough
    // stock, closest in price then by id, and says what a partial order would ship; the
    // allow_partial order placed next ships exactly that (exact thousandths of a kg, whole
    // pieces), lists the rest as unfulfilled, is priced on what ships, and a retry with its
    // key gets the same answer; nothing at all available is 400 as without the flag.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    server.put_store("C").await;
    for (id, unit, price, stock, category) in [
        ("MAGGI", "pieces", 14, json!(3), "Noodles"),
        ("YIPPEE", "pieces", 12, json!(10), "Noodles"),
        ("TOP", "pieces", 15, json!(10), "Noodles"),
        ("KNORR", "pieces", 20, json!(1), "Noodles"),
        ("WAI", "pieces", 30, json!(10), "Noodles"),
        ("CUP", "pieces", 16, json!(10), "Noodles"),
        ("RICE", "kg", 80, json!(2.5), "Rice"),
        ("SALT", "pieces", 28, json!(0), "Salt"),
    ] {
        let body = json!({"product_name": id, "unit": unit, "unit_price": price, "stock": stock, "category": category});
        let r = server
            .admin("PUT", &format!("/api/v1/inventory/products/C/{id}"), body)
            .await;
        assert_eq!(r.status, 200, "{}", r.json());
    }
    let cart = json!([{"product_id": "MAGGI", "quantity": 5}, {"product_id": "RICE", "quantity": 3.75}, {"product_id": "CUP", "quantity": 1}]);
    let check = json!({"store_id": "C", "items": cart, "alternatives": true});
    let r = server.post("/api/v1/inventory/availability", check).await;
    assert_eq!(r.status, 200, "{}", r.json());
    let a = r.json();
    let offered: Vec<&str> = a["items"][0]["alternatives"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["product_id"].as_str().unwrap())
        .collect();
    // |15-14| = 1, |12-14| = 2, then WAI (16); CUP is in the cart, KNORR has too little.
    assert_eq!(offered, ["TOP", "YIPPEE", "WAI"]);
    assert_eq!(a["items"][1]["alternatives"], json!([]), "no other rice");
    assert!(a["items"][2].get("alternatives").is_none(), "not short");
    let partial = &a["partial"];
    assert_eq!(
        partial["items"],
        json!([{"product_id": "MAGGI", "quantity": 3}, {"product_id": "RICE", "quantity": 2.5}, {"product_id": "CUP", "quantity": 1}])
    );
    assert_eq!(partial["subtotal"], json!(258), "3 × 14 + 2.5 × 80 + 16");

    let mut body = order("C", &[]);
    body["items"] = cart.clone();
    body["allow_partial"] = json!(true);
    let key = [("idempotency-key", "partial-1")];
    let r = server
        .req("POST", "/api/v1/orders/", &key, Some(body.clone()))
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    let placed = r.json();
    let shipped: Vec<(Value, Value)> = placed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["product_id"].clone(), l["quantity"].clone()))
        .collect();
    assert_eq!(
        shipped,
        [
            (json!("MAGGI"), json!(3)),
            (json!("RICE"), json!(2.5)),
            (json!("CUP"), json!(1))
        ]
    );
    assert_eq!(placed["subtotal"], partial["subtotal"]);
    assert_eq!(
        placed["unfulfilled"],
        json!([
            {"product_id": "MAGGI", "product_name": "MAGGI", "requested": 5, "shipped": 3, "shortage": 2},
            {"product_id": "RICE", "product_name": "RICE", "requested": 3.75, "shipped": 2.5, "shortage": 1.25},
        ])
    );
    let again = server
        .req("POST", "/api/v1/orders/", &key, Some(body))
        .await;
    assert_eq!(again.json(), placed, "a retry gets the same answer");
    assert_eq!(server.stock("C", "RICE").await, json!(0));

    // A dropped line is unfulfilled with nothing shipped; nothing at all is a 400.
    let mut body = order("C", &[("SALT", json!(2)), ("YIPPEE", json!(1))]);
    body["allow_partial"] = json!(true);
    let r = server.post("/api/v1/orders/", body).await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(
        r.json()["unfulfilled"],
        json!([{"product_id": "SALT", "product_name": "SALT", "requested": 2, "shipped": 0, "shortage": 2}])
    );
    let mut body = order("C", &[("SALT", json!(2))]);
    body["allow_partial"] = json!(true);
    let r = server.post("/api/v1/orders/", body).await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("Insufficient stock"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_lists_its_orders_newest_first_by_status_and_time_without_gaps() {
    // Goal: pages of a store's orders, newest first, with no gap or repeat while orders
    // keep arriving between pages; status and since filter; another store's orders never
    // appear; after kill -9 the listing is the same.
    let dir = temp_dir();
    let db = dir.path().join("db");
    let mut server = TestServer::start(&db, &[]).await;
    for store in ["L1", "L2"] {
        server.put_store(store).await;
        server
            .put_product(store, "P", "pieces", json!(10), json!(1000))
            .await;
    }
    let mut placed = Vec::new();
    for n in 0..25 {
        let mut body = order("L1", &[("P", json!(1))]);
        if n % 5 == 0 {
            body["payment_method"] = json!("upi");
        }
        let r = server.post("/api/v1/orders/", body).await;
        placed.push(r.json()["order_id"].as_str().unwrap().to_string());
        let r = server
            .post("/api/v1/orders/", order("L2", &[("P", json!(1))]))
            .await;
        assert_eq!(r.status, 200);
    }
    let page = |after: Option<String>, extra: &str| {
        let server = &server;
        let after = after.map_or(String::new(), |a| format!("&after={a}"));
        let path = format!("/api/v1/stores/L1/orders?limit=10{after}{extra}");
        async move {
            let r = server.get(&path).await;
            assert_eq!(r.status, 200, "{}", r.json());
            r.json()
        }
    };
    // Pages of 10 while 5 more orders arrive after the first page.
    let first = page(None, "").await;
    for _ in 0..5 {
        server
            .post("/api/v1/orders/", order("L1", &[("P", json!(1))]))
            .await;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut current = first;
    loop {
        for o in current["items"].as_array().unwrap() {
            assert_eq!(o["store_id"], "L1");
            seen.push(o["order_id"].as_str().unwrap().to_string());
        }
        let Some(next) = current["next_after"].as_str().map(str::to_string) else {
            break;
        };
        current = page(Some(next), "").await;
    }
    let mut newest_first = placed.clone();
    newest_first.reverse();
    assert_eq!(
        seen, newest_first,
        "the first 25, newest first, none missing or twice"
    );

    let pending = page(None, "&status=pending_payment").await;
    assert_eq!(pending["items"].as_array().unwrap().len(), 5);
    assert!(
        pending["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["status"] == "pending_payment")
    );
    let r = server.get("/api/v1/stores/L1/orders?status=shipped").await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("Invalid status"))
    );
    let future = page(None, "&since=2999-01-01T00:00:00Z").await;
    assert_eq!(future, json!({"items": [], "next_after": null}));

    server.kill9();
    let server = TestServer::start(&db, &[]).await;
    let r = server
        .get("/api/v1/stores/L1/orders?limit=1000")
        .await
        .json();
    assert_eq!(r["items"].as_array().unwrap().len(), 30, "after kill -9");
}
