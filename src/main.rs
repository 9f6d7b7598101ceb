//! The `godown` command line: `serve`, `verify`, `load`, `import`, `export`.

use clap::{Parser, Subcommand};
use godown::wal::{Durability, Storage, recovery};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// glibc's allocator serialises on its arena locks when one thread frees what another
/// allocated (every request crosses from an HTTP worker to a store actor and back).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "godown",
    version,
    about = "Inventory and order engine for kirana stores"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// Log lines as text, or one JSON object per line (for a log shipper).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs go to stderr, filtered by `GODOWN_LOG` (default `info`); a request's lines carry
/// its id (the `request` span).
fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GODOWN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().with_current_span(true).init(),
    }
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Write the nginx configuration for a nodes file (to --out, or standard output).
    Nginx {
        /// JSON: {"listen": "127.0.0.1:8080", "nodes": [{"name", "addr", "stores": [...]}]}.
        #[arg(long)]
        nodes: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Move a store to another node while it takes orders, then pin it there in the nodes
    /// file, rewrite nginx's configuration (--nginx-conf) and reload nginx (--nginx-pid).
    /// Prints what it moved and the cutover time as JSON. Uses GODOWN_ADMIN_TOKEN.
    Move {
        #[arg(long)]
        nodes: PathBuf,
        #[arg(long)]
        store: String,
        /// The name of the node it moves to.
        #[arg(long)]
        to: String,
        #[arg(long)]
        nginx_conf: Option<PathBuf>,
        #[arg(long)]
        nginx_pid: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the HTTP server.
    Serve {
        /// Address to listen on [default: 127.0.0.1:8000].
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// The database directory [default: data/db].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Load the demo catalogue into an empty data directory.
        #[arg(long)]
        demo: bool,
        /// A JSON file with any of these settings (and `admin_token`, `client_token`);
        /// flags win over it, and GODOWN_ADMIN_TOKEN / GODOWN_CLIENT_TOKEN over its tokens.
        #[arg(long)]
        config: Option<PathBuf>,
        /// `flush`: an answer means the change is on disk. `none`: benchmarks only [default: flush].
        #[arg(long)]
        durability: Option<Durability>,
        /// Seconds an unpaid upi/card order holds its stock [default: 900].
        #[arg(long)]
        payment_ttl_seconds: Option<u64>,
        /// Snapshot every store after this many WAL records… [default: 200000]
        #[arg(long)]
        snapshot_every_records: Option<u64>,
        /// …or this many seconds, whichever comes first [default: 300].
        #[arg(long)]
        snapshot_interval_seconds: Option<u64>,
        /// Write the order archive and the ledger out of memory after at most this many
        /// WAL records (sooner when 4,096 orders are waiting) [default: 65536].
        #[arg(long)]
        views_every_records: Option<u64>,
        /// Bytes per write-ahead log segment, preallocated ahead of need [default: 67108864].
        #[arg(long)]
        wal_segment_bytes: Option<u64>,
        /// Threads for store actors and for HTTP workers (each); 0 = one per core [default: 0].
        #[arg(long)]
        threads: Option<usize>,
        /// The region's nginx, when its stores are spread over several processes: transfers
        /// and region orders reach other processes' stores through it.
        #[arg(long)]
        cluster_proxy: Option<SocketAddr>,
        /// This process's share of order numbers in a region of several processes (0-15,
        /// one per process, never reused; they share `order-ids.key`) [default: 0].
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..16))]
        order_partition: Option<u8>,
    },
    /// Closed-loop load generator: a table of req/s, statuses and latency percentiles.
    Load {
        /// `http://127.0.0.1:8000` (godown); with `--features peers` also
        /// `postgres://user@127.0.0.1:5433/db` and `redis://127.0.0.1:6380`.
        #[arg(long, default_value = "http://127.0.0.1:8000")]
        target: String,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Seconds to run (or give --requests).
        #[arg(long)]
        duration: Option<f64>,
        #[arg(long)]
        requests: Option<u64>,
        #[arg(long, value_enum, default_value = "throughput")]
        scenario: godown::load::Scenario,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 100)]
        stores: usize,
        #[arg(long, default_value_t = 1000)]
        products: usize,
        /// Units of the one product in `flash`.
        #[arg(long, default_value_t = 1000)]
        flash_stock: u64,
        /// Do not create stores and products first (they exist from an earlier run).
        #[arg(long)]
        skip_setup: bool,
        /// Allow a target outside 127.0.0.0/8 and localhost.
        #[arg(long)]
        allow_remote: bool,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
        #[arg(long)]
        quiet: bool,
    },
    /// Upload a store's catalogue from CSV (all rows or none; bad lines are listed).
    Import {
        #[command(flatten)]
        target: TargetArgs,
        /// The CSV file: a header naming product_id, product_name, unit, unit_price and
        /// optionally on_hand, low_stock_threshold, category.
        file: PathBuf,
    },
    /// Download a store's catalogue as CSV (to FILE, or standard output).
    Export {
        #[command(flatten)]
        target: TargetArgs,
        file: Option<PathBuf>,
    },
    /// Several godown processes behind nginx (see docs/scale-out.md).
    Cluster {
        #[command(subcommand)]
        what: ClusterCmd,
    },
    /// Check every snapshot and WAL record of a (stopped) server's data directory.
    Verify {
        #[arg(long, default_value = "data/db")]
        data_dir: PathBuf,
    },
}

/// Which server and store `import` / `export` talk to, and with which token.
#[derive(clap::Args)]
struct TargetArgs {
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    target: String,
    #[arg(long)]
    store: String,
    /// The admin's or the store's token [default: $GODOWN_TOKEN, else $GODOWN_ADMIN_TOKEN].
    #[arg(long)]
    token: Option<String>,
}

impl TargetArgs {
    fn into_target(self) -> godown::transfer::Target {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        godown::transfer::Target {
            url: self.target,
            store: self.store,
            token: self
                .token
                .or_else(|| env("GODOWN_TOKEN"))
                .or_else(|| env("GODOWN_ADMIN_TOKEN")),
        }
    }
}

/// Runs `import` or `export` on a small runtime; errors go to stderr.
fn transfer(cmd: Cmd) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("godown: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cmd {
        Cmd::Import { target, file } => runtime
            .block_on(godown::transfer::import(&target.into_target(), &file))
            .map(|summary| println!("{summary}")),
        Cmd::Export { target, file } => runtime
            .block_on(godown::transfer::export(
                &target.into_target(),
                file.as_deref(),
            ))
            .map(|_| ()),
        _ => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("godown: {why}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    match cli.command {
        Cmd::Serve {
            listen,
            data_dir,
            demo,
            config,
            durability,
            payment_ttl_seconds,
            snapshot_every_records,
            snapshot_interval_seconds,
            views_every_records,
            wal_segment_bytes,
            threads,
            cluster_proxy,
            order_partition,
        } => {
            let file = match config
                .as_deref()
                .map(godown::server::FileConfig::load)
                .transpose()
            {
                Ok(file) => file.unwrap_or_default(),
                Err(e) => {
                    eprintln!("godown: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
            let order_partition = order_partition.or(file.order_partition).unwrap_or(0);
            if order_partition >= godown::domain::ids::ORDER_PARTITIONS {
                eprintln!("godown: order_partition is 0 to 15");
                return ExitCode::FAILURE;
            }
            let config = godown::server::ServeConfig {
                listen: listen
                    .or(file.listen)
                    .unwrap_or_else(|| ([127, 0, 0, 1], 8000).into()),
                data_dir: data_dir
                    .or(file.data_dir)
                    .unwrap_or_else(|| "data/db".into()),
                demo,
                durability: durability.or(file.durability).unwrap_or(Durability::Flush),
                payment_ttl: Duration::from_secs(
                    payment_ttl_seconds
                        .or(file.payment_ttl_seconds)
                        .unwrap_or(900)
                        .max(1),
                ),
                snapshot_every_records: snapshot_every_records
                    .or(file.snapshot_every_records)
                    .unwrap_or(200_000)
                    .max(1),
                snapshot_interval: Duration::from_secs(
                    snapshot_interval_seconds
                        .or(file.snapshot_interval_seconds)
                        .unwrap_or(300)
                        .max(1),
                ),
                views_every_records: views_every_records
                    .or(file.views_every_records)
                    .unwrap_or(godown::wal::views::PENDING_RECORDS_MAX)
                    .max(1),
                wal_segment_bytes: wal_segment_bytes
                    .or(file.wal_segment_bytes)
                    .unwrap_or(godown::wal::segments::SEGMENT_BYTES_DEFAULT)
                    .max(godown::wal::segments::SEGMENT_BYTES_MIN),
                admin_token: env("GODOWN_ADMIN_TOKEN").or(file.admin_token),
                client_token: env("GODOWN_CLIENT_TOKEN").or(file.client_token),
                webhook_hosts: env("GODOWN_WEBHOOK_HOSTS").or(file.webhook_hosts),
                threads: threads.or(file.threads).unwrap_or(0),
                cluster_proxy: cluster_proxy.or(file.cluster_proxy),
                order_partition,
            };
            match godown::server::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("godown: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Verify { data_dir } => verify(&data_dir),
        Cmd::Cluster {
            what: ClusterCmd::Nginx { nodes, out },
        } => cluster_nginx(&nodes, out.as_deref()),
        Cmd::Cluster {
            what:
                ClusterCmd::Move {
                    nodes,
                    store,
                    to,
                    nginx_conf,
                    nginx_pid,
                },
        } => cluster_move(godown::cluster::mover::MoveConfig {
            nodes,
            store,
            to,
            nginx_conf,
            nginx_pid,
            admin_token: std::env::var("GODOWN_ADMIN_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        }),
        cmd @ (Cmd::Import { .. } | Cmd::Export { .. }) => transfer(cmd),
        Cmd::Load {
            target,
            clients,
            duration,
            requests,
            scenario,
            seed,
            stores,
            products,
            flash_stock,
            skip_setup,
            allow_remote,
            json,
            quiet,
        } => {
            let config = godown::load::LoadConfig {
                target,
                clients: clients.max(1),
                duration: duration.map(Duration::from_secs_f64),
                requests,
                scenario,
                seed,
                stores: stores.max(1),
                products: products.max(1),
                flash_stock,
                admin_token: std::env::var("GODOWN_ADMIN_TOKEN").ok(),
                skip_setup,
                allow_remote,
                quiet,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match runtime.block_on(godown::load::run(config)) {
                Ok(report) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&report).unwrap_or_default()
                        );
                    } else {
                        println!("{}", report.table());
                    }
                    if report.is_clean() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(3)
                    }
                }
                Err(e) => {
                    eprintln!("godown load: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn verify(data_dir: &std::path::Path) -> ExitCode {
    if !data_dir.exists() {
        eprintln!("godown verify: {} does not exist", data_dir.display());
        return ExitCode::FAILURE;
    }
    let storage = match Storage::open(data_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "godown verify: cannot open {} (is a server running on it?): {e}",
                data_dir.display()
            );
            return ExitCode::FAILURE;
        }
    };
    match recovery::recover(&storage, false) {
        Ok(r) => {
            let products: usize = r.states.iter().map(|s| s.product_count()).sum();
            let views = match godown::wal::views::count_views(&storage) {
                Ok(counts) => counts,
                Err(e) => {
                    eprintln!("godown verify: CORRUPT: {e}");
                    return ExitCode::from(2);
                }
            };
            let rep = &r.report;
            println!("stores:            {}", r.states.len());
            println!("products:          {products}");
            println!("orders:            {}", views.orders);
            println!("returns:           {}", views.returns);
            println!(
                "open reservations: {}",
                r.states
                    .iter()
                    .map(|s| s.reservations().count())
                    .sum::<usize>()
            );
            println!("snapshots:         {}", rep.snapshots);
            println!("log segments:      {}", rep.segments);
            println!(
                "wal records:       {} replayed, {} below a snapshot",
                rep.records_replayed, rep.records_skipped
            );
            println!(
                "first/last seq:    {} / {}",
                opt(rep.first_seq),
                opt(rep.last_seq)
            );
            println!("movements:         {}", views.movements);
            if rep.torn_tail {
                println!(
                    "warning: the log's last write was cut short (never acknowledged); recovery will drop it"
                );
            }
            println!("ok ({} ms)", rep.elapsed.as_millis());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("godown verify: CORRUPT: {e}");
            ExitCode::from(2)
        }
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn cluster_move(config: godown::cluster::mover::MoveConfig) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("godown: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(godown::cluster::mover::run(config)) {
        Ok(report) => {
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("godown cluster move: {why}");
            ExitCode::FAILURE
        }
    }
}

fn cluster_nginx(nodes: &std::path::Path, out: Option<&std::path::Path>) -> ExitCode {
    let file = std::fs::read_to_string(nodes)
        .map_err(|e| e.to_string())
        .and_then(|text| godown::cluster::NodesFile::parse(&text));
    let config = match file {
        Ok(file) => godown::cluster::nginx_config(&file),
        Err(why) => {
            eprintln!("godown: {}: {why}", nodes.display());
            return ExitCode::FAILURE;
        }
    };
    let written = match out {
        Some(path) => std::fs::write(path, config),
        None => std::io::Write::write_all(&mut std::io::stdout(), config.as_bytes()),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("godown: writing the configuration: {e}");
            ExitCode::FAILURE
        }
    }
}
