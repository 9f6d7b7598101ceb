//! Webhooks, black box: signed deliveries to a local receiver that fails at first, backoff
//! that grows, delivery resumed after `kill -9` with nothing skipped, and a receiver that
//! never answers costing only its own webhook.

mod common;

use common::*;
use godown::delivery::signature;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a test waits for deliveries before it fails.
const DELIVERY_WAIT: Duration = Duration::from_secs(20);

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    headers: HashMap<String, String>,
    body: String,
    /// The status it answered.
    status: u16,
}

/// A receiver on 127.0.0.1: answers 500 to the first `fail_first` requests, then 200, or
/// (`silent`) reads requests and never answers; each answer after `delay` (a slow receiver).
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(fail_first: usize, silent: bool) -> Receiver {
        Receiver::start_slow(fail_first, silent, Duration::ZERO).await
    }

    async fn start_slow(fail_first: usize, silent: bool, delay: Duration) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let shared = got.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let got = shared.clone();
                tokio::spawn(serve(socket, got, fail_first, silent, delay));
            }
        });
        Receiver { addr, got }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` distinct events were answered 200; returns every request so far.
    async fn wait_delivered(&self, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + DELIVERY_WAIT;
        loop {
            let got = self.received();
            let mut ids = delivered_ids(&got);
            ids.sort_unstable();
            ids.dedup();
            if ids.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} events delivered: {got:?}",
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Serves HTTP/1.1 requests on one connection (keep-alive) until it closes.
async fn serve(
    mut socket: tokio::net::TcpStream,
    got: Arc<Mutex<Vec<Received>>>,
    fail_first: usize,
    silent: bool,
    delay: Duration,
) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let headers: HashMap<String, String> = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
        buf.drain(..head_end + len);
        if silent {
            got.lock().unwrap().push(Received {
                headers,
                body,
                status: 0,
            });
            continue; // never answers
        }
        tokio::time::sleep(delay).await;
        let status = {
            let mut got = got.lock().unwrap();
            let status = if got.len() < fail_first { 500 } else { 200 };
            got.push(Received {
                headers,
                body,
                status,
            });
            status
        };
        let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
        if socket.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn setup(server: &TestServer, store: &str) {
    server.put_store(store).await;
    server
        .put_product(store, "P", "pieces", json!(10), json!(100000))
        .await;
}

async fn register(server: &TestServer, store: &str, url: &str, events: Value) -> Value {
    let body = json!({"url": url, "events": events, "secret": "test-secret-0123456789"});
    let r = server
        .admin("POST", &format!("/api/v1/stores/{store}/webhooks"), body)
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    r.json()
}

/// The event ids of the requests answered 200, in order.
fn delivered_ids(got: &[Received]) -> Vec<u64> {
    got.iter()
        .filter(|r| r.status == 200)
        .map(|r| r.headers["godown-event-id"].parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_each_event_once_signed_after_growing_backoff() {
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    setup(&server, "A").await;
    let receiver = Receiver::start(2, false).await;
    let hook = register(&server, "A", &receiver.url(), json!(["order.created"])).await;
    assert!(hook["webhook_id"].as_str().unwrap().starts_with("WH"));
    assert_eq!(hook["secret"], "test-secret-0123456789");
    let listed = server.get("/api/v1/stores/A/webhooks").await.json();
    assert!(
        !listed.to_string().contains("test-secret"),
        "no secret in {listed}"
    );

    // An adjustment (not wanted), then an order (wanted).
    let body = json!({"quantity_change": 5, "reason": "count"});
    let r = server
        .admin("POST", "/api/v1/inventory/products/A/P/adjustments", body)
        .await;
    assert_eq!(r.status, 200);
    let r = server
        .post("/api/v1/orders/", order("A", &[("P", json!(1))]))
        .await;
    let order_id = r.json()["order_id"].as_str().unwrap().to_string();

    let got = receiver.wait_delivered(1).await;
    assert_eq!(got.len(), 3, "two failures, then the delivery: {got:?}");
    let ids: Vec<&str> = got
        .iter()
        .map(|r| r.headers["godown-event-id"].as_str())
        .collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "the same event each time: {ids:?}"
    );
    let delivered = &got[2];
    assert_eq!(delivered.headers["godown-event-type"], "order.created");
    let event: Value = serde_json::from_str(&delivered.body).unwrap();
    assert_eq!(event["data"]["order_id"], json!(order_id));
    assert_eq!(
        event["id"].to_string(),
        delivered.headers["godown-event-id"]
    );
    // The signature verifies with the secret, and not with another.
    let sig = &delivered.headers["godown-signature"];
    let t: i64 = sig
        .strip_prefix("t=")
        .and_then(|s| s.split(',').next())
        .unwrap()
        .parse()
        .unwrap();
    let body = delivered.body.as_bytes();
    assert_eq!(*sig, signature("test-secret-0123456789", t, body));
    assert_ne!(*sig, signature("another-secret-0123456", t, body));

    // The deliveries view: two retries with growing waits, then delivered.
    let wid = hook["webhook_id"].as_str().unwrap();
    let path = format!("/api/v1/stores/A/webhooks/{wid}/deliveries");
    let items = server.get(&path).await.json()["items"].clone();
    let items = items.as_array().unwrap();
    let statuses: Vec<&str> = items
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["delivered", "retrying", "retrying"],
        "newest first"
    );
    let wait = |a: &Value| {
        let ms = |v: &Value| {
            let t = humantime::parse_rfc3339(v.as_str().unwrap()).unwrap();
            t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
        };
        ms(&a["next_attempt_at"]) - ms(&a["at"])
    };
    let (first, second) = (wait(&items[2]), wait(&items[1]));
    assert!((750..=1000).contains(&first), "first wait {first} ms");
    assert!(
        second > first && (1500..=2000).contains(&second),
        "second wait {second} ms"
    );
    // Nothing more arrives: each event once.
    let r = server
        .post("/api/v1/orders/", order("A", &[("P", json!(1))]))
        .await;
    assert_eq!(r.status, 200);
    let got = receiver.wait_delivered(2).await;
    let ids = delivered_ids(&got);
    assert_eq!(ids.len(), 2);
    assert!(ids[0] < ids[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_resumes_after_kill_9_without_skipping_and_a_dead_receiver_slows_no_store() {
    let dir = temp_dir();
    let db = dir.path().join("db");
    let mut server = TestServer::start(&db, &[]).await;
    setup(&server, "A").await;
    setup(&server, "B").await;
    let silent = Receiver::start(0, true).await;
    register(&server, "B", &silent.url(), json!(["*"])).await;
    // 20 ms an answer: 30 orders take the receiver 0.6 s, longer than placing them.
    let receiver = Receiver::start_slow(0, false, Duration::from_millis(20)).await;
    register(&server, "A", &receiver.url(), json!(["order.created"])).await;
    const ORDERS: usize = 30;
    for _ in 0..ORDERS {
        for store in ["A", "B"] {
            let r = server
                .post("/api/v1/orders/", order(store, &[("P", json!(1))]))
                .await;
            assert_eq!(r.status, 200, "orders of both stores go through");
        }
    }
    server.kill9();
    let before_kill = receiver.received().len();
    assert!(
        before_kill < ORDERS,
        "the kill came mid-backlog ({before_kill} delivered)"
    );
    let server = TestServer::start(&db, &[]).await;
    let got = receiver.wait_delivered(ORDERS).await;
    // The cursor is durable within a group commit of a delivery: a restart resends at most
    // the few whose cursor move was still in flight, never the whole backlog.
    assert!(
        got.len() <= ORDERS + 3,
        "{} deliveries for {ORDERS} events",
        got.len()
    );
    let mut ids = delivered_ids(&got);
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        ORDERS,
        "every order delivered at least once: {ids:?}"
    );
    let events = server
        .get("/api/v1/stores/A/events?limit=1000")
        .await
        .json();
    let created: Vec<u64> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "order.created")
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, created, "exactly the store's order events");
    assert!(
        !silent.received().is_empty(),
        "the silent receiver was tried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_s_alert_receiver_prints_a_verified_low_stock_alert() {
    // Goal: examples/alert_receiver.py (the README's phone-alert receiver) gets the
    // stock.low of a sale, verifies its signature and prints the alert line.
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/alert_receiver.py");
    let secret = "whsec_readme_example_secret";
    let spawned = Command::new("python3")
        .args([script, "--port", "0", "--secret", secret])
        .stdout(Stdio::piped())
        .spawn();
    let Ok(mut child) = spawned else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "python3 is missing"
        );
        eprintln!("*** SKIPPED: no python3 for examples/alert_receiver.py");
        return;
    };
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines.next().unwrap().unwrap().replace("listening on ", "");
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    server.put_store("K").await;
    let body = json!({"product_name": "Tata Salt 1 kg", "unit": "pieces", "unit_price": 28, "stock": 6, "low_stock_threshold": 2});
    let r = server
        .admin("PUT", "/api/v1/inventory/products/K/SALT", body)
        .await;
    assert_eq!(r.status, 200);
    let body = json!({"url": url, "events": ["stock.low"], "secret": secret});
    let r = server
        .admin("POST", "/api/v1/stores/K/webhooks", body)
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let r = server
        .post("/api/v1/orders/", order("K", &[("SALT", json!(4))]))
        .await;
    assert_eq!(r.status, 200);
    let read = tokio::task::spawn_blocking(move || lines.next());
    // Killing the receiver ends its stdout, and with it a read still waiting.
    let line = tokio::time::timeout(DELIVERY_WAIT, read).await;
    let _ = child.kill();
    let _ = child.wait();
    let line = line
        .expect("no alert line in time")
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        line.starts_with("LOW STOCK K: Tata Salt 1 kg has 2 left (alert at 2)"),
        "{line}"
    );
}
