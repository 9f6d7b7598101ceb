//! `godown load`: a closed-loop load generator. Each client sends its next request only
//! when the previous answer arrived; latencies go into an HDR histogram per client.
//!
//! The same scenarios (same seeded key distribution, same clients, same histogram) drive
//! godown over HTTP and, with the `peers` feature, PostgreSQL and Redis over their native
//! protocols — so that the ratios compare the engines, not the tools.

mod http;
#[cfg(feature = "peers")]
mod peers;

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// 1–5 distinct random products of one random store, 1–3 units each, cod.
    Throughput,
    /// Every client orders 1 unit of one product with limited stock.
    Flash,
    /// 80 % orders, 15 % stock reads, 5 % adjustments.
    Mixed,
    /// `GET /health`: what the HTTP stack serves with no engine behind it.
    Trivial,
    /// [`BATCH_ORDERS`] `throughput` orders of one store per request: godown's batch
    /// route, Redis pipelining the order script, PostgreSQL one call placing them all.
    Batch,
}

/// Orders per request in the `batch` scenario (req/s × this = orders/s).
pub const BATCH_ORDERS: usize = 100;

#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub target: String,
    pub clients: usize,
    pub duration: Option<Duration>,
    pub requests: Option<u64>,
    pub scenario: Scenario,
    pub seed: u64,
    pub stores: usize,
    pub products: usize,
    pub flash_stock: u64,
    pub admin_token: Option<String>,
    pub skip_setup: bool,
    pub allow_remote: bool,
    pub quiet: bool,
}

/// One request of a scenario, independent of the backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// (store index, [(product index, units)])
    Order(usize, Vec<(usize, u64)>),
    /// Orders of one store, each all or nothing on its own, in one request.
    Batch(usize, Vec<Vec<(usize, u64)>>),
    Read(usize, usize),
    Restock(usize, usize, u64),
    Health,
}

/// What an answer meant, for the tally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Refused for lack of stock (expected in `flash`).
    Short,
    /// Anything else; `status` is the HTTP status (0 for a transport or peer error).
    Failed(u16),
}

pub const FLASH_STORE: usize = 0;
pub const FLASH_PRODUCT: usize = 0;
/// Stock of every product in `throughput` and `mixed`: large enough that nothing runs out.
pub const PLENTY_UNITS: u64 = 100_000_000;

pub fn store_id(i: usize) -> String {
    format!("LOAD-S{i:04}")
}

pub fn product_id(i: usize) -> String {
    format!("SKU{i:06}")
}

/// Draws the next request of a scenario. Deterministic for a given `rng` seed.
pub fn next_op(scenario: Scenario, rng: &mut fastrand::Rng, stores: usize, products: usize) -> Op {
    match scenario {
        Scenario::Trivial => Op::Health,
        Scenario::Flash => Op::Order(FLASH_STORE, vec![(FLASH_PRODUCT, 1)]),
        Scenario::Throughput => random_order(rng, stores, products),
        Scenario::Batch => {
            let store = rng.usize(0..stores);
            let orders = (0..BATCH_ORDERS)
                .map(|_| match random_order(rng, 1, products) {
                    Op::Order(_, lines) => lines,
                    _ => unreachable!("random_order makes orders"),
                })
                .collect();
            Op::Batch(store, orders)
        }
        Scenario::Mixed => match rng.u32(0..100) {
            0..80 => random_order(rng, stores, products),
            80..95 => Op::Read(rng.usize(0..stores), rng.usize(0..products)),
            _ => Op::Restock(rng.usize(0..stores), rng.usize(0..products), rng.u64(1..=3)),
        },
    }
}

fn random_order(rng: &mut fastrand::Rng, stores: usize, products: usize) -> Op {
    let store = rng.usize(0..stores);
    let count = rng.usize(1..=5).min(products);
    let mut lines: Vec<(usize, u64)> = Vec::with_capacity(count);
    while lines.len() < count {
        let p = rng.usize(0..products);
        if !lines.iter().any(|(q, _)| *q == p) {
            lines.push((p, rng.u64(1..=3)));
        }
    }
    Op::Order(store, lines)
}

/// The flash sale's check: what was sold must be exactly what left the shelf.
pub fn check_flash(initial_units: u64, final_units: i64, successes: u64) -> Result<(), String> {
    if final_units < 0 {
        return Err(format!("oversold: stock went to {final_units}"));
    }
    let sold = initial_units as i64 - final_units;
    if sold != successes as i64 {
        return Err(format!(
            "{successes} orders succeeded but stock fell by {sold}"
        ));
    }
    Ok(())
}

/// Refuses any target but loopback unless `allow_remote`: load tests stay on this box.
pub fn check_target(host_port: &str, allow_remote: bool) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = host_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host_port}: {e}"))?
        .collect();
    let addr = addrs
        .first()
        .copied()
        .ok_or_else(|| format!("{host_port} resolves to nothing"))?;
    let loopback = addrs.iter().all(|a| match a.ip() {
        IpAddr::V4(ip) => ip.octets()[0] == 127,
        IpAddr::V6(ip) => ip.is_loopback(),
    });
    if !loopback && !allow_remote {
        return Err(format!(
            "{host_port} is not on 127.0.0.0/8 or localhost; pass --allow-remote to load it"
        ));
    }
    Ok(addr)
}

/// A connection to the system under test.
pub enum Backend {
    Http(http::HttpBackend),
    #[cfg(feature = "peers")]
    Postgres(peers::PgBackend),
    #[cfg(feature = "peers")]
    Redis(peers::RedisBackend),
}

impl Backend {
    async fn connect(cfg: &LoadConfig) -> Result<Backend, String> {
        if let Some(rest) = cfg.target.strip_prefix("http://") {
            let host = rest.split('/').next().unwrap_or(rest);
            let addr = check_target(host, cfg.allow_remote)?;
            return Ok(Backend::Http(
                http::HttpBackend::connect(addr, cfg.admin_token.clone()).await?,
            ));
        }
        #[cfg(feature = "peers")]
        {
            if cfg.target.starts_with("postgres://") || cfg.target.starts_with("postgresql://") {
                return Ok(Backend::Postgres(
                    peers::PgBackend::connect(&cfg.target, cfg.allow_remote).await?,
                ));
            }
            if cfg.target.starts_with("redis://") {
                return Ok(Backend::Redis(
                    peers::RedisBackend::connect(&cfg.target, cfg.allow_remote).await?,
                ));
            }
        }
        Err(format!(
            "unsupported target {} (http://…; postgres:// and redis:// need the `peers` feature)",
            cfg.target
        ))
    }

    async fn run(&mut self, op: &Op) -> Outcome {
        match self {
            Backend::Http(b) => b.run(op).await,
            #[cfg(feature = "peers")]
            Backend::Postgres(b) => b.run(op).await,
            #[cfg(feature = "peers")]
            Backend::Redis(b) => b.run(op).await,
        }
    }

    /// Loads the scenario's stores and products (with `clients` connections).
    async fn setup(cfg: &LoadConfig) -> Result<(), String> {
        let plan = SetupPlan::of(cfg);
        let mut first = Backend::connect(cfg).await?;
        match &mut first {
            Backend::Http(b) => b.setup_stores(&plan).await?,
            #[cfg(feature = "peers")]
            Backend::Postgres(b) => return b.setup(&plan).await,
            #[cfg(feature = "peers")]
            Backend::Redis(b) => return b.setup(&plan).await,
        }
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..cfg.clients.min(32) {
            let (cfg, plan, next) = (cfg.clone(), plan.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                #[allow(irrefutable_let_patterns)]
                let Backend::Http(mut b) = Backend::connect(&cfg).await? else {
                    return Ok(());
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= plan.stores * plan.products {
                        return Ok::<(), String>(());
                    }
                    b.setup_product(&plan, i / plan.products, i % plan.products)
                        .await?;
                }
            }));
        }
        for t in tasks {
            t.await.map_err(|e| e.to_string())??;
        }
        Ok(())
    }

    async fn flash_stock(&mut self) -> Result<i64, String> {
        match self {
            Backend::Http(b) => b.stock_units(FLASH_STORE, FLASH_PRODUCT).await,
            #[cfg(feature = "peers")]
            Backend::Postgres(b) => b.stock_units(FLASH_STORE, FLASH_PRODUCT).await,
            #[cfg(feature = "peers")]
            Backend::Redis(b) => b.stock_units(FLASH_STORE, FLASH_PRODUCT).await,
        }
    }
}

/// What to create before a run.
#[derive(Clone, Debug)]
pub struct SetupPlan {
    pub stores: usize,
    pub products: usize,
    pub units: u64,
}

impl SetupPlan {
    pub fn of(cfg: &LoadConfig) -> SetupPlan {
        match cfg.scenario {
            Scenario::Flash => SetupPlan {
                stores: 1,
                products: 1,
                units: cfg.flash_stock,
            },
            Scenario::Trivial => SetupPlan {
                stores: 0,
                products: 0,
                units: 0,
            },
            _ => SetupPlan {
                stores: cfg.stores,
                products: cfg.products,
                units: PLENTY_UNITS,
            },
        }
    }
}

#[derive(Serialize, Debug)]
pub struct Report {
    pub target: String,
    pub scenario: Scenario,
    pub clients: usize,
    pub seconds: f64,
    pub requests: u64,
    pub requests_per_s: f64,
    pub ok: u64,
    pub short: u64,
    pub failed: BTreeMap<String, u64>,
    pub latency_us: BTreeMap<String, u64>,
    pub flash_check: Option<String>,
}

impl Report {
    pub fn table(&self) -> String {
        let l = &self.latency_us;
        let mut s = format!(
            "target {}  scenario {:?}  clients {}  {:.1} s\n{:>12} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n{:>12} {:>10.0} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            self.target,
            self.scenario,
            self.clients,
            self.seconds,
            "requests",
            "req/s",
            "p50 µs",
            "p90 µs",
            "p99 µs",
            "p99.9 µs",
            "max µs",
            "errors",
            self.requests,
            self.requests_per_s,
            l["p50"],
            l["p90"],
            l["p99"],
            l["p99.9"],
            l["max"],
            self.failed.values().sum::<u64>(),
        );
        s += &format!("answers: {} ok, {} refused for stock", self.ok, self.short);
        for (k, v) in &self.failed {
            s += &format!(", {v} × {k}");
        }
        if let Some(check) = &self.flash_check {
            s += &format!("\nflash check: {check}");
        }
        s
    }

    pub fn is_clean(&self) -> bool {
        self.failed.is_empty()
            && self
                .flash_check
                .as_deref()
                .is_none_or(|c| c.starts_with("ok"))
    }
}

struct ClientResult {
    histogram: Histogram<u64>,
    ok: u64,
    short: u64,
    failed: BTreeMap<String, u64>,
}

/// Runs a whole load test: set-up, the timed run, the checks.
pub async fn run(cfg: LoadConfig) -> Result<Report, String> {
    if cfg.duration.is_none() && cfg.requests.is_none() {
        return Err("give --duration or --requests".into());
    }
    if !cfg.skip_setup {
        let t = Instant::now();
        Backend::setup(&cfg).await?;
        if !cfg.quiet {
            eprintln!("set-up done in {:.1} s", t.elapsed().as_secs_f64());
        }
    }
    let mut probe = Backend::connect(&cfg).await?;
    let flash_initial = if cfg.scenario == Scenario::Flash {
        Some(probe.flash_stock().await?)
    } else {
        None
    };

    let done = Arc::new(AtomicU64::new(0));
    let issued = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(cfg.clients);
    for client in 0..cfg.clients {
        let (cfg, done, issued, stop) = (cfg.clone(), done.clone(), issued.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            client_loop(cfg, client, done, issued, stop).await
        }));
    }
    let progress = {
        let (done, stop, quiet) = (done.clone(), stop.clone(), cfg.quiet);
        tokio::spawn(async move {
            let mut last = 0;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let now = done.load(Ordering::Relaxed);
                if !quiet {
                    eprintln!(
                        "{:>6.1} s  {:>10} done  {:>8} req/s",
                        started.elapsed().as_secs_f64(),
                        now,
                        now - last
                    );
                }
                last = now;
            }
        })
    };
    if let Some(d) = cfg.duration {
        tokio::time::sleep(d).await;
        stop.store(true, Ordering::Relaxed);
    }
    let mut total = ClientResult {
        histogram: new_histogram(),
        ok: 0,
        short: 0,
        failed: BTreeMap::new(),
    };
    for t in tasks {
        let r = t.await.map_err(|e| e.to_string())??;
        total
            .histogram
            .add(&r.histogram)
            .map_err(|e| e.to_string())?;
        total.ok += r.ok;
        total.short += r.short;
        for (k, v) in r.failed {
            *total.failed.entry(k).or_default() += v;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    progress.abort();
    let flash_check = match flash_initial {
        None => None,
        Some(initial) => {
            // A fresh connection: the probe sat idle through the run and may have been
            // closed by the server's keep-alive timeout.
            probe = Backend::connect(&cfg).await?;
            let final_units = probe.flash_stock().await?;
            Some(match check_flash(initial as u64, final_units, total.ok) {
                Ok(()) => format!(
                    "ok: {} sold, {initial} → {final_units}, never below 0",
                    total.ok
                ),
                Err(e) => format!("FAILED: {e}"),
            })
        }
    };
    let h = &total.histogram;
    let requests = h.len();
    let mut latency_us = BTreeMap::new();
    for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)] {
        latency_us.insert(name.to_string(), h.value_at_quantile(q));
    }
    latency_us.insert("max".into(), h.max());
    Ok(Report {
        target: cfg.target.clone(),
        scenario: cfg.scenario,
        clients: cfg.clients,
        seconds,
        requests,
        requests_per_s: requests as f64 / seconds,
        ok: total.ok,
        short: total.short,
        failed: total.failed,
        latency_us,
        flash_check,
    })
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

async fn client_loop(
    cfg: LoadConfig,
    client: usize,
    done: Arc<AtomicU64>,
    issued: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Result<ClientResult, String> {
    let mut backend = Backend::connect(&cfg).await?;
    let mut rng =
        fastrand::Rng::with_seed(cfg.seed.wrapping_mul(1_000_003).wrapping_add(client as u64));
    let mut r = ClientResult {
        histogram: new_histogram(),
        ok: 0,
        short: 0,
        failed: BTreeMap::new(),
    };
    let (stores, products) = (cfg.stores.max(1), cfg.products.max(1));
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if let Some(max) = cfg.requests
            && issued.fetch_add(1, Ordering::Relaxed) >= max
        {
            break;
        }
        let op = next_op(cfg.scenario, &mut rng, stores, products);
        let t = Instant::now();
        let outcome = backend.run(&op).await;
        r.histogram
            .saturating_record(t.elapsed().as_micros().max(1) as u64);
        done.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Outcome::Ok => r.ok += 1,
            Outcome::Short => r.short += 1,
            Outcome::Failed(status) => {
                *r.failed
                    .entry(if status == 0 {
                        "transport error".into()
                    } else {
                        status.to_string()
                    })
                    .or_default() += 1;
                if status == 0 {
                    // The connection is gone: reconnect rather than spin on a dead socket.
                    match Backend::connect(&cfg).await {
                        Ok(b) => backend = b,
                        Err(_) => break,
                    }
                }
            }
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_are_deterministic_for_a_seed() {
        // Goal: the same seed draws the same requests, so runs against different systems
        // see the same key distribution.
        let draw = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            (0..200)
                .map(|_| next_op(Scenario::Mixed, &mut rng, 100, 1000))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        for op in draw(9) {
            if let Op::Order(store, lines) = op {
                assert!(store < 100 && (1..=5).contains(&lines.len()));
                assert!(lines.iter().all(|&(p, q)| p < 1000 && (1..=3).contains(&q)));
                let mut ids: Vec<usize> = lines.iter().map(|l| l.0).collect();
                ids.dedup();
                assert_eq!(ids.len(), lines.len(), "distinct products");
            }
        }
    }

    #[test]
    fn the_flash_check_catches_an_oversell() {
        assert!(check_flash(100, 0, 100).is_ok());
        assert!(check_flash(100, -1, 101).unwrap_err().contains("oversold"));
        assert!(
            check_flash(100, 0, 101).is_err(),
            "more successes than units left the shelf"
        );
        assert!(check_flash(100, 5, 96).is_err());
    }

    #[test]
    fn remote_targets_are_refused_unless_allowed() {
        assert!(check_target("127.0.0.1:8000", false).is_ok());
        assert!(check_target("localhost:8000", false).is_ok());
        assert!(
            check_target("10.1.2.3:8000", false)
                .unwrap_err()
                .contains("--allow-remote")
        );
        assert!(check_target("10.1.2.3:8000", true).is_ok());
    }
}
