//! Cart holds, the order lifecycle and the movement ledger, black box.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn ms_of(rfc3339: &Value) -> u128 {
    let t = humantime::parse_rfc3339(rfc3339.as_str().unwrap()).unwrap();
    t.duration_since(UNIX_EPOCH).unwrap().as_millis()
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Polls until the product's `reserved` is `want`, and returns the wall-clock time it was
/// first seen (polling every 20 ms; gives up after `limit`).
async fn wait_reserved(
    server: &TestServer,
    store: &str,
    product: &str,
    want: Value,
    limit: Duration,
) -> u128 {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if server.product(store, product).await["reserved"] == want {
            return now_ms();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reserved never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (at most 10 s) until the order reads back with `status`.
async fn wait_status(server: &TestServer, id: &str, status: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = server.get(&format!("/api/v1/orders/{id}")).await.json()["status"].clone();
        if got == status {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "order {id} stayed {got}, never {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn setup(server: &TestServer) {
    server.put_store("L").await;
    server
        .put_product("L", "A", "pieces", json!(10), json!(10))
        .await;
    server
        .put_product("L", "B", "kg", json!(80), json!(5))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_expires_within_a_second() {
    // Goal: a 2 s hold lowers available and raises reserved; both return within 1 s of
    // expires_at, and the hold is then gone.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    setup(&server).await;
    let r = server
        .post(
            "/api/v1/stores/L/reservations",
            json!({"items": [{"product_id": "A", "quantity": 3}], "ttl_seconds": 2}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let hold = r.json();
    assert!(hold["reservation_id"].as_str().unwrap().starts_with("RSV"));
    let p = server.product("L", "A").await;
    assert_eq!(
        (
            p["current_stock"].clone(),
            p["reserved"].clone(),
            p["on_hand"].clone()
        ),
        (json!(7), json!(3), json!(10))
    );
    let released_at = wait_reserved(&server, "L", "A", json!(0), Duration::from_secs(10)).await;
    let expires_at = ms_of(&hold["expires_at"]);
    assert!(released_at >= expires_at, "released early");
    assert!(
        released_at <= expires_at + 1000,
        "released {} ms after expiry",
        released_at - expires_at
    );
    assert_eq!(server.stock("L", "A").await, 10);
    let id = hold["reservation_id"].as_str().unwrap();
    let r = server
        .req(
            "DELETE",
            &format!("/api/v1/stores/L/reservations/{id}"),
            &[],
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (404, json!("Reservation not found"))
    );
    let mut body = order("L", &[("A", json!(1))]);
    body["reservation_id"] = json!(id);
    let r = server.post("/api/v1/orders/", body).await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (409, json!("Reservation expired"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_expires_on_time_across_kill_9() {
    // Goal: a 3 s hold, then kill -9 and restart: the hold is still there until its time
    // and is released within 1 s of expires_at.
    let dir = temp_dir();
    let db = dir.path().join("db");
    let mut server = TestServer::start(&db, &[]).await;
    setup(&server).await;
    let r = server
        .post(
            "/api/v1/stores/L/reservations",
            json!({"items": [{"product_id": "B", "quantity": 1.5}], "ttl_seconds": 3}),
        )
        .await;
    assert_eq!(r.status, 201);
    let expires_at = ms_of(&r.json()["expires_at"]);
    server.kill9();
    let server = TestServer::start(&db, &[]).await;
    if now_ms() < expires_at {
        assert_eq!(
            server.product("L", "B").await["reserved"].to_string(),
            "1.5",
            "the hold survived the crash"
        );
    }
    let released_at = wait_reserved(&server, "L", "B", json!(0), Duration::from_secs(10)).await;
    assert!(
        released_at <= expires_at + 1000,
        "released {} ms after expiry",
        released_at.saturating_sub(expires_at)
    );
    assert_eq!(server.stock("L", "B").await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_becomes_an_order() {
    // Goal: hold → order with reservation_id → confirmed; reserved back to 0, on_hand down;
    // held units the order does not use are released; extra units are checked as usual.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    setup(&server).await;
    let r = server
        .post("/api/v1/stores/L/reservations", json!({"items": [{"product_id": "A", "quantity": 4}, {"product_id": "B", "quantity": 2}]}))
        .await;
    let id = r.json()["reservation_id"].as_str().unwrap().to_string();
    // A second shopper cannot take the held units.
    let r = server
        .post("/api/v1/orders/", order("L", &[("A", json!(7))]))
        .await;
    assert_eq!((r.status, r.json()["available"].clone()), (400, json!(6)));
    let mut body = order("L", &[("A", json!(5))]);
    body["reservation_id"] = json!(id);
    let r = server.post("/api/v1/orders/", body.clone()).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(
        (
            r.json()["status"].clone(),
            r.json()["reservation_id"].clone()
        ),
        (json!("confirmed"), json!(id))
    );
    let a = server.product("L", "A").await;
    assert_eq!(
        (a["on_hand"].clone(), a["reserved"].clone()),
        (json!(5), json!(0))
    );
    let b = server.product("L", "B").await;
    assert_eq!(
        (b["on_hand"].clone(), b["reserved"].clone()),
        (json!(5), json!(0)),
        "unused held units released"
    );
    let r = server.post("/api/v1/orders/", body).await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (409, json!("Reservation expired")),
        "a hold converts once"
    );
    // Releasing a hold by DELETE.
    let r = server
        .post(
            "/api/v1/stores/L/reservations",
            json!({"items": [{"product_id": "A", "quantity": 5}]}),
        )
        .await;
    let id = r.json()["reservation_id"].as_str().unwrap().to_string();
    assert_eq!(server.stock("L", "A").await, 0);
    let r = server
        .req(
            "DELETE",
            &format!("/api/v1/stores/L/reservations/{id}"),
            &[],
            None,
        )
        .await;
    assert_eq!(
        r.json(),
        json!({"reservation_id": id, "status": "released"})
    );
    assert_eq!(server.stock("L", "A").await, 5);
    let r = server
        .post(
            "/api/v1/stores/L/reservations",
            json!({"items": [{"product_id": "A", "quantity": 1}], "ttl_seconds": 0}),
        )
        .await;
    assert_eq!(r.json()["error"], "Invalid ttl");
    let r = server
        .post(
            "/api/v1/stores/L/reservations",
            json!({"items": [{"product_id": "A", "quantity": 6}]}),
        )
        .await;
    assert_eq!(r.json()["error"], "Insufficient stock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_payments_cancellations_and_the_ledger() {
    // Goal: upi → paid → confirmed; upi → failed → released; cod → cancelled → restocked
    // with movements `sale` then `cancel`; paying a cancelled order is 409; an unpaid order
    // expires and releases its units.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &["--payment-ttl-seconds", "2"]).await;
    setup(&server).await;
    let online = |q: i64| {
        let mut b = order("L", &[("A", json!(q))]);
        b["payment_method"] = json!("upi");
        b
    };
    let pay = |id: &str, status: &str| {
        (
            format!("/api/v1/orders/{id}/payment"),
            json!({"status": status, "reference": "UPI-1"}),
        )
    };

    let r = server.post("/api/v1/orders/", online(2)).await;
    let o = r.json();
    assert_eq!(
        (o["status"].clone(), o["expires_at"].is_string()),
        (json!("pending_payment"), true)
    );
    let paid_id = o["order_id"].as_str().unwrap().to_string();
    assert_eq!(server.product("L", "A").await["reserved"], 2);
    let (path, body) = pay(&paid_id, "succeeded");
    let r = server.admin("POST", &path, body.clone()).await;
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (200, json!("confirmed"))
    );
    let a = server.product("L", "A").await;
    assert_eq!(
        (a["on_hand"].clone(), a["reserved"].clone()),
        (json!(8), json!(0))
    );
    let r = server.admin("POST", &path, body).await;
    assert_eq!(
        (
            r.status,
            r.json()["error"].clone(),
            r.json()["status"].clone()
        ),
        (409, json!("Order not payable"), json!("confirmed"))
    );
    let r = server
        .req("POST", &path, &[], Some(json!({"status": "succeeded"})))
        .await;
    assert_eq!(r.status, 401, "payment callbacks need a token");
    let r = server
        .admin("POST", &path, json!({"status": "pending"}))
        .await;
    assert_eq!(r.json()["error"], "Invalid payment status");

    let failed_id = server.post("/api/v1/orders/", online(3)).await.json()["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (path, body) = pay(&failed_id, "failed");
    assert_eq!(
        server.admin("POST", &path, body).await.json()["status"],
        "payment_failed"
    );
    assert_eq!(server.product("L", "A").await["reserved"], 0);
    let r = server
        .admin(
            "POST",
            &format!("/api/v1/orders/{failed_id}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (409, json!("Order not cancellable"))
    );

    let cod = server
        .post("/api/v1/orders/", order("L", &[("A", json!(2))]))
        .await
        .json();
    let cod_id = cod["order_id"].as_str().unwrap();
    assert_eq!(server.stock("L", "A").await, 6);
    let r = server
        .admin(
            "POST",
            &format!("/api/v1/orders/{cod_id}/cancel"),
            json!({"reason": "customer changed mind"}),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (200, json!("cancelled"))
    );
    assert_eq!(server.stock("L", "A").await, 8);
    let (path, body) = pay(cod_id, "succeeded");
    assert_eq!(
        server.admin("POST", &path, body).await.status,
        409,
        "paying a cancelled order"
    );
    assert_eq!(
        server.get(&format!("/api/v1/orders/{cod_id}")).await.json()["status"],
        "cancelled"
    );

    // The ledger, newest first: cancel +2/0, sale −2/0, release, reservation, sale −2/−2 …
    let m = server
        .get("/api/v1/inventory/products/L/A/movements")
        .await
        .json();
    let items = m["items"].as_array().unwrap();
    let row = |i: usize| {
        (
            items[i]["kind"].clone(),
            items[i]["quantity_change"].clone(),
            items[i]["reserved_change"].clone(),
        )
    };
    assert_eq!(row(0), (json!("cancel"), json!(2), json!(0)));
    assert_eq!(row(1), (json!("sale"), json!(-2), json!(0)));
    assert_eq!(items[0]["reference"], json!(cod_id));
    assert_eq!(row(2), (json!("release"), json!(0), json!(-3)));
    assert_eq!(row(3), (json!("reservation"), json!(0), json!(3)));
    assert_eq!(row(4), (json!("sale"), json!(-2), json!(-2)));
    assert_eq!(row(5), (json!("reservation"), json!(0), json!(2)));
    assert_eq!(row(6), (json!("initial"), json!(10), json!(0)));
    assert_eq!(items.len(), 7);
    assert_eq!(
        (
            items[0]["on_hand_after"].clone(),
            items[0]["reserved_after"].clone()
        ),
        (json!(8), json!(0))
    );
    let page = server
        .get("/api/v1/inventory/products/L/A/movements?limit=3")
        .await
        .json();
    let after = page["next_after"].as_u64().unwrap();
    let rest = server
        .get(&format!(
            "/api/v1/inventory/products/L/A/movements?after={after}"
        ))
        .await
        .json();
    assert_eq!(rest["items"][0]["kind"], "reservation");
    assert_eq!(rest["items"].as_array().unwrap().len(), 4);
    assert_eq!(
        server
            .req("GET", "/api/v1/inventory/products/L/A/movements", &[], None)
            .await
            .status,
        401
    );

    // An unpaid order expires and releases its stock.
    let r = server.post("/api/v1/orders/", online(4)).await.json();
    let id = r["order_id"].as_str().unwrap().to_string();
    assert_eq!(server.product("L", "A").await["reserved"], 4);
    wait_reserved(&server, "L", "A", json!(0), Duration::from_secs(10)).await;
    // The store shows the release at once; the order reads from the log's views, which
    // hold the expiry once its record is durable (a few milliseconds later).
    wait_status(&server, &id, "expired").await;
    let (path, body) = pay(&id, "succeeded");
    assert_eq!(
        server.admin("POST", &path, body).await.json()["status"],
        "expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_stock_alerts_list_products_at_or_below_threshold() {
    // Goal: the alert list holds exactly the products whose current stock is at or below
    // their threshold, and follows sales and restocks.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    server.put_store("L").await;
    let body = |stock: i64| json!({"product_name": "Dal", "unit": "kg", "unit_price": 120, "stock": stock, "low_stock_threshold": 3});
    server
        .admin("PUT", "/api/v1/inventory/products/L/DAL", body(5))
        .await;
    server
        .put_product("L", "SOAP", "pieces", json!(40), json!(0))
        .await;
    let alerts = server.get("/api/v1/stores/L/alerts/low-stock").await.json();
    let ids: Vec<&str> = alerts["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["product_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["SOAP"]);
    assert_eq!(
        server
            .post("/api/v1/orders/", order("L", &[("DAL", json!(2))]))
            .await
            .status,
        200
    );
    let alerts = server.get("/api/v1/stores/L/alerts/low-stock").await.json();
    assert_eq!(
        alerts["items"][0],
        json!({"product_id": "DAL", "product_name": "Dal", "current_stock": 3, "low_stock_threshold": 3})
    );
    server
        .admin(
            "POST",
            "/api/v1/inventory/products/L/DAL/adjustments",
            json!({"quantity_change": 10, "reason": "restock"}),
        )
        .await;
    server
        .admin(
            "POST",
            "/api/v1/inventory/products/L/SOAP/adjustments",
            json!({"quantity_change": 10, "reason": "restock"}),
        )
        .await;
    assert_eq!(
        server.get("/api/v1/stores/L/alerts/low-stock").await.json()["items"],
        json!([])
    );
    assert_eq!(
        server
            .req("GET", "/api/v1/stores/L/alerts/low-stock", &[], None)
            .await
            .status,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_order_answers_the_same_twice() {
    // Goal: the same key and body returns the first answer (200 or 4xx) and changes
    // nothing; a different body with that key is 409.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    setup(&server).await;
    let body = order("L", &[("A", json!(2))]);
    let key = [("idempotency-key", "k-1")];
    let first = server
        .req("POST", "/api/v1/orders/", &key, Some(body.clone()))
        .await;
    let again = server
        .req("POST", "/api/v1/orders/", &key, Some(body.clone()))
        .await;
    assert_eq!((first.status, again.status), (200, 200));
    assert_eq!(first.json(), again.json());
    assert_eq!(server.stock("L", "A").await, 8);
    let other = server
        .req(
            "POST",
            "/api/v1/orders/",
            &key,
            Some(order("L", &[("A", json!(3))])),
        )
        .await;
    assert_eq!(
        (other.status, other.json()["error"].clone()),
        (409, json!("Idempotency key reused"))
    );
    let big = [("idempotency-key", "k-2")];
    let r1 = server
        .req(
            "POST",
            "/api/v1/orders/",
            &big,
            Some(order("L", &[("A", json!(50))])),
        )
        .await;
    server
        .admin(
            "POST",
            "/api/v1/inventory/products/L/A/adjustments",
            json!({"quantity_change": 100, "reason": "restock"}),
        )
        .await;
    let r2 = server
        .req(
            "POST",
            "/api/v1/orders/",
            &big,
            Some(order("L", &[("A", json!(50))])),
        )
        .await;
    assert_eq!(
        (r1.status, r2.status),
        (400, 400),
        "a refusal is remembered too"
    );
    assert_eq!(r1.json(), r2.json());
    let bad = server
        .req(
            "POST",
            "/api/v1/orders/",
            &[("idempotency-key", "")],
            Some(body),
        )
        .await;
    assert_eq!(bad.json()["error"], "Invalid idempotency key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_only_in_the_archive_can_still_be_cancelled_and_paid() {
    // Goal: after a restart, finished orders live only in the archive (not in the store's
    // memory); a cancel reads the order back (off the actor's thread) and applies, and a
    // payment of a finished order is refused as for one in memory. Method: kill -9, restart.
    let dir = temp_dir();
    let db = dir.path().join("db");
    let mut server = TestServer::start(&db, &[]).await;
    setup(&server).await;
    let r = server
        .post("/api/v1/orders/", order("L", &[("A", json!(2))]))
        .await;
    assert_eq!(r.status, 200);
    let id = r.json()["order_id"].as_str().unwrap().to_string();
    assert_eq!(server.stock("L", "A").await, 8);
    server.kill9();

    let server = TestServer::start(&db, &[]).await;
    let r = server
        .admin(
            "POST",
            &format!("/api/v1/orders/{id}/payment"),
            json!({"status": "succeeded"}),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (409, json!("confirmed"))
    );
    let r = server
        .admin("POST", &format!("/api/v1/orders/{id}/cancel"), json!({}))
        .await;
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (200, json!("cancelled"))
    );
    assert_eq!(server.stock("L", "A").await, 10, "the units are back");
    let r = server.get(&format!("/api/v1/orders/{id}")).await;
    assert_eq!(r.json()["status"], "cancelled");
}
