//! Transfers between two stores, black box (API.md "Regions, routing and transfers"): both
//! movements or neither, exactly once, also when the process dies at any step of the saga.

mod common;

use bytes::Bytes;
use common::*;
use serde_json::{Value, json};

/// Stores `A` and `B`: `P` in pieces (10 at A, 2 at B), `K` in kg (5 at A, 0 at B); `Q`
/// only at A.
async fn setup(server: &TestServer) {
    for store in ["A", "B"] {
        server.put_store(store).await;
    }
    server
        .put_product("A", "P", "pieces", json!(14), json!(10))
        .await;
    server
        .put_product("B", "P", "pieces", json!(14), json!(2))
        .await;
    server
        .put_product("A", "K", "kg", json!(50), json!(5))
        .await;
    server
        .put_product("B", "K", "kg", json!(50), json!(0))
        .await;
    server
        .put_product("A", "Q", "pieces", json!(5), json!(10))
        .await;
}

fn transfer_body(items: &[(&str, Value)]) -> Value {
    let items: Vec<Value> = items
        .iter()
        .map(|(p, q)| json!({"product_id": p, "quantity": q}))
        .collect();
    json!({"from_store": "A", "to_store": "B", "items": items, "reference": "restock B"})
}

async fn transfer(server: &TestServer, body: Value, key: Option<&str>) -> (u16, Value) {
    let auth = format!("Bearer {ADMIN}");
    let mut headers = vec![("authorization", auth.as_str())];
    if let Some(key) = key {
        headers.push(("idempotency-key", key));
    }
    let r = server
        .req("POST", "/api/v1/transfers", &headers, Some(body))
        .await;
    (r.status, r.json())
}

/// on_hand and reserved of a product.
async fn counts(server: &TestServer, store: &str, product: &str) -> (Value, Value) {
    let p = server.product(store, product).await;
    (p["on_hand"].clone(), p["reserved"].clone())
}

/// The product's movements of `kind`, newest first.
async fn movements(server: &TestServer, store: &str, product: &str, kind: &str) -> Vec<Value> {
    let path = format!("/api/v1/inventory/products/{store}/{product}/movements?limit=100");
    let r = server.admin("GET", &path, json!(null)).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == json!(kind))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_moves_stock_out_of_one_store_and_into_the_other() {
    // Goal: 3 pieces and 1.5 kg go from A to B: `transfer_out` at A and `transfer_in` at B,
    // both naming the transfer; refusals move nothing; the transfer reads back.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    setup(&server).await;

    let body = transfer_body(&[("P", json!(3)), ("K", json!(1.5))]);
    let (status, t) = transfer(&server, body, None).await;
    assert_eq!(status, 201, "{t}");
    let id = t["transfer_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("TRF") && id.len() == 19, "{t}");
    assert_eq!(t["status"], json!("completed"));
    assert_eq!(t["from_store"], json!("A"));
    assert_eq!(t["to_store"], json!("B"));
    assert_eq!(t["reference"], json!("restock B"));
    assert_eq!(
        t["items"],
        json!([{"product_id": "P", "quantity": 3}, {"product_id": "K", "quantity": 1.5}])
    );
    assert_eq!(counts(&server, "A", "P").await, (json!(7), json!(0)));
    assert_eq!(counts(&server, "B", "P").await, (json!(5), json!(0)));
    assert_eq!(counts(&server, "A", "K").await, (json!(3.5), json!(0)));
    assert_eq!(counts(&server, "B", "K").await, (json!(1.5), json!(0)));
    let out = movements(&server, "A", "P", "transfer_out").await;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["quantity_change"], json!(-3));
    assert_eq!(out[0]["reserved_change"], json!(-3));
    assert_eq!(out[0]["reference"], json!(id));
    let into = movements(&server, "B", "P", "transfer_in").await;
    assert_eq!(into.len(), 1);
    assert_eq!(into[0]["quantity_change"], json!(3));
    assert_eq!(into[0]["reference"], json!(id));

    let r = server
        .admin("GET", &format!("/api/v1/transfers/{id}"), json!(null))
        .await;
    assert_eq!((r.status, r.json()), (200, t.clone()));

    // Refusals: nothing moves.
    let cases = [
        (transfer_body(&[("Q", json!(1))]), 404, "Product not found"),
        (transfer_body(&[("P", json!(8))]), 400, "Insufficient stock"),
        (transfer_body(&[("P", json!(1.5))]), 400, "Invalid quantity"),
        (
            transfer_body(&[]),
            400,
            "Transfer must contain at least one item",
        ),
        (
            json!({"from_store": "A", "to_store": "A", "items": [{"product_id": "P", "quantity": 1}]}),
            400,
            "Same store",
        ),
        (
            json!({"from_store": "A", "to_store": "NOPE", "items": [{"product_id": "P", "quantity": 1}]}),
            404,
            "Store not found",
        ),
        (
            json!({"to_store": "B", "items": []}),
            400,
            "from_store is required",
        ),
    ];
    for (body, status, error) in cases {
        let (got, r) = transfer(&server, body.clone(), None).await;
        assert_eq!(
            (got, r["error"].as_str()),
            (status, Some(error)),
            "{body} → {r}"
        );
    }
    assert_eq!(counts(&server, "A", "P").await, (json!(7), json!(0)));
    assert_eq!(counts(&server, "B", "P").await, (json!(5), json!(0)));

    // Admin only; unknown ids are 404.
    let r = server
        .req(
            "POST",
            "/api/v1/transfers",
            &[],
            Some(transfer_body(&[("P", json!(1))])),
        )
        .await;
    assert_eq!(r.status, 401);
    let r = server
        .admin("GET", "/api/v1/transfers/TRF0000000000000000", json!(null))
        .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (404, json!("Transfer not found"))
    );

    // The same Idempotency-Key and body: the same answer, and the stock moved once.
    let body = transfer_body(&[("P", json!(2))]);
    let (s1, first) = transfer(&server, body.clone(), Some("move-1")).await;
    let (s2, again) = transfer(&server, body, Some("move-1")).await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(first, again);
    assert_eq!(counts(&server, "A", "P").await, (json!(5), json!(0)));
    let (status, r) = transfer(&server, transfer_body(&[("P", json!(1))]), Some("move-1")).await;
    assert_eq!(
        (status, r["error"].clone()),
        (409, json!("Idempotency key reused"))
    );
}

/// Starts a server that aborts right after `point`, sends one keyed transfer, and waits
/// for the process to be gone (as after `kill -9`).
async fn crash_at(data: &std::path::Path, point: &str) {
    let mut server =
        TestServer::start_with_env(data, &[], &[("GODOWN_TEST_SAGA_CRASH", point)]).await;
    setup(&server).await;
    let body = transfer_body(&[("P", json!(3))]);
    let auth = format!("Bearer {ADMIN}");
    let headers = [
        ("authorization", auth.as_str()),
        ("idempotency-key", "crash-1"),
    ];
    let sent = server
        .conn()
        .await
        .send(
            "POST",
            "/api/v1/transfers",
            &headers,
            Some(Bytes::from(body.to_string())),
        )
        .await;
    assert!(
        sent.is_err(),
        "{point}: no answer comes from a process that died"
    );
    server.wait_gone().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_step_moves_the_stock_exactly_once() {
    // Goal: the process dies right after each step of the saga is durable. After restart
    // stock is conserved across the two stores (on_hand A + B = 12, nothing left reserved),
    // the transfer happened at most once; a retry with the same key completes it exactly
    // once: one `transfer_out` at A and one `transfer_in` at B.
    for (point, moved_by_recovery) in [
        ("transfer:started", false),
        ("transfer:held", true),
        ("transfer:added", true),
        ("transfer:sent", true),
    ] {
        let dir = temp_dir();
        let data = dir.path().join("db");
        crash_at(&data, point).await;
        let server = TestServer::start(&data, &[]).await;
        let (a, b) = (
            counts(&server, "A", "P").await,
            counts(&server, "B", "P").await,
        );
        let expected = if moved_by_recovery {
            ((json!(7), json!(0)), (json!(5), json!(0)))
        } else {
            ((json!(10), json!(0)), (json!(2), json!(0)))
        };
        assert_eq!((a, b), expected, "{point}: after recovery");

        let body = transfer_body(&[("P", json!(3))]);
        let (status, t) = transfer(&server, body, Some("crash-1")).await;
        assert_eq!(status, 201, "{point}: {t}");
        assert_eq!(t["status"], json!("completed"), "{point}");
        assert_eq!(
            counts(&server, "A", "P").await,
            (json!(7), json!(0)),
            "{point}"
        );
        assert_eq!(
            counts(&server, "B", "P").await,
            (json!(5), json!(0)),
            "{point}"
        );
        let out = movements(&server, "A", "P", "transfer_out").await;
        let into = movements(&server, "B", "P", "transfer_in").await;
        assert_eq!((out.len(), into.len()), (1, 1), "{point}: exactly once");
        assert_eq!(out[0]["reference"], t["transfer_id"], "{point}");
        assert_eq!(into[0]["reference"], t["transfer_id"], "{point}");
    }
}
