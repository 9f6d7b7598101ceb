//! Expiry on an injected clock: holds and unpaid orders end exactly at their deadline, with
//! no sleep. The store actors run in process with a `ManualClock` that the test advances;
//! `ExpireNow` asks a store to release what is due (its own tick does the same every 100 ms,
//! but only the clock decides what is due).

mod common;

use common::in_process_directory;
use godown::actor::{Directory, Exec, ExpireNow, GetProduct, ManualClock};
use godown::domain::state::{DraftItem, OrderDraft};
use godown::domain::*;
use godown::wal::Storage;
use std::sync::Arc;

const START_MS: i64 = 1_800_000_000_000;
const HOLD_TTL_MS: i64 = 10_000;
const PAYMENT_TTL_MS: i64 = 60_000;

fn store_id() -> StoreId {
    StoreId::parse("CLOCK").unwrap()
}

fn pid() -> ProductId {
    ProductId::parse("P").unwrap()
}

async fn run(directory: &Directory, command: Command) -> Outcome {
    let applied = directory
        .call(
            &store_id(),
            Exec {
                command,
                idem: None,
                at_ms: None,
                given_ids: false,
            },
        )
        .await
        .unwrap()
        .unwrap();
    applied.durable.unwrap().await.unwrap().unwrap();
    applied.outcome
}

/// Releases what is due now, and waits until that is durable.
async fn expire(directory: &Directory) {
    if let Some(rx) = directory.call(&store_id(), ExpireNow).await.unwrap() {
        rx.await.unwrap().unwrap();
    }
}

async fn reserved(directory: &Directory) -> Qty {
    let p = directory
        .call(&store_id(), GetProduct(pid()))
        .await
        .unwrap();
    p.unwrap().reserved
}

#[test]
fn holds_and_unpaid_orders_expire_exactly_at_their_deadline_on_the_injected_clock() {
    // Goal: a hold of 10 s is still there 1 ms before its deadline and released at it; an
    // unpaid upi order keeps its units until its payment deadline and is expired at it.
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path()).unwrap();
    actix::System::new().block_on(async move {
        let clock = Arc::new(ManualClock::new(START_MS));
        let directory = in_process_directory(&storage, PAYMENT_TTL_MS).with_clock(clock.clone());
        let config = StoreConfig {
            store_id: store_id(),
            name: "clock".into(),
            tax_rate_bp: 0,
            delivery_fee: Paise(0),
            free_delivery_above: None,
            location: None,
            updated_ms: 0,
            utc_offset_minutes: 330,
        };
        directory.get_or_create(&config).unwrap();
        let info = ProductInfo {
            product_id: pid(),
            name: "P".into(),
            unit: Unit::Pieces,
            unit_price: Paise(100),
            low_stock_threshold: Qty::ZERO,
            category: None,
            lead_time_days: 2,
            safety_stock_days: 1,
        };
        let stock = Some(Qty::from_units(10));
        run(&directory, Command::SetProduct { info, stock }).await;

        let hold = Command::Reserve {
            reservation_id: ReservationId::from_number(0),
            lines: vec![ReservationLine {
                product_id: pid(),
                quantity: Qty::from_units(3),
            }],
            ttl_ms: HOLD_TTL_MS,
        };
        run(&directory, hold).await;
        assert_eq!(reserved(&directory).await, Qty::from_units(3));
        clock.advance_ms(HOLD_TTL_MS - 1);
        expire(&directory).await;
        assert_eq!(
            reserved(&directory).await,
            Qty::from_units(3),
            "1 ms before"
        );
        clock.advance_ms(1);
        expire(&directory).await;
        assert_eq!(reserved(&directory).await, Qty::ZERO, "at the deadline");

        let draft = OrderDraft {
            order_id: OrderId::from_seq(1),
            customer: Customer {
                phone: "1".into(),
                name: "c".into(),
                delivery_address: "a".into(),
            },
            items: vec![DraftItem {
                product_id: pid(),
                quantity: Qty::from_units(2),
                unit_price: None,
            }],
            payment_method: PaymentMethod::Upi,
            reservation_id: None,
            payment_ttl_ms: 0,
            allow_partial: false,
            saga_key: None,
        };
        let placed = run(&directory, Command::PlaceOrder(Box::new(draft))).await;
        assert!(matches!(placed, Outcome::Order(_)), "{placed:?}");
        assert_eq!(
            reserved(&directory).await,
            Qty::from_units(2),
            "awaiting payment"
        );
        clock.advance_ms(PAYMENT_TTL_MS - 1);
        expire(&directory).await;
        assert_eq!(
            reserved(&directory).await,
            Qty::from_units(2),
            "1 ms before"
        );
        clock.advance_ms(1);
        expire(&directory).await;
        assert_eq!(
            reserved(&directory).await,
            Qty::ZERO,
            "expired at the deadline"
        );
        let p = directory
            .call(&store_id(), GetProduct(pid()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.on_hand, Qty::from_units(10), "nothing was sold");
    });
}
