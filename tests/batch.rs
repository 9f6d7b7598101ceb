//! Batch orders, black box (API.md "Batch orders"): each order answered as it would be
//! alone, each all or nothing, exact stock, the batch durable as a whole and idempotent,
//! also across `kill -9`.

mod common;

use common::*;
use serde_json::{Value, json};

async fn setup(server: &TestServer) {
    server.put_store("B").await;
    server
        .put_product("B", "P", "pieces", json!(14), json!(10))
        .await;
    server
        .put_product("B", "K", "kg", json!(50), json!(5))
        .await;
}

fn cod(items: &[(&str, Value)]) -> Value {
    let mut o = order("B", items);
    o.as_object_mut().unwrap().remove("store_id");
    o
}

async fn batch(server: &TestServer, orders: Value, key: Option<&str>) -> (u16, Value) {
    let mut headers = vec![];
    if let Some(key) = key {
        headers.push(("idempotency-key", key));
    }
    let body = json!({ "orders": orders });
    let r = server
        .req(
            "POST",
            "/api/v1/stores/B/orders/batch",
            &headers,
            Some(body),
        )
        .await;
    (r.status, r.json())
}

fn statuses(answer: &Value) -> Vec<u64> {
    answer
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"))
        .iter()
        .map(|a| a["status"].as_u64().unwrap())
        .collect()
}

/// The mixed batch: two good orders among every kind of refusal.
fn mixed() -> Value {
    let mut upi = cod(&[("K", json!(1.5))]);
    upi["payment_method"] = json!("upi");
    let mut partial = cod(&[("P", json!(9))]);
    partial["allow_partial"] = json!(true);
    json!([
        cod(&[("P", json!(2))]),
        cod(&[("P", json!(20))]),
        order("OTHER", &[("P", json!(1))]),
        cod(&[("P", json!(1.5))]),
        upi,
        cod(&[("NOPE", json!(1))]),
        partial,
        42,
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_order_is_answered_as_it_would_be_alone() {
    // Goal: statuses and bodies per order in request order; stock moved exactly by the
    // orders placed; a refused order changes nothing; each refusal is the one the
    // per-store route gives for that order alone.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    setup(&server).await;
    let (status, answer) = batch(&server, mixed(), None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(statuses(&answer), [200, 400, 400, 400, 200, 404, 200, 400]);
    let a = answer.as_array().unwrap();
    assert_eq!(a[0]["body"]["status"], json!("confirmed"));
    assert_eq!(a[0]["body"]["total_amount"], json!(49.4));
    assert_eq!(a[1]["body"]["error"], json!("Insufficient stock"));
    assert_eq!(a[2]["body"]["error"], json!("Store mismatch"));
    assert_eq!(a[3]["body"]["error"], json!("Invalid quantity"));
    assert_eq!(a[4]["body"]["status"], json!("pending_payment"));
    assert_eq!(a[5]["body"]["error"], json!("Product not found"));
    // 10 − 2 = 8 left: the partial order ships 8 of 9 and says what it could not.
    assert_eq!(a[6]["body"]["items"][0]["quantity"], json!(8));
    assert_eq!(
        a[6]["body"]["unfulfilled"][0]["shortage"],
        json!(1),
        "{}",
        a[6]
    );
    assert_eq!(a[7]["body"]["error"], json!("Invalid JSON"));
    assert_eq!(server.stock("B", "P").await, json!(0));
    let k = server.product("B", "K").await;
    assert_eq!(
        (k["on_hand"].clone(), k["reserved"].clone()),
        (json!(5), json!(1.5))
    );

    // The same refusals from the per-store route, one order at a time.
    for (i, element) in mixed().as_array().unwrap().iter().enumerate() {
        if [1, 2, 3, 5, 7].contains(&i) {
            let r = server
                .post("/api/v1/stores/B/orders", element.clone())
                .await;
            assert_eq!(
                r.status as u64,
                a[i]["status"].as_u64().unwrap(),
                "order {i}"
            );
            assert_eq!(r.json()["error"], a[i]["body"]["error"], "order {i}");
        }
    }

    // Refusals of the batch itself; an unknown store.
    let too_many = Value::Array(vec![cod(&[("P", json!(1))]); 501]);
    let (status, r) = batch(&server, too_many, None).await;
    assert_eq!(
        (status, r["error"].clone()),
        (400, json!("Too many orders"))
    );
    let (status, r) = batch(&server, json!([]), None).await;
    assert_eq!(
        (status, r["error"].clone()),
        (400, json!("Batch must contain at least one order"))
    );
    let r = server
        .post("/api/v1/stores/B/orders/batch", json!({"order": []}))
        .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("orders is required"))
    );
    let body = json!({"orders": [order("NOSUCH", &[("P", json!(1))])]});
    let r = server
        .post("/api/v1/stores/NOSUCH/orders/batch", body)
        .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (404, json!("Store not found"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_batch_is_placed_once_also_across_kill_9() {
    // Goal: the same key and body get the same answer (the same order ids), before and
    // after kill -9, and the stock moves once; a batch that placed nothing is remembered
    // too; the key with another body is 409.
    let dir = temp_dir();
    let data = dir.path().join("db");
    let mut server = TestServer::start(&data, &[]).await;
    setup(&server).await;
    let (s1, first) = batch(&server, mixed(), Some("feed-1")).await;
    let (s2, again) = batch(&server, mixed(), Some("feed-1")).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(first, again);
    let refused = json!([cod(&[("P", json!(50))])]);
    let (_, none_placed) = batch(&server, refused.clone(), Some("feed-2")).await;
    assert_eq!(statuses(&none_placed), [400]);

    server.kill9();
    let server = TestServer::start(&data, &[]).await;
    let (status, after) = batch(&server, mixed(), Some("feed-1")).await;
    assert_eq!(status, 200);
    for (a, b) in first
        .as_array()
        .unwrap()
        .iter()
        .zip(after.as_array().unwrap())
    {
        assert_eq!(a["status"], b["status"]);
        assert_eq!(a["body"]["order_id"], b["body"]["order_id"]);
        assert_eq!(a["body"]["error"], b["body"]["error"]);
    }
    assert_eq!(server.stock("B", "P").await, json!(0), "placed once");
    server
        .put_product("B", "P", "pieces", json!(14), json!(100))
        .await;
    let (_, still) = batch(&server, refused, Some("feed-2")).await;
    assert_eq!(
        still, none_placed,
        "remembered, not run again with new stock"
    );
    let (status, r) = batch(&server, json!([cod(&[("P", json!(1))])]), Some("feed-1")).await;
    assert_eq!(
        (status, r["error"].clone()),
        (409, json!("Idempotency key reused"))
    );
    let listed = server
        .admin("GET", "/api/v1/stores/B/orders", json!(null))
        .await
        .json();
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(3),
        "{listed}"
    );
}
