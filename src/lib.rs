//! # godown
//!
//! An inventory and order engine for kirana stores that never sells stock it does not have.
//!
//! # Layout
//! - [`domain`]: the pure core — quantities, money, a store's stock ledger, pricing. No I/O.
//! - [`actor`]: one actix actor per store owns its state; the directory maps ids to actors.
//! - [`wal`]: the write-ahead log (segment files, group commit), snapshots and views in sled,
//!   recovery, and the live bus of durable public events.
//! - [`http`]: actix-web routes; JSON in and out exactly as `shared/API.md` says.
//! - [`delivery`]: webhook delivery (signed, retried, resumed from the log).
//! - [`saga`]: changes across stores (transfers, region orders), crash-safe; regions.
//! - [`cluster`]: several processes behind nginx (the nodes file, the nginx config, the
//!   mover that moves a store between them).
//! - [`moving`]: a process's side of a store move (leaving, arriving, who is where).
//! - [`client`]: a small keep-alive HTTP client for the load generator and the tests.
//! - [`load`]: the load generator behind `godown load` (and, with `peers`, PostgreSQL/Redis).
//! - [`server`]: start-up (recovery, demo data), snapshot scheduling, shutdown.
//! - [`telemetry`]: metrics for `/metrics` (Prometheus text).
// The OpenAPI document (`http::openapi`) is one large `json!`.
#![recursion_limit = "256"]

pub mod actor;
pub mod client;
pub mod cluster;
pub mod delivery;
pub mod demo;
pub mod domain;
pub mod http;
pub mod load;
pub mod moving;
pub mod saga;
pub mod server;
pub mod telemetry;
pub mod transfer;
pub mod wal;
