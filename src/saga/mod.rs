//! Sagas: changes that span stores (a transfer between two stores, a region order split
//! over several), all or nothing, also across `kill -9` at any step.
//!
//! A saga is written to the log (`wal::SagaEntry`) before its first step and again when
//! its decision is taken and when it ends. Each step is an ordinary command of one store
//! that carries the ids the saga chose beforehand (a hold, an order, a transfer), so the
//! store's own state tells whether a step already happened. Recovery hands back the sagas
//! still open and [`Sagas::resume`] takes each to its end exactly once: forward once the
//! saga decided to commit, else back (holds released). A step refused for a passing reason
//! (a full mailbox, a stopped store) leaves the saga open; a background task resumes it.

pub mod region;
pub mod steps;
pub mod transfer;

use crate::actor::{CallError, Directory, Marks, now_ms};
use crate::domain::{DomainError, Order, OrderId, ReservationId, StoreId, TimeMs};
use crate::wal::archive::saga_step;
use crate::wal::format::{SagaEntry, decode_frame, encode_frame};
use crate::wal::{Archive, IdemTag, WalError};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Fault injection for tests (`tests/transfers.rs`): the process aborts, as `kill -9`
/// would stop it, right after the step named here (`transfer:started`, `region:held`, …)
/// is durable. Never set it in production.
pub const CRASH_AT_ENV: &str = "GODOWN_TEST_SAGA_CRASH";
/// How long a request waits for a saga another task is running (a remote step takes at
/// most `steps::REMOTE_STEP_TIMEOUT` each), and how often it looks.
const BUSY_WAIT_MAX: Duration = Duration::from_secs(60);
const BUSY_POLL: Duration = Duration::from_millis(20);
/// How often open sagas that a passing failure interrupted are tried again.
pub const RETRY_EVERY: Duration = Duration::from_secs(5);

/// A saga as its log entries keep it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Saga {
    pub id: Box<str>,
    pub created_ms: TimeMs,
    pub plan: Plan,
    pub phase: Phase,
    /// The `Idempotency-Key` it answers: once it ends, the key's answer is the saga.
    pub idem: Option<IdemTag>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Plan {
    Transfer(transfer::Transfer),
    Region(region::RegionOrder),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Phase {
    /// Written before the first step: resumed, it goes back (or, for a transfer, forward
    /// when its hold is in place).
    Started,
    /// Every hold is in place and the saga commits: resumed, it goes forward.
    Committing,
    Completed,
    /// Ended with nothing changed; why.
    Failed(Box<str>),
}

impl Phase {
    pub fn is_open(&self) -> bool {
        matches!(self, Phase::Started | Phase::Committing)
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum SagaError {
    #[error("store {store}: {error}")]
    Domain { store: StoreId, error: DomainError },
    #[error("store {store}: {error}")]
    Call { store: StoreId, error: CallError },
    #[error("store {store} overloaded")]
    Overloaded { store: StoreId },
    #[error("storage failure: {0}")]
    Storage(String),
    /// The process of a store of the region did not answer (the saga stays open).
    #[error("store {store} is unreachable: {why}")]
    Unreachable { store: StoreId, why: String },
    #[error("region not found")]
    RegionNotFound,
    #[error("the region cannot serve the order")]
    RegionShort(Vec<crate::domain::region::RegionShort>),
    #[error("invalid region: {0}")]
    InvalidRegion(Box<str>),
    #[error("a transfer needs two different stores")]
    SameStore,
    #[error("the idempotency key was used with another body")]
    KeyReused,
}

impl SagaError {
    /// Whether the saga can go on later (a passing failure), rather than having ended.
    fn is_passing(&self) -> bool {
        match self {
            SagaError::Call { error, .. } => *error != CallError::StoreNotFound,
            SagaError::Overloaded { .. }
            | SagaError::Storage(_)
            | SagaError::Unreachable { .. } => true,
            _ => false,
        }
    }
}

impl From<WalError> for SagaError {
    fn from(e: WalError) -> SagaError {
        SagaError::Storage(e.to_string())
    }
}

/// Runs and resumes sagas against the stores of one process.
pub struct Sagas {
    pub dir: Arc<Directory>,
    /// Where steps for stores of other processes go (none: a region of one process).
    remote: Option<steps::Remote>,
    archive: Archive,
    pub regions: region::Regions,
    /// Sagas being run now, so that the background retry never runs one twice at once.
    running: Mutex<HashSet<Box<str>>>,
    crash_at: Option<String>,
}

/// Marks a saga as running until dropped.
struct Running<'a>(&'a Sagas, Box<str>);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.lock_running().remove(&self.1);
    }
}

impl Sagas {
    pub fn new(
        dir: Arc<Directory>,
        archive: Archive,
        regions: region::Regions,
        remote: Option<steps::Remote>,
    ) -> Sagas {
        Sagas {
            dir,
            remote,
            archive,
            regions,
            running: Mutex::default(),
            crash_at: std::env::var(CRASH_AT_ENV).ok(),
        }
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashSet<Box<str>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start_running(&self, id: &str) -> Option<Running<'_>> {
        self.lock_running()
            .insert(id.into())
            .then(|| Running(self, id.into()))
    }

    /// Aborts the process here if a test asked for it (see [`CRASH_AT_ENV`]).
    fn fault_point(&self, name: &str) {
        if self.crash_at.as_deref() == Some(name) {
            tracing::warn!(point = name, "injected crash");
            std::process::abort();
        }
    }

    /// Makes the saga's current phase durable before anything else happens. A completed
    /// saga becomes its key's answer; one that failed does not (a refusal is remembered by
    /// the HTTP layer as it answers; a saga a crash cut short may simply be sent again).
    async fn record(&self, saga: &Saga) -> Result<(), SagaError> {
        let entry = SagaEntry {
            id: saga.id.clone(),
            body: encode_frame(saga),
            open: saga.phase.is_open(),
            idem: saga.idem.clone().filter(|_| saga.phase == Phase::Completed),
        };
        let rx = self
            .dir
            .wal
            .submit_waiting(saga_step(&entry))
            .ok_or_else(|| SagaError::Storage("the write-ahead log is full".into()))?;
        match rx.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(why)) => Err(SagaError::Storage(why.to_string())),
            Err(_) => Err(SagaError::Storage("the write-ahead log stopped".into())),
        }
    }

    /// An order of `store`, read where the store lives.
    pub async fn order(&self, store: &StoreId, id: OrderId) -> Result<Option<Order>, SagaError> {
        match self
            .run(store, steps::Step::ReadOrder { order_id: id })
            .await?
        {
            steps::StepAnswer::Order(order) => Ok(order.map(|o| *o)),
            _ => Err(SagaError::Storage(
                "unexpected answer to an order read".into(),
            )),
        }
    }

    /// Runs a step where `store` lives: here, or through the region's proxy.
    async fn run(
        &self,
        store: &StoreId,
        step: steps::Step,
    ) -> Result<steps::StepAnswer, SagaError> {
        match (&self.remote, self.dir.get(store)) {
            (_, Some(_)) => steps::run_local(&self.dir, store, step).await,
            (Some(remote), None) => steps::run_remote(remote, store, &step).await,
            (None, None) => Err(SagaError::Call {
                store: store.clone(),
                error: CallError::StoreNotFound,
            }),
        }
    }

    /// What earlier steps left in `store` (whether a hold is open, a transfer moved).
    async fn marks(
        &self,
        store: &StoreId,
        hold: Option<&ReservationId>,
        transfer: Option<&str>,
    ) -> Result<Marks, SagaError> {
        let step = steps::Step::Marks {
            hold: hold.cloned(),
            transfer: transfer.map(Into::into),
        };
        match self.run(store, step).await? {
            steps::StepAnswer::Marks(m) => Ok(m),
            other => Err(SagaError::Storage(format!("unexpected answer {other:?}"))),
        }
    }

    /// The saga `id` as its last durable step left it.
    pub async fn read(&self, id: &str) -> Result<Option<Saga>, SagaError> {
        let (archive, key) = (self.archive.clone(), id.to_string());
        let bytes = tokio::task::spawn_blocking(move || archive.saga(&key))
            .await
            .map_err(|e| SagaError::Storage(e.to_string()))??;
        match bytes {
            Some(bytes) => Ok(Some(decode_frame(&bytes, &|| format!("saga {id}"))?)),
            None => Ok(None),
        }
    }

    /// Takes an open saga to its end (see the module's doc). Returns it as it ended.
    pub async fn resume(&self, saga: Saga) -> Result<Saga, SagaError> {
        // Another task may be running it (the background retry): wait for it to finish.
        let started = std::time::Instant::now();
        let _running = loop {
            if let Some(running) = self.start_running(&saga.id) {
                break running;
            }
            if started.elapsed() > BUSY_WAIT_MAX {
                return Err(SagaError::Storage(format!("saga {} is busy", saga.id)));
            }
            tokio::time::sleep(BUSY_POLL).await;
        };
        // What was read may be stale: the saga may have ended since.
        let saga = self.read(&saga.id).await?.unwrap_or(saga);
        if !saga.phase.is_open() {
            return Ok(saga);
        }
        match &saga.plan {
            Plan::Transfer(_) => self.resume_transfer(saga).await,
            Plan::Region(_) => self.resume_region(saga).await,
        }
    }

    /// A request sent again with its `Idempotency-Key` while the saga it started is still
    /// open (its answer was lost to a failure that left the saga waiting): that saga, taken
    /// to its end, if it completes. `None`: start afresh.
    async fn again(&self, idem: Option<&IdemTag>) -> Result<Option<Saga>, SagaError> {
        let Some(tag) = idem else {
            return Ok(None);
        };
        let archive = self.archive.clone();
        let open = tokio::task::spawn_blocking(move || open_sagas(&archive))
            .await
            .map_err(|e| SagaError::Storage(e.to_string()))??;
        let same_key = open
            .into_iter()
            .find(|s| s.idem.as_ref().is_some_and(|t| t.key == tag.key));
        let Some(saga) = same_key else {
            return Ok(None);
        };
        if saga.idem.as_ref().map(|t| t.body_hash) != Some(tag.body_hash) {
            return Err(SagaError::KeyReused);
        }
        let ended = self.resume(saga).await?;
        Ok((ended.phase == Phase::Completed).then_some(ended))
    }

    /// Resumes every open saga (at start-up, before the server is ready); how many.
    pub async fn resume_open(&self) -> Result<usize, SagaError> {
        let archive = self.archive.clone();
        let open = tokio::task::spawn_blocking(move || open_sagas(&archive))
            .await
            .map_err(|e| SagaError::Storage(e.to_string()))??;
        let count = open.len();
        for saga in open {
            let id = saga.id.clone();
            match self.resume(saga).await {
                Ok(s) => tracing::info!(saga = %id, phase = ?s.phase, "saga resumed"),
                Err(e) => tracing::warn!(saga = %id, error = %e, "saga still open"),
            }
        }
        Ok(count)
    }

    /// Tries the open sagas again every [`RETRY_EVERY`], for as long as the process runs.
    pub fn spawn_retry(self: &Arc<Self>) {
        let sagas = self.clone();
        actix_web::rt::spawn(async move {
            loop {
                tokio::time::sleep(RETRY_EVERY).await;
                if let Err(e) = sagas.resume_open().await {
                    tracing::warn!(error = %e, "open sagas could not be read");
                }
            }
        });
    }
}

/// Every saga still open in the data directory.
pub fn open_sagas(archive: &Archive) -> Result<Vec<Saga>, WalError> {
    archive
        .open_sagas()?
        .iter()
        .map(|bytes| decode_frame(bytes, &|| "an open saga".into()))
        .collect()
}

/// A fresh id with `prefix` and 16 hex digits from the OS's CSPRNG.
fn fresh_id(prefix: &str) -> Result<Box<str>, SagaError> {
    let n = getrandom::u64().map_err(|e| SagaError::Storage(format!("no randomness: {e}")))?;
    Ok(format!("{prefix}{n:016X}").into())
}

fn now() -> TimeMs {
    now_ms()
}
