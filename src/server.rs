//! Start-up and shutdown: open the data directory, answer `/health` at once, recover in
//! the background, start one arbiter (thread) of store actors per core, then turn `/ready`.

use crate::actor::{Directory, ExpireNow, TakeSnapshot, now_ms};
use crate::http::{AppState, Auth};
use crate::wal::{Archive, Durability, Storage, recovery, writer};
use actix_web::{App, HttpServer, middleware, web};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long an idempotency key is remembered (the contract promises at least 24 h).
pub const IDEM_KEEP_MS: i64 = 25 * 3600 * 1000;

/// Most open connections per HTTP worker (actix's default, stated here): past it the listener
/// stops accepting until one closes. With one worker per core, 50,000 sockets on this machine.
pub const CONNECTIONS_PER_WORKER_MAX: usize = 25_000;
/// A client must send a whole request head within this, or it gets 408 and is cut off (a
/// client that trickles bytes cannot hold a connection open).
pub const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle keep-alive connection is closed after this.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Threads per HTTP worker for blocking reads of the archive (`web::block`): a burst of
/// order and ledger reads waits for one rather than spawning hundreds.
pub const BLOCKING_THREADS_PER_WORKER: usize = 64;

/// `godown serve --config FILE`: the same settings as the flags, as JSON. Unknown keys are
/// refused (a typo must not silently fall back to a default).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub durability: Option<Durability>,
    pub payment_ttl_seconds: Option<u64>,
    pub snapshot_every_records: Option<u64>,
    pub snapshot_interval_seconds: Option<u64>,
    pub views_every_records: Option<u64>,
    pub wal_segment_bytes: Option<u64>,
    pub threads: Option<usize>,
    pub admin_token: Option<String>,
    pub client_token: Option<String>,
    pub webhook_hosts: Option<String>,
    pub cluster_proxy: Option<SocketAddr>,
    pub order_partition: Option<u8>,
}

impl FileConfig {
    pub fn load(path: &std::path::Path) -> Result<FileConfig, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("config {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()))
    }
}

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub demo: bool,
    pub durability: Durability,
    pub payment_ttl: Duration,
    pub snapshot_every_records: u64,
    pub snapshot_interval: Duration,
    /// The most WAL records whose views wait in memory (see `wal::views`).
    pub views_every_records: u64,
    /// The size of a log segment (see `wal::segments`).
    pub wal_segment_bytes: u64,
    pub admin_token: Option<String>,
    pub client_token: Option<String>,
    /// Hosts webhooks may be registered for, comma-separated (`GODOWN_WEBHOOK_HOSTS`);
    /// unset: any. A store token should not be able to make godown POST to internal
    /// addresses (a cloud's metadata service, an admin port): list the gateways you use.
    pub webhook_hosts: Option<String>,
    /// The region's proxy (nginx), when stores of this region live in other processes too:
    /// transfers and region orders reach those stores through it (see `saga::steps`).
    pub cluster_proxy: Option<SocketAddr>,
    /// This process's order numbers (`domain::ids::order_partition`).
    pub order_partition: u8,
    /// Arbiters for store actors and actix-web workers (each); 0 = one per core.
    pub threads: usize,
}

pub fn run(config: ServeConfig) -> std::io::Result<()> {
    install_panic_policy();
    actix_web::rt::System::new().block_on(serve(config))
}

/// The exit status after a panic outside an HTTP worker.
pub const EXIT_PANIC: i32 = 70;
/// HTTP worker panics are logged at most once per this many milliseconds (a client that
/// can trigger one must not be able to fill the disk with logs).
const WORKER_PANIC_LOG_EVERY_MS: u64 = 1000;

/// A panic is never silent. On a store actor's arbiter, the log writer, the checkpointer or
/// any other thread of ours it stops the process (the state in memory can no longer be
/// trusted, and a restart recovers every acknowledged change from the log; a store gone
/// quietly would leave `/ready` saying 200). On an HTTP worker (actix-web drops that one
/// connection and serves on) it is logged in one line, without a backtrace, rate-limited.
fn install_panic_policy() {
    use std::sync::atomic::AtomicU64;
    static LAST_WORKER_LOG_MS: AtomicU64 = AtomicU64::new(0);
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let location = info
            .location()
            .map_or_else(String::new, |l| format!("{}:{}", l.file(), l.line()));
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if name.starts_with("actix-server worker") {
            let now = now_ms().max(0) as u64;
            let last = LAST_WORKER_LOG_MS.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= WORKER_PANIC_LOG_EVERY_MS
                && LAST_WORKER_LOG_MS
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::error!(thread = name, %location, %message, "a request panicked; its connection was dropped");
            }
            return;
        }
        tracing::error!(thread = name, %location, %message, "panic; stopping (a restart recovers every acknowledged change)");
        std::process::exit(EXIT_PANIC);
    }));
}

async fn serve(config: ServeConfig) -> std::io::Result<()> {
    // Metrics recorded before the recorder exists would be lost.
    crate::telemetry::handle();
    let storage = Storage::open(&config.data_dir).map_err(std::io::Error::other)?;
    let auth = Auth::new(
        config.admin_token.as_deref(),
        config.client_token.as_deref(),
    );
    if !auth.has_admin() {
        tracing::warn!(
            "GODOWN_ADMIN_TOKEN is not set: catalogue and store changes will answer 401"
        );
    }
    let order_ids = storage
        .order_id_key()
        .map(crate::domain::OrderIdCodec::new)
        .map_err(std::io::Error::other)?;
    let mut app_state = AppState::new(Archive::new(storage.clone()), auth, order_ids);
    app_state.webhook_hosts = config.webhook_hosts.as_deref().map(|hosts| {
        hosts
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect()
    });
    let state = web::Data::new(app_state);
    // Public events go live only from the views, which get them once they are durable.
    storage.pending.set_bus(state.bus.clone());
    let threads = if config.threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        config.threads
    };
    let app_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .wrap(middleware::from_fn(crate::http::json_errors))
            .wrap(middleware::from_fn(crate::http::cluster_search))
            .wrap(middleware::from_fn(crate::http::request_context))
            .configure(crate::http::routes)
    })
    .workers(threads)
    .max_connections(CONNECTIONS_PER_WORKER_MAX)
    .client_request_timeout(REQUEST_HEAD_TIMEOUT)
    .keep_alive(KEEP_ALIVE)
    .worker_max_blocking_threads(BLOCKING_THREADS_PER_WORKER)
    .backlog(4096)
    // Signals are ours: the final snapshots must be taken while the actors still run.
    .disable_signals()
    .bind(config.listen)?;
    for addr in server.addrs() {
        // Tests and scripts read this line to learn the port.
        println!("godown listening on http://{addr}");
    }
    let server = server.run();
    let handle = server.handle();
    let server = actix_web::rt::spawn(server);

    let started = Instant::now();
    let recovered = {
        let storage = storage.clone();
        actix_web::rt::task::spawn_blocking(move || recovery::recover(&storage, true)).await
    };
    let recovered = match recovered {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            // Returning ends the process (and with it the server that was answering 503).
            tracing::error!(error = %e, "recovery failed; not starting");
            return Err(std::io::Error::other(e.to_string()));
        }
        Err(e) => return Err(std::io::Error::other(e.to_string())),
    };
    let report = &recovered.report;
    tracing::info!(
        stores = recovered.states.len(),
        snapshots = report.snapshots,
        replayed = report.records_replayed,
        skipped = report.records_skipped,
        torn_tail = report.torn_tail,
        ms = report.elapsed.as_millis() as u64,
        "recovery done"
    );
    let partition = crate::domain::ids::order_partition(config.order_partition);
    let next_order_seq = recovered
        .next_order_seq(&storage, partition.clone())
        .map_err(std::io::Error::other)?;
    // A store gone to another process holds no part of the log back.
    let placements = crate::moving::Placements::load(&config.data_dir)?;
    let mut recovered = recovered;
    for id in &placements.gone {
        recovered.log.replay_from.remove(id);
    }
    let writer_config = writer::WriterConfig {
        durability: config.durability,
        views_every_records: config.views_every_records,
        segment_bytes: config.wal_segment_bytes,
    };
    let wal = match writer::start(storage.clone(), writer_config, recovered.log) {
        Ok(wal) => wal,
        Err(e) => {
            tracing::error!(error = %e, "the write-ahead log cannot be opened; not starting");
            return Err(std::io::Error::other(e.to_string()));
        }
    };
    let arbiters: Vec<_> = (0..threads)
        .map(|_| actix::Arbiter::new().handle())
        .collect();
    let dir = Arc::new(Directory::new(
        arbiters,
        wal,
        Archive::new(storage.clone()),
        config.payment_ttl.as_millis() as i64,
        next_order_seq..partition.end,
    ));
    let regions = crate::saga::region::Regions::load(&config.data_dir)?;
    let fresh = recovered.states.is_empty();
    if fresh {
        Archive::new(storage.clone())
            .mark_store_orders_indexed()
            .map_err(std::io::Error::other)?;
    }
    let webhooks: Vec<(crate::domain::StoreId, crate::domain::Webhook)> = recovered
        .states
        .iter()
        .filter(|s| placements.serves(&s.config.store_id))
        .flat_map(|s| {
            let store = s.config.store_id.clone();
            s.webhooks().iter().map(move |w| (store.clone(), w.clone()))
        })
        .collect();
    placements.adopt(&dir, recovered.states).await;
    // Transfers and region orders a crash interrupted end before the first answer.
    let remote = config
        .cluster_proxy
        .map(|proxy| crate::saga::steps::Remote {
            proxy,
            admin_token: config.admin_token.clone(),
        });
    let sagas = Arc::new(crate::saga::Sagas::new(
        dir.clone(),
        Archive::new(storage.clone()),
        regions,
        remote,
    ));
    match sagas.resume_open().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(sagas = n, "interrupted sagas resumed"),
        Err(e) => tracing::warn!(error = %e, "interrupted sagas could not be resumed yet"),
    }
    sagas.spawn_retry();
    // Holds that ran out while we were down are released before the first answer.
    for id in dir.store_ids() {
        if let Some(entry) = dir.get(&id)
            && let Ok(Some(rx)) = entry.addr.send(ExpireNow).await
        {
            let _ = rx.await;
        }
    }
    if config.demo {
        if fresh {
            match crate::demo::load_demo(&dir).await {
                Ok((stores, products, orders)) => {
                    tracing::info!(
                        stores,
                        products,
                        orders,
                        "demo catalogue and history loaded"
                    )
                }
                Err(e) => tracing::error!(error = %e, "demo catalogue failed to load"),
            }
        } else {
            tracing::info!("--demo: the data directory already holds data; loading nothing");
            eprintln!(
                "godown: --demo ignored: {} already holds data",
                config.data_dir.display()
            );
        }
    }
    let deliverer = crate::delivery::Deliverer::new(
        dir.clone(),
        Archive::new(storage.clone()),
        state.bus.clone(),
        state.order_ids.clone(),
        dir.clock.clone(),
    )
    .map_err(std::io::Error::other)?;
    let deliverer = Arc::new(deliverer);
    for (store, webhook) in webhooks {
        deliverer.start(store, webhook);
    }
    let moves = crate::moving::Moves::new(
        dir.clone(),
        Archive::new(storage.clone()),
        &config.data_dir,
        placements,
        state.order_ids.fingerprint(),
        Some(deliverer.clone()),
    );
    let _ = state.moves.set(Arc::new(moves));
    let _ = state.deliverer.set(deliverer);
    let _ = state.sagas.set(sagas);
    let _ = state.directory.set(dir.clone());
    tracing::info!(ms = started.elapsed().as_millis() as u64, "ready");

    actix_web::rt::spawn(snapshot_loop(
        dir.clone(),
        config.snapshot_every_records,
        config.snapshot_interval,
    ));
    spawn_idem_sweeper(Archive::new(storage.clone()));
    spawn_order_indexer(Archive::new(storage.clone()));
    spawn_event_sweeper(Archive::new(storage.clone()), dir.clone());
    shutdown_signal().await;
    tracing::info!("shutting down: no new connections; taking final snapshots");
    handle.pause().await;
    let _ = state.closing.send(true);
    snapshot_all(&dir, usize::MAX).await;
    // A last checkpoint: the snapshots and views are durable in sled, so a restart replays
    // and rebuilds next to nothing.
    if let Some(rx) = dir.wal.submit_waiting(crate::wal::ItemBody::Checkpoint) {
        let _ = rx.await;
    }
    handle.stop(true).await;
    let _ = server.await;
    Ok(())
}

/// Waits for SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Stores snapshotted together in a periodic round: a round of every store at once puts
/// them all into one group-commit batch, and every order waiting on that flush waits for
/// all of them.
const SNAPSHOT_GROUP: usize = 8;

/// Snapshots every store, `group` stores at a time, and waits until all are durable.
pub async fn snapshot_all(dir: &Directory, group: usize) {
    let ids = dir.store_ids();
    for ids in ids.chunks(group.max(1)) {
        let mut waiting = Vec::new();
        for id in ids {
            if let Some(entry) = dir.get(id)
                && let Ok(Some(rx)) = entry.addr.send(TakeSnapshot).await
            {
                waiting.push(rx);
            }
        }
        for rx in waiting {
            let _ = rx.await;
        }
    }
}

async fn snapshot_loop(dir: Arc<Directory>, every_records: u64, interval: Duration) {
    let mut last = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let since = dir.wal.stats.records_since_snapshot.load(Ordering::Relaxed);
        if since >= every_records || (since > 0 && last.elapsed() >= interval) {
            let t = Instant::now();
            snapshot_all(&dir, SNAPSHOT_GROUP).await;
            tracing::debug!(
                stores = dir.len(),
                ms = t.elapsed().as_millis() as u64,
                "snapshot round"
            );
            last = Instant::now();
        }
    }
}

/// Indexes the orders of a data directory from before the store order index, once, off
/// the request path (until it is done, listings of such a directory miss older orders).
fn spawn_order_indexer(archive: Archive) {
    let _ = std::thread::Builder::new()
        .name("order-indexer".into())
        .spawn(move || match archive.index_store_orders_once() {
            Ok(0) => {}
            Ok(n) => tracing::info!(orders = n, "orders of an earlier version indexed by store"),
            Err(e) => tracing::warn!(error = %e, "indexing orders by store failed"),
        });
}

/// How long public events are kept: the contract promises at least 7 days.
pub const EVENTS_KEEP_MS: i64 = 8 * 24 * 3_600_000;
/// Most events kept per store: 7 days of one event every 3 seconds (a busy store), at most
/// ~200 MB of a store's orders as events; beyond it the oldest go first.
pub const EVENTS_PER_STORE_MAX: u64 = 200_000;
/// How often old events are dropped.
const EVENT_SWEEP_EVERY: Duration = Duration::from_secs(600);

/// Drops events past `EVENTS_KEEP_MS` or beyond `EVENTS_PER_STORE_MAX` per store, every
/// `EVENT_SWEEP_EVERY`.
fn spawn_event_sweeper(archive: Archive, dir: Arc<Directory>) {
    let _ = std::thread::Builder::new()
        .name("event-sweeper".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EVENT_SWEEP_EVERY);
                let cutoff = now_ms() - EVENTS_KEEP_MS;
                let mut dropped = 0;
                for store in dir.store_ids() {
                    match archive.forget_events(&store, cutoff, EVENTS_PER_STORE_MAX) {
                        Ok(n) => dropped += n,
                        Err(e) => tracing::warn!(%store, error = %e, "dropping old events failed"),
                    }
                }
                if dropped > 0 {
                    tracing::info!(dropped, "old events dropped");
                }
            }
        });
}

/// How often remembered idempotency keys older than `IDEM_KEEP_MS` are forgotten (a walk
/// over the expired keys only).
const IDEM_SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Most remembered idempotency keys; past it the oldest are forgotten first, even before
/// `IDEM_KEEP_MS`. 24 h of 115 keyed requests a second, a region's busiest day sustained, at
/// ~250 bytes of sled each: at most 2.5 GB of disk, whatever clients send.
pub const IDEM_KEYS_MAX: u64 = 10_000_000;
/// Keys written past `IDEM_KEYS_MAX` before the sweeper counts them all again (a walk over
/// every key, seconds at the cap): at 25,000 keyed orders/s, one count every 40 s.
const IDEM_KEYS_SLACK: u64 = IDEM_KEYS_MAX / 10;
/// How often the sweeper checks whether a sweep is due.
const IDEM_SWEEP_POLL: Duration = Duration::from_secs(1);

/// Forgets idempotency keys older than `IDEM_KEEP_MS` every `IDEM_SWEEP_EVERY`, and the
/// oldest beyond `IDEM_KEYS_MAX` once more than `IDEM_KEYS_SLACK` keys may be over it.
fn spawn_idem_sweeper(archive: Archive) {
    let _ = std::thread::Builder::new()
        .name("idem-sweeper".into())
        .spawn(move || {
            match archive.age_unaged_answers() {
                Ok(0) => {}
                Ok(n) => tracing::info!(n, "idempotency keys of an earlier version indexed"),
                Err(e) => tracing::warn!(error = %e, "indexing idempotency keys failed"),
            }
            // (keys counted, entries added when they were counted)
            let mut counted: Option<(u64, u64)> = None;
            let mut last_sweep: Option<Instant> = None;
            loop {
                let added = archive.answers_added();
                let over = counted.is_none_or(|(n, at)| {
                    n + added.saturating_sub(at) > IDEM_KEYS_MAX + IDEM_KEYS_SLACK
                });
                if over || last_sweep.is_none_or(|t| t.elapsed() >= IDEM_SWEEP_EVERY) {
                    let keep = over.then_some(IDEM_KEYS_MAX);
                    match archive.forget_answers(now_ms() - IDEM_KEEP_MS, keep) {
                        Ok(f) => {
                            counted = match (f.remaining, counted) {
                                (Some(n), _) => Some((n, added)),
                                (None, Some((n, at))) => Some((n.saturating_sub(f.removed), at)),
                                (None, None) => None,
                            };
                            if f.removed > 0 {
                                tracing::info!(removed = f.removed, "idempotency keys forgotten");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "forgetting idempotency keys failed"),
                    }
                    last_sweep = Some(Instant::now());
                }
                std::thread::sleep(IDEM_SWEEP_POLL);
            }
        });
}
