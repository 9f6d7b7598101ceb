//! Durability under a power cut, black box.
//!
//! Goal: prove the promise of README's *Durability*: an answer of 200/201 to a change means
//! the change survives a power cut the instant after, not only a `kill -9` of the process
//! (tests/crash.rs). A write that sits in a page cache when the answer goes out is lost by a
//! power cut, so this test fails whenever godown answers before its fsync/fdatasync.
//!
//! Method:
//! - The data directory lives on LazyFS (`../shared/tools/lazyfs`, built once by
//!   `scripts/lazyfs.sh`): a FUSE file system that keeps every write in its own cache until
//!   the program fsyncs that file, and drops all of it on `lazyfs::clear-cache`. A control
//!   first proves that the harness sees a lost write (unsynced: gone; synced: kept).
//! - Each cycle runs [`CLIENTS`] concurrent clients against the real binary, each on its own
//!   products (so its model of their stock is exact): cod and upi orders (all with an
//!   `Idempotency-Key`), payments that succeed or fail, cart holds, releases, orders from
//!   holds, cancellations and stock adjustments. Every acknowledged answer updates the
//!   client's model; snapshots, view write-outs and log truncation run all the time.
//! - After a number of acknowledgements that differs per cycle: `kill -9`, then at once
//!   `lazyfs::clear-cache` (the power cut), then a restart on the same mount. One cycle
//!   instead tears the next write of the newest log segment (`lazyfs::torn-op`: half of it
//!   reaches the disk, then LazyFS dies), then remounts.
//! - Each client has at most one request in flight at the cut; it is resolved exactly:
//!   keyed orders, payments, cancellations and releases are re-sent (the answer, or the 409/404
//!   that says it was already done, tells the outcome and leaves it applied); a hold or an
//!   adjustment is looked up in the product's ledger by its id or unique reason.
//! - Then, for every client: every order it knows is readable with its model status; each
//!   product's `on_hand` and `reserved` equal the model exactly (conservation); every open
//!   hold exists (it is released with `DELETE`, which must answer 200); re-sending every keyed
//!   order returns the same order id. Anything else is a lost acknowledged change. The model
//!   is then repaired from what the server holds so later cycles stay meaningful, and the
//!   test fails at the end with every finding.
//!
//! If LazyFS cannot be built or mounted (no `/dev/fuse`, not root), the test says so loudly
//! and skips, or fails when `CI=true`.

mod common;

use bytes::Bytes;
use common::{ADMIN, order};
use godown::client::{ClientError, Conn, Response};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

/// Concurrent clients: enough for group commits of several changes, few enough for 2 cores.
const CLIENTS: usize = 8;
/// Products per client. Each client owns its products, so nothing else moves their stock
/// and its model of them is exact.
const PRODUCTS_PER_CLIENT: usize = 4;
/// The stores; client `c` uses `STORES[c % STORES.len()]` (more than one store actor).
const STORES: [&str; 2] = ["PCUT-A", "PCUT-B"];
/// Initial `on_hand` of every product: large, so that no order is ever refused for stock.
const INITIAL: i64 = 1_000_000;
/// Snapshot (and log truncation) after this many records: several times per cycle.
const SNAPSHOT_EVERY_RECORDS: &str = "300";
/// View (order archive, ledger) write-out after this many records: many times per cycle.
const VIEWS_EVERY_RECORDS: &str = "100";
/// Log segment size: small, so that segments are created and deleted (the log truncated
/// below the snapshots) many times per cycle, and power cuts land around both.
const WAL_SEGMENT_BYTES: &str = "262144";
/// Hold lifetime: far longer than the test, so no hold expires behind the model's back.
const HOLD_TTL_SECONDS: u64 = 3_600;
/// The power cut of cycle `i` comes after `KILL_AFTER_ACKS[i]` acknowledgements in that
/// cycle: small and large, so the cut falls before, during and after snapshots.
const KILL_AFTER_ACKS: [usize; 6] = [3_000, 150, 6_000, 40, 1_500, 2_500];
/// The cycle whose power cut is a torn write of the log's newest segment.
const TORN_CYCLE: usize = 4;
/// In the torn cycle, how many more acknowledgements may pass before giving up on the torn
/// write (the armed segment may be rotated away before it is written again).
const TORN_EXTRA_ACKS: usize = 1_000;
/// How many of a product's newest ledger movements are searched for an in-flight hold or
/// adjustment: after the restart nothing else has touched that client's products, so the
/// in-flight change, if applied, is among the first few.
const LEDGER_SCAN: usize = 50;
/// Bounds on waits, so that a hang fails the test instead of blocking it.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(30);
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const LOAD_TIMEOUT: Duration = Duration::from_secs(60);
const LAZYFS_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll interval of the waits above (a bounded poll, never a blind sleep for luck).
const POLL: Duration = Duration::from_millis(5);
/// The temp directory lives here, with short names below it: LazyFS reads FIFO commands in
/// 100-byte chunks, and a torn-op command carries the full path of the file to tear.
const SHORT_TMP: &str = "/tmp";
/// LazyFS reads at most this many bytes per FIFO command (`MAX_READ_CHUNK` in main.cpp),
/// the newline included.
const LAZYFS_COMMAND_MAX: usize = 100;
/// `O_NONBLOCK` on Linux: opening the command FIFO without a reader (LazyFS died) must fail
/// instead of blocking forever. (libc is not a dependency of the tests.)
const O_NONBLOCK: i32 = 0o4000;
/// Findings printed in the failure message; all of them go to this file in the temp dir.
const FINDINGS_SHOWN: usize = 40;
const FINDINGS_FILE: &str = "godown-power-cut-findings.txt";
/// The line our own FIFO reader thread stops on.
const READER_STOP: &str = "godown-test::stop";

// ---------------------------------------------------------------------------------------------
// LazyFS: build, mount, commands, unmount.
// ---------------------------------------------------------------------------------------------

/// Reports that LazyFS is unavailable: a loud message, then a panic under `CI=true`.
/// Written to the real stderr, which the test harness does not capture, so that a skip is
/// seen even without `--nocapture`.
fn lazyfs_unavailable(why: &str) {
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n==================== power_cut: SKIPPED ====================\n\
         LazyFS is not available: {why}\n\
         The power-cut test needs root, /dev/fuse and scripts/lazyfs.sh (Debian packages).\n\
         With CI=true this is a failure.\n\
         ============================================================\n"
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("power_cut: LazyFS is unavailable with CI=true: {why}");
    }
}

/// Runs `scripts/lazyfs.sh` and returns the LazyFS binary it prints on its last line.
fn build_lazyfs() -> Result<PathBuf, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lazyfs.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed with {}", script.display(), out.status));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let bin = stdout
        .lines()
        .last()
        .map(|l| PathBuf::from(l.trim()))
        .ok_or_else(|| format!("{} printed no binary path", script.display()))?;
    if !bin.is_file() {
        return Err(format!("{} is not a file", bin.display()));
    }
    Ok(bin)
}

/// True if `dir` is a mount point now, from `/proc/mounts`.
fn is_mounted(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let dir = dir.to_string_lossy();
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(dir.as_ref()))
}

/// `line` without ANSI colour sequences (`ESC [ ... letter`), as godown's log has them.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The last lines of a log file, for failure messages.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(lines).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// A mounted LazyFS: `mount` shows `root` through LazyFS's cache. Dropping it unmounts and
/// kills LazyFS, on every exit path including a panic.
struct LazyFs {
    bin: PathBuf,
    /// Holds `root`, `mount`, the FIFOs, the config and LazyFS's log.
    base: PathBuf,
    /// The directory beneath: what a disk would hold.
    root: PathBuf,
    mount: PathBuf,
    /// How many times LazyFS was started: each start gets its own FIFOs and config, so that
    /// nothing left in the old FIFOs reaches the new process or our new reader.
    starts: usize,
    /// The fault FIFO (commands) of the running LazyFS.
    fifo: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// Our read+write handle on the completion FIFO (so neither side blocks on open) and
    /// the lines LazyFS writes to it (`finished::clear-cache`), read by a thread.
    done: Option<(File, mpsc::Receiver<String>)>,
}

/// `mkfifo PATH`.
fn mkfifo(path: &Path) -> Result<(), String> {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .map_err(|e| format!("mkfifo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("mkfifo {} failed", path.display()))
    }
}

impl LazyFs {
    /// Mounts `base/m` over `base/r` (both created here).
    fn mount(bin: &Path, base: &Path) -> Result<LazyFs, String> {
        let root = base.join("r");
        let mount = base.join("m");
        for d in [&root, &mount] {
            std::fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
        }
        let mut fs = LazyFs {
            bin: bin.to_path_buf(),
            base: base.to_path_buf(),
            root,
            mount,
            starts: 0,
            fifo: PathBuf::new(),
            log: base.join("lazyfs.log"),
            child: None,
            done: None,
        };
        fs.start()?;
        Ok(fs)
    }

    /// Writes a config with fresh FIFOs, starts LazyFS and waits (bounded, polling
    /// /proc/mounts) until the mount is there.
    fn start(&mut self) -> Result<(), String> {
        self.starts += 1;
        let n = self.starts;
        self.fifo = self.base.join(format!("faults-{n}.fifo"));
        let done_fifo = self.base.join(format!("done-{n}.fifo"));
        mkfifo(&self.fifo)?;
        mkfifo(&done_fifo)?;
        let config = self.base.join(format!("lazyfs-{n}.toml"));
        // The cache must hold every unsynced byte of the test (apply_eviction=false).
        let toml = format!(
            "[faults]\nfifo_path=\"{}\"\nfifo_path_completed=\"{}\"\n\
             [cache]\napply_eviction=false\n\
             [cache.simple]\ncustom_size=\"1gb\"\nblocks_per_page=1\n\
             [filesystem]\nlog_all_operations=false\nlogfile=\"\"\n",
            self.fifo.display(),
            done_fifo.display()
        );
        std::fs::write(&config, toml).map_err(|e| format!("write {}: {e}", config.display()))?;
        // Open our end of the completion FIFO first, read+write: LazyFS opens it write-only
        // at start-up, which would block without a reader.
        let done = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&done_fifo)
            .map_err(|e| format!("open {}: {e}", done_fifo.display()))?;
        let reader = done.try_clone().map_err(|e| format!("dup fifo: {e}"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { return };
                if line == READER_STOP || tx.send(line).is_err() {
                    return;
                }
            }
        });
        self.done = Some((done, rx));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("open {}: {e}", self.log.display()))?;
        let log2 = log.try_clone().map_err(|e| format!("dup log: {e}"))?;
        let child = Command::new(&self.bin)
            .arg("-f")
            .arg(&self.mount)
            .arg("--config-path")
            .arg(&config)
            .arg("-o")
            .arg("modules=subdir")
            .arg("-o")
            .arg(format!("subdir={}", self.root.display()))
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        while !is_mounted(&self.mount) {
            if !self.is_alive() || Instant::now() >= deadline {
                let why = format!(
                    "LazyFS did not mount {} within {MOUNT_TIMEOUT:?}; its log ends:\n{}",
                    self.mount.display(),
                    log_tail(&self.log, 20)
                );
                self.unmount();
                return Err(why);
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    /// True while the LazyFS process runs (a torn-op fault kills it).
    fn is_alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Sends one command on the fault FIFO. Fails instead of blocking if LazyFS is gone.
    fn command(&self, command: &str) -> Result<(), String> {
        let line = format!("{command}\n");
        if line.len() > LAZYFS_COMMAND_MAX {
            return Err(format!(
                "LazyFS command longer than {LAZYFS_COMMAND_MAX} bytes: {command}"
            ));
        }
        let mut fifo = OpenOptions::new()
            .write(true)
            .custom_flags(O_NONBLOCK)
            .open(&self.fifo)
            .map_err(|e| format!("open {} (is LazyFS running?): {e}", self.fifo.display()))?;
        // One write of less than PIPE_BUF bytes: LazyFS reads it as one command.
        fifo.write_all(line.as_bytes())
            .map_err(|e| format!("write {command}: {e}"))
    }

    /// The power cut: drops every byte not yet fsynced, and waits until LazyFS says done.
    fn clear_cache(&self) {
        self.command("lazyfs::clear-cache")
            .unwrap_or_else(|e| panic!("power cut: {e}"));
        let (_, done) = self.done.as_ref().expect("LazyFS is mounted");
        match done.recv_timeout(LAZYFS_COMMAND_TIMEOUT) {
            Ok(line) if line == "finished::clear-cache" => {}
            other => panic!(
                "LazyFS did not confirm clear-cache ({other:?}); its log ends:\n{}",
                log_tail(&self.log, 20)
            ),
        }
    }

    /// Arms a torn write: the next write to `file` (a path under `root`) keeps only its
    /// first half on disk, and LazyFS then kills itself (everything unsynced is lost).
    fn arm_torn_write(&self, file: &Path) -> Result<(), String> {
        self.command(&format!(
            "lazyfs::torn-op::file={}::parts=2::persist=1",
            file.display()
        ))
    }

    /// Unmounts (fusermount3 -u, else umount -l) and stops LazyFS. Idempotent.
    fn unmount(&mut self) {
        if is_mounted(&self.mount) {
            let unmounted = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mount)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !unmounted {
                let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some((mut done, _)) = self.done.take() {
            // Ends our reader thread, which would otherwise wait on the FIFO forever.
            let _ = writeln!(done, "{READER_STOP}");
        }
        if is_mounted(&self.mount) {
            eprintln!(
                "power_cut: WARNING: {} is still mounted after unmount",
                self.mount.display()
            );
        }
    }

    /// After LazyFS died (torn write): unmount the dead mount and mount again over `root`.
    fn remount(&mut self) {
        self.unmount();
        self.start()
            .unwrap_or_else(|e| panic!("remounting LazyFS after the torn write: {e}"));
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// The control: an unsynced write through the mount is gone after clear-cache, a synced one
/// is kept. Without this, a passing test could mean a harness that never loses anything.
fn control_lazyfs_loses_unsynced_writes(fs: &LazyFs) {
    let unsynced = fs.mount.join("control-unsynced");
    let synced = fs.mount.join("control-synced");
    std::fs::write(&unsynced, b"lost").expect("write through the mount");
    let mut f = File::create(&synced).expect("create through the mount");
    f.write_all(b"kept").expect("write through the mount");
    f.sync_all().expect("fsync through the mount");
    drop(f);
    assert_eq!(
        std::fs::read(&unsynced).expect("read back"),
        b"lost",
        "LazyFS does not even read back a write"
    );
    fs.clear_cache();
    for dir in [&fs.mount, &fs.root] {
        let lost = std::fs::read(dir.join("control-unsynced")).expect("read after the cut");
        let kept = std::fs::read(dir.join("control-synced")).expect("read after the cut");
        assert!(
            lost.is_empty(),
            "the harness cannot see a lost write: an unsynced write survived clear-cache in {}",
            dir.display()
        );
        assert_eq!(
            kept,
            b"kept",
            "an fsynced write was lost in {}",
            dir.display()
        );
    }
    std::fs::remove_file(&unsynced).expect("remove control file");
    std::fs::remove_file(&synced).expect("remove control file");
    eprintln!("power_cut: control ok: an unsynced write is lost by clear-cache, a synced one kept");
}

/// The newest log segment (`D/wal/<20-digit first seq>.log`) under the data directory on
/// `root`, if the storage has one.
fn newest_segment(data_dir_on_root: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(data_dir_on_root.join("wal")).ok()?;
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "log")
                && p.file_stem().is_some_and(|s| {
                    s.len() == 20 && s.to_string_lossy().bytes().all(|b| b.is_ascii_digit())
                })
        })
        .max()
}

// ---------------------------------------------------------------------------------------------
// The server.
// ---------------------------------------------------------------------------------------------

/// The real `godown` binary, its stderr appended to a log file outside the mount.
struct Godown {
    child: tokio::process::Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Godown {
    /// Starts `godown serve` on 127.0.0.1:0 and waits until `/ready` answers 200.
    async fn start(data_dir: &Path, log: &Path) -> Godown {
        let log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the godown log");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_godown"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(["--snapshot-every-records", SNAPSHOT_EVERY_RECORDS])
            .args(["--views-every-records", VIEWS_EVERY_RECORDS])
            .args(["--wal-segment-bytes", WAL_SEGMENT_BYTES])
            .env("GODOWN_ADMIN_TOKEN", ADMIN)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .expect("start godown");
        let stdout = child.stdout.take().expect("godown's stdout is piped");
        let mut line = String::new();
        let read = tokio::time::timeout(
            READY_TIMEOUT,
            tokio::io::BufReader::new(stdout).read_line(&mut line),
        )
        .await;
        let addr = line
            .trim()
            .rsplit("http://")
            .next()
            .and_then(|a| a.parse().ok());
        let Some(addr) = addr.filter(|_| matches!(read, Ok(Ok(n)) if n > 0)) else {
            panic!(
                "godown printed no listening line ({line:?}); its log ends:\n{}",
                log_tail(log, 20)
            );
        };
        let mut server = Godown {
            child,
            addr,
            log: log.to_path_buf(),
        };
        server.wait_ready().await;
        server
    }

    /// Polls `/ready` until 200; fails at once if the process exits, or after the bound.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(mut c) = Conn::connect(self.addr).await
                && let Ok(r) = c.get("/ready").await
                && r.status == 200
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "godown exited during start-up ({status}); its log ends:\n{}",
                    log_tail(&self.log, 20)
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "godown not ready within {READY_TIMEOUT:?}; its log ends:\n{}",
                    log_tail(&self.log, 20)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGKILL, and wait until the process is gone (no shutdown code runs).
    async fn kill9(&mut self) {
        let _ = self.child.kill().await;
    }

    /// A new keep-alive connection to the server.
    async fn conn(&self) -> Conn {
        Conn::connect(self.addr)
            .await
            .expect("connect to godown for the checks")
    }
}

/// One request with the admin token (payments, cancels, adjustments and ledgers need it;
/// the others accept it).
async fn call(
    conn: &mut Conn,
    method: &str,
    path: &str,
    body: Option<&Value>,
    idempotency_key: Option<&str>,
) -> Result<Response, ClientError> {
    let auth = format!("Bearer {ADMIN}");
    let mut headers = vec![("authorization", auth.as_str())];
    if let Some(key) = idempotency_key {
        headers.push(("idempotency-key", key));
    }
    conn.send(
        method,
        path,
        &headers,
        body.map(|b| Bytes::from(b.to_string())),
    )
    .await
}

/// [`call`] during the checks, where the server must answer.
async fn must_call(
    conn: &mut Conn,
    method: &str,
    path: &str,
    body: Option<&Value>,
    idempotency_key: Option<&str>,
) -> Response {
    call(conn, method, path, body, idempotency_key)
        .await
        .unwrap_or_else(|e| {
            panic!("godown stopped answering during the checks ({method} {path}): {e}")
        })
}

// ---------------------------------------------------------------------------------------------
// The model: what each client knows the server has acknowledged.
// ---------------------------------------------------------------------------------------------

/// Order lines: (index of the client's product, whole pieces).
type Lines = Vec<(usize, i64)>;

/// An order's status (the API's `status`; `expired` cannot happen within the test).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    PendingPayment,
    Confirmed,
    Cancelled,
    PaymentFailed,
}

impl Status {
    /// From the API's spelling.
    fn parse(s: &str) -> Option<Status> {
        match s {
            "pending_payment" => Some(Status::PendingPayment),
            "confirmed" => Some(Status::Confirmed),
            "cancelled" => Some(Status::Cancelled),
            "payment_failed" => Some(Status::PaymentFailed),
            _ => None,
        }
    }
}

/// An order the client knows is applied (acknowledged, or found applied after a cut).
#[derive(Clone, Debug)]
struct OrderRec {
    id: String,
    key: String,
    body: Value,
    lines: Lines,
    status: Status,
    /// The server no longer has it (a lost write, already reported): not checked again.
    gone: bool,
    /// Re-sending `key` must answer with `id` (false for a duplicate a failed retry made).
    owns_key: bool,
}

/// An HTTP request for an [`Op`].
struct Request<'a> {
    method: &'static str,
    path: String,
    body: Option<Value>,
    key: Option<&'a str>,
    /// The status of an acknowledgement: 201 for a hold, 200 otherwise.
    expect: u16,
}

/// One change a client asks for.
#[derive(Clone, Debug)]
enum Op {
    /// A cod or upi order with an `Idempotency-Key`, possibly converting an open hold.
    Order {
        key: String,
        body: Value,
        lines: Lines,
        upi: bool,
        hold: Option<String>,
    },
    /// The payment callback of a pending order (`order` indexes `Client::orders`).
    Pay { order: usize, succeeded: bool },
    /// Cancels a pending or confirmed order (`order` indexes `Client::orders`).
    Cancel { order: usize },
    /// A cart hold of [`HOLD_TTL_SECONDS`].
    Hold { lines: Lines },
    /// Releases an open hold.
    Release { hold: String },
    /// A stock adjustment; `reason` is unique, so the ledger tells whether it was applied.
    Adjust {
        product: usize,
        delta: i64,
        reason: String,
    },
}

impl Op {
    /// A short name for messages.
    fn kind(&self) -> &'static str {
        match self {
            Op::Order { upi: false, .. } => "cod order",
            Op::Order { upi: true, .. } => "upi order",
            Op::Pay { .. } => "payment",
            Op::Cancel { .. } => "cancel",
            Op::Hold { .. } => "hold",
            Op::Release { .. } => "release",
            Op::Adjust { .. } => "adjustment",
        }
    }
}

/// What a cycle's checks found for one client (summed over clients for the summary).
#[derive(Default, Debug)]
struct Findings {
    /// Changes answered 200/201 during the load.
    acknowledged: usize,
    /// Requests without an answer at the cut (at most one per client).
    in_flight: usize,
    /// Of those, found applied before the cut (payments, cancels, holds, releases,
    /// adjustments; an order re-sent with its key cannot tell, see the next one).
    in_flight_applied: usize,
    /// Of those, keyed orders re-sent: now applied exactly once either way.
    in_flight_resent_orders: usize,
    /// Acknowledged orders that are not there (404) or whose id names another order.
    lost_orders: usize,
    /// Of `lost_orders`: the id now names a different order (the id was handed out again).
    reused_ids: usize,
    /// Orders whose status is not the acknowledged one (a lost payment or cancel).
    wrong_status: usize,
    /// Acknowledged open holds that `DELETE` does not find.
    lost_holds: usize,
    /// Re-sent keyed orders answered with another order than the acknowledged one.
    retry_mismatch: usize,
    /// Products whose on_hand or reserved differs from the acknowledged changes.
    stock_off: usize,
    /// Anything else unexpected (refusals, answers that contradict the model).
    other: usize,
    /// One line per finding.
    details: Vec<String>,
}

impl Findings {
    /// Acknowledged changes found missing.
    fn lost(&self) -> usize {
        self.lost_orders + self.wrong_status + self.lost_holds + self.retry_mismatch
    }

    /// Everything that fails the test.
    fn failures(&self) -> usize {
        self.lost() + self.stock_off + self.other
    }

    /// Sums another client's findings into these.
    fn add(&mut self, o: Findings) {
        self.acknowledged += o.acknowledged;
        self.in_flight += o.in_flight;
        self.in_flight_applied += o.in_flight_applied;
        self.in_flight_resent_orders += o.in_flight_resent_orders;
        self.lost_orders += o.lost_orders;
        self.reused_ids += o.reused_ids;
        self.wrong_status += o.wrong_status;
        self.lost_holds += o.lost_holds;
        self.retry_mismatch += o.retry_mismatch;
        self.stock_off += o.stock_off;
        self.other += o.other;
        self.details.extend(o.details);
    }
}

/// One client: its products, its model of their stock, its orders and open holds, and the
/// one request it may have in flight.
struct Client {
    index: usize,
    store: &'static str,
    /// This client's product ids; nothing else touches them.
    products: Vec<String>,
    /// The model's `on_hand` and `reserved` per product, from every applied change.
    on_hand: Vec<i64>,
    reserved: Vec<i64>,
    /// Every order this client has placed that was applied (never removed: see `gone`).
    orders: Vec<OrderRec>,
    /// Open holds: id → lines.
    holds: BTreeMap<String, Lines>,
    /// Every hold id this client has ever seen applied (to spot the in-flight one).
    known_holds: HashSet<String>,
    /// The request sent without an answer yet (at most one: a client waits for each).
    in_flight: Option<Op>,
    /// Seeded per client: the mix is the same on every run, the cut points are not.
    rng: fastrand::Rng,
    /// Numbers idempotency keys and adjustment reasons (unique per client, across cycles).
    seq: u64,
    findings: Findings,
}

impl Client {
    /// Client `index` with its products at [`INITIAL`] (as [`create_catalogue`] makes them).
    fn new(index: usize) -> Client {
        Client {
            index,
            store: STORES[index % STORES.len()],
            products: (0..PRODUCTS_PER_CLIENT)
                .map(|p| format!("C{index}P{p}"))
                .collect(),
            on_hand: vec![INITIAL; PRODUCTS_PER_CLIENT],
            reserved: vec![0; PRODUCTS_PER_CLIENT],
            orders: Vec::new(),
            holds: BTreeMap::new(),
            known_holds: HashSet::new(),
            in_flight: None,
            rng: fastrand::Rng::with_seed(0x90d0 + index as u64),
            seq: 0,
            findings: Findings::default(),
        }
    }

    /// Records one finding.
    fn note(&mut self, what: String) {
        self.findings
            .details
            .push(format!("client {}: {what}", self.index));
    }

    /// 1 to 3 distinct products of this client, 1 to 3 pieces each.
    fn random_lines(&mut self) -> Lines {
        let mut products: Vec<usize> = (0..PRODUCTS_PER_CLIENT).collect();
        self.rng.shuffle(&mut products);
        let count = self.rng.usize(1..=3);
        products[..count]
            .iter()
            .map(|&p| (p, self.rng.i64(1..=3)))
            .collect()
    }

    /// The `items` of an order or hold body.
    fn items_json(&self, lines: &Lines) -> Value {
        Value::Array(
            lines
                .iter()
                .map(|&(p, q)| json!({"product_id": self.products[p], "quantity": q}))
                .collect(),
        )
    }

    /// A keyed order of `lines`, cod or upi, from `hold` if given.
    fn new_order(&mut self, lines: Lines, upi: bool, hold: Option<String>) -> Op {
        let mut body = order(self.store, &[]);
        body["items"] = self.items_json(&lines);
        body["payment_method"] = json!(if upi { "upi" } else { "cod" });
        if let Some(h) = &hold {
            body["reservation_id"] = json!(h);
        }
        Op::Order {
            key: format!("pcut-c{}-n{}", self.index, self.seq),
            body,
            lines,
            upi,
            hold,
        }
    }

    /// Picks the next change: a mix weighted towards orders, always valid for the model.
    fn next_op(&mut self) -> Op {
        self.seq += 1;
        let live = |want: &[Status], orders: &[OrderRec]| -> Vec<usize> {
            (0..orders.len())
                .filter(|&i| !orders[i].gone && want.contains(&orders[i].status))
                .collect()
        };
        let pending = live(&[Status::PendingPayment], &self.orders);
        let cancellable = live(&[Status::PendingPayment, Status::Confirmed], &self.orders);
        let hold = (!self.holds.is_empty()).then(|| {
            let i = self.rng.usize(0..self.holds.len());
            self.holds.keys().nth(i).cloned().expect("index in range")
        });
        match self.rng.u32(0..100) {
            0..30 => {
                let lines = self.random_lines();
                self.new_order(lines, false, None)
            }
            30..42 => {
                let lines = self.random_lines();
                self.new_order(lines, true, None)
            }
            42..54 if !pending.is_empty() => Op::Pay {
                order: pending[self.rng.usize(0..pending.len())],
                succeeded: self.rng.u32(0..10) < 7,
            },
            54..60 if !cancellable.is_empty() => Op::Cancel {
                order: cancellable[self.rng.usize(0..cancellable.len())],
            },
            60..74 => Op::Hold {
                lines: self.random_lines(),
            },
            74..80 if hold.is_some() => Op::Release {
                hold: hold.expect("checked"),
            },
            80..88 if hold.is_some() => {
                let hold = hold.expect("checked");
                let lines = self.holds[&hold].clone();
                let upi = self.rng.bool();
                self.new_order(lines, upi, Some(hold))
            }
            88..100 => {
                let delta = self.rng.i64(1..=20) * if self.rng.bool() { 1 } else { -1 };
                Op::Adjust {
                    product: self.rng.usize(0..PRODUCTS_PER_CLIENT),
                    delta,
                    reason: format!("pcut c{} n{}", self.index, self.seq),
                }
            }
            _ => {
                let lines = self.random_lines();
                self.new_order(lines, false, None)
            }
        }
    }

    /// Sends `op` once. `Ok(Some(body))`: acknowledged; `Ok(None)`: refused, not applied;
    /// `Err`: unknown (no answer, or a 5xx).
    async fn send(&mut self, conn: &mut Conn, op: &Op) -> Result<Option<Value>, String> {
        let req = self.request(op);
        let r = call(conn, req.method, &req.path, req.body.as_ref(), req.key)
            .await
            .map_err(|e| e.to_string())?;
        if r.status == req.expect {
            return Ok(Some(r.json()));
        }
        if r.status >= 500 {
            return Err(format!("{} {:?}", r.status, r.json()));
        }
        let what = format!(
            "{} {} refused: {} {}",
            op.kind(),
            req.path,
            r.status,
            r.json()
        );
        self.note(what);
        self.findings.other += 1;
        Ok(None)
    }

    /// The HTTP request for `op`.
    fn request<'a>(&self, op: &'a Op) -> Request<'a> {
        let store = self.store;
        let (method, path, body, key, expect) = match op {
            Op::Order { key, body, .. } => (
                "POST",
                "/api/v1/orders/".to_string(),
                Some(body.clone()),
                Some(key.as_str()),
                200,
            ),
            Op::Pay { order, succeeded } => (
                "POST",
                format!("/api/v1/orders/{}/payment", self.orders[*order].id),
                Some(json!({
                    "status": if *succeeded { "succeeded" } else { "failed" },
                    "reference": format!("UPI-{}", self.orders[*order].id),
                })),
                None,
                200,
            ),
            Op::Cancel { order } => (
                "POST",
                format!("/api/v1/orders/{}/cancel", self.orders[*order].id),
                Some(json!({"reason": "power cut test"})),
                None,
                200,
            ),
            Op::Hold { lines } => (
                "POST",
                format!("/api/v1/stores/{store}/reservations"),
                Some(json!({"items": self.items_json(lines), "ttl_seconds": HOLD_TTL_SECONDS})),
                None,
                201,
            ),
            Op::Release { hold } => (
                "DELETE",
                format!("/api/v1/stores/{store}/reservations/{hold}"),
                None,
                None,
                200,
            ),
            Op::Adjust {
                product,
                delta,
                reason,
            } => (
                "POST",
                format!(
                    "/api/v1/inventory/products/{store}/{}/adjustments",
                    self.products[*product]
                ),
                Some(json!({"quantity_change": delta, "reason": reason})),
                None,
                200,
            ),
        };
        Request {
            method,
            path,
            body,
            key,
            expect,
        }
    }

    /// Sends a request during the checks, where the server must answer.
    async fn must_send(conn: &mut Conn, r: &Request<'_>) -> Response {
        must_call(conn, r.method, &r.path, r.body.as_ref(), r.key).await
    }

    /// Applies an applied change to the model; `answer` is the server's body (checked where
    /// it says something the model knows), or Null when the change was found in the ledger.
    fn apply(&mut self, op: &Op, answer: &Value) {
        match op {
            Op::Order {
                key,
                body,
                lines,
                upi,
                hold,
            } => {
                let want = if *upi { "pending_payment" } else { "confirmed" };
                if answer["status"] != want {
                    self.note(format!(
                        "order {key} answered status {} not {want}",
                        answer["status"]
                    ));
                    self.findings.other += 1;
                }
                let Some(id) = answer["order_id"].as_str() else {
                    self.note(format!("order {key} answered without order_id: {answer}"));
                    self.findings.other += 1;
                    return;
                };
                for &(p, q) in lines {
                    match (upi, hold.is_some()) {
                        (false, false) => self.on_hand[p] -= q,
                        (false, true) => {
                            self.on_hand[p] -= q;
                            self.reserved[p] -= q;
                        }
                        (true, false) => self.reserved[p] += q,
                        (true, true) => {} // the held units stay reserved until payment
                    }
                }
                if let Some(h) = hold {
                    self.holds.remove(h);
                }
                self.orders.push(OrderRec {
                    id: id.to_string(),
                    key: key.clone(),
                    body: body.clone(),
                    lines: lines.clone(),
                    status: if *upi {
                        Status::PendingPayment
                    } else {
                        Status::Confirmed
                    },
                    gone: false,
                    owns_key: true,
                });
            }
            Op::Pay { order, succeeded } => {
                let o = &mut self.orders[*order];
                for &(p, q) in &o.lines {
                    self.reserved[p] -= q;
                    if *succeeded {
                        self.on_hand[p] -= q;
                    }
                }
                o.status = if *succeeded {
                    Status::Confirmed
                } else {
                    Status::PaymentFailed
                };
            }
            Op::Cancel { order } => {
                let o = &mut self.orders[*order];
                for &(p, q) in &o.lines {
                    match o.status {
                        Status::PendingPayment => self.reserved[p] -= q,
                        Status::Confirmed => self.on_hand[p] += q,
                        Status::Cancelled | Status::PaymentFailed => {}
                    }
                }
                o.status = Status::Cancelled;
            }
            Op::Hold { lines } => {
                let Some(id) = answer["reservation_id"].as_str() else {
                    self.note(format!("hold answered without reservation_id: {answer}"));
                    self.findings.other += 1;
                    return;
                };
                for &(p, q) in lines {
                    self.reserved[p] += q;
                }
                self.holds.insert(id.to_string(), lines.clone());
                self.known_holds.insert(id.to_string());
            }
            Op::Release { hold } => {
                if let Some(lines) = self.holds.remove(hold) {
                    for (p, q) in lines {
                        self.reserved[p] -= q;
                    }
                }
            }
            Op::Adjust { product, delta, .. } => {
                if let Some(previous) = answer["previous_stock"].as_i64()
                    && previous != self.on_hand[*product]
                {
                    let what = format!(
                        "adjustment of {} saw on_hand {previous}, the model has {}",
                        self.products[*product], self.on_hand[*product]
                    );
                    self.note(what);
                    self.findings.other += 1;
                }
                self.on_hand[*product] += delta;
            }
        }
    }

    /// The load: changes one after another until the server stops answering.
    async fn run(mut self, addr: SocketAddr, acks: Arc<AtomicUsize>) -> Client {
        let Ok(mut conn) = Conn::connect(addr).await else {
            return self;
        };
        loop {
            let op = self.next_op();
            self.in_flight = Some(op.clone());
            match self.send(&mut conn, &op).await {
                Ok(Some(answer)) => {
                    self.apply(&op, &answer);
                    self.in_flight = None;
                    self.findings.acknowledged += 1;
                    acks.fetch_add(1, Ordering::AcqRel);
                }
                Ok(None) => {
                    // Refused (already reported): not applied; stop, the model may be off.
                    self.in_flight = None;
                    return self;
                }
                Err(_) => return self, // no answer: the cut; `op` stays in flight
            }
        }
    }

    /// The newest ledger movements of one of this client's products.
    async fn ledger(&self, conn: &mut Conn, product: usize) -> Vec<Value> {
        let path = format!(
            "/api/v1/inventory/products/{}/{}/movements?limit={LEDGER_SCAN}",
            self.store, self.products[product]
        );
        let r = must_call(conn, "GET", &path, None, None).await;
        assert_eq!(r.status, 200, "GET {path}: {:?}", r.json());
        r.json()["items"].as_array().cloned().unwrap_or_default()
    }

    /// Learns whether the request in flight at the cut was applied, and leaves the model
    /// and the server agreeing on it (re-sending what can be re-sent safely).
    async fn resolve_in_flight(&mut self, conn: &mut Conn) {
        let Some(op) = self.in_flight.take() else {
            return;
        };
        self.findings.in_flight += 1;
        match &op {
            Op::Order { key, .. } => {
                // Same key, same body: the first answer if it was applied, else applied now.
                let r = Self::must_send(conn, &self.request(&op)).await;
                if r.status == 200 {
                    self.findings.in_flight_resent_orders += 1;
                    self.apply(&op, &r.json());
                } else {
                    self.note(format!(
                        "re-sent in-flight order {key}: {} {}",
                        r.status,
                        r.json()
                    ));
                    self.findings.other += 1;
                }
            }
            Op::Pay { order, succeeded } => {
                let want = if *succeeded {
                    "confirmed"
                } else {
                    "payment_failed"
                };
                self.resend_transition(conn, &op, *order, want, "Order not payable")
                    .await;
            }
            Op::Cancel { order } => {
                self.resend_transition(conn, &op, *order, "cancelled", "Order not cancellable")
                    .await;
            }
            Op::Release { hold } => {
                let r = Self::must_send(conn, &self.request(&op)).await;
                match r.status {
                    200 => {}
                    404 => self.findings.in_flight_applied += 1,
                    s => {
                        self.note(format!("re-sent release of {hold}: {s} {}", r.json()));
                        self.findings.other += 1;
                    }
                }
                self.apply(&op, &Value::Null);
            }
            Op::Hold { lines } => {
                let first = lines[0].0;
                let found = self.ledger(conn, first).await.into_iter().find_map(|m| {
                    let reference = m["reference"].as_str()?;
                    (m["kind"] == "reservation"
                        && reference.starts_with("RSV")
                        && !self.known_holds.contains(reference))
                    .then(|| reference.to_string())
                });
                if let Some(id) = found {
                    self.findings.in_flight_applied += 1;
                    self.apply(&op, &json!({ "reservation_id": id }));
                }
            }
            Op::Adjust {
                product, reason, ..
            } => {
                let applied = self
                    .ledger(conn, *product)
                    .await
                    .iter()
                    .any(|m| m["kind"] == "adjustment" && m["reference"] == reason.as_str());
                if applied {
                    self.findings.in_flight_applied += 1;
                    self.apply(&op, &Value::Null);
                }
            }
        }
    }

    /// Re-sends a payment or cancel: 200 (applied now) or 409 `conflict` with the target
    /// status (it was applied before the cut) both leave it applied.
    async fn resend_transition(
        &mut self,
        conn: &mut Conn,
        op: &Op,
        order: usize,
        want: &str,
        conflict: &str,
    ) {
        let r = Self::must_send(conn, &self.request(op)).await;
        let answer = r.json();
        match r.status {
            200 if answer["status"] == want => self.apply(op, &answer),
            409 if answer["error"] == conflict && answer["status"] == want => {
                self.findings.in_flight_applied += 1;
                self.apply(op, &answer);
            }
            s => {
                let id = self.orders[order].id.clone();
                self.note(format!("re-sent {} of {id}: {s} {answer}", op.kind()));
                self.findings.other += 1;
            }
        }
    }

    /// Reads one product's (on_hand, reserved).
    async fn stock(&self, conn: &mut Conn, product: usize) -> Option<(i64, i64)> {
        let path = format!(
            "/api/v1/inventory/products/{}/{}",
            self.store, self.products[product]
        );
        let r = must_call(conn, "GET", &path, None, None).await;
        let v = r.json();
        (r.status == 200).then(|| {
            (
                v["on_hand"].as_i64().unwrap_or(-1),
                v["reserved"].as_i64().unwrap_or(-1),
            )
        })
    }

    /// The model's own invariant: reserved = open holds + unpaid orders. A failure here is a
    /// bug of this test, not of godown.
    fn assert_model_consistent(&self) {
        let mut reserved = vec![0; PRODUCTS_PER_CLIENT];
        for lines in self.holds.values() {
            for &(p, q) in lines {
                reserved[p] += q;
            }
        }
        for o in self
            .orders
            .iter()
            .filter(|o| !o.gone && o.status == Status::PendingPayment)
        {
            for &(p, q) in &o.lines {
                reserved[p] += q;
            }
        }
        assert_eq!(
            reserved, self.reserved,
            "harness bug: client {}'s model of reserved units is inconsistent",
            self.index
        );
    }

    /// After a restart: resolves the request in flight, then checks every order, the stock,
    /// the holds and the retries against the model; repairs the model from the server.
    async fn check(mut self, addr: SocketAddr) -> Client {
        let mut conn = Conn::connect(addr)
            .await
            .expect("connect to godown for the checks");
        self.resolve_in_flight(&mut conn).await;
        // Every order the model has is there, with its status and its lines.
        for i in 0..self.orders.len() {
            if self.orders[i].gone {
                continue;
            }
            let id = self.orders[i].id.clone();
            let r = must_call(
                &mut conn,
                "GET",
                &format!("/api/v1/orders/{id}"),
                None,
                None,
            )
            .await;
            if r.status == 404 {
                self.findings.lost_orders += 1;
                self.note(format!("acknowledged order {id} is lost (404)"));
                self.orders[i].gone = true;
                continue;
            }
            let v = r.json();
            let status = v["status"].as_str().and_then(Status::parse);
            if r.status != 200 || status.is_none() {
                self.findings.other += 1;
                self.note(format!("GET order {id}: {} {v}", r.status));
                continue;
            }
            let items: Vec<(String, i64)> = v["items"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|i| {
                            let p = i["product_id"].as_str().unwrap_or("?").to_string();
                            (p, i["quantity"].as_i64().unwrap_or(-1))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let want: Vec<(String, i64)> = self.orders[i]
                .lines
                .iter()
                .map(|&(p, q)| (self.products[p].clone(), q))
                .collect();
            if items != want {
                // The acknowledged order is gone and its id was given to another order.
                self.findings.lost_orders += 1;
                self.findings.reused_ids += 1;
                self.note(format!(
                    "acknowledged order {id} is lost: its id now names another order, with \
                     items {items:?} instead of {want:?}"
                ));
                self.orders[i].gone = true;
                continue;
            }
            let status = status.expect("checked");
            if status != self.orders[i].status {
                self.findings.wrong_status += 1;
                self.note(format!(
                    "order {id} is {status:?}, acknowledged as {:?}",
                    self.orders[i].status
                ));
                self.orders[i].status = status;
            }
        }
        // Conservation, exactly: on_hand and reserved of every product equal the model.
        let mut flagged = [false; PRODUCTS_PER_CLIENT];
        for (p, flag) in flagged.iter_mut().enumerate() {
            let want = (self.on_hand[p], self.reserved[p]);
            match self.stock(&mut conn, p).await {
                Some(got) if got == want => {}
                got => {
                    *flag = true;
                    self.findings.stock_off += 1;
                    self.note(format!(
                        "{}: (on_hand, reserved) = {got:?}, acknowledged changes give {want:?}",
                        self.products[p]
                    ));
                }
            }
        }
        // Every open hold exists: releasing it must answer 200.
        let holds: Vec<String> = self.holds.keys().cloned().collect();
        for hold in holds {
            let op = Op::Release { hold: hold.clone() };
            let r = Self::must_send(&mut conn, &self.request(&op)).await;
            if r.status != 200 {
                self.findings.lost_holds += 1;
                self.note(format!("acknowledged hold {hold} is lost ({})", r.status));
            }
            self.apply(&op, &Value::Null);
        }
        // Re-sending every keyed order returns the same order (and changes nothing).
        for i in 0..self.orders.len() {
            let o = &self.orders[i];
            if o.gone || !o.owns_key {
                continue;
            }
            let (key, body, id) = (o.key.clone(), o.body.clone(), o.id.clone());
            let r = must_call(
                &mut conn,
                "POST",
                "/api/v1/orders/",
                Some(&body),
                Some(&key),
            )
            .await;
            let v = r.json();
            if r.status == 200 && v["order_id"] == id.as_str() {
                continue;
            }
            self.findings.retry_mismatch += 1;
            self.note(format!(
                "retry of {key} answered {} {v}, not order {id}",
                r.status
            ));
            if r.status == 200
                && let Some(new_id) = v["order_id"].as_str()
            {
                // The retry made a second order: track it (the stock is re-read below).
                let mut twin = self.orders[i].clone();
                twin.id = new_id.to_string();
                twin.owns_key = false;
                twin.status = if v["status"] == "pending_payment" {
                    Status::PendingPayment
                } else {
                    Status::Confirmed
                };
                self.orders.push(twin);
            }
        }
        // Repair: from here on the model is what the server holds.
        for (p, flagged) in flagged.into_iter().enumerate() {
            let want = (self.on_hand[p], self.reserved[p]);
            match self.stock(&mut conn, p).await {
                Some(got) => {
                    if got != want && !flagged {
                        self.findings.stock_off += 1;
                        self.note(format!(
                            "{}: (on_hand, reserved) = {got:?} after the checks, the model has {want:?}",
                            self.products[p]
                        ));
                    }
                    (self.on_hand[p], self.reserved[p]) = got;
                }
                None => panic!(
                    "client {}: the acknowledged product {} is gone (a lost catalogue write): \
                     the model cannot be repaired",
                    self.index, self.products[p]
                ),
            }
        }
        // After a loss the server's reserved units are adopted as they are (they may not
        // add up to the model's holds and orders); without one, the model must add up.
        if self.findings.failures() == 0 {
            self.assert_model_consistent();
        }
        self
    }
}

// ---------------------------------------------------------------------------------------------
// The test.
// ---------------------------------------------------------------------------------------------

/// Creates the stores and every client's products with [`INITIAL`] pieces.
async fn create_catalogue(server: &Godown, clients: &[Client]) {
    let mut conn = server.conn().await;
    for store in STORES {
        let r = must_call(
            &mut conn,
            "PUT",
            &format!("/api/v1/stores/{store}"),
            Some(&json!({"name": format!("Store {store}")})),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "PUT store {store}: {:?}", r.json());
    }
    for c in clients {
        for p in &c.products {
            let body = json!({"product_name": format!("Product {p}"), "unit": "pieces", "unit_price": 10, "stock": INITIAL});
            let path = format!("/api/v1/inventory/products/{}/{p}", c.store);
            let r = must_call(&mut conn, "PUT", &path, Some(&body), None).await;
            assert_eq!(r.status, 200, "PUT {path}: {:?}", r.json());
        }
    }
}

/// Runs the clients until `target` acknowledgements in this cycle, then cuts the power:
/// `kill -9` and clear-cache, or in the torn cycle a torn write of the newest log segment.
/// Returns the clients (with their in-flight request) and a note on how the cut went.
async fn load_then_cut(
    server: &mut Godown,
    fs: &mut LazyFs,
    data_dir_on_root: &Path,
    clients: Vec<Client>,
    target: usize,
    torn: bool,
) -> (Vec<Client>, String) {
    let acks = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(c.run(server.addr, acks.clone())))
        .collect();
    let all_stopped =
        |tasks: &[tokio::task::JoinHandle<Client>]| tasks.iter().all(|t| t.is_finished());
    let deadline = Instant::now() + LOAD_TIMEOUT;
    while acks.load(Ordering::Acquire) < target && !all_stopped(&tasks) {
        assert!(
            Instant::now() < deadline,
            "{target} acknowledgements not reached in {LOAD_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut how = String::from("kill -9 + clear-cache");
    if torn {
        // Arm a torn write on the newest segment; re-arm if a newer one appears, until
        // LazyFS dies of it or the bound passes.
        let mut armed: Option<PathBuf> = None;
        let until = acks.load(Ordering::Acquire) + TORN_EXTRA_ACKS;
        while fs.is_alive() && acks.load(Ordering::Acquire) < until && !all_stopped(&tasks) {
            assert!(
                Instant::now() < deadline,
                "the torn write did not happen within {LOAD_TIMEOUT:?}"
            );
            if let Some(segment) = newest_segment(data_dir_on_root)
                && armed.as_ref() != Some(&segment)
            {
                fs.arm_torn_write(&segment)
                    .unwrap_or_else(|e| panic!("arming the torn write: {e}"));
                armed = Some(segment);
            }
            if armed.is_none() {
                break; // no segment files: the storage before the segment log
            }
            tokio::time::sleep(POLL).await;
        }
        how = match &armed {
            None => format!(
                "no {}/wal/<seq>.log segment (storage without the segment log): the torn write \
                 was not armed; kill -9 + clear-cache",
                data_dir_on_root.display()
            ),
            Some(s) if !fs.is_alive() => format!(
                "torn write of {} (half of it on disk, LazyFS died), kill -9, remount",
                s.file_name().unwrap_or_default().to_string_lossy()
            ),
            Some(s) => format!(
                "the torn write of {} did not happen within {TORN_EXTRA_ACKS} acks: kill -9 + clear-cache",
                s.file_name().unwrap_or_default().to_string_lossy()
            ),
        };
    }
    server.kill9().await;
    if fs.is_alive() {
        fs.clear_cache();
    } else {
        fs.remount();
    }
    let mut clients = Vec::with_capacity(CLIENTS);
    for t in tasks {
        clients.push(t.await.expect("a client task panicked"));
    }
    (clients, how)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_changes_survive_power_cuts() {
    let started = Instant::now();
    let bin = match build_lazyfs() {
        Ok(bin) => bin,
        Err(why) => return lazyfs_unavailable(&why),
    };
    // Drop order matters: the server dies first, then LazyFS unmounts, then the directory
    // goes (they are declared in the opposite order).
    // GODOWN_KEEP_TEST_DIRS keeps it (godown's and LazyFS's logs, the data under r/).
    let keep = std::env::var_os("GODOWN_KEEP_TEST_DIRS").is_some();
    let base = tempfile::Builder::new()
        .prefix("gpc")
        .disable_cleanup(keep)
        .tempdir_in(SHORT_TMP)
        .expect("temp dir for the LazyFS mount");
    if keep {
        eprintln!("power_cut: keeping {}", base.path().display());
    }
    let mut fs = match LazyFs::mount(&bin, base.path()) {
        Ok(fs) => fs,
        Err(why) => return lazyfs_unavailable(&why),
    };
    control_lazyfs_loses_unsynced_writes(&fs);

    let data_dir = fs.mount.join("db");
    let data_dir_on_root = fs.root.join("db");
    let mut clients: Vec<Client> = (0..CLIENTS).map(Client::new).collect();
    let log = |cycle: usize| base.path().join(format!("godown-{cycle}.log"));
    let mut server = Godown::start(&data_dir, &log(0)).await;
    create_catalogue(&server, &clients).await;

    let mut total = Findings::default();
    for (cycle, &target) in KILL_AFTER_ACKS.iter().enumerate() {
        let cycle_started = Instant::now();
        for c in &mut clients {
            c.findings = Findings::default();
        }
        let torn = cycle == TORN_CYCLE;
        let (cut, how) = load_then_cut(
            &mut server,
            &mut fs,
            &data_dir_on_root,
            clients,
            target,
            torn,
        )
        .await;
        server = Godown::start(&data_dir, &log(cycle + 1)).await;
        let checks: Vec<_> = cut
            .into_iter()
            .map(|c| tokio::spawn(c.check(server.addr)))
            .collect();
        clients = Vec::with_capacity(CLIENTS);
        let mut found = Findings::default();
        for t in checks {
            let mut c = t.await.expect("a client's checks panicked");
            found.add(std::mem::take(&mut c.findings));
            clients.push(c);
        }
        for d in &mut found.details {
            d.insert_str(0, &format!("cycle {cycle}: "));
        }
        if torn {
            // Informational: how the restart reported the torn tail (the wording is godown's).
            let log = std::fs::read_to_string(log(cycle + 1)).unwrap_or_default();
            let warning = log.lines().find(|l| {
                let l = l.to_lowercase();
                l.contains("warn")
                    && ["torn", "damaged", "cut short"]
                        .iter()
                        .any(|w| l.contains(w))
            });
            eprintln!(
                "power_cut: cycle {cycle}: {how}; the restart logged: {}",
                warning.map_or("no torn-tail warning".into(), strip_ansi)
            );
        }
        eprintln!(
            "power_cut: cycle {cycle} (cut after {target} acks{}): acknowledged {}, in flight {} \
             (applied before the cut {}, keyed orders re-sent {}), LOST {} (orders {} of which ids \
             reused {}, statuses {}, holds {}, retries {}), stock off on {}/{} products, other {}, \
             {:.1} s",
            if torn { ", torn" } else { "" },
            found.acknowledged,
            found.in_flight,
            found.in_flight_applied,
            found.in_flight_resent_orders,
            found.lost(),
            found.lost_orders,
            found.reused_ids,
            found.wrong_status,
            found.lost_holds,
            found.retry_mismatch,
            found.stock_off,
            CLIENTS * PRODUCTS_PER_CLIENT,
            found.other,
            cycle_started.elapsed().as_secs_f64()
        );
        total.add(found);
    }
    server.kill9().await;
    let first_segment = data_dir_on_root.join("wal").join(format!("{:020}.log", 1));
    assert!(
        !first_segment.exists(),
        "the log was never truncated, so no cut landed near a truncation"
    );
    eprintln!(
        "power_cut: {} cycles in {:.1} s: acknowledged {}, lost {}, stock off {}, other {}",
        KILL_AFTER_ACKS.len(),
        started.elapsed().as_secs_f64(),
        total.acknowledged,
        total.lost(),
        total.stock_off,
        total.other
    );
    if total.failures() > 0 {
        let all = std::env::temp_dir().join(FINDINGS_FILE);
        let saved = match std::fs::write(&all, total.details.join("\n") + "\n") {
            Ok(()) => format!("all {} in {}", total.details.len(), all.display()),
            Err(e) => format!("could not write them to {}: {e}", all.display()),
        };
        let shown: Vec<&str> = total
            .details
            .iter()
            .take(FINDINGS_SHOWN)
            .map(|s| s.as_str())
            .collect();
        panic!(
            "acknowledged changes did not survive a power cut: {} lost ({} orders, {} statuses, \
             {} holds, {} retries), stock off {} times, {} other findings ({saved}); the first \
             {}:\n{}",
            total.lost(),
            total.lost_orders,
            total.wrong_status,
            total.lost_holds,
            total.retry_mismatch,
            total.stock_off,
            total.other,
            shown.len(),
            shown.join("\n")
        );
    }
}
