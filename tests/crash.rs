//! Durability, black box: `kill -9` the real binary under load and check that nothing it
//! acknowledged is lost and nothing is applied twice.

mod common;

use bytes::Bytes;
use common::*;
use godown::client::Conn;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const PRODUCTS: usize = 12;
const INITIAL: u64 = 1_000_000;

#[derive(Clone)]
struct Sent {
    key: String,
    body: Value,
    lines: Vec<(usize, u64)>,
}

/// Runs 16 clients that place keyed orders until `acks_target` have been acknowledged in
/// this round, then kills the server with SIGKILL while they are still sending.
async fn load_then_kill(
    server: &mut TestServer,
    round: usize,
    acks_target: usize,
    sent: &Arc<Mutex<Vec<Sent>>>,
    acked: &Arc<Mutex<HashMap<String, String>>>,
) {
    let acks = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for client in 0..16 {
        let (addr, acks, sent, acked) = (server.addr, acks.clone(), sent.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed((round * 100 + client) as u64);
            let Ok(mut conn) = Conn::connect(addr).await else {
                return;
            };
            for n in 0.. {
                let count = rng.usize(1..=3);
                let mut products: Vec<usize> = (0..PRODUCTS).collect();
                rng.shuffle(&mut products);
                let lines: Vec<(usize, u64)> = products[..count]
                    .iter()
                    .map(|&p| (p, rng.u64(1..=3)))
                    .collect();
                let items: Vec<(&str, Value)> = Vec::new();
                let mut body = order("CRASH", &items);
                body["items"] = Value::Array(
                    lines
                        .iter()
                        .map(|(p, q)| json!({"product_id": format!("P{p}"), "quantity": q}))
                        .collect(),
                );
                let key = format!("r{round}-c{client}-n{n}");
                sent.lock().unwrap().push(Sent {
                    key: key.clone(),
                    body: body.clone(),
                    lines,
                });
                let headers = [("idempotency-key", key.as_str())];
                match conn
                    .send(
                        "POST",
                        "/api/v1/orders/",
                        &headers,
                        Some(Bytes::from(body.to_string())),
                    )
                    .await
                {
                    Ok(r) if r.status == 200 => {
                        acked
                            .lock()
                            .unwrap()
                            .insert(key, r.json()["order_id"].as_str().unwrap().to_string());
                        acks.fetch_add(1, Ordering::AcqRel);
                    }
                    Ok(r) => panic!("unexpected answer {}: {:?}", r.status, r.json()),
                    Err(_) => return, // the server died under us: this request is in flight
                }
            }
        }));
    }
    // Wait (by polling a counter, not by sleeping for luck) until enough are acknowledged.
    while acks.load(Ordering::Acquire) < acks_target {
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    server.kill9();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_orders_survive_kill_9_and_retries_apply_once() {
    // Goal: several rounds of 16 clients with unique Idempotency-Keys, each ended by kill -9
    // mid-load. After each restart every acknowledged order is there with its items; after
    // re-sending every request (acknowledged or in flight) with its key, acknowledged ones
    // get their same order back and each product's on_hand is the initial stock less the
    // quantities of all distinct requests, exactly. Snapshots and view
    // write-outs run often to cover truncation and reads of written-out orders.
    let dir = temp_dir();
    let db = dir.path().join("db");
    let args = [
        "--snapshot-every-records",
        "300",
        "--views-every-records",
        "200",
        "--wal-segment-bytes",
        "65536",
    ];
    let mut server = TestServer::start(&db, &args).await;
    server.put_store("CRASH").await;
    for p in 0..PRODUCTS {
        server
            .put_product(
                "CRASH",
                &format!("P{p}"),
                "pieces",
                json!(10),
                json!(INITIAL),
            )
            .await;
    }
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    for (round, target) in [(0, 400), (1, 1500), (2, 50)] {
        load_then_kill(&mut server, round, target, &sent, &acked).await;
        server = TestServer::start(&db, &args).await;
        // Every acknowledged order is there, with its items.
        let acked_now = acked.lock().unwrap().clone();
        let sent_now = sent.lock().unwrap().clone();
        assert!(acked_now.len() >= target);
        let by_key: HashMap<&str, &Sent> = sent_now.iter().map(|s| (s.key.as_str(), s)).collect();
        let mut conn = server.conn().await;
        for (key, order_id) in &acked_now {
            let r = conn
                .get(&format!("/api/v1/orders/{order_id}"))
                .await
                .unwrap();
            assert_eq!(r.status, 200, "acknowledged order {order_id} lost");
            let items = r.json()["items"].as_array().unwrap().len();
            assert_eq!(items, by_key[key.as_str()].lines.len());
        }
        // Re-send everything with its key: acknowledged ones answer with the same order.
        for s in &sent_now {
            let headers = [("idempotency-key", s.key.as_str())];
            let r = conn
                .send(
                    "POST",
                    "/api/v1/orders/",
                    &headers,
                    Some(Bytes::from(s.body.to_string())),
                )
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{:?}", r.json());
            let id = r.json()["order_id"].as_str().unwrap().to_string();
            if let Some(first) = acked_now.get(&s.key) {
                assert_eq!(
                    &id, first,
                    "a retry of an acknowledged order made a new one"
                );
            }
            acked.lock().unwrap().insert(s.key.clone(), id);
        }
        // Every distinct request applied exactly once.
        let mut sold = [0u64; PRODUCTS];
        for s in &sent_now {
            for &(p, q) in &s.lines {
                sold[p] += q;
            }
        }
        for (p, sold) in sold.iter().enumerate() {
            let product = server.product("CRASH", &format!("P{p}")).await;
            assert_eq!(
                product["on_hand"],
                json!(INITIAL - sold),
                "P{p} after round {round}"
            );
            assert_eq!(product["reserved"], 0);
        }
    }
    // A polite stop snapshots every store and checkpoints, so the log is then truncated to
    // its newest segment: it no longer starts at its first record.
    assert!(server.stop().success());
    let out = run_verify(&db);
    let text = String::from_utf8_lossy(&out.stdout);
    let first: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("first/last seq:"))
        .and_then(|l| l.split('/').next())
        .and_then(|f| f.trim().parse().ok())
        .unwrap_or_else(|| panic!("no first seq in {text}"));
    assert!(first > 1, "the WAL was not truncated: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flash_sale_survives_kill_9() {
    // Goal: after exactly 100 winners of a 100-unit flash sale, kill -9 and restart: still
    // 0 left, and all 100 orders are there.
    let dir = temp_dir();
    let db = dir.path().join("db");
    let mut server = TestServer::start(&db, &[]).await;
    server.put_store("FLASH").await;
    server
        .put_product("FLASH", "HOT", "pieces", json!(99), json!(100))
        .await;
    let next = Arc::new(AtomicUsize::new(0));
    let winners: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (addr, next, winners) = (server.addr, next.clone(), winners.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(addr).await.unwrap();
            while next.fetch_add(1, Ordering::Relaxed) < 400 {
                let r = conn
                    .post_json("/api/v1/orders/", &order("FLASH", &[("HOT", json!(1))]))
                    .await
                    .unwrap();
                if r.status == 200 {
                    winners
                        .lock()
                        .unwrap()
                        .push(r.json()["order_id"].as_str().unwrap().to_string());
                } else {
                    assert_eq!(r.status, 400);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(winners.lock().unwrap().len(), 100);
    server.kill9();
    let server = TestServer::start(&db, &[]).await;
    assert_eq!(server.stock("FLASH", "HOT").await, 0);
    assert_eq!(server.product("FLASH", "HOT").await["on_hand"], 0);
    let mut conn = server.conn().await;
    let winners = winners.lock().unwrap().clone();
    for id in &winners {
        assert_eq!(
            conn.get(&format!("/api/v1/orders/{id}"))
                .await
                .unwrap()
                .status,
            200
        );
    }
    let r = server
        .post("/api/v1/orders/", order("FLASH", &[("HOT", json!(1))]))
        .await;
    assert_eq!(r.json()["error"], "Insufficient stock");
}

/// Runs `godown verify` on a data directory.
fn run_verify(db: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_godown"))
        .arg("verify")
        .arg("--data-dir")
        .arg(db)
        .output()
        .unwrap()
}

/// Damages the log: with `torn`, the newest segment's last frame loses its second half (zeros
/// follow, as after a write a crash cut short); else the oldest segment's first frame gets a
/// flipped byte (frames that check follow it). Each order here is alone in its batch.
fn damage_log(db: &std::path::Path, torn: bool) {
    use godown::wal::segments;
    let dir = segments::log_dir(db);
    let seqs = segments::list_segments(&dir).unwrap();
    let seq = if torn { seqs[seqs.len() - 1] } else { seqs[0] };
    let path = dir.join(format!("{seq:020}.log"));
    let mut bytes = std::fs::read(&path).unwrap();
    let scan = segments::scan_segment(&bytes);
    let (start, end) = if torn {
        (
            scan.frames.last().unwrap().offset as usize,
            scan.end as usize,
        )
    } else {
        (scan.frames[0].offset as usize, 0)
    };
    if torn {
        let half = start + (end - start) / 2;
        bytes[half..end].fill(0);
    } else {
        bytes[start + 20] ^= 0xff;
    }
    std::fs::write(&path, &bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_record_is_survived_and_middle_damage_is_refused() {
    // Goal: a record cut short at the end of the log ends replay there with a warning (the
    // server starts, without that last change); damage in the middle stops start-up and
    // `godown verify` reports it with a non-zero exit.
    let dir = temp_dir();
    let db = dir.path().join("db");
    let mut server = TestServer::start(&db, &[]).await;
    server.put_store("T").await;
    server
        .put_product("T", "A", "pieces", json!(5), json!(10))
        .await;
    for _ in 0..3 {
        assert_eq!(
            server
                .post("/api/v1/orders/", order("T", &[("A", json!(1))]))
                .await
                .status,
            200
        );
    }
    server.kill9();
    damage_log(&db, true);
    let verify = run_verify(&db);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        String::from_utf8_lossy(&verify.stdout)
            .contains("warning: the log's last write was cut short")
    );

    let mut server = TestServer::start(&db, &[]).await;
    assert_eq!(
        server.stock("T", "A").await,
        8,
        "the torn third order is dropped, the first two kept"
    );
    let log = std::fs::read_to_string(db.with_extension("log")).unwrap();
    assert!(
        log.contains("the log's last write was cut short"),
        "a warning is logged"
    );
    assert_eq!(
        server
            .post("/api/v1/orders/", order("T", &[("A", json!(1))]))
            .await
            .status,
        200
    );
    server.kill9();

    damage_log(&db, false);
    let verify = run_verify(&db);
    assert_eq!(verify.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&verify.stderr).contains("CORRUPT"));
    let start = std::process::Command::new(env!("CARGO_BIN_EXE_godown"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        !start.status.success(),
        "a damaged middle record must stop start-up"
    );
    assert!(String::from_utf8_lossy(&start.stderr).contains("corrupt"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_summarises_a_healthy_directory() {
    // Goal: `godown verify` on a stopped server's directory prints its contents and exits 0.
    // The demo's history holds orders of its own (how many depends on today's weekday):
    // one more after ours.
    let dir = temp_dir();
    let db = dir.path().join("db");
    let mut server = TestServer::start(&db, &["--demo"]).await;
    server.stop();
    let orders = |text: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with("orders:")).unwrap();
        line["orders:".len()..].trim().parse().unwrap()
    };
    let out = run_verify(&db);
    let history = orders(&String::from_utf8_lossy(&out.stdout));
    assert!(history > 1000, "90 days of demo sales");
    let mut server = TestServer::start(&db, &[]).await;
    assert_eq!(
        server
            .post("/api/v1/orders/", order(SEED_STORE, &[(MAGGI, json!(2))]))
            .await
            .status,
        200
    );
    server.kill9();
    let out = run_verify(&db);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("stores:            3"), "{text}");
    assert!(text.contains("products:          204"), "{text}");
    assert_eq!(orders(&text), history + 1, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_store_actor_stops_the_process_and_nothing_acknowledged_is_lost() {
    // Goal: a panic inside one store's actor is never silent: the process exits (status 70)
    // instead of serving on with that store (and every store on its thread) gone while
    // `/ready` says 200; a restart has every acknowledged change and nothing of the order
    // that panicked. Method: the test-only fault `GODOWN_TEST_PANIC_IN_STORE`.
    let dir = temp_dir();
    let db = dir.path().join("db");
    let env = [("GODOWN_TEST_PANIC_IN_STORE", "BOOM")];
    let mut server = TestServer::start_with_env(&db, &[], &env).await;
    for store in ["OK", "BOOM"] {
        server.put_store(store).await;
        server
            .put_product(store, "A", "pieces", json!(5), json!(10))
            .await;
    }
    let r = server
        .post("/api/v1/orders/", order("OK", &[("A", json!(2))]))
        .await;
    assert_eq!(r.status, 200);
    let id = r.json()["order_id"].as_str().unwrap().to_string();
    let mut conn = server.conn().await;
    let body = Bytes::from(order("BOOM", &[("A", json!(1))]).to_string());
    let answered = conn.send("POST", "/api/v1/orders/", &[], Some(body)).await;
    assert!(
        answered.as_ref().map_or(true, |r| r.status != 200),
        "the order that panicked was acknowledged"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.try_wait() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the process still runs 10 s after a store actor panicked"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(status.code(), Some(70));
    let log = std::fs::read_to_string(db.with_extension("log")).unwrap();
    assert!(log.contains("injected fault"), "the panic is logged");

    let server = TestServer::start(&db, &[]).await;
    assert_eq!(server.stock("OK", "A").await, 8);
    assert_eq!(
        server.get(&format!("/api/v1/orders/{id}")).await.status,
        200
    );
    assert_eq!(
        server.stock("BOOM", "A").await,
        10,
        "the panicking order changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_ids_are_private_and_never_reused_across_restarts() {
    // Goal: order ids have the documented shape (ORD + 16 hex), are distinct, keep naming the
    // same order after kill -9 (the key is durable in the data directory), are never handed
    // out again after a restart, and the ledger names an order by the same public id.
    let dir = temp_dir();
    let db = dir.path().join("db");
    let mut server = TestServer::start(&db, &[]).await;
    server.put_store("IDS").await;
    server
        .put_product("IDS", "P", "pieces", json!(1), json!(100_000))
        .await;
    let mut ids = std::collections::HashSet::new();
    let place = async |server: &TestServer| {
        let r = server
            .post("/api/v1/orders/", order("IDS", &[("P", json!(1))]))
            .await;
        assert_eq!(r.status, 200);
        let id = r.json()["order_id"].as_str().unwrap().to_string();
        assert!(id.len() == 19 && id.starts_with("ORD"), "{id}");
        assert!(
            id[3..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        );
        id
    };
    let mut first = Vec::new();
    for _ in 0..100 {
        let id = place(&server).await;
        assert!(ids.insert(id.clone()), "{id} twice");
        first.push(id);
    }
    let m = server
        .get("/api/v1/inventory/products/IDS/P/movements?limit=1")
        .await
        .json();
    assert_eq!(
        m["items"][0]["reference"],
        json!(first[99]),
        "the ledger's reference"
    );
    server.kill9();

    let server = TestServer::start(&db, &[]).await;
    for id in [&first[0], &first[99]] {
        let r = server.get(&format!("/api/v1/orders/{id}")).await;
        assert_eq!((r.status, r.json()["order_id"].clone()), (200, json!(id)));
    }
    for _ in 0..100 {
        let id = place(&server).await;
        assert!(
            ids.insert(id.clone()),
            "{id} was handed out before the restart"
        );
    }
}
