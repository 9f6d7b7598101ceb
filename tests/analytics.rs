//! Analytics (API.md "Analytics") against hand-computed values: a scripted history of
//! sales, a payment, a cancellation and returns, across midnight in India, on an injected
//! clock (the store actors and the HTTP app run in process); and the counters after
//! `kill -9` + recovery (the real binary) equal the counters before.

mod common;

use actix_web::{App, test, web};
use common::*;
use godown::actor::ManualClock;
use godown::domain::OrderIdCodec;
use godown::http::{AppState, Auth};
use godown::wal::{Archive, Storage};
use serde_json::{Value, json};
use std::sync::Arc;

/// 2026-11-25T18:00:00Z: 23:30 on the 25th in India.
const START_MS: i64 = 1_795_629_600_000;

#[actix_web::test]
async fn a_scripted_history_gives_the_hand_computed_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = Storage::open(tmp.path()).unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let dir = Arc::new(in_process_directory(&storage, 900_000).with_clock(clock.clone()));
    let state = web::Data::new(AppState::new(
        Archive::new(storage),
        Auth::new(Some(ADMIN), None),
        OrderIdCodec::new([5; 32]),
    ));
    let _ = state.directory.set(dir.clone());
    let app = test::init_service(
        App::new()
            .app_data(state.clone())
            .configure(godown::http::routes),
    )
    .await;
    let call = async |method: &str, path: &str, body: Option<Value>| -> Value {
        let mut req = test::TestRequest::default()
            .method(method.parse().unwrap())
            .uri(path)
            .insert_header(("authorization", format!("Bearer {ADMIN}")));
        if let Some(b) = body {
            req = req
                .insert_header(("content-type", "application/json"))
                .set_payload(b.to_string());
        }
        let resp = test::call_service(&app, req.to_request()).await;
        let status = resp.status();
        let body: Value = test::read_body_json(resp).await;
        assert!(status.is_success(), "{method} {path}: {status} {body}");
        body
    };
    call(
        "PUT",
        "/api/v1/stores/A",
        Some(json!({"name": "A", "utc_offset_minutes": 330})),
    )
    .await;
    for (id, unit, price, stock, lead, safety) in [
        ("K", "kg", 47.5, 100, 2, 1),
        ("P", "pieces", 14.0, 50, 3, 2),
        ("R", "pieces", 10.0, 2, 2, 1),
    ] {
        let body = json!({"product_name": format!("Product {id}"), "unit": unit, "unit_price": price,
                          "stock": stock, "lead_time_days": lead, "safety_stock_days": safety});
        call(
            "PUT",
            &format!("/api/v1/inventory/products/A/{id}"),
            Some(body),
        )
        .await;
    }
    let place = async |items: &[(&str, Value)], method: &str| -> String {
        let mut body = order("A", items);
        body["payment_method"] = json!(method);
        let o = call("POST", "/api/v1/orders/", Some(body)).await;
        o["order_id"].as_str().unwrap().to_string()
    };

    // 23:30 on the 25th (India): 2.5 kg of K and 3 of P.
    let first = place(&[("K", json!(2.5)), ("P", json!(3))], "cod").await;
    // 00:10 on the 26th: 2 of P (cod); 1 kg of K (upi, then paid); the first order
    // cancelled; 1 of the 2 P back on the shelf, the other back damaged; 2 of R.
    clock.advance_ms(40 * 60_000);
    let second = place(&[("P", json!(2))], "cod").await;
    let upi = place(&[("K", json!(1))], "upi").await;
    let pay = json!({"status": "succeeded"});
    call("POST", &format!("/api/v1/orders/{upi}/payment"), Some(pay)).await;
    call(
        "POST",
        &format!("/api/v1/orders/{first}/cancel"),
        Some(json!({})),
    )
    .await;
    let back = json!({"items": [{"product_id": "P", "quantity": 1}]});
    call(
        "POST",
        &format!("/api/v1/orders/{second}/returns"),
        Some(back),
    )
    .await;
    let damaged = json!({"items": [{"product_id": "P", "quantity": 1}], "restock": false});
    call(
        "POST",
        &format!("/api/v1/orders/{second}/returns"),
        Some(damaged),
    )
    .await;
    place(&[("R", json!(2))], "cod").await;

    // K: the 25th +2.5 kg (118.75); the 26th +1 (47.50) −2.5 (−118.75) = −1.5 (−71.25).
    let k = call("GET", "/api/v1/inventory/products/A/K/analytics", None).await;
    let daily = k["daily"].as_array().unwrap();
    assert_eq!(daily.len(), 28);
    assert_eq!(
        daily[26],
        json!({"date": "2026-11-25", "units": 2.5, "revenue": 118.75})
    );
    assert_eq!(
        daily[27],
        json!({"date": "2026-11-26", "units": -1.5, "revenue": -71.25})
    );
    assert_eq!(daily[0]["date"], json!("2026-10-30"));
    assert_eq!(k["units_sold_28d"], json!(1));
    assert_eq!(k["units_sold_7d"], json!(1));
    assert_eq!(k["revenue_28d"], json!(47.5));
    // 1 kg / 28 = 0.0357… → 0.036 a day; stock 99; cover 99 / 0.036 = 2750 days; point
    // 0.036 × (2 + 1) = 0.108; nothing to reorder.
    assert_eq!(k["velocity_per_day"], json!(0.036));
    assert_eq!(k["current_stock"], json!(99));
    assert_eq!(k["days_of_cover"], json!(2750));
    assert_eq!(k["reorder_point"], json!(0.108));
    assert_eq!(k["suggested_reorder_quantity"], json!(0));

    // P: the 25th +3 (42.00); the 26th +2 −3 −1 (the damaged one stays sold) = −2.
    let p = call("GET", "/api/v1/inventory/products/A/P/analytics", None).await;
    assert_eq!(
        p["daily"][26],
        json!({"date": "2026-11-25", "units": 3, "revenue": 42})
    );
    assert_eq!(
        p["daily"][27],
        json!({"date": "2026-11-26", "units": -2, "revenue": -28})
    );
    assert_eq!(
        (&p["units_sold_28d"], &p["revenue_28d"]),
        (&json!(1), &json!(14))
    );

    // R: 2 sold, none left: at its point 0.071 × 3 = 0.213; suggested 0.213 + 7 × 0.071
    // = 0.71, rounded up to a whole piece.
    let r = call("GET", "/api/v1/stores/A/reorder", None).await;
    assert_eq!(
        r["items"],
        json!([{"product_id": "R", "product_name": "Product R", "current_stock": 0,
                "reorder_point": 0.213, "suggested_reorder_quantity": 1}])
    );

    // The same list as a purchase list for the supplier.
    let req = test::TestRequest::get()
        .uri("/api/v1/stores/A/reorder")
        .insert_header(("authorization", format!("Bearer {ADMIN}")))
        .insert_header(("accept", "text/csv"))
        .to_request();
    let resp = test::call_service(&app, req).await;
    let content_type = resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let body = test::read_body(resp).await;
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        "product_id,product_name,current_stock,reorder_point,suggested_reorder_quantity\nR,Product R,0,0.213,1\n"
    );

    // The 26th alone: orders +1 (P) +1 (paid) −1 (cancelled) +1 (R) = 2; two days: 3.
    let day = call("GET", "/api/v1/stores/A/analytics?days=1", None).await;
    assert_eq!((&day["orders"], &day["units"]), (&json!(2), &json!(-1.5)));
    assert_eq!(day["revenue"], json!(-79.25)); // −71.25 − 28 + 20
    let two = call("GET", "/api/v1/stores/A/analytics?days=2", None).await;
    assert_eq!(
        (&two["orders"], &two["units"], &two["revenue"]),
        (&json!(3), &json!(4), &json!(81.5))
    );
    let top: Vec<&str> = two["top_sellers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["product_id"].as_str().unwrap())
        .collect();
    assert_eq!(top, ["R", "K", "P"], "most units first, then by id");
}

/// A store's and each product's analytics, as one value.
async fn figures(server: &TestServer) -> Value {
    let mut all = vec![
        server
            .get("/api/v1/stores/S/analytics?days=365")
            .await
            .json(),
    ];
    for p in ["A", "B"] {
        let path = format!("/api/v1/inventory/products/S/{p}/analytics");
        let mut figures = server.get(&path).await.json();
        // The days with sales only: the same if the window moved on at midnight meanwhile.
        let daily = figures["daily"].as_array().unwrap();
        let sold: Vec<Value> = daily.iter().filter(|d| d["units"] != 0).cloned().collect();
        figures["daily"] = json!(sold);
        all.push(figures);
    }
    all.push(server.get("/api/v1/stores/S/reorder").await.json());
    json!(all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counters_after_kill_9_equal_the_counters_before() {
    // Goal: with snapshots every few records (so the counters come back from snapshots
    // and from the log after them), the figures after `kill -9` equal those before.
    let dir = temp_dir();
    let db = dir.path().join("db");
    let mut server = TestServer::start(&db, &["--snapshot-every-records", "3"]).await;
    server.put_store("S").await;
    server
        .put_product("S", "A", "pieces", json!(12), json!(500))
        .await;
    server
        .put_product("S", "B", "kg", json!(80.5), json!(300))
        .await;
    for i in 0..30 {
        let body = order(
            "S",
            &[
                ("A", json!(1 + i % 3)),
                ("B", json!(0.25 * f64::from(i % 4 + 1))),
            ],
        );
        let r = server.post("/api/v1/orders/", body).await;
        assert_eq!(r.status, 200, "{:?}", r.json());
        let id = r.json()["order_id"].as_str().unwrap().to_string();
        if i % 5 == 0 {
            server
                .admin("POST", &format!("/api/v1/orders/{id}/cancel"), json!({}))
                .await;
        } else if i % 7 == 0 {
            let back = json!({"items": [{"product_id": "B", "quantity": 0.25}]});
            let r = server
                .admin("POST", &format!("/api/v1/orders/{id}/returns"), back)
                .await;
            assert_eq!(r.status, 201);
        }
    }
    let before = figures(&server).await;
    assert_ne!(before[0]["units"], json!(0), "{before}");
    server.kill9();
    let server = TestServer::start(&db, &[]).await;
    assert_eq!(figures(&server).await, before);
}
