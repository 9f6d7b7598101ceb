//! Overload: a full mailbox or a WAL that is too far behind refuses at once (503
//! "Overloaded" at the HTTP edge) and applies nothing — never an unbounded queue, never a
//! silent drop. Driven in process, so that "full" is exact rather than hoped for.

mod common;

use common::in_process_directory;
use godown::actor::{CallError, Directory, Exec, GetProduct, MAILBOX_CAPACITY, StoreError};
use godown::domain::*;
use godown::wal::Storage;
use godown::wal::writer::{INFLIGHT_BYTES_MAX, INFLIGHT_MAX};
use std::sync::atomic::Ordering;

fn config() -> StoreConfig {
    StoreConfig {
        store_id: StoreId::parse("OVER").unwrap(),
        name: "over".into(),
        tax_rate_bp: 500,
        delivery_fee: Paise(2000),
        free_delivery_above: None,
        location: None,
        updated_ms: 0,
        utc_offset_minutes: 330,
    }
}

fn set_product() -> Command {
    let info = ProductInfo {
        product_id: ProductId::parse("P").unwrap(),
        name: "P".into(),
        unit: Unit::Pieces,
        unit_price: Paise(100),
        low_stock_threshold: Qty::ZERO,
        category: None,
        lead_time_days: 2,
        safety_stock_days: 1,
    };
    Command::SetProduct {
        info,
        stock: Some(Qty::from_units(10)),
    }
}

fn adjust() -> Command {
    Command::Adjust {
        product_id: ProductId::parse("P").unwrap(),
        change_milli: -1000,
        reason: "r".into(),
    }
}

/// Sends `command` to the store (no idempotency key).
async fn exec(
    directory: &Directory,
    command: Command,
) -> Result<Result<godown::actor::Applied, StoreError>, CallError> {
    let exec = Exec {
        command,
        idem: None,
        at_ms: None,
        given_ids: false,
    };
    directory.call(&config().store_id, exec).await
}

/// Product P's on_hand.
async fn on_hand(directory: &Directory) -> Qty {
    let get = GetProduct(ProductId::parse("P").unwrap());
    let p = directory.call(&config().store_id, get).await.unwrap();
    p.unwrap().on_hand
}

#[test]
fn a_full_mailbox_or_a_lagging_log_refuses_without_applying() {
    // Goal: with the mailbox gate at its bound, a call is refused (Overloaded) before it is
    // queued; with the WAL's in-flight bound reached, in items or in bytes, the actor refuses
    // before changing anything; once room is back, the same command succeeds.
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path()).unwrap();
    actix::System::new().block_on(async move {
        let directory = in_process_directory(&storage, 900_000);
        let wal = directory.wal.clone();
        let store = directory.get_or_create(&config()).unwrap();
        let applied = exec(&directory, set_product()).await.unwrap().unwrap();
        applied.durable.unwrap().await.unwrap().unwrap();

        // The mailbox gate.
        store.depth.store(MAILBOX_CAPACITY, Ordering::SeqCst);
        let refused = exec(&directory, adjust()).await;
        assert!(matches!(refused, Err(CallError::Overloaded)));
        assert_eq!(
            store.depth.load(Ordering::SeqCst),
            MAILBOX_CAPACITY,
            "a refusal leaves the gate as it was"
        );
        store.depth.store(0, Ordering::SeqCst);

        // The WAL's in-flight bound.
        for _ in 0..INFLIGHT_MAX {
            wal.claim();
        }
        let refused = exec(&directory, adjust()).await.unwrap();
        assert!(matches!(refused, Err(StoreError::Overloaded)));
        assert_eq!(
            on_hand(&directory).await,
            Qty::from_units(10),
            "nothing was applied"
        );
        for _ in 0..INFLIGHT_MAX {
            wal.release_claim();
        }

        // The WAL's in-flight bound in bytes (large records, few of them).
        wal.claim_bytes(INFLIGHT_BYTES_MAX);
        let refused = exec(&directory, adjust()).await.unwrap();
        assert!(matches!(refused, Err(StoreError::Overloaded)));
        assert_eq!(on_hand(&directory).await, Qty::from_units(10));
        wal.release_bytes(INFLIGHT_BYTES_MAX);

        let applied = exec(&directory, adjust()).await.unwrap().unwrap();
        applied.durable.unwrap().await.unwrap().unwrap();
        assert_eq!(on_hand(&directory).await, Qty::from_units(9));
    });
}

#[test]
fn overload_is_a_503_with_retry_after() {
    // Goal: both overload refusals reach clients as 503 "Overloaded" with Retry-After.
    use actix_web::ResponseError;
    for e in [
        godown::http::ApiError::from(CallError::Overloaded),
        godown::http::ApiError::from(StoreError::Overloaded),
    ] {
        let response = e.error_response();
        assert_eq!(response.status().as_u16(), 503);
        assert_eq!(response.headers().get("Retry-After").unwrap(), "1");
        assert_eq!(e.body()["error"], "Overloaded");
    }
}
