//! The `godown` command line: `serve`, `verify`, `load`.

use clap::{Parser, Subcommand};
use godown::wal::{Durability, Storage, recovery};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "godown",
    version,
    about = "Inventory and order engine for kirana stores"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the HTTP server.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: SocketAddr,
        #[arg(long, default_value = "data/db")]
        data_dir: PathBuf,
        /// Load the demo catalogue into an empty data directory.
        #[arg(long)]
        demo: bool,
        /// `flush`: an answer means the change is on disk. `none`: benchmarks only.
        #[arg(long, value_enum, default_value = "flush")]
        durability: Durability,
        /// Seconds an unpaid upi/card order holds its stock.
        #[arg(long, default_value_t = 900)]
        payment_ttl_seconds: u64,
        /// Snapshot every store after this many WAL records…
        #[arg(long, default_value_t = 200_000)]
        snapshot_every_records: u64,
        /// …or this many seconds, whichever comes first.
        #[arg(long, default_value_t = 300)]
        snapshot_interval_seconds: u64,
        /// Threads for store actors and for HTTP workers (each); 0 = one per core.
        #[arg(long, default_value_t = 0)]
        threads: usize,
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
    /// Check every snapshot and WAL record of a (stopped) server's data directory.
    Verify {
        #[arg(long, default_value = "data/db")]
        data_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GODOWN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Cmd::Serve {
            listen,
            data_dir,
            demo,
            durability,
            payment_ttl_seconds,
            snapshot_every_records,
            snapshot_interval_seconds,
            threads,
        } => {
            let config = godown::server::ServeConfig {
                listen,
                data_dir,
                demo,
                durability,
                payment_ttl: Duration::from_secs(payment_ttl_seconds.max(1)),
                snapshot_every_records: snapshot_every_records.max(1),
                snapshot_interval: Duration::from_secs(snapshot_interval_seconds.max(1)),
                admin_token: std::env::var("GODOWN_ADMIN_TOKEN").ok(),
                client_token: std::env::var("GODOWN_CLIENT_TOKEN").ok(),
                threads,
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
            let orders = storage
                .orders
                .iter()
                .values()
                .filter(|v| v.as_ref().is_ok_and(|v| !v.is_empty()))
                .count();
            let rep = &r.report;
            println!("stores:            {}", r.states.len());
            println!("products:          {products}");
            println!("orders:            {orders}");
            println!(
                "open reservations: {}",
                r.states
                    .iter()
                    .map(|s| s.reservations().count())
                    .sum::<usize>()
            );
            println!("snapshots:         {}", rep.snapshots);
            println!(
                "wal records:       {} replayed, {} below a snapshot",
                rep.records_replayed, rep.records_skipped
            );
            println!(
                "first/last seq:    {} / {}",
                opt(rep.first_seq),
                opt(rep.last_seq)
            );
            println!("movements:         {}", storage.movements.len());
            if rep.torn_tail {
                println!(
                    "warning: the last WAL record is damaged (a write cut short); recovery will drop it"
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
