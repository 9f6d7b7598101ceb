//! `godown cluster move`: moves a store from the node that serves it to another node of the
//! nodes file while the store takes orders, then pins it there and switches nginx.
//!
//! 1. **Copy** (live): the source hands out the store's state and starts keeping its later
//!    records; the target makes the arrival durable and starts the store frozen from that
//!    state; the history (orders, ledger, events, idempotency answers) follows in chunks.
//! 2. **Tail** (live): the records since, in rounds, until a round brings fewer than
//!    [`CAUGHT_UP_RECORDS`].
//! 3. **Cutover**: the source freezes the store (its changes answer 503 with
//!    `Retry-After: 1`) and hands out the last records once durable; the target logs them
//!    and takes over; the nodes file pins the store to the target, nginx's configuration is
//!    rewritten and nginx reloaded (SIGHUP: graceful); once nginx brings the store's calls
//!    to the target, the source marks it gone. The cutover is the time from the freeze to
//!    that moment.
//!
//! Anything failing before the target takes over gives the store back to the source
//! (`Abort`), which never stopped serving it but for the freeze.

use super::NodesFile;
use crate::client::Conn;
use crate::moving::{InStep, OutReply, OutStep};
use crate::wal::format::{decode_frame, encode_frame};
use crate::wal::moving::{HistoryBounds, HistoryCursor};
use bytes::Bytes;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A tail round that brings fewer records than this has caught up: the rest fits in the
/// freeze (a few milliseconds of records at full speed).
pub const CAUGHT_UP_RECORDS: usize = 500;
/// Tail rounds before the move is given up: a store that writes faster than the target
/// takes its records never catches up.
pub const TAIL_ROUNDS_MAX: usize = 100;
/// How long nginx may take to bring the store's calls to the target after its reload, and
/// its old workers to finish (nginx's `worker_shutdown_timeout`, `cluster::nginx_config`).
pub const SWITCH_WAIT: Duration = Duration::from_secs(10);
/// Between two looks at whether nginx has switched.
const SWITCH_POLL: Duration = Duration::from_millis(5);
/// One step's answer (a history chunk of a large store takes a moment).
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// Test-only fault points: `frozen` stops the mover right after the source froze the store,
/// `activated` right after the target took it over (a move interrupted at its worst).
pub const CRASH_AT_ENV: &str = "GODOWN_TEST_MOVE_CRASH";

fn fault_point(at: &str) {
    if std::env::var(CRASH_AT_ENV).as_deref() == Ok(at) {
        eprintln!("godown cluster move: injected crash ({at})");
        std::process::abort();
    }
}

pub struct MoveConfig {
    pub nodes: PathBuf,
    pub store: String,
    /// The node it moves to (by name).
    pub to: String,
    /// nginx's configuration file, rewritten from the nodes file after the move.
    pub nginx_conf: Option<PathBuf>,
    /// nginx's pid file: sent SIGHUP (reload) after the configuration is rewritten.
    pub nginx_pid: Option<PathBuf>,
    pub admin_token: Option<String>,
}

/// What a move did and how long it took.
#[derive(Debug, Serialize)]
pub struct MoveReport {
    pub store_id: String,
    pub from: String,
    pub to: String,
    pub orders: usize,
    pub movements: usize,
    pub events: usize,
    pub answers: usize,
    /// Records shipped while the store was live, and in the freeze.
    pub records_live: usize,
    pub records_frozen: usize,
    pub tail_rounds: usize,
    pub copy_ms: u64,
    /// From the freeze until nginx brings the store's calls to the target.
    pub cutover_ms: u64,
}

struct Node {
    name: String,
    conn: Option<Conn>,
    addr: SocketAddr,
}

struct Mover<'a> {
    store: &'a str,
    auth: Option<String>,
}

impl Mover<'_> {
    async fn post(&self, node: &mut Node, path: &str, body: Vec<u8>) -> Result<Bytes, String> {
        let path = format!("/api/v1/stores/{}/{path}", self.store);
        let mut headers = vec![("content-type", "application/octet-stream")];
        if let Some(a) = &self.auth {
            headers.push(("authorization", a.as_str()));
        }
        let conn = match &mut node.conn {
            Some(c) => c,
            None => node.conn.insert(
                Conn::connect(node.addr)
                    .await
                    .map_err(|e| format!("{}: {e}", node.name))?,
            ),
        };
        let send = conn.send("POST", &path, &headers, Some(Bytes::from(body)));
        let r = tokio::time::timeout(STEP_TIMEOUT, send).await;
        let r = match r {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                node.conn = None;
                return Err(format!("{}: {e}", node.name));
            }
            Err(_) => {
                node.conn = None;
                return Err(format!("{}: no answer in {STEP_TIMEOUT:?}", node.name));
            }
        };
        if r.status != 200 {
            let body = String::from_utf8_lossy(&r.body);
            return Err(format!("{} answered {}: {body}", node.name, r.status));
        }
        Ok(r.body)
    }

    async fn out(&self, node: &mut Node, step: OutStep) -> Result<OutReply, String> {
        let body = self.post(node, "move-out", encode_frame(&step)).await?;
        decode_frame(&body, &|| "a move-out answer".into()).map_err(|e| e.to_string())
    }

    async fn send_in(&self, node: &mut Node, step: InStep) -> Result<(), String> {
        self.post(node, "move-in", encode_frame(&step))
            .await
            .map(|_| ())
    }
}

/// Moves the store; on success the nodes file pins it to its new node.
pub async fn run(config: MoveConfig) -> Result<MoveReport, String> {
    let text = std::fs::read_to_string(&config.nodes).map_err(|e| e.to_string())?;
    let mut file = NodesFile::parse(&text)?;
    if crate::domain::StoreId::parse(&config.store).is_none() {
        return Err(format!("{:?} is not a store id", config.store));
    }
    let mut nodes: Vec<Node> = file
        .nodes
        .iter()
        .map(|n| Node {
            name: n.name.clone(),
            conn: None,
            addr: n.addr,
        })
        .collect();
    let to = nodes
        .iter()
        .position(|n| n.name == config.to)
        .ok_or_else(|| format!("no node {} in the nodes file", config.to))?;
    let mover = Mover {
        store: &config.store,
        auth: config.admin_token.as_ref().map(|t| format!("Bearer {t}")),
    };
    let started = Instant::now();
    let (from, state, bounds, key_fingerprint) = match find_source(&mover, &mut nodes, to).await? {
        Source::Begun(from, state, bounds, key) => (from, state, bounds, key),
        Source::Frozen(stuck) => {
            return finish_interrupted(&config, &mover, &mut file, &mut nodes, stuck).await;
        }
        Source::None => {
            return Err(format!(
                "no node other than {} serves store {}",
                config.to, config.store
            ));
        }
    };
    let (source, target) = two(&mut nodes, from, to);
    let mut report = MoveReport::new(&config.store, &source.name, &target.name);
    let live = copy_and_tail(
        &mover,
        source,
        target,
        state,
        bounds,
        key_fingerprint,
        &mut report,
    );
    if let Err(why) = live.await {
        let _ = mover.out(source, OutStep::Abort).await;
        return Err(why);
    }
    report.copy_ms = started.elapsed().as_millis() as u64;
    let frozen = Instant::now();
    if let Err(why) = cut_over(&mover, source, target, &mut report).await {
        // The target may have taken the store over all the same (an answer lost): settle
        // it as an interrupted move, which never leaves two live copies.
        return match finish_interrupted(&config, &mover, &mut file, &mut nodes, from).await {
            Ok(_) => Err(format!("{why} (the move was then finished)")),
            Err(then) => Err(format!("{why}; then: {then}")),
        };
    }
    // The target serves the store from here on: pin it there, switch nginx.
    pin(&mut file, &config.store, &config.to);
    let switched = switch(&config, &file, &config.to).await?;
    report.cutover_ms = (switched - frozen).as_millis() as u64;
    let source = &mut nodes[from];
    // A fresh connection: the old one may have idled past the node's keep-alive meanwhile.
    source.conn = None;
    mover.out(source, OutStep::Finish).await?;
    Ok(report)
}

/// Where the store is, as the nodes answer a request to begin moving it out.
enum Source {
    /// This node serves it and has begun: its state, the history's bounds, its key's
    /// fingerprint.
    Begun(usize, Vec<u8>, HistoryBounds, String),
    /// An interrupted move left it frozen on this node (settled before anything else).
    Frozen(usize),
    None,
}

/// Asks every node but the target to begin moving the store out.
async fn find_source(mover: &Mover<'_>, nodes: &mut [Node], to: usize) -> Result<Source, String> {
    let (mut begun, mut frozen) = (None, None);
    for (i, node) in nodes.iter_mut().enumerate() {
        if i == to {
            continue;
        }
        match mover.out(node, OutStep::Begin).await {
            Ok(OutReply::Begun {
                state,
                bounds,
                key_fingerprint,
            }) => begun = Some(Source::Begun(i, state, bounds, key_fingerprint)),
            Err(why) if why.contains(FROZEN) => frozen = Some(i),
            _ => {}
        }
    }
    match (begun, frozen) {
        (Some(Source::Begun(i, ..)), Some(stuck)) => {
            // Its tap goes: this run only settles the interrupted move.
            mover.out(&mut nodes[i], OutStep::Abort).await?;
            Ok(Source::Frozen(stuck))
        }
        (_, Some(stuck)) => Ok(Source::Frozen(stuck)),
        (Some(begun), None) => Ok(begun),
        (None, None) => Ok(Source::None),
    }
}

impl MoveReport {
    fn new(store: &str, from: &str, to: &str) -> MoveReport {
        MoveReport {
            store_id: store.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            orders: 0,
            movements: 0,
            events: 0,
            answers: 0,
            records_live: 0,
            records_frozen: 0,
            tail_rounds: 0,
            copy_ms: 0,
            cutover_ms: 0,
        }
    }
}

/// What a node answers to a new move of a store an interrupted move left frozen there.
const FROZEN: &str = "the store is frozen";

/// A move was interrupted after its freeze (a crash of the mover or of the source): if a
/// node serves the store now (the interrupted move's target took it over), finish that move
/// (pin it there, switch nginx, mark the frozen copy gone); if none does, give the store
/// back to the node that froze it, and say so (run the move again; to another node if the
/// interrupted target already holds a copy).
async fn finish_interrupted(
    config: &MoveConfig,
    mover: &Mover<'_>,
    file: &mut NodesFile,
    nodes: &mut [Node],
    stuck: usize,
) -> Result<MoveReport, String> {
    let path = format!("/api/v1/stores/{}", config.store);
    let auth = config.admin_token.as_ref().map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let mut live = None;
    for (i, node) in nodes.iter().enumerate() {
        if i == stuck {
            continue;
        }
        // 200 only where the store is served: 404 elsewhere, 503 arriving or gone.
        let Ok(mut conn) = Conn::connect(node.addr).await else {
            continue;
        };
        if let Ok(r) = conn.send("GET", &path, &headers, None).await
            && r.status == 200
        {
            live = Some(node.name.clone());
        }
    }
    let source = &mut nodes[stuck];
    let Some(live) = live else {
        mover.out(source, OutStep::Abort).await?;
        return Err(format!(
            "an interrupted move had frozen store {} on {}, which serves it again: run the move again",
            config.store, source.name
        ));
    };
    let frozen = Instant::now();
    pin(file, &config.store, &live);
    let switched = switch(config, file, &live).await?;
    source.conn = None;
    mover.out(source, OutStep::Finish).await?;
    let mut report = MoveReport::new(&config.store, &source.name, &live);
    report.cutover_ms = (switched - frozen).as_millis() as u64;
    Ok(report)
}

/// Pins `store` to node `to` (and to no other).
fn pin(file: &mut NodesFile, store: &str, to: &str) {
    for n in &mut file.nodes {
        n.stores.retain(|s| s != store);
        if n.name == to {
            n.stores.push(store.to_string());
        }
    }
}

fn two(nodes: &mut [Node], a: usize, b: usize) -> (&mut Node, &mut Node) {
    assert_ne!(a, b);
    if a < b {
        let (x, y) = nodes.split_at_mut(b);
        (&mut x[a], &mut y[0])
    } else {
        let (x, y) = nodes.split_at_mut(a);
        (&mut y[0], &mut x[b])
    }
}

async fn copy_and_tail(
    mover: &Mover<'_>,
    source: &mut Node,
    target: &mut Node,
    state: Vec<u8>,
    bounds: HistoryBounds,
    key_fingerprint: String,
    report: &mut MoveReport,
) -> Result<(), String> {
    let begin = InStep::Begin {
        state,
        key_fingerprint,
    };
    mover.send_in(target, begin).await?;
    let mut cursor = HistoryCursor::start();
    while cursor != HistoryCursor::Done {
        let step = OutStep::History { cursor, bounds };
        let OutReply::History { entry, next } = mover.out(source, step).await? else {
            return Err("the source answered a history step with something else".into());
        };
        report.orders += entry.orders.len();
        report.movements += entry.movements.len();
        report.events += entry.events.len();
        report.answers += entry.answers.len();
        let empty = entry.orders.is_empty()
            && entry.movements.is_empty()
            && entry.events.is_empty()
            && entry.answers.is_empty();
        if !empty {
            mover.send_in(target, InStep::History(entry)).await?;
        }
        cursor = next;
    }
    loop {
        report.tail_rounds += 1;
        let records = records(mover.out(source, OutStep::Drain).await?)?;
        let n = records.len();
        report.records_live += n;
        if n > 0 {
            mover.send_in(target, InStep::Records(records)).await?;
        }
        if n < CAUGHT_UP_RECORDS {
            return Ok(());
        }
        if report.tail_rounds >= TAIL_ROUNDS_MAX {
            return Err(format!(
                "the target did not catch up with the store in {TAIL_ROUNDS_MAX} rounds"
            ));
        }
    }
}

fn records(reply: OutReply) -> Result<Vec<Vec<u8>>, String> {
    match reply {
        OutReply::Records(r) => Ok(r),
        _ => Err("the source answered a drain with something else".into()),
    }
}

async fn cut_over(
    mover: &Mover<'_>,
    source: &mut Node,
    target: &mut Node,
    report: &mut MoveReport,
) -> Result<(), String> {
    let last = records(mover.out(source, OutStep::Freeze).await?)?;
    fault_point("frozen");
    report.records_frozen = last.len();
    if !last.is_empty() {
        mover.send_in(target, InStep::Records(last)).await?;
    }
    mover.send_in(target, InStep::Activate).await?;
    fault_point("activated");
    Ok(())
}

/// Writes the nodes file (and nginx's configuration) and reloads nginx; waits until nginx
/// brings the store's calls to its new node (returns when that happened), then until its
/// old workers are gone.
async fn switch(config: &MoveConfig, file: &NodesFile, to: &str) -> Result<Instant, String> {
    let json = serde_json::to_vec_pretty(file).map_err(|e| e.to_string())?;
    crate::saga::region::write_synced(&config.nodes, &json)
        .map_err(|e| format!("writing {}: {e}", config.nodes.display()))?;
    if let Some(conf) = &config.nginx_conf {
        crate::saga::region::write_synced(conf, super::nginx_config(file).as_bytes())
            .map_err(|e| format!("writing {}: {e}", conf.display()))?;
    }
    let Some(pid) = &config.nginx_pid else {
        return Ok(Instant::now());
    };
    let pid = std::fs::read_to_string(pid).map_err(|e| format!("{}: {e}", pid.display()))?;
    let pid = pid.trim();
    let workers = children(pid);
    let status = std::process::Command::new("kill")
        .args(["-HUP", pid])
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("nginx (pid {pid}) could not be reloaded"));
    }
    wait_switched(config, file, to).await?;
    let switched = Instant::now();
    // nginx's old workers finish what they were doing (and may accept a last connection or
    // two) before they exit: until then a call may still reach the old node (503, frozen).
    let deadline = Instant::now() + SWITCH_WAIT;
    while children(pid) > workers && Instant::now() < deadline {
        tokio::time::sleep(SWITCH_POLL).await;
    }
    Ok(switched)
}

/// How many processes `pid` has (nginx's workers), from /proc; 0 where there is no /proc.
fn children(pid: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            // `pid (comm) state ppid …`: the fields after the command name's last ')'.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            rest.split_whitespace().nth(1) == Some(pid)
        })
        .count()
}

/// Waits until nginx brings the store's calls to its new node.
async fn wait_switched(config: &MoveConfig, file: &NodesFile, to: &str) -> Result<(), String> {
    // nginx has switched once the store's page through it comes from the target's process
    // (both answer it: a frozen store still serves reads).
    let path = format!("/api/v1/stores/{}", config.store);
    let auth = config.admin_token.as_ref().map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> =
        auth.iter().map(|a| ("authorization", a.as_str())).collect();
    headers.push((super::PROBE_HEADER, "1"));
    let target = &file.nodes[file
        .nodes
        .iter()
        .position(|n| n.name == to)
        .ok_or("no target node")?];
    let instance = |r: crate::client::Response| r.header(super::INSTANCE_HEADER).map(str::to_owned);
    let mut conn = Conn::connect(target.addr)
        .await
        .map_err(|e| e.to_string())?;
    let answer = conn.send("GET", &path, &headers, None).await;
    let want = answer
        .ok()
        .and_then(instance)
        .ok_or_else(|| format!("{} does not say who it is", target.name))?;
    let deadline = Instant::now() + SWITCH_WAIT;
    while Instant::now() < deadline {
        // A new connection each time: nginx's old workers keep their open ones.
        if let Ok(mut conn) = Conn::connect(file.listen).await
            && let Ok(r) = conn.send("GET", &path, &headers, None).await
            && instance(r).as_deref() == Some(want.as_str())
        {
            return Ok(());
        }
        tokio::time::sleep(SWITCH_POLL).await;
    }
    Err(format!(
        "nginx did not bring the store to its new node within {SWITCH_WAIT:?}"
    ))
}
