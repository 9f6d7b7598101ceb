//! A region on loopback: three godown processes behind Debian's nginx (installed by
//! `scripts/nginx.sh`), configured by `godown cluster nginx`. The seed walkthrough and the
//! contract's calls work through the proxy, also the calls that name only an order or name
//! their store in the body; killing one process leaves the others' stores answering, and
//! its own answer again, with every acknowledged order, once it is back.

mod common;

use bytes::Bytes;
use common::*;
use godown::client::{Conn, Response};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The stores pinned to each node (`C2`… are placed by hashing).
const PINNED: [&[&str]; 3] = [&["A"], &[SEED_STORE], &["C"]];

struct Nginx {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Nginx {
    /// SIGTERM: the master stops its workers (SIGKILL would leave them running).
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    async fn send(&self, method: &str, path: &str, admin: bool, body: Option<Value>) -> Response {
        let auth = format!("Bearer {ADMIN}");
        let headers: Vec<(&str, &str)> = if admin {
            vec![("authorization", &auth)]
        } else {
            vec![]
        };
        let mut conn = Conn::connect(self.addr).await.expect("connect to nginx");
        let body = body.map(|b| Bytes::from(b.to_string()));
        conn.send(method, path, &headers, body)
            .await
            .expect("a request through nginx")
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Writes the nodes file and nginx's configuration, and starts nginx in the foreground on
/// `addr`.
async fn start_nginx(dir: &Path, addr: SocketAddr, nodes: &[SocketAddr]) -> Nginx {
    let repo = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{repo}/scripts/nginx.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/nginx.sh");
    assert!(out.status.success(), "scripts/nginx.sh failed");
    let binary = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    let nodes: Vec<Value> = nodes
        .iter()
        .enumerate()
        .map(|(i, a)| json!({"name": format!("n{}", i + 1), "addr": a.to_string(), "stores": PINNED[i]}))
        .collect();
    let file = json!({"listen": addr.to_string(), "nodes": nodes});
    std::fs::write(dir.join("nodes.json"), file.to_string()).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_godown"))
        .args(["cluster", "nginx", "--nodes"])
        .arg(dir.join("nodes.json"))
        .arg("--out")
        .arg(dir.join("nginx.conf"))
        .status()
        .unwrap();
    assert!(status.success(), "godown cluster nginx");
    let child = Command::new(binary)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Conn::connect(addr).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not listen within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Nginx { child, addr }
}

fn seed_order(file: &str) -> Value {
    let path = format!("{}/data/{file}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_behind_nginx_serve_one_api() {
    let dir = temp_dir();
    let listen: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let data = |i: usize| dir.path().join(format!("n{}", i + 1));
    let mut nodes = Vec::new();
    for (i, addr) in listen.iter().enumerate() {
        nodes.push(TestServer::start_at(&data(i), addr, &[], &[]).await);
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let proxy: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let nginx = start_nginx(dir.path(), proxy, &addrs).await;

    // The seed walkthrough, through the proxy: the store lives on n2, so calls that carry
    // it only in the body (or name only the order) are searched for, n1 first.
    let seed_path = format!("/api/v1/stores/{SEED_STORE}");
    let r = nginx
        .send("PUT", &seed_path, true, Some(json!({"name": "Kirana"})))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let product = format!("/api/v1/inventory/products/{SEED_STORE}/{MAGGI}");
    let body = json!({"product_name": "Maggi 2-Minute Noodles Masala", "unit": "pieces", "unit_price": 14, "stock": 44});
    assert_eq!(
        nginx.send("PUT", &product, true, Some(body)).await.status,
        200
    );
    assert_eq!(nodes[1].stock(SEED_STORE, MAGGI).await, json!(44), "on n2");
    assert_eq!(nodes[0].get(&product).await.status, 404, "not on n1");

    let r = nginx
        .send(
            "POST",
            "/api/v1/orders",
            false,
            Some(seed_order("test_order_2_units.json")),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let first = r.json();
    assert_eq!(first["status"], json!("confirmed"));
    assert_eq!(first["total_amount"], json!(49.4));
    let r = nginx.send("GET", &product, false, None).await;
    assert_eq!(r.json()["current_stock"], json!(42));
    let r = nginx
        .send(
            "POST",
            "/api/v1/orders",
            false,
            Some(seed_order("test_order_50_units.json")),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("Insufficient stock"))
    );
    let order_path = format!("/api/v1/orders/{}", first["order_id"].as_str().unwrap());
    let r = nginx.send("GET", &order_path, false, None).await;
    assert_eq!((r.status, r.json()), (200, first.clone()));

    // An unpaid order, paid by its id alone (what a payment provider knows); one
    // cancelled; an availability check and a hold; a per-store order.
    let mut upi = seed_order("test_order_2_units.json");
    upi["payment_method"] = json!("upi");
    let r = nginx
        .send("POST", "/api/v1/orders", false, Some(upi.clone()))
        .await;
    assert_eq!(
        r.json()["status"],
        json!("pending_payment"),
        "{:?}",
        r.json()
    );
    let paid = format!(
        "/api/v1/orders/{}/payment",
        r.json()["order_id"].as_str().unwrap()
    );
    let r = nginx
        .send("POST", &paid, true, Some(json!({"status": "succeeded"})))
        .await;
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (200, json!("confirmed")),
        "{:?}",
        r.json()
    );
    let r = nginx.send("POST", "/api/v1/orders", false, Some(upi)).await;
    let cancel = format!(
        "/api/v1/orders/{}/cancel",
        r.json()["order_id"].as_str().unwrap()
    );
    let r = nginx
        .send(
            "POST",
            &cancel,
            true,
            Some(json!({"reason": "changed mind"})),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (200, json!("cancelled"))
    );
    let check = json!({"store_id": SEED_STORE, "items": [{"product_id": MAGGI, "quantity": 50}]});
    let r = nginx
        .send("POST", "/api/v1/inventory/availability", false, Some(check))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let hold = json!({"items": [{"product_id": MAGGI, "quantity": 3}]});
    let r = nginx
        .send(
            "POST",
            &format!("{seed_path}/reservations"),
            false,
            Some(hold),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let r = nginx
        .send(
            "POST",
            &format!("{seed_path}/orders"),
            false,
            Some(seed_order("test_order_2_units.json")),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(
        nginx.send("GET", &product, false, None).await.json()["current_stock"],
        json!(35)
    );

    // Stores on n1 and n3, and one placed by hashing; misses answer as one process would.
    for (store, node) in [("A", Some(0)), ("C", Some(2)), ("HASHED-1", None)] {
        let r = nginx
            .send(
                "PUT",
                &format!("/api/v1/stores/{store}"),
                true,
                Some(json!({"name": store})),
            )
            .await;
        assert_eq!(r.status, 200);
        let body = json!({"product_name": "Rice", "unit": "kg", "unit_price": 50, "stock": 10});
        let path = format!("/api/v1/inventory/products/{store}/R");
        assert_eq!(nginx.send("PUT", &path, true, Some(body)).await.status, 200);
        if let Some(node) = node {
            assert_eq!(nodes[node].stock(store, "R").await, json!(10), "{store}");
        }
        let r = nginx
            .send(
                "POST",
                "/api/v1/orders",
                false,
                Some(order(store, &[("R", json!(1.5))])),
            )
            .await;
        assert_eq!(r.status, 200, "{store}: {:?}", r.json());
    }
    let r = nginx
        .send("GET", "/api/v1/orders/ORD0000000000000001", false, None)
        .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (404, json!("Order not found"))
    );
    let r = nginx
        .send(
            "POST",
            "/api/v1/orders",
            false,
            Some(order("NOPE", &[("R", json!(1))])),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (404, json!("Store not found"))
    );
    let r = nginx
        .send(
            "POST",
            "/api/v1/orders",
            false,
            Some(order("C", &[("X", json!(1))])),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (404, json!("Product not found")),
        "the owner's own 404"
    );

    // kill -9 of n2: its store is unavailable (503, JSON); n1's and n3's answer, also by
    // order id (the search passes the dead node).
    let r = nginx
        .send(
            "POST",
            "/api/v1/orders",
            false,
            Some(order("C", &[("R", json!(1))])),
        )
        .await;
    let c_order = format!("/api/v1/orders/{}", r.json()["order_id"].as_str().unwrap());
    nodes[1].kill9();
    let r = nginx.send("GET", &product, false, None).await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (503, json!("Store unavailable"))
    );
    assert_eq!(
        nginx
            .send("GET", "/api/v1/inventory/products/A/R", false, None)
            .await
            .status,
        200
    );
    let r = nginx.send("GET", &c_order, false, None).await;
    assert_eq!((r.status, r.json()["store_id"].clone()), (200, json!("C")));
    let r = nginx
        .send(
            "POST",
            "/api/v1/orders",
            false,
            Some(order("A", &[("R", json!(1))])),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.json());

    // Back on its port: every acknowledged order of the seed store is there.
    nodes[1] = TestServer::start_at(&data(1), &listen[1], &[], &[]).await;
    let r = nginx.send("GET", &order_path, false, None).await;
    assert_eq!(
        (r.status, r.json()["order_id"].clone()),
        (200, first["order_id"].clone())
    );
    assert_eq!(
        nginx.send("GET", &product, false, None).await.json()["current_stock"],
        json!(35)
    );
    let listed = nginx
        .send("GET", &format!("{seed_path}/orders"), true, None)
        .await
        .json();
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(4),
        "{listed}"
    );
}

/// The region of the saga test: nodes started with `--cluster-proxy`, restartable in place.
struct Region {
    dir: tempfile::TempDir,
    listen: Vec<String>,
    proxy: String,
    nodes: Vec<Option<TestServer>>,
}

/// The order id key every node of a region shares (as `scripts/cluster.sh` arranges).
const REGION_KEY: [u8; 32] = [7; 32];

impl Region {
    fn new(nodes: usize) -> Region {
        Region {
            dir: temp_dir(),
            listen: (0..nodes)
                .map(|_| format!("127.0.0.1:{}", free_port()))
                .collect(),
            proxy: format!("127.0.0.1:{}", free_port()),
            nodes: (0..nodes).map(|_| None).collect(),
        }
    }

    /// Starts node `i` (again) on its data directory: one order id key for all, a
    /// partition of order numbers each.
    async fn start(&mut self, i: usize, env: &[(&str, &str)]) {
        let data = self.dir.path().join(format!("n{}", i + 1));
        std::fs::create_dir_all(&data).unwrap();
        let key = data.join("order-ids.key");
        if !key.exists() {
            std::fs::write(&key, REGION_KEY).unwrap();
        }
        let partition = i.to_string();
        let extra = [
            "--cluster-proxy",
            self.proxy.as_str(),
            "--order-partition",
            &partition,
        ];
        let node = TestServer::start_at(&data, &self.listen[i], &extra, env).await;
        self.nodes[i] = Some(node);
    }

    /// Waits until node `i` has died by itself (an injected crash).
    async fn wait_gone(&mut self, i: usize) {
        self.nodes[i].as_mut().unwrap().wait_gone().await;
        self.nodes[i] = None;
    }
}

/// (on_hand, reserved) of R at `store`, read through the proxy.
async fn counts(nginx: &Nginx, store: &str) -> (Value, Value) {
    let r = nginx
        .send(
            "GET",
            &format!("/api/v1/inventory/products/{store}/R"),
            false,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{store}: {:?}", r.json());
    let p = r.json();
    (p["on_hand"].clone(), p["reserved"].clone())
}

async fn keyed(nginx: &Nginx, path: &str, key: &str, body: Value) -> Response {
    let auth = format!("Bearer {ADMIN}");
    let headers = [("authorization", auth.as_str()), ("idempotency-key", key)];
    let mut conn = Conn::connect(nginx.addr).await.unwrap();
    conn.send("POST", path, &headers, Some(Bytes::from(body.to_string())))
        .await
        .expect("a request through nginx")
}

fn transfer(from: &str, to: &str, q: u32) -> Value {
    json!({"from_store": from, "to_store": to, "items": [{"product_id": "R", "quantity": q}]})
}

/// The transfer movements of R at `store` (`transfer_in` or `transfer_out`).
async fn moved(nginx: &Nginx, store: &str, kind: &str) -> usize {
    let path = format!("/api/v1/inventory/products/{store}/R/movements?limit=100");
    let r = nginx.send("GET", &path, true, None).await.json();
    r["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == json!(kind))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_and_split_orders_across_processes_happen_exactly_once() {
    // Goal: A lives on n1 (which coordinates), C on n3. Transfers both ways and a split
    // region order work across the processes; with C's process dead the transfer waits
    // (503) and a retry with its key completes it once C is back; with the coordinator
    // killed mid-way (after C took the units; after A's order of a split) it completes
    // when the coordinator restarts. Every change happens exactly once.
    let mut region = Region::new(3);
    for i in 0..3 {
        region.start(i, &[]).await;
    }
    let addrs: Vec<SocketAddr> = region.listen.iter().map(|a| a.parse().unwrap()).collect();
    let nginx = start_nginx(region.dir.path(), region.proxy.parse().unwrap(), &addrs).await;
    for (store, lat, lon) in [("A", 18.9067, 72.8147), ("C", 19.2183, 72.9781)] {
        let body = json!({"name": store, "location": {"lat": lat, "lon": lon}});
        assert_eq!(
            nginx
                .send("PUT", &format!("/api/v1/stores/{store}"), true, Some(body))
                .await
                .status,
            200
        );
        let body = json!({"product_name": "Rice", "unit": "kg", "unit_price": 50, "stock": 5});
        let path = format!("/api/v1/inventory/products/{store}/R");
        assert_eq!(nginx.send("PUT", &path, true, Some(body)).await.status, 200);
    }
    let body = json!({"name": "Mumbai", "store_ids": ["A", "C"]});
    assert_eq!(
        nginx
            .send("PUT", "/api/v1/regions/MUM", true, Some(body))
            .await
            .status,
        200
    );

    // Both ways across the processes.
    let r = nginx
        .send(
            "POST",
            "/api/v1/transfers",
            true,
            Some(transfer("A", "C", 2)),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (201, json!("completed")),
        "{:?}",
        r.json()
    );
    let r = nginx
        .send(
            "POST",
            "/api/v1/transfers",
            true,
            Some(transfer("C", "A", 1)),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    assert_eq!(counts(&nginx, "A").await, (json!(4), json!(0)));
    assert_eq!(counts(&nginx, "C").await, (json!(6), json!(0)));

    // A split region order: 4 kg at A (nearer), 4 at C.
    let mut body = order("ignored", &[("R", json!(8))]);
    body.as_object_mut().unwrap().remove("store_id");
    body["delivery_location"] = json!({"lat": 18.91, "lon": 72.82});
    body["allow_split"] = json!(true);
    let r = keyed(
        &nginx,
        "/api/v1/regions/MUM/orders",
        "split-1",
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let orders = r.json()["orders"].as_array().unwrap().clone();
    assert_eq!(orders.len(), 2);
    for o in &orders {
        let path = format!("/api/v1/orders/{}", o["order_id"].as_str().unwrap());
        assert_eq!(nginx.send("GET", &path, false, None).await.json(), *o);
    }
    assert_eq!(counts(&nginx, "A").await, (json!(0), json!(0)));
    assert_eq!(counts(&nginx, "C").await, (json!(2), json!(0)));
    for store in ["A", "C"] {
        let path = format!("/api/v1/inventory/products/{store}/R/adjustments");
        let body = json!({"quantity_change": 10, "reason": "delivery"});
        assert_eq!(
            nginx.send("POST", &path, true, Some(body)).await.status,
            200
        );
    }

    // C's process dies as the units arrive: the transfer waits (503, A's units held), and
    // completes once C is back, when the client sends it again with its key.
    region.nodes[2].as_mut().unwrap().stop();
    region
        .start(2, &[("GODOWN_TEST_SAGA_CRASH", "step:transfer_in")])
        .await;
    let r = keyed(&nginx, "/api/v1/transfers", "t-down", transfer("A", "C", 3)).await;
    let error = r.json()["error"].clone();
    assert_eq!(
        (r.status, error),
        (503, json!("Store unavailable")),
        "{:?}",
        r.json()
    );
    region.wait_gone(2).await;
    let held = counts(&nginx, "A").await;
    assert_eq!(held, (json!(10), json!(3)), "held meanwhile");
    region.start(2, &[]).await;
    let r = keyed(&nginx, "/api/v1/transfers", "t-down", transfer("A", "C", 3)).await;
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (201, json!("completed")),
        "{:?}",
        r.json()
    );
    assert_eq!(counts(&nginx, "A").await, (json!(7), json!(0)));
    assert_eq!(counts(&nginx, "C").await, (json!(15), json!(0)));

    // The coordinator dies after C took the units, before A sent them: restarted, it
    // finishes the transfer; the retry gets the same transfer.
    region.nodes[0].as_mut().unwrap().stop();
    region
        .start(0, &[("GODOWN_TEST_SAGA_CRASH", "transfer:added")])
        .await;
    let sent = Conn::connect(nginx.addr)
        .await
        .unwrap()
        .send(
            "POST",
            "/api/v1/transfers",
            &[
                ("authorization", &format!("Bearer {ADMIN}")),
                ("idempotency-key", "t-crash"),
            ],
            Some(Bytes::from(transfer("A", "C", 2).to_string())),
        )
        .await;
    assert!(
        sent.map(|r| r.status >= 500).unwrap_or(true),
        "no answer from a dead coordinator"
    );
    region.wait_gone(0).await;
    region.start(0, &[]).await;
    assert_eq!(
        counts(&nginx, "A").await,
        (json!(5), json!(0)),
        "completed at start-up"
    );
    assert_eq!(counts(&nginx, "C").await, (json!(17), json!(0)));
    let r = keyed(
        &nginx,
        "/api/v1/transfers",
        "t-crash",
        transfer("A", "C", 2),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    assert_eq!(counts(&nginx, "A").await, (json!(5), json!(0)), "once");

    // The coordinator dies after A's part of a split order, before C's: restarted, it
    // places C's part; the retry gets both orders.
    region.nodes[0].as_mut().unwrap().stop();
    region
        .start(0, &[("GODOWN_TEST_SAGA_CRASH", "region:placed")])
        .await;
    // 20 kg: no store has it (A 5, C 17); A (nearer) 5, C 15.
    body["items"][0]["quantity"] = json!(20);
    let _ = Conn::connect(nginx.addr)
        .await
        .unwrap()
        .send(
            "POST",
            "/api/v1/regions/MUM/orders",
            &[
                ("authorization", &format!("Bearer {ADMIN}")),
                ("idempotency-key", "split-crash"),
            ],
            Some(Bytes::from(body.to_string())),
        )
        .await;
    region.wait_gone(0).await;
    region.start(0, &[]).await;
    assert_eq!(counts(&nginx, "A").await, (json!(0), json!(0)));
    assert_eq!(counts(&nginx, "C").await, (json!(2), json!(0)));
    let r = keyed(&nginx, "/api/v1/regions/MUM/orders", "split-crash", body).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json()["orders"].as_array().map(Vec::len), Some(2));
    assert_eq!(counts(&nginx, "C").await, (json!(2), json!(0)), "once");
    assert_eq!(
        (
            moved(&nginx, "A", "transfer_out").await,
            moved(&nginx, "C", "transfer_in").await
        ),
        (3, 3)
    );
}

/// Products of the moved store, and the few its orders buy (each from a large stock).
const MOVED_PRODUCTS: usize = 10_000;
const SOLD_PRODUCTS: usize = 20;
const MOVED_STOCK: u64 = 1_000_000;

/// A client of the moved store: orders one unit at a time through nginx, by the store's
/// path and by the body-routed path in turn, each with its own Idempotency-Key, sent again
/// with the same key while the store answers 503 (its cutover). Returns what was
/// acknowledged: (key, order id, product).
async fn move_client(
    proxy: SocketAddr,
    client: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Vec<(String, String, String)> {
    use std::sync::atomic::Ordering;
    let auth = format!("Bearer {ADMIN}");
    let mut done = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("c{client}-{n}");
        let product = format!("P{}", (client * 7 + n) % SOLD_PRODUCTS);
        let path = if n % 2 == 0 {
            "/api/v1/stores/A/orders"
        } else {
            "/api/v1/orders"
        };
        let body = Bytes::from(order("A", &[(product.as_str(), json!(1))]).to_string());
        let headers = [("authorization", auth.as_str()), ("idempotency-key", &key)];
        let mut tries = 0;
        let r = loop {
            tries += 1;
            assert!(tries < 5_000, "{key}: the store never came back");
            let Ok(mut conn) = Conn::connect(proxy).await else {
                continue;
            };
            match conn.send("POST", path, &headers, Some(body.clone())).await {
                Ok(r) if r.status == 503 => {
                    // Retry-After says a second; a client in a hurry retries sooner.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(r) => break r,
                Err(_) => {}
            }
        };
        assert_eq!(r.status, 200, "{key}: {:?}", r.json());
        let id = r.json()["order_id"].as_str().unwrap().to_string();
        done.push((key, id, product));
        acked.fetch_add(1, Ordering::Relaxed);
        n += 1;
    }
    done
}

/// The status of `GET /api/v1/stores/{store}` asked of one process directly (not nginx).
async fn store_status(addr: SocketAddr, store: &str) -> u16 {
    let auth = format!("Bearer {ADMIN}");
    let mut conn = Conn::connect(addr).await.unwrap();
    let headers = [("authorization", auth.as_str())];
    let path = format!("/api/v1/stores/{store}");
    conn.send("GET", &path, &headers, None)
        .await
        .unwrap()
        .status
}

/// Waits until `acked` reaches `n`.
async fn wait_acked(acked: &std::sync::atomic::AtomicUsize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(std::sync::atomic::Ordering::Relaxed) < n {
        assert!(Instant::now() < deadline, "the clients stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every acknowledged order through nginx (the first one cancelled after the move), and
/// the stock of the products sold.
async fn check_moved_store(nginx: &Nginx, acked: &[(String, String, String)]) {
    let mut sold = std::collections::HashMap::<&str, u64>::new();
    for (i, (key, id, product)) in acked.iter().enumerate() {
        let r = nginx
            .send("GET", &format!("/api/v1/orders/{id}"), true, None)
            .await;
        assert_eq!(r.status, 200, "{key} {id}: {:?}", r.json());
        assert_eq!(r.json()["store_id"], json!("A"));
        assert_eq!(r.json()["items"][0]["product_id"], json!(product));
        let status = if i == 0 { "cancelled" } else { "confirmed" };
        assert_eq!(r.json()["status"], json!(status), "{key} {id}");
        if i > 0 {
            *sold.entry(product.as_str()).or_default() += 1;
        }
    }
    for i in 0..SOLD_PRODUCTS {
        let p = format!("P{i}");
        let r = nginx
            .send(
                "GET",
                &format!("/api/v1/inventory/products/A/{p}"),
                true,
                None,
            )
            .await;
        let left = MOVED_STOCK - sold.get(p.as_str()).copied().unwrap_or(0);
        assert_eq!(
            r.json()["on_hand"],
            json!(left),
            "{p}: each order taken once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_moved_between_processes_keeps_every_acknowledged_order() {
    // Goal: store A (10,000 products) moves from n1 to n3 while clients keep ordering
    // through nginx. Every order acknowledged before, during or after the move is found
    // through nginx afterwards, each product's stock is down by exactly the orders taken
    // (none lost, none twice), a retry with an old key finds its order on n3, n1 no longer
    // serves A, and all of it holds after `kill -9` of both processes.
    let mut region = Region::new(3);
    for i in 0..3 {
        region.start(i, &[]).await;
    }
    let addrs: Vec<SocketAddr> = region.listen.iter().map(|a| a.parse().unwrap()).collect();
    let proxy: SocketAddr = region.proxy.parse().unwrap();
    let nginx = start_nginx(region.dir.path(), proxy, &addrs).await;
    let body = json!({"name": "A"});
    let r = nginx
        .send("PUT", "/api/v1/stores/A", true, Some(body))
        .await;
    assert_eq!(r.status, 200);
    let mut csv = String::from("product_id,product_name,unit,unit_price,on_hand\n");
    for i in 0..MOVED_PRODUCTS {
        csv.push_str(&format!("P{i},Product {i},pieces,10,{MOVED_STOCK}\n"));
    }
    let mut conn = Conn::connect(proxy).await.unwrap();
    let auth = format!("Bearer {ADMIN}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "text/csv"),
    ];
    let path = "/api/v1/inventory/products/A/import";
    let r = conn
        .send("POST", path, &headers, Some(Bytes::from(csv)))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.json());

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|c| tokio::spawn(move_client(proxy, c, stop.clone(), acked.clone())))
        .collect();
    wait_acked(&acked, 200).await;
    let dir = region.dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_godown"))
            .args(["cluster", "move", "--store", "A", "--to", "n3", "--nodes"])
            .arg(dir.join("nodes.json"))
            .arg("--nginx-conf")
            .arg(dir.join("nginx.conf"))
            .arg("--nginx-pid")
            .arg(dir.join("nginx.pid"))
            .env("GODOWN_ADMIN_TOKEN", ADMIN)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("move: {report}");
    assert_eq!(
        (report["from"].as_str(), report["to"].as_str()),
        (Some("n1"), Some("n3"))
    );
    let during = acked.load(std::sync::atomic::Ordering::Relaxed);
    wait_acked(&acked, during + 200).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut done = Vec::new();
    for c in clients {
        done.extend(c.await.unwrap());
    }
    assert!(done.len() >= 400);
    // An order from before the move, cancelled by its id alone (nginx searches n1 first:
    // it holds the order's old history, and must send the search on to n3).
    let cancel = format!("/api/v1/orders/{}/cancel", done[0].1);
    let r = nginx.send("POST", &cancel, true, Some(json!({}))).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    check_moved_store(&nginx, &done).await;

    // n3 serves A; n1 does not (503 to a client, 421 to nginx's search).
    assert_eq!(store_status(addrs[2], "A").await, 200);
    assert_eq!(store_status(addrs[0], "A").await, 503);

    // An order acknowledged before the move, sent again with its key: the same order,
    // nothing taken twice (the key's answer moved with the store).
    let (key, id, product) = &done[0];
    let r = keyed(
        &nginx,
        "/api/v1/stores/A/orders",
        key,
        order("A", &[(product.as_str(), json!(1))]),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["order_id"].as_str()),
        (200, Some(id.as_str()))
    );

    // Both processes killed and restarted: the same.
    for i in [0, 2] {
        region.nodes[i].as_mut().unwrap().kill9();
        region.start(i, &[]).await;
    }
    check_moved_store(&nginx, &done).await;
    assert_eq!(
        store_status(addrs[0], "A").await,
        503,
        "A stays gone from n1"
    );
}

/// Runs `godown cluster move` of `store` to `to` in `region` (with `env`); its exit status
/// and its report or error.
async fn run_move(dir: &Path, store: &str, to: &str, env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_godown"));
    cmd.args(["cluster", "move", "--store", store, "--to", to, "--nodes"])
        .arg(dir.join("nodes.json"))
        .arg("--nginx-conf")
        .arg(dir.join("nginx.conf"))
        .arg("--nginx-pid")
        .arg(dir.join("nginx.pid"))
        .env("GODOWN_ADMIN_TOKEN", ADMIN);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(if out.status.success() {
        &out.stdout
    } else {
        &out.stderr
    });
    (out.status.success(), text.into_owned())
}

/// Places `n` one-unit orders of R at `store` through nginx; their ids.
async fn place_orders(nginx: &Nginx, store: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let body = order(store, &[("R", json!(1))]);
        let r = nginx
            .send(
                "POST",
                &format!("/api/v1/stores/{store}/orders"),
                true,
                Some(body),
            )
            .await;
        assert_eq!(r.status, 200, "{store}: {:?}", r.json());
        ids.push(r.json()["order_id"].as_str().unwrap().to_string());
    }
    ids
}

/// Every order found through nginx, and R's stock down by exactly their number.
async fn check_orders(nginx: &Nginx, store: &str, ids: &[String]) {
    for id in ids {
        let r = nginx
            .send("GET", &format!("/api/v1/orders/{id}"), true, None)
            .await;
        assert_eq!(
            (r.status, r.json()["store_id"].as_str()),
            (200, Some(store)),
            "{id}"
        );
    }
    let left = 1000 - ids.len() as u64;
    assert_eq!(
        counts(nginx, store).await,
        (json!(left), json!(0)),
        "{store}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_move_is_given_back_or_finished() {
    // Goal: the mover dies right after freezing the store (A, on n1): the store is frozen
    // (503), the next move gives it back to its node, and it moves to another node later.
    // The mover dies right after the target took the store over (C, from n3 to n1): the
    // next run finishes that move, whatever target it names. No order is lost or taken
    // twice either way.
    let mut region = Region::new(3);
    for i in 0..3 {
        region.start(i, &[]).await;
    }
    let addrs: Vec<SocketAddr> = region.listen.iter().map(|a| a.parse().unwrap()).collect();
    let nginx = start_nginx(region.dir.path(), region.proxy.parse().unwrap(), &addrs).await;
    let dir = region.dir.path().to_path_buf();
    let mut ids = std::collections::HashMap::new();
    for store in ["A", "C"] {
        let r = nginx
            .send(
                "PUT",
                &format!("/api/v1/stores/{store}"),
                true,
                Some(json!({"name": store})),
            )
            .await;
        assert_eq!(r.status, 200);
        let body =
            json!({"product_name": "Rice", "unit": "pieces", "unit_price": 50, "stock": 1000});
        let path = format!("/api/v1/inventory/products/{store}/R");
        assert_eq!(nginx.send("PUT", &path, true, Some(body)).await.status, 200);
        ids.insert(store, place_orders(&nginx, store, 20).await);
    }

    let crash = [(godown::cluster::mover::CRASH_AT_ENV, "frozen")];
    let (ok, why) = run_move(&dir, "A", "n3", &crash).await;
    assert!(!ok, "{why}");
    // Frozen: reads answer, changes wait (503 + Retry-After, nothing applied).
    let body = order("A", &[("R", json!(1))]);
    let r = nginx
        .send("POST", "/api/v1/stores/A/orders", true, Some(body))
        .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (503, json!("Store unavailable"))
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    let (ok, why) = run_move(&dir, "A", "n3", &[]).await;
    assert!(!ok && why.contains("serves it again"), "{why}");
    ids.get_mut("A")
        .unwrap()
        .extend(place_orders(&nginx, "A", 5).await);
    check_orders(&nginx, "A", &ids["A"]).await;
    let (ok, why) = run_move(&dir, "A", "n3", &[]).await;
    assert!(
        !ok && why.contains("held the store before"),
        "n3 keeps its copy: {why}"
    );
    let (ok, why) = run_move(&dir, "A", "n2", &[]).await;
    assert!(ok, "{why}");
    ids.get_mut("A")
        .unwrap()
        .extend(place_orders(&nginx, "A", 5).await);
    check_orders(&nginx, "A", &ids["A"]).await;

    let crash = [(godown::cluster::mover::CRASH_AT_ENV, "activated")];
    let (ok, why) = run_move(&dir, "C", "n1", &crash).await;
    assert!(!ok, "{why}");
    // Run again naming another target: the move that was interrupted is the one finished
    // (n1 serves C: thawing n3's copy would make two).
    let (ok, why) = run_move(&dir, "C", "n2", &[]).await;
    assert!(ok, "{why}");
    let report: Value = serde_json::from_str(&why).unwrap();
    assert_eq!(
        (report["from"].as_str(), report["to"].as_str()),
        (Some("n3"), Some("n1"))
    );
    ids.get_mut("C")
        .unwrap()
        .extend(place_orders(&nginx, "C", 5).await);
    check_orders(&nginx, "C", &ids["C"]).await;
    assert_eq!(
        (
            store_status(addrs[0], "C").await,
            store_status(addrs[2], "C").await
        ),
        (200, 503),
        "C lives on n1 only"
    );
}
