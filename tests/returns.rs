//! Returns, black box (API.md "Returns"): exact refunds, what may come back, restocking,
//! `returned`, idempotency and `kill -9`.

mod common;

use common::*;
use serde_json::{Value, json};

/// Store `R` (5 % tax, the default): `K` in kg at 47.50, `A` in pieces at 14.00, 10 each.
async fn setup(server: &TestServer) {
    server.put_store("R").await;
    server
        .put_product("R", "K", "kg", json!(47.5), json!(10))
        .await;
    server
        .put_product("R", "A", "pieces", json!(14), json!(10))
        .await;
}

/// Places a cod order at `R` and returns its id.
async fn place(server: &TestServer, items: &[(&str, Value)]) -> String {
    let r = server.post("/api/v1/orders/", order("R", items)).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    r.json()["order_id"].as_str().unwrap().to_string()
}

async fn take_return(server: &TestServer, order_id: &str, body: Value) -> (u16, Value) {
    let path = format!("/api/v1/orders/{order_id}/returns");
    let r = server.admin("POST", &path, body).await;
    (r.status, r.json())
}

fn items(lines: &[(&str, Value)]) -> Value {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(p, q)| json!({"product_id": p, "quantity": q}))
        .collect();
    json!(lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_are_exact_and_an_order_with_every_unit_back_is_returned() {
    // Goal: 0.333 kg at 47.50 with 5 % refunds 16.61 and puts 0.333 kg back (movement
    // `return` naming the order); over-returns and strangers are 400; restock false leaves
    // stock alone; the last units make the order `returned`, and then nothing more.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    setup(&server).await;
    let id = place(&server, &[("K", json!(1)), ("A", json!(2))]).await;

    let (status, r) = take_return(
        &server,
        &id,
        json!({"items": items(&[("K", json!(0.333))]), "reason": "stale"}),
    )
    .await;
    assert_eq!(status, 201, "{r}");
    let return_id = r["return_id"].as_str().unwrap();
    assert!(return_id.starts_with("RET") && return_id.len() == 19, "{r}");
    assert_eq!(r["order_id"], json!(id));
    assert_eq!(
        r["items"],
        json!([{"product_id": "K", "quantity": 0.333, "refund": 16.61}])
    );
    assert_eq!(r["refund_total"], json!(16.61));
    assert_eq!(r["restocked"], json!(true));
    assert_eq!(r["reason"], json!("stale"));
    assert_eq!(server.stock("R", "K").await, json!(9.333));
    let ledger = server
        .get("/api/v1/inventory/products/R/K/movements?limit=1")
        .await
        .json();
    let newest = &ledger["items"][0];
    assert_eq!(newest["kind"], json!("return"), "{ledger}");
    assert_eq!(newest["quantity_change"], json!(0.333));
    assert_eq!(newest["reserved_change"], json!(0));
    assert_eq!(newest["reference"], json!(id));

    // 0.667 kg is left of K: 0.668 is too much; a product not in the order, a fraction of
    // a piece and an empty list are refused; none of them changes anything.
    for (body, phrase) in [
        (items(&[("K", json!(0.668))]), "Invalid return quantity"),
        (items(&[("B", json!(1))]), "Invalid return quantity"),
        (items(&[("A", json!(1.5))]), "Invalid quantity"),
        (items(&[("A", json!(0))]), "Invalid quantity"),
        (json!([]), "Return must contain at least one item"),
        (
            items(&[("A", json!(1)), ("A", json!(1))]),
            "Duplicate product",
        ),
    ] {
        let (status, r) = take_return(&server, &id, json!({ "items": body })).await;
        assert_eq!((status, r["error"].as_str().unwrap()), (400, phrase), "{r}");
    }
    assert_eq!(server.stock("R", "K").await, json!(9.333));

    // Damaged goods: refunded, not restocked. 2 × 14.00 + 5 % = 29.40.
    let body = json!({"items": items(&[("A", json!(2))]), "restock": false});
    let (status, r) = take_return(&server, &id, body).await;
    assert_eq!((status, &r["refund_total"]), (201, &json!(29.4)), "{r}");
    assert_eq!(r["restocked"], json!(false));
    assert_eq!(server.stock("R", "A").await, json!(8));

    // The rest of K: 0.667 × 47.50 = 31.6825 → 31.68, tax 1.584 → 1.58: 33.26.
    let (status, r) = take_return(
        &server,
        &id,
        json!({"items": items(&[("K", json!(0.667))])}),
    )
    .await;
    assert_eq!((status, &r["refund_total"]), (201, &json!(33.26)), "{r}");
    let o = server.get(&format!("/api/v1/orders/{id}")).await.json();
    assert_eq!(o["status"], json!("returned"), "{o}");
    assert_eq!(o["refunded_total"], json!(79.27)); // 16.61 + 29.40 + 33.26
    assert_eq!(o["returns"].as_array().unwrap().len(), 3);
    assert_eq!(o["returns"][0]["return_id"], json!(return_id));
    assert_eq!(server.stock("R", "K").await, json!(10));

    let (status, r) = take_return(
        &server,
        &id,
        json!({"items": items(&[("K", json!(0.001))])}),
    )
    .await;
    assert_eq!(
        (status, &r["error"], &r["status"]),
        (409, &json!("Order not returnable"), &json!("returned"))
    );
    let r = server
        .admin("POST", &format!("/api/v1/orders/{id}/cancel"), json!({}))
        .await;
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (409, json!("returned"))
    );

    // Listed as returned, and told as `order.returned` events.
    let listed = server
        .get("/api/v1/stores/R/orders?status=returned")
        .await
        .json();
    assert_eq!(listed["items"][0]["order_id"], json!(id), "{listed}");
    let events = server
        .get("/api/v1/stores/R/events?limit=1000")
        .await
        .json();
    let returned = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "order.returned")
        .count();
    assert_eq!(returned, 3, "{events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_confirmed_order_comes_back_and_only_to_its_store() {
    // Goal: pending and cancelled orders are 409 with their status; the per-store path
    // works for the order's store and is 404 for another; a store token of another store
    // is 403 and no token 401; cancelling after a partial return restocks only the rest.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    setup(&server).await;
    server.put_store("OTHER").await;
    let one_a = json!({"items": items(&[("A", json!(1))])});

    let mut pending = order("R", &[("A", json!(1))]);
    pending["payment_method"] = json!("upi");
    let pending = server.post("/api/v1/orders/", pending).await.json();
    let pending = pending["order_id"].as_str().unwrap();
    let (status, r) = take_return(&server, pending, one_a.clone()).await;
    assert_eq!(
        (status, &r["error"], &r["status"]),
        (
            409,
            &json!("Order not returnable"),
            &json!("pending_payment")
        )
    );

    let id = place(&server, &[("A", json!(3))]).await;
    assert_eq!(server.stock("R", "A").await, json!(6)); // 10 − 1 held − 3 sold
    let path = format!("/api/v1/stores/R/orders/{id}/returns");
    let r = server.admin("POST", &path, one_a.clone()).await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    assert_eq!(server.stock("R", "A").await, json!(7));
    let other = format!("/api/v1/stores/OTHER/orders/{id}/returns");
    let r = server.admin("POST", &other, one_a.clone()).await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (404, json!("Order not found"))
    );

    let token = server
        .admin("POST", "/api/v1/stores/OTHER/tokens", json!({}))
        .await
        .json();
    let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
    let body = Some(one_a.clone());
    let r = server
        .req("POST", &path, &[("authorization", &bearer)], body.clone())
        .await;
    assert_eq!(r.status, 403);
    let r = server.req("POST", &path, &[], body).await;
    assert_eq!(r.status, 401);

    // Cancel after returning 1 of 3: the other 2 come back, not 3.
    let r = server
        .admin("POST", &format!("/api/v1/orders/{id}/cancel"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(server.stock("R", "A").await, json!(9));
    let (status, r) = take_return(&server, &id, one_a).await;
    assert_eq!((status, &r["status"]), (409, &json!("cancelled")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_return_is_taken_once_per_key_and_survives_kill_9() {
    // Goal: the same Idempotency-Key and body give the first answer (one return); another
    // body is 409; after kill -9 the key still gives that answer, the order and the stock
    // are as acknowledged, a new return of the (now archived) order works, and
    // `godown verify` finds the data directory sound.
    let dir = temp_dir();
    let db = dir.path().join("db");
    let mut server = TestServer::start(&db, &[]).await;
    setup(&server).await;
    let id = place(&server, &[("K", json!(2))]).await;
    let path = format!("/api/v1/orders/{id}/returns");
    let body = json!({"items": items(&[("K", json!(0.5))])});
    let auth = format!("Bearer {ADMIN}");
    let keyed = |key: &'static str| {
        [
            ("authorization", auth.clone()),
            ("idempotency-key", key.to_string()),
        ]
    };
    let send = async |server: &TestServer, key: &'static str, body: &Value| {
        let headers = keyed(key);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        server
            .req("POST", &path, &headers, Some(body.clone()))
            .await
    };

    let first = send(&server, "ret-1", &body).await;
    assert_eq!(first.status, 201, "{:?}", first.json());
    let again = send(&server, "ret-1", &body).await;
    assert_eq!((again.status, again.json()), (201, first.json()));
    let other = json!({"items": items(&[("K", json!(0.25))])});
    let reused = send(&server, "ret-1", &other).await;
    assert_eq!(
        (reused.status, reused.json()["error"].clone()),
        (409, json!("Idempotency key reused"))
    );
    // A refusal is the key's answer too.
    let too_much = json!({"items": items(&[("K", json!(5))])});
    let refused = send(&server, "ret-2", &too_much).await;
    assert_eq!(refused.status, 400);
    assert_eq!(server.stock("R", "K").await, json!(8.5));

    server.kill9();
    let mut server = TestServer::start(&db, &[]).await;
    let again = send(&server, "ret-1", &body).await;
    assert_eq!((again.status, again.json()), (201, first.json()));
    let again = send(&server, "ret-2", &too_much).await;
    assert_eq!((again.status, again.json()), (400, refused.json()));
    let o = server.get(&format!("/api/v1/orders/{id}")).await.json();
    assert_eq!(o["returns"].as_array().unwrap().len(), 1, "{o}");
    assert_eq!(o["refunded_total"], json!(24.94)); // 0.5 × 47.50 = 23.75 + 1.19 (1.1875)
    assert_eq!(server.stock("R", "K").await, json!(8.5));
    // A restart leaves finished orders in the archive only: a new return reads it back.
    let more = send(&server, "ret-3", &other).await;
    assert_eq!(more.status, 201, "{:?}", more.json());
    assert_eq!(server.stock("R", "K").await, json!(8.75));

    server.stop();
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_godown"))
        .args(["verify", "--data-dir"])
        .arg(&db)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{out}");
    assert!(out.contains("returns:           2"), "{out}");
}
