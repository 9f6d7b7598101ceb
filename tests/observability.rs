//! Metrics and logs as an operator sees them, black box: `/metrics` in Prometheus text with
//! the request, order, log, event and mailbox series (histograms where latency is
//! measured), and JSON log lines that carry the request's `X-Request-Id`.

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::HashMap;

/// Parses Prometheus text: sample (name with labels) → value; checks every line's shape,
/// that each family has a `# TYPE` and that counters end in `_total`.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (sample, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let name = sample.split('{').next().unwrap();
        assert!(
            name.starts_with("godown_")
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "{line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        let kind = types
            .get(family)
            .unwrap_or_else(|| panic!("no # TYPE for {family}"));
        if kind == "counter" {
            assert!(family.ends_with("_total"), "counter {family}");
        }
        samples.insert(sample.to_string(), value);
    }
    samples
}

fn has(samples: &HashMap<String, f64>, prefix: &str) -> bool {
    samples.keys().any(|k| k.starts_with(prefix))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_orders_the_log_and_events() {
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    server.put_store("M").await;
    server
        .put_product("M", "P", "pieces", json!(10), json!(5))
        .await;
    for _ in 0..3 {
        let r = server
            .post("/api/v1/orders/", order("M", &[("P", json!(1))]))
            .await;
        assert_eq!(r.status, 200);
    }
    let r = server
        .post("/api/v1/orders/", order("M", &[("P", json!(50))]))
        .await;
    assert_eq!(r.status, 400);
    let text = String::from_utf8(server.get("/metrics").await.body.to_vec()).unwrap();
    let m = parse(&text);
    let placed = r#"godown_http_requests_total{route="/api/v1/orders",method="POST",status="200"}"#;
    assert_eq!(m.get(placed), Some(&3.0), "{text}");
    assert_eq!(
        m.get(r#"godown_orders_total{outcome="placed",reason=""}"#),
        Some(&3.0)
    );
    assert_eq!(
        m.get(r#"godown_orders_total{outcome="refused",reason="Insufficient stock"}"#),
        Some(&1.0)
    );
    assert_eq!(
        m.get(r#"godown_events_total{type="order.created"}"#),
        Some(&3.0)
    );
    for family in [
        "godown_http_request_duration_seconds_bucket{",
        "godown_wal_batch_records_bucket{",
        "godown_wal_flush_duration_seconds_bucket{",
        "godown_mailbox_depth_max",
        "godown_sse_subscribers",
        "godown_wal_records_total",
        "godown_ready",
    ] {
        assert!(has(&m, family), "{family} missing:\n{text}");
    }
    // An unknown path and an invented method do not make series of their own.
    server.req("BREW", "/no/such/path/42", &[], None).await;
    let text = String::from_utf8(server.get("/metrics").await.body.to_vec()).unwrap();
    let m = parse(&text);
    assert!(
        has(
            &m,
            r#"godown_http_requests_total{route="unmatched",method="other""#
        ),
        "{text}"
    );
    assert!(!text.contains("/no/such/path") && !text.contains("BREW"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_id_the_answer_returns() {
    let dir = temp_dir();
    let db = dir.path().join("db");
    let env = [("GODOWN_LOG", "info,godown=debug")];
    let server = TestServer::start_with_env(&db, &["--log-format", "json"], &env).await;
    let r = server
        .req(
            "GET",
            "/health",
            &[("x-request-id", "req-from-client-42")],
            None,
        )
        .await;
    assert_eq!(r.header("x-request-id"), Some("req-from-client-42"));
    let r = server
        .req("GET", "/health", &[("x-request-id", "bad id!")], None)
        .await;
    let made = r.header("x-request-id").unwrap().to_string();
    assert!(
        made.len() == 16 && made.bytes().all(|b| b.is_ascii_hexdigit()),
        "{made}"
    );
    let log_path = db.with_extension("log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
            .collect();
        let tagged = |id: &str| {
            lines
                .iter()
                .any(|l| l["span"]["id"] == id && l["fields"]["message"] == "request done")
        };
        if tagged("req-from-client-42") && tagged(&made) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no request lines in:\n{log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_gauge_counts_open_event_streams_and_not_webhooks() {
    // Goal: godown_sse_subscribers is 1 while one event stream is open (a webhook's
    // delivery task, also a reader of the store's live events, is not counted) and 0 after
    // the client goes.
    use tokio::io::AsyncWriteExt;
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    server.put_store("G").await;
    let hook = json!({"url": "http://127.0.0.1:9/", "events": ["*"]});
    let r = server
        .admin("POST", "/api/v1/stores/G/webhooks", hook)
        .await;
    assert_eq!(r.status, 201);
    let gauge = || async {
        let text = String::from_utf8(server.get("/metrics").await.body.to_vec()).unwrap();
        parse(&text).get("godown_sse_subscribers").copied()
    };
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /api/v1/stores/G/events HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\nAuthorization: Bearer {ADMIN}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let wait_for = |want: f64| {
        let gauge = &gauge;
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while gauge().await != Some(want) {
                assert!(std::time::Instant::now() < deadline, "gauge never {want}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    wait_for(1.0).await;
    drop(stream);
    wait_for(0.0).await;
}
