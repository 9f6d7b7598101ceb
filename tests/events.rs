//! A store's public events, black box: Server-Sent Events live and resumed, the polling
//! page, and the same ids after `kill -9`.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a test waits for an event before it fails.
const EVENT_WAIT: Duration = Duration::from_secs(10);

/// One open event stream, read raw (chunked encoding: each chunk is whole lines, so the
/// `id:`, `event:` and `data:` lines can be read straight from the bytes).
struct Stream {
    socket: tokio::net::TcpStream,
    text: String,
}

impl Stream {
    async fn open(server: &TestServer, store: &str, last_event_id: Option<u64>) -> Stream {
        let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let resume = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
        let request = format!(
            "GET /api/v1/stores/{store}/events HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\nAuthorization: Bearer {ADMIN}\r\n{resume}\r\n"
        );
        socket.write_all(request.as_bytes()).await.unwrap();
        Stream {
            socket,
            text: String::new(),
        }
    }

    /// The next `n` events: `(id, type, data)`.
    async fn take(&mut self, n: usize) -> Vec<(u64, String, Value)> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + EVENT_WAIT;
        loop {
            while let Some(end) = self.text.find("\n\n") {
                let frame: String = self.text.drain(..end + 2).collect();
                let field = |name: &str| {
                    frame
                        .lines()
                        .find_map(|l| l.trim_end_matches('\r').strip_prefix(name))
                        .map(str::to_string)
                };
                if let (Some(id), Some(kind), Some(data)) =
                    (field("id: "), field("event: "), field("data: "))
                {
                    out.push((
                        id.parse().unwrap(),
                        kind,
                        serde_json::from_str(&data).unwrap(),
                    ));
                }
                if out.len() == n {
                    return out;
                }
            }
            let mut buf = [0u8; 8192];
            let read = tokio::time::timeout_at(deadline, self.socket.read(&mut buf)).await;
            let n_read = read
                .unwrap_or_else(|_| panic!("only {} of {n} events came: {out:?}", out.len()))
                .unwrap();
            assert!(
                n_read > 0,
                "the stream ended after {} of {n} events",
                out.len()
            );
            self.text.push_str(&String::from_utf8_lossy(&buf[..n_read]));
        }
    }
}

/// Store A: product P, 10 pieces, an alert at 3 or fewer.
async fn setup(server: &TestServer) {
    server.put_store("A").await;
    let body = json!({"product_name": "Maggi", "unit": "pieces", "unit_price": 14, "stock": 10, "low_stock_threshold": 3});
    let r = server
        .admin("PUT", "/api/v1/inventory/products/A/P", body)
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
}

/// Orders, a hold and its release, a cancel, an adjustment and a low-stock crossing;
/// returns the event types they must give, in order.
async fn activity(server: &TestServer) -> Vec<&'static str> {
    let r = server
        .post("/api/v1/orders/", order("A", &[("P", json!(2))]))
        .await;
    assert_eq!(r.status, 200);
    let hold = json!({"items": [{"product_id": "P", "quantity": 1}]});
    let r = server.post("/api/v1/stores/A/reservations", hold).await;
    assert_eq!(r.status, 201);
    let rsv = r.json()["reservation_id"].as_str().unwrap().to_string();
    let r = server
        .req(
            "DELETE",
            &format!("/api/v1/stores/A/reservations/{rsv}"),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let mut upi = order("A", &[("P", json!(1))]);
    upi["payment_method"] = json!("upi");
    let r = server.post("/api/v1/orders/", upi).await;
    let id = r.json()["order_id"].as_str().unwrap().to_string();
    let r = server
        .admin("POST", &format!("/api/v1/orders/{id}/cancel"), json!({}))
        .await;
    assert_eq!(r.status, 200);
    let body = json!({"quantity_change": -1, "reason": "broken packet"});
    let r = server
        .admin("POST", "/api/v1/inventory/products/A/P/adjustments", body)
        .await;
    assert_eq!(r.status, 200);
    // 10 - 2 - 1 = 7 available; 4 more leaves 3: the threshold.
    let r = server
        .post("/api/v1/orders/", order("A", &[("P", json!(4))]))
        .await;
    assert_eq!(r.status, 200);
    vec![
        "order.created",
        "reservation.created",
        "reservation.released",
        "order.created",
        "order.cancelled",
        "stock.adjusted",
        "order.created",
        "stock.low",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_in_order_resume_without_gaps_and_keep_their_ids_after_kill_9() {
    let dir = temp_dir();
    let db = dir.path().join("db");
    let mut server = TestServer::start(&db, &[]).await;
    setup(&server).await;
    let mut live = Stream::open(&server, "A", None).await;
    let want = activity(&server).await;
    let got = live.take(want.len()).await;
    let kinds: Vec<&str> = got.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(kinds, want);
    let ids: Vec<u64> = got.iter().map(|(id, _, _)| *id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    // Shapes: the order, the hold, the adjustment, the crossing.
    let (_, _, first) = &got[0];
    assert_eq!(first["type"], "order.created");
    assert_eq!(first["store_id"], "A");
    assert_eq!(first["data"]["status"], "confirmed");
    assert_eq!(first["data"]["total_amount"], json!(49.4));
    assert!(
        first["data"]["order_id"]
            .as_str()
            .unwrap()
            .starts_with("ORD")
    );
    assert!(
        got[1].2["data"]["reservation_id"]
            .as_str()
            .unwrap()
            .starts_with("RSV")
    );
    assert_eq!(got[4].2["data"]["status"], "cancelled");
    let adjusted = &got[5].2["data"];
    assert_eq!(
        (
            adjusted["quantity_change"].clone(),
            adjusted["reason"].clone(),
            adjusted["on_hand"].clone()
        ),
        (json!(-1), json!("broken packet"), json!(7))
    );
    let low = &got[7].2["data"];
    assert_eq!(
        (
            low["product_name"].clone(),
            low["current_stock"].clone(),
            low["low_stock_threshold"].clone()
        ),
        (json!("Maggi"), json!(3), json!(3))
    );

    // Resumed after the third: exactly the rest, then live again.
    let mut resumed = Stream::open(&server, "A", Some(ids[2])).await;
    let rest = resumed.take(want.len() - 3).await;
    assert_eq!(rest, got[3..].to_vec());
    let r = server
        .post("/api/v1/orders/", order("A", &[("P", json!(1))]))
        .await;
    assert_eq!(r.status, 200);
    let next = resumed.take(1).await;
    assert_eq!(
        (next[0].1.as_str(), next[0].0 > ids[7]),
        ("order.created", true)
    );
    let next_live = live.take(1).await;
    assert_eq!(next_live, next);

    // After kill -9: the same events with the same ids, as pages of 3.
    server.kill9();
    let server = TestServer::start(&db, &[]).await;
    let mut replayed = Vec::new();
    let mut after = 0;
    loop {
        let page = server
            .get(&format!("/api/v1/stores/A/events?after={after}&limit=3"))
            .await
            .json();
        let items = page["items"].as_array().unwrap();
        replayed.extend(items.iter().map(|e| {
            (
                e["id"].as_u64().unwrap(),
                e["type"].as_str().unwrap().to_string(),
                e.clone(),
            )
        }));
        match page["next_after"].as_u64() {
            Some(n) => after = n,
            None => break,
        }
    }
    let mut before = got.clone();
    before.extend(next);
    assert_eq!(replayed, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_need_the_store_s_token_and_a_known_store() {
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    setup(&server).await;
    let r = server
        .req("GET", "/api/v1/stores/A/events", &[], None)
        .await;
    assert_eq!(r.status, 401);
    let r = server.get("/api/v1/stores/NOPE/events").await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (404, json!("Store not found"))
    );
    let r = server.get("/api/v1/stores/A/events?after=x").await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("Invalid after"))
    );
    let r = server.get("/api/v1/stores/A/events").await;
    assert_eq!(r.json(), json!({"items": [], "next_after": null}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_does_not_read_is_dropped_with_a_final_comment() {
    // Goal: a stream whose client stops reading cannot hold memory or the store: once it is
    // more than the live buffer behind, it ends with a comment saying so, and what it got
    // before is every event in order (resumable from the last id).
    const EVENTS: usize = 3000;
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    setup(&server).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let mut slow = Stream {
        socket: stream,
        text: String::new(),
    };
    let request = format!(
        "GET /api/v1/stores/A/events HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\nAuthorization: Bearer {ADMIN}\r\n\r\n"
    );
    slow.socket.write_all(request.as_bytes()).await.unwrap();
    // Orders from 4 connections at once, each event ~3 KB (long texts): more than the
    // kernel's socket buffers can hide.
    server
        .put_product("A", "Q", "pieces", json!(1), json!(1_000_000))
        .await;
    let adjust = |n: usize| {
        let server = &server;
        async move {
            for _ in 0..n {
                let mut body = order("A", &[("Q", json!(1))]);
                body["delivery_address"] = json!("x".repeat(1000));
                body["customer_name"] = json!("y".repeat(1000));
                let r = server.post("/api/v1/orders/", body).await;
                assert_eq!(r.status, 200);
            }
        }
    };
    let n = EVENTS / 4;
    tokio::join!(adjust(n), adjust(n), adjust(n), adjust(n));
    // The orders went through while the subscriber slept; now read what it was sent.
    let mut all = Vec::new();
    let deadline = tokio::time::Instant::now() + EVENT_WAIT;
    loop {
        let mut buf = [0u8; 65536];
        let n = tokio::time::timeout_at(deadline, slow.socket.read(&mut buf))
            .await
            .expect("the stream was never ended")
            .unwrap();
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.contains(": dropped: this client fell"),
        "{}",
        &text[text.len().saturating_sub(300)..]
    );
    let ids: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|id| id.trim().parse().unwrap())
        .collect();
    assert!(
        !ids.is_empty() && ids.len() < EVENTS,
        "{} events before the drop",
        ids.len()
    );
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "in order, no gap");
}
