//! Black-box helpers: start the real `godown` binary on a free port with its own data
//! directory, talk to it over HTTP, and kill it with SIGKILL.
#![allow(dead_code)]

use bytes::Bytes;
use godown::client::{Conn, Response};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN: &str = "test-admin-token";
pub const SEED_STORE: &str = "STORE-01K8NJ40V9KFKX2Y2FMK466WFH";
pub const MAGGI: &str = "GP1759847855933";

pub struct TestServer {
    child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
}

impl TestServer {
    /// Starts `godown serve` on 127.0.0.1:0 with `data_dir` and waits until it is ready.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> TestServer {
        TestServer::start_with_env(data_dir, extra, &[]).await
    }

    /// `start`, with extra environment variables for the server.
    pub async fn start_with_env(
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> TestServer {
        TestServer::start_at(data_dir, "127.0.0.1:0", extra, env).await
    }

    /// `start_with_env`, listening on `listen` (a fixed port, for a restart in place).
    pub async fn start_at(
        data_dir: &Path,
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> TestServer {
        let data_dir = data_dir.to_path_buf();
        let (child, line) = spawn(&data_dir, listen, extra, env);
        let line = line.expect("read the listening line");
        let addr = line
            .trim()
            .rsplit("http://")
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        let server = TestServer {
            child,
            addr,
            data_dir,
        };
        server.wait_ready().await;
        server
    }

    /// Polls `/ready` until it answers 200 (recovery done), for at most 60 s.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut c) = Conn::connect(self.addr).await
                && let Ok(r) = c.get("/ready").await
                && r.status == 200
            {
                return;
            }
            if Instant::now() >= deadline {
                if std::env::var_os("GODOWN_KEEP_TEST_DIRS").is_some() {
                    let _ = Command::new("cp")
                        .arg("-r")
                        .arg(self.data_dir.parent().unwrap())
                        .arg("/tmp/godown-failed")
                        .status();
                }
                let log = std::fs::read_to_string(self.data_dir.with_extension("log"))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                panic!(
                    "server on {} not ready within 60 s; its log ends:\n{}",
                    self.data_dir.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (at most 30 s) for the polite shutdown: final snapshots and a
    /// checkpoint. Returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "godown did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub async fn conn(&self) -> Conn {
        Conn::connect(self.addr).await.expect("connect")
    }

    pub async fn req(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Response {
        let mut c = self.conn().await;
        c.send(
            method,
            path,
            headers,
            body.map(|b| Bytes::from(b.to_string())),
        )
        .await
        .expect("request")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.req(
            "GET",
            path,
            &[("authorization", &format!("Bearer {ADMIN}"))],
            None,
        )
        .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.req("POST", path, &[], Some(body)).await
    }

    pub async fn admin(&self, method: &str, path: &str, body: Value) -> Response {
        self.req(
            method,
            path,
            &[("authorization", &format!("Bearer {ADMIN}"))],
            Some(body),
        )
        .await
    }

    pub async fn put_store(&self, store: &str) {
        let r = self
            .admin(
                "PUT",
                &format!("/api/v1/stores/{store}"),
                json!({"name": format!("Store {store}")}),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.json());
    }

    pub async fn put_product(
        &self,
        store: &str,
        product: &str,
        unit: &str,
        price: Value,
        stock: Value,
    ) {
        let body = json!({"product_name": format!("Product {product}"), "unit": unit, "unit_price": price, "stock": stock});
        let r = self
            .admin(
                "PUT",
                &format!("/api/v1/inventory/products/{store}/{product}"),
                body,
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.json());
    }

    pub async fn product(&self, store: &str, product: &str) -> Value {
        let r = self
            .get(&format!("/api/v1/inventory/products/{store}/{product}"))
            .await;
        assert_eq!(r.status, 200, "{:?}", r.json());
        r.json()
    }

    pub async fn stock(&self, store: &str, product: &str) -> Value {
        self.product(store, product).await["current_stock"].clone()
    }
}

/// Spawns `godown serve` on 127.0.0.1:0 (its log beside the data directory) and reads the
/// first line it prints (the listening address), or why it could not.
fn spawn(
    data_dir: &Path,
    listen: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Child, std::io::Result<String>) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.with_extension("log"))
        .expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_godown"))
        .args(["serve", "--listen", listen, "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .env("GODOWN_ADMIN_TOKEN", ADMIN)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start godown");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    let read = BufReader::new(stdout).read_line(&mut line).map(|_| line);
    (child, read)
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A cod order body for one store.
pub fn order(store: &str, items: &[(&str, Value)]) -> Value {
    let items: Vec<Value> = items
        .iter()
        .map(|(p, q)| json!({"product_id": p, "quantity": q}))
        .collect();
    json!({
        "store_id": store,
        "customer_phone": "9876543210",
        "customer_name": "Test Customer",
        "delivery_address": "123 Test Street, Mumbai",
        "items": items,
        "payment_method": "cod",
    })
}

/// Store actors in this process over a fresh log on `storage` (one arbiter, order numbers
/// from 1), for tests that drive the actors or the HTTP app without a server process. Call it
/// inside an actix `System`.
pub fn in_process_directory(
    storage: &godown::wal::Storage,
    payment_ttl_ms: i64,
) -> godown::actor::Directory {
    use godown::wal::{Archive, Durability, writer};
    let config =
        writer::WriterConfig::new(Durability::Flush, godown::wal::views::PENDING_RECORDS_MAX);
    let wal = writer::start(storage.clone(), config, writer::LogPosition::default())
        .expect("the log opens");
    let arbiters = vec![actix::Arbiter::new().handle()];
    godown::actor::Directory::new(
        arbiters,
        wal,
        Archive::new(storage.clone()),
        payment_ttl_ms,
        godown::domain::ids::order_partition(0),
    )
}

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("godown-test")
        .tempdir()
        .expect("temp dir")
}

impl TestServer {
    /// The exit status if the process has already ended (by itself, or after `kill9`);
    /// `None` while it still runs. Never blocks: poll it against a deadline.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .try_wait()
            .expect("try_wait on the godown process")
    }

    /// Waits (at most 20 s) for the process to end by itself: an injected crash.
    pub async fn wait_gone(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.try_wait().is_none() {
            assert!(
                Instant::now() < deadline,
                "the process did not end by itself"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Like `start`, but when the server does not become ready it returns why (it exited,
    /// with its status, or `/ready` did not answer 200 within `timeout`) and the end of its
    /// log, instead of panicking; and it stops waiting as soon as the process is gone.
    pub async fn try_start(
        data_dir: &Path,
        extra: &[&str],
        timeout: Duration,
    ) -> Result<TestServer, String> {
        let data_dir = data_dir.to_path_buf();
        let log_path = data_dir.with_extension("log");
        let log_tail = || {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        let (mut child, line) = spawn(&data_dir, "127.0.0.1:0", extra, &[]);
        let line = line.unwrap_or_default();
        let addr = line
            .trim()
            .rsplit("http://")
            .next()
            .and_then(|a| a.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let status = child.wait().expect("wait for godown");
            return Err(format!(
                "no listening line (got {line:?}), exit {status}; its log ends:\n{}",
                log_tail()
            ));
        };
        let mut server = TestServer {
            child,
            addr,
            data_dir,
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(mut c) = Conn::connect(server.addr).await
                && let Ok(r) = c.get("/ready").await
                && r.status == 200
            {
                return Ok(server);
            }
            if let Some(status) = server.try_wait() {
                return Err(format!(
                    "exited before it was ready, {status}; its log ends:\n{}",
                    log_tail()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not ready within {} ms; its log ends:\n{}",
                    timeout.as_millis(),
                    log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
