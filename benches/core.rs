//! Criterion benches: the pure core, the disk's raw flush rate, the WAL's group commit by
//! batch size, snapshot encoding and recovery replay. Figures go to BENCHMARKS.md.
//!
//! `cargo bench --bench core` (add `-- <filter>` for one group).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use godown::domain::state::{DraftItem, OrderDraft};
use godown::domain::*;
use godown::wal::format::{WalRecord, decode_state, encode_record, encode_state};
use godown::wal::views::PENDING_RECORDS_MAX;
use godown::wal::writer::LogPosition;
use godown::wal::{Durability, ItemBody, Storage, recovery, writer};
use std::time::{Duration, Instant};

/// glibc's allocator serialises on its arena locks when one thread frees what another
/// allocated (every request crosses from an HTTP worker to a store actor and back).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PRODUCTS: usize = 1000;

fn store(products: usize) -> StoreState {
    let config = StoreConfig {
        store_id: StoreId::parse("BENCH").unwrap(),
        name: "bench".into(),
        tax_rate_bp: 500,
        delivery_fee: Paise(2000),
        free_delivery_above: None,
        location: None,
        updated_ms: 0,
        utc_offset_minutes: 330,
    };
    let mut s = StoreState::new(config);
    for i in 0..products {
        let info = ProductInfo {
            product_id: ProductId::parse(&format!("SKU{i:06}")).unwrap(),
            name: format!("Product {i}").into(),
            unit: Unit::Pieces,
            unit_price: Paise(1400),
            low_stock_threshold: Qty::from_units(5),
            category: Some("Staples".into()),
            lead_time_days: 2,
            safety_stock_days: 1,
        };
        let stock = Some(Qty::from_units(1_000_000_000 / 2));
        s.execute(Command::SetProduct { info, stock }, 0).unwrap();
    }
    s
}

fn order(n: u32, rng: &mut fastrand::Rng) -> Command {
    let items = (0..3)
        .map(|k| DraftItem {
            product_id: ProductId::parse(&format!(
                "SKU{:06}",
                (rng.usize(0..PRODUCTS / 3)) * 3 + k
            ))
            .unwrap(),
            quantity: Qty::from_units(rng.u64(1..=3)),
            unit_price: None,
        })
        .collect();
    place_order(n, items)
}

/// A cash-on-delivery order of `items` (the actor replaces the id with a fresh one).
fn place_order(n: u32, items: Vec<DraftItem>) -> Command {
    Command::PlaceOrder(Box::new(OrderDraft {
        order_id: OrderId::from_seq(u64::from(n)),
        customer: Customer {
            phone: "9876543210".into(),
            name: "Bench".into(),
            delivery_address: "Loopback".into(),
        },
        items,
        payment_method: PaymentMethod::Cod,
        reservation_id: None,
        payment_ttl_ms: 900_000,
        allow_partial: false,
        saga_key: None,
    }))
}

/// Order lines through the pure core (3 lines per order), and the record encoding per order.
fn core(c: &mut Criterion) {
    let mut g = c.benchmark_group("core");
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(3));
    let mut s = store(PRODUCTS);
    let mut rng = fastrand::Rng::with_seed(1);
    let mut n = 1;
    g.bench_function("place_order_3_lines", |b| {
        b.iter(|| {
            n += 1;
            s.execute(order(n, &mut rng), 0).unwrap()
        })
    });
    // As the actor runs it: each order forgotten once placed (it would be, once durable),
    // so the store's order map stays small; the bench above keeps every order.
    let mut s2 = store(PRODUCTS);
    g.bench_function("place_order_3_lines_evicted", |b| {
        b.iter(|| {
            n += 1;
            let (outcome, events) = s2.execute(order(n, &mut rng), 0).unwrap();
            if let Outcome::Order(id) = outcome {
                s2.evict_order(id);
            }
            events
        })
    });
    g.bench_function("place_order_3_lines_and_encode_record", |b| {
        b.iter(|| {
            n += 1;
            let (_, events) = s.execute(order(n, &mut rng), 0).unwrap();
            let record = WalRecord {
                store_id: s.config.store_id.clone(),
                events,
                idem: None,
                first_event_id: 0,
                batch: None,
            };
            encode_record(&record)
        })
    });
    g.finish();
}

/// The physical limit: one 4 KiB write plus fdatasync, as a log append would do.
fn disk(c: &mut Criterion) {
    use std::os::unix::fs::FileExt;
    let mut g = c.benchmark_group("disk");
    g.measurement_time(Duration::from_secs(3));
    let dir = tempfile::tempdir_in(".").unwrap();
    let f = std::fs::File::create(dir.path().join("raw")).unwrap();
    let buf = vec![1u8; 4096];
    let mut i = 0u64;
    g.bench_function("write_4k_fdatasync", |b| {
        b.iter(|| {
            f.write_at(&buf, (i % 256) * 4096).unwrap();
            f.sync_data().unwrap();
            i += 1;
        })
    });
    g.finish();
}

/// The WAL writer: `batch` records submitted at once share one flush. Time per record.
fn wal(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal_append_flush");
    g.measurement_time(Duration::from_secs(4));
    let dir = tempfile::tempdir_in(".").unwrap();
    let storage = Storage::open(dir.path()).unwrap();
    let handle = writer::start(
        storage,
        writer::WriterConfig::new(Durability::Flush, PENDING_RECORDS_MAX),
        LogPosition::default(),
    )
    .expect("the log opens");
    let mut s = store(PRODUCTS);
    let mut rng = fastrand::Rng::with_seed(2);
    let frames: Vec<Vec<u8>> = (0..512)
        .map(|n| {
            let (_, events) = s.execute(order(n + 1, &mut rng), 0).unwrap();
            encode_record(&WalRecord {
                store_id: s.config.store_id.clone(),
                events,
                idem: None,
                first_event_id: 0,
                batch: None,
            })
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for batch in [1usize, 8, 64, 512] {
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter(|| {
                let waiting: Vec<_> = frames[..batch]
                    .iter()
                    .map(|f| {
                        let body = ItemBody::Record {
                            store_id: s.config.store_id.clone(),
                            frame: f.clone(),
                            views: Vec::new(),
                        };
                        handle.submit_waiting(body).unwrap()
                    })
                    .collect();
                rt.block_on(async {
                    for w in waiting {
                        w.await.unwrap().unwrap();
                    }
                })
            })
        });
    }
    g.finish();
}

/// Snapshot encode/decode of one store, and replay speed of WAL records.
fn snapshot_and_recovery(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot");
    g.measurement_time(Duration::from_secs(3));
    let s = store(10_000);
    let bytes = encode_state(&s);
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("encode_10k_products", |b| b.iter(|| encode_state(&s)));
    g.bench_function("decode_10k_products", |b| {
        b.iter(|| decode_state(&bytes, &|| "bench".into()).unwrap())
    });
    g.finish();

    // Recovery: 100,000 orders as WAL records (plus the catalogue), replayed from the log.
    let mut g = c.benchmark_group("recovery");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    let dir = tempfile::tempdir_in(".").unwrap();
    let records = 100_000u64;
    // The writer thread keeps its handle on the database; recovery reads through a clone.
    let storage = Storage::open(dir.path()).unwrap();
    {
        let handle = writer::start(
            storage.clone(),
            writer::WriterConfig::new(Durability::None, PENDING_RECORDS_MAX),
            LogPosition::default(),
        )
        .expect("the log opens");
        let mut s = store(0);
        let create = vec![Event::StoreSet(s.config.clone())];
        let id = s.config.store_id.clone();
        let submit = |events: Vec<Event>| {
            let frame = encode_record(&WalRecord {
                store_id: id.clone(),
                events,
                idem: None,
                first_event_id: 0,
                batch: None,
            });
            handle.submit_waiting(ItemBody::Record {
                store_id: id.clone(),
                frame,
                views: Vec::new(),
            })
        };
        submit(create);
        let catalogue = store(PRODUCTS);
        for p in catalogue.products() {
            let (_, events) = s
                .execute(
                    Command::SetProduct {
                        info: p.info.clone(),
                        stock: Some(p.on_hand),
                    },
                    0,
                )
                .unwrap();
            submit(events);
        }
        let mut rng = fastrand::Rng::with_seed(3);
        let mut last = None;
        for n in 0..records {
            let (_, events) = s.execute(order(n as u32 + 1, &mut rng), 0).unwrap();
            last = submit(events);
        }
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async {
                last.unwrap().await.unwrap().unwrap();
            });
    }
    g.throughput(Throughput::Elements(records));
    g.bench_function("replay_100k_order_records", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                let r = recovery::recover(&storage, false).unwrap();
                assert!(r.report.records_replayed > records);
            }
            t.elapsed()
        })
    });
    g.finish();
}

/// The store actors in process: no HTTP and no storage (a writer that discards), so what is
/// measured is the actor hop, the core and the record encoding, on every core.
/// `round_trip`: one 1-line order sent to a store's actor and its durable receipt awaited.
/// `orders_3_lines`: 100 stores × 1,000 products on one arbiter per core, 512 orders in
/// flight from one driver thread; throughput in order lines.
fn actors(c: &mut Criterion) {
    use godown::actor::Directory;
    let mut g = c.benchmark_group("actors");
    g.measurement_time(Duration::from_secs(5));
    let dir = tempfile::tempdir_in(".").unwrap();
    let storage = Storage::open(dir.path()).unwrap();
    let sys = actix::System::new();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let directory = sys.block_on(async {
        let arbiters = (0..cores).map(|_| actix::Arbiter::new().handle()).collect();
        let wal = writer::start_discarding();
        std::sync::Arc::new(Directory::new(
            arbiters,
            wal,
            godown::wal::Archive::new(storage),
            900_000,
            godown::domain::ids::order_partition(0),
        ))
    });
    const STORES: usize = 100;
    let catalogue = store(PRODUCTS);
    let products: Vec<ProductId> = catalogue
        .products()
        .map(|p| p.info.product_id.clone())
        .collect();
    let stores: Vec<_> = sys.block_on(async {
        let mut entries = Vec::new();
        for s in 0..STORES {
            let mut config = catalogue.config.clone();
            config.store_id = StoreId::parse(&format!("S{s:03}")).unwrap();
            let entry = directory.get_or_create(&config).unwrap();
            for p in catalogue.products() {
                let command = Command::SetProduct {
                    info: p.info.clone(),
                    stock: Some(p.on_hand),
                };
                exec_durably(entry.clone(), command).await;
            }
            entries.push(entry);
        }
        entries
    });
    let draft = |rng: &mut fastrand::Rng, lines: usize| {
        let first = rng.usize(0..PRODUCTS / lines);
        let items = (0..lines)
            .map(|k| DraftItem {
                product_id: products[first * lines + k].clone(),
                quantity: Qty::from_units(rng.u64(1..=3)),
                unit_price: None,
            })
            .collect();
        place_order(1, items)
    };

    g.throughput(Throughput::Elements(1));
    let mut rng = fastrand::Rng::with_seed(4);
    g.bench_function("round_trip", |b| {
        b.iter(|| {
            let entry = stores[rng.usize(..STORES)].clone();
            let command = draft(&mut rng, 1);
            sys.block_on(exec_durably(entry, command))
        })
    });

    const IN_FLIGHT: u64 = 512;
    g.throughput(Throughput::Elements(3));
    g.bench_function("orders_3_lines", |b| {
        b.iter_custom(|iters| {
            let per_task = iters.div_ceil(IN_FLIGHT);
            let t = Instant::now();
            sys.block_on(async {
                let tasks: Vec<_> = (0..IN_FLIGHT)
                    .map(|k| {
                        let stores = stores.clone();
                        let mut rng = fastrand::Rng::with_seed(k);
                        let commands: Vec<_> = (0..per_task).map(|_| draft(&mut rng, 3)).collect();
                        actix::spawn(async move {
                            for command in commands {
                                exec_durably(stores[rng.usize(..STORES)].clone(), command).await;
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            });
            t.elapsed()
                .mul_f64(iters as f64 / (per_task * IN_FLIGHT) as f64)
        })
    });

    // The same orders, 100 per message (`Command::PlaceBatch`, one log record each): what
    // the batch route gives the actors. An element is one order of 3 lines.
    const BATCH: u64 = 100;
    const BATCHES_IN_FLIGHT: u64 = 16;
    g.throughput(Throughput::Elements(3 * BATCH));
    g.bench_function("batches_of_100_orders_3_lines", |b| {
        b.iter_custom(|iters| {
            let per_task = iters.div_ceil(BATCHES_IN_FLIGHT);
            let t = Instant::now();
            sys.block_on(async {
                let tasks: Vec<_> = (0..BATCHES_IN_FLIGHT)
                    .map(|k| {
                        let stores = stores.clone();
                        let mut rng = fastrand::Rng::with_seed(k);
                        let batches: Vec<_> = (0..per_task)
                            .map(|_| {
                                let drafts = (0..BATCH)
                                    .map(|_| match draft(&mut rng, 3) {
                                        Command::PlaceOrder(d) => *d,
                                        _ => unreachable!("draft makes orders"),
                                    })
                                    .collect();
                                Command::PlaceBatch(drafts)
                            })
                            .collect();
                        actix::spawn(async move {
                            for batch in batches {
                                exec_durably(stores[rng.usize(..STORES)].clone(), batch).await;
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            });
            t.elapsed()
                .mul_f64(iters as f64 / (per_task * BATCHES_IN_FLIGHT) as f64)
        })
    });
    g.finish();
}

/// Sends a command to a store's actor and waits for its (discarded) write.
async fn exec_durably(entry: godown::actor::StoreEntry, command: Command) {
    use godown::actor::{Directory, Exec};
    let exec = Exec {
        command,
        idem: None,
        at_ms: None,
        given_ids: false,
    };
    let applied = Directory::call_entry(&entry, exec).await.unwrap().unwrap();
    applied.durable.unwrap().await.unwrap().unwrap();
}

criterion_group!(benches, core, disk, wal, snapshot_and_recovery, actors);
criterion_main!(benches);
