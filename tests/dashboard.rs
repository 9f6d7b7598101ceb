//! The dashboard in a real browser: Debian's chromium, headless, driven through
//! chromedriver (WebDriver, `fantoccini`), both installed by `scripts/chromium.sh`. It signs
//! in with a store token, sees the demo's stock and a low-stock product flagged, then an
//! order placed through the API appears in the live feed and the stock changes, without a
//! reload. Screenshots (desktop and phone width) go to `$GODOWN_SCREENSHOTS` if set.

mod common;

use common::*;
use fantoccini::{ClientBuilder, Locator};
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the page may take to show a change (it refreshes within a second).
const SHOW_WITHIN: Duration = Duration::from_secs(15);
/// A product of the demo store at zero stock, below its threshold.
const LADI_PAV: &str = "GP1760649472504";

/// chromedriver on a free port; killed when dropped.
struct Driver {
    child: std::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver() -> Driver {
    let repo = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{repo}/scripts/chromium.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/chromium.sh");
    assert!(out.status.success(), "scripts/chromium.sh failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let driver = stdout
        .lines()
        .last()
        .expect("the driver's path")
        .trim()
        .to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(driver)
        .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

async fn browser(driver: &Driver) -> fantoccini::Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": "/usr/bin/chromium",
               "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--window-size=1280,1000", "--no-first-run", "--disable-extensions"]}),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a browser session")
}

/// The text of the first element matching `css`, once `ok` holds for it (polled).
async fn text_when(b: &fantoccini::Client, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + SHOW_WITHIN;
    loop {
        if let Ok(e) = b.find(Locator::Css(css)).await
            && let Ok(text) = e.text().await
            && ok(&text)
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{css} never showed what was expected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn screenshot(b: &fantoccini::Client, name: &str, width: u32, height: u32) {
    b.set_window_size(width, height).await.unwrap();
    let png = b.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    if let Ok(dir) = std::env::var("GODOWN_SCREENSHOTS") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/{name}.png"), png).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shopkeeper_sees_stock_low_stock_and_live_orders() {
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &["--demo"]).await;
    let page = server.get("/").await;
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    let token = server
        .admin(
            "POST",
            &format!("/api/v1/stores/{SEED_STORE}/tokens"),
            json!({}),
        )
        .await
        .json()["token"]
        .as_str()
        .unwrap()
        .to_string();

    let driver = start_driver();
    let b = browser(&driver).await;
    b.goto(&format!("http://{}/", server.addr)).await.unwrap();
    b.find(Locator::Css("#store-id"))
        .await
        .unwrap()
        .send_keys(SEED_STORE)
        .await
        .unwrap();
    b.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(&token)
        .await
        .unwrap();
    b.find(Locator::Css("#login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // The seeded stock, and a product at zero flagged low in the table and the panel.
    let maggi = format!("#stock-rows tr[data-product='{MAGGI}']");
    text_when(&b, &maggi, |t| t.contains("44 pieces")).await;
    let form = b.find(Locator::Css("#login")).await.unwrap();
    assert!(
        !form.is_displayed().await.unwrap(),
        "the sign-in form is gone"
    );
    let pav = format!("#stock-rows tr[data-product='{LADI_PAV}']");
    text_when(&b, &pav, |t| t.contains("LOW")).await;
    let class = b
        .find(Locator::Css(&pav))
        .await
        .unwrap()
        .attr("class")
        .await
        .unwrap();
    assert_eq!(class.as_deref(), Some("low"));
    text_when(
        &b,
        &format!("#low-list li[data-product='{LADI_PAV}']"),
        |t| t.contains("0 left"),
    )
    .await;
    text_when(&b, "#live-state", |t| t == "live").await;
    screenshot(&b, "dashboard-desktop", 1280, 1500).await;

    // An order through the API: in the feed, and the stock down, without a reload.
    b.execute("window.notReloaded = true;", vec![])
        .await
        .unwrap();
    let r = server
        .post("/api/v1/orders/", order(SEED_STORE, &[(MAGGI, json!(2))]))
        .await;
    assert_eq!(r.status, 200);
    let id = r.json()["order_id"].as_str().unwrap().to_string();
    text_when(&b, &format!("#feed li[data-order='{id}']"), |t| {
        t.contains("created")
    })
    .await;
    text_when(&b, &maggi, |t| t.contains("42 pieces")).await;
    text_when(&b, "#today-orders", |t| t != "–" && t != "0").await;
    let same_page = b
        .execute("return window.notReloaded === true;", vec![])
        .await
        .unwrap();
    assert_eq!(same_page, Value::Bool(true), "the page was not reloaded");

    screenshot(&b, "dashboard-phone", 390, 844).await;
    b.close().await.unwrap();
}
