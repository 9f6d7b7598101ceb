//! A saga's steps, run where the store lives: in this process, or, for a store of another
//! process of the region, over HTTP through the region's proxy (nginx routes
//! `/api/v1/stores/{store}/saga-steps` to the store's process, which runs [`run_local`]).
//!
//! Every step may be sent again (an answer lost with a crash, a retry): each checks what
//! an earlier run left (a hold open, an order placed, a transfer moved) and then does
//! nothing, so a step takes effect once however often it arrives.

use super::SagaError;
use crate::actor::{Availability, Directory, Exec, Marks, SagaMarks, StockOf, StoreError};
use crate::domain::{
    Command, Customer, DomainError, DraftItem, Location, Order, OrderDraft, OrderId, Paise,
    PaymentMethod, ProductId, Qty, ReservationId, ReservationLine, StoreId,
};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// How long a step may take at another process before the saga counts it as a passing
/// failure (the saga stays open and is tried again).
pub const REMOTE_STEP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Step {
    /// The store sells every product, in units it can count (nothing changes).
    Check {
        lines: Vec<ReservationLine>,
    },
    /// The store's location and what it has of each product.
    Stock {
        products: Vec<ProductId>,
    },
    Hold {
        hold_id: ReservationId,
        lines: Vec<ReservationLine>,
        ttl_ms: i64,
    },
    Release {
        hold_id: ReservationId,
    },
    TransferIn {
        transfer_id: Box<str>,
        lines: Vec<ReservationLine>,
    },
    TransferOut {
        hold_id: ReservationId,
        transfer_id: Box<str>,
    },
    /// Places the order for the hold `hold_id` (from the hold if it is still open); the
    /// order's id is the store's to choose and comes back (`Placed`).
    Place {
        hold_id: ReservationId,
        customer: Customer,
        payment_method: PaymentMethod,
        lines: Vec<ReservationLine>,
        unit_prices: Vec<Option<Paise>>,
    },
    Cancel {
        order_id: OrderId,
        reason: Box<str>,
    },
    Marks {
        hold: Option<ReservationId>,
        transfer: Option<Box<str>>,
    },
    /// An order of the store as it is now (a region order's answer shows its parts).
    ReadOrder {
        order_id: OrderId,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StepAnswer {
    Done,
    Placed(OrderId),
    Stock(Option<Location>, Vec<Qty>),
    Marks(Marks),
    Order(Option<Box<Order>>),
}

/// Where a store's steps go when it is not in this process.
#[derive(Clone, Debug)]
pub struct Remote {
    /// The region's proxy (nginx), which routes a store's path to its process.
    pub proxy: SocketAddr,
    pub admin_token: Option<String>,
}

impl Step {
    fn name(&self) -> &'static str {
        match self {
            Step::Check { .. } => "check",
            Step::Stock { .. } => "stock",
            Step::Hold { .. } => "hold",
            Step::Release { .. } => "release",
            Step::TransferIn { .. } => "transfer_in",
            Step::TransferOut { .. } => "transfer_out",
            Step::Place { .. } => "place",
            Step::Cancel { .. } => "cancel",
            Step::Marks { .. } => "marks",
            Step::ReadOrder { .. } => "read_order",
        }
    }
}

/// Aborts the process before running a step, if a test asked for it: `step:transfer_in`
/// in [`super::CRASH_AT_ENV`] kills the process that holds the store as the step arrives.
fn fault_point(step: &Step) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var(super::CRASH_AT_ENV).ok());
    if at.as_deref().and_then(|a| a.strip_prefix("step:")) == Some(step.name()) {
        tracing::warn!(step = step.name(), "injected crash");
        std::process::abort();
    }
}

/// Runs `step` at `store` in this process, once (see the module's doc).
pub async fn run_local(
    dir: &Directory,
    store: &StoreId,
    step: Step,
) -> Result<StepAnswer, SagaError> {
    fault_point(&step);
    let command = match step {
        Step::Check { lines } => {
            let lines = lines
                .into_iter()
                .map(|l| (l.product_id, l.quantity))
                .collect();
            let check = Availability {
                lines,
                alternatives: false,
            };
            dir.call(store, check)
                .await
                .map_err(|error| call(store, error))?
                .map_err(|error| domain(store, error))?;
            return Ok(StepAnswer::Done);
        }
        Step::Stock { products } => {
            let (location, available) = dir
                .call(store, StockOf(products))
                .await
                .map_err(|e| call(store, e))?;
            return Ok(StepAnswer::Stock(location, available));
        }
        Step::Marks { hold, transfer } => {
            let found = marks(dir, store, hold.as_ref(), transfer.as_deref()).await?;
            return Ok(StepAnswer::Marks(found));
        }
        Step::Place { .. } => return place(dir, store, step).await,
        Step::ReadOrder { order_id } => {
            let archive = dir.archive.clone();
            let read = tokio::task::spawn_blocking(move || archive.order(order_id)).await;
            let order = read
                .map_err(|e| SagaError::Storage(e.to_string()))??
                .filter(|o| &o.store_id == store);
            return Ok(StepAnswer::Order(order.map(Box::new)));
        }
        Step::Hold {
            hold_id,
            lines,
            ttl_ms,
        } => {
            if marks(dir, store, Some(&hold_id), None).await?.hold_open {
                return Ok(StepAnswer::Done);
            }
            Command::Reserve {
                reservation_id: hold_id,
                lines,
                ttl_ms,
            }
        }
        Step::TransferOut {
            hold_id,
            transfer_id,
        } => {
            if marks(dir, store, None, Some(&transfer_id))
                .await?
                .transferred
            {
                return Ok(StepAnswer::Done);
            }
            Command::TransferOut {
                reservation_id: hold_id,
                transfer_id,
            }
        }
        Step::Release { hold_id } => Command::Release {
            reservation_id: hold_id,
        },
        // Once per transfer id by itself (the store's marks).
        Step::TransferIn { transfer_id, lines } => Command::TransferIn { transfer_id, lines },
        Step::Cancel { order_id, reason } => Command::Cancel {
            order_id,
            reason: Some(reason),
        },
    };
    let release = matches!(command, Command::Release { .. });
    match exec(dir, store, command, true).await {
        // Released already: by an earlier run of this step, or it ran out.
        Err(SagaError::Domain {
            error: DomainError::ReservationNotFound,
            ..
        }) if release => Ok(StepAnswer::Done),
        other => other.map(|_| StepAnswer::Done),
    }
}

/// What earlier steps left in `store`.
async fn marks(
    dir: &Directory,
    store: &StoreId,
    hold: Option<&ReservationId>,
    transfer: Option<&str>,
) -> Result<Marks, SagaError> {
    let msg = SagaMarks {
        hold: hold.cloned(),
        transfer: transfer.map(Into::into),
    };
    dir.call(store, msg).await.map_err(|e| call(store, e))
}

/// Places the order for a hold, unless one was placed for it already (then its id).
async fn place(dir: &Directory, store: &StoreId, step: Step) -> Result<StepAnswer, SagaError> {
    let Step::Place {
        hold_id,
        customer,
        payment_method,
        lines,
        unit_prices,
    } = step
    else {
        unreachable!("called for Place only")
    };
    let found = marks(dir, store, Some(&hold_id), None).await?;
    if let Some(id) = found.order {
        return Ok(StepAnswer::Placed(id));
    }
    let items = lines
        .into_iter()
        .zip(unit_prices)
        .map(|(l, unit_price)| DraftItem {
            product_id: l.product_id,
            quantity: l.quantity,
            unit_price,
        })
        .collect();
    let draft = OrderDraft {
        order_id: OrderId(0), // the store chooses it (`given_ids: false`)
        customer,
        items,
        payment_method,
        saga_key: Some(hold_id.as_str().into()),
        reservation_id: found.hold_open.then_some(hold_id),
        payment_ttl_ms: 0, // the store's own
        allow_partial: false,
    };
    match exec(dir, store, Command::PlaceOrder(Box::new(draft)), false).await? {
        crate::actor::Reply::Order(o) => Ok(StepAnswer::Placed(o.order_id)),
        _ => Err(SagaError::Storage("unexpected reply to an order".into())),
    }
}

fn call(store: &StoreId, error: crate::actor::CallError) -> SagaError {
    SagaError::Call {
        store: store.clone(),
        error,
    }
}

fn domain(store: &StoreId, error: DomainError) -> SagaError {
    SagaError::Domain {
        store: store.clone(),
        error,
    }
}

/// Runs a command (with the ids it carries, if `given_ids`) until durable.
async fn exec(
    dir: &Directory,
    store: &StoreId,
    command: Command,
    given_ids: bool,
) -> Result<crate::actor::Reply, SagaError> {
    let exec = Exec {
        command,
        idem: None,
        at_ms: None,
        given_ids,
    };
    let mut applied = dir
        .call(store, exec)
        .await
        .map_err(|e| call(store, e))?
        .map_err(|e| match e {
            StoreError::Domain(error) => domain(store, error),
            StoreError::Overloaded => SagaError::Overloaded {
                store: store.clone(),
            },
            StoreError::Storage(why) => SagaError::Storage(why),
            StoreError::Moving => SagaError::Unreachable {
                store: store.clone(),
                why: "the store is moving between processes".into(),
            },
        })?;
    if let Some(rx) = applied.durable.take() {
        match rx.await {
            Ok(Ok(_)) => {}
            Ok(Err(why)) => return Err(SagaError::Storage(why.to_string())),
            Err(_) => return Err(SagaError::Storage("the write-ahead log stopped".into())),
        }
    }
    Ok(applied.reply)
}

/// The path of a store's saga steps (admin only; see `http::regions`).
pub fn steps_path(store: &StoreId) -> String {
    format!("/api/v1/stores/{store}/saga-steps")
}

/// Runs `step` at `store` in the process that holds it, through the proxy. A refusal
/// comes back as it was made there; no answer is a passing failure.
pub async fn run_remote(
    remote: &Remote,
    store: &StoreId,
    step: &Step,
) -> Result<StepAnswer, SagaError> {
    let unreachable = |why: String| SagaError::Unreachable {
        store: store.clone(),
        why,
    };
    let body = bytes::Bytes::from(serde_json::to_vec(step).expect("steps serialise"));
    let auth = remote.admin_token.as_ref().map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let send = async {
        let mut conn = crate::client::Conn::connect(remote.proxy)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        conn.send("POST", &steps_path(store), &headers, Some(body))
            .await
            .map_err(|e| unreachable(e.to_string()))
    };
    let response = tokio::time::timeout(REMOTE_STEP_TIMEOUT, send)
        .await
        .map_err(|_| unreachable("no answer in time".into()))??;
    if response.status != 200 {
        return Err(unreachable(format!("HTTP {}", response.status)));
    }
    serde_json::from_slice::<Result<StepAnswer, SagaError>>(&response.body)
        .map_err(|e| unreachable(format!("unreadable answer: {e}")))?
}
