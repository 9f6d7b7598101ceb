//! A receiver down for a day, on an injected clock: the store actors and the deliverer run
//! in process with a `ManualClock`; the test moves it a second, then a day, instead of
//! waiting. The event is given up (`failed`), a `webhook.failed` event is made, and the
//! webhook's cursor moves past the event.

mod common;

use common::in_process_directory;
use godown::actor::{Directory, Exec, ListWebhooks, ManualClock, Reply};
use godown::delivery::{AttemptStatus, Deliverer, GIVE_UP_AFTER_MS};
use godown::domain::state::{DraftItem, OrderDraft};
use godown::domain::*;
use godown::wal::{Archive, EventBus, Storage};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const START_MS: i64 = 1_800_000_000_000;
/// How long the test waits (real time) for the deliverer to act after a clock move.
const ACT_WAIT: Duration = Duration::from_secs(10);

fn store_id() -> StoreId {
    StoreId::parse("DOWN").unwrap()
}

async fn run(directory: &Directory, command: Command) -> Reply {
    let exec = Exec {
        command,
        idem: None,
        at_ms: None,
        given_ids: false,
    };
    let mut applied = directory.call(&store_id(), exec).await.unwrap().unwrap();
    if let Some(rx) = applied.durable.take() {
        rx.await.unwrap().unwrap();
    }
    applied.reply
}

/// A receiver that answers every request 500; counts them.
async fn failing_receiver() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let count = counted.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                while let Ok(n) = socket.read(&mut chunk).await {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    // One request per write from the client: its head and body arrive
                    // together or in a few reads; answer once the body is in.
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let len: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(str::to_string)
                        })
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    buf.drain(..end + 4 + len);
                    count.fetch_add(1, Ordering::SeqCst);
                    let answer = b"HTTP/1.1 500 Down\r\ncontent-length: 0\r\n\r\n";
                    if socket.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, count)
}

/// Polls `done` (real time, every 10 ms) until it holds; fails after `ACT_WAIT`.
async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + ACT_WAIT;
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn a_receiver_down_for_a_day_gives_failed_and_a_webhook_failed_event() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path()).unwrap();
    actix::System::new().block_on(async move {
        let clock = Arc::new(ManualClock::new(START_MS));
        let bus = Arc::new(EventBus::default());
        storage.pending.set_bus(bus.clone());
        let directory = Arc::new(in_process_directory(&storage, 60_000).with_clock(clock.clone()));
        let config = StoreConfig {
            store_id: store_id(),
            name: "down".into(),
            tax_rate_bp: 0,
            delivery_fee: Paise(0),
            free_delivery_above: None,
            location: None,
            updated_ms: 0,
            utc_offset_minutes: 330,
        };
        directory.get_or_create(&config).unwrap();
        let pid = ProductId::parse("P").unwrap();
        let info = ProductInfo {
            product_id: pid.clone(),
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
        let (url, attempts) = failing_receiver().await;
        let hook = Webhook {
            webhook_id: WebhookId::from_number(0),
            url: url.into(),
            kinds: vec![EventKind::OrderCreated],
            secret: "test-secret-0123456789".into(),
            created_ms: 0,
            delivered_to: 0,
        };
        let Reply::Webhook(hook) = run(&directory, Command::AddWebhook(Box::new(hook))).await
        else {
            panic!("a webhook");
        };
        let archive = Archive::new(storage.clone());
        let ids = OrderIdCodec::new([1; 32]);
        let deliverer =
            Deliverer::new(directory.clone(), archive.clone(), bus, ids, clock.clone()).unwrap();
        let deliverer = Arc::new(deliverer);
        deliverer.start(store_id(), (*hook).clone());

        let draft = OrderDraft {
            order_id: OrderId::from_seq(1),
            customer: Customer {
                phone: "1".into(),
                name: "c".into(),
                delivery_address: "a".into(),
            },
            items: vec![DraftItem {
                product_id: pid,
                quantity: Qty::from_units(1),
                unit_price: None,
            }],
            payment_method: PaymentMethod::Cod,
            reservation_id: None,
            payment_ttl_ms: 0,
            allow_partial: false,
            saga_key: None,
        };
        run(&directory, Command::PlaceOrder(Box::new(draft))).await;
        let tried = |n: usize| {
            let attempts = attempts.clone();
            async move || attempts.load(Ordering::SeqCst) >= n
        };
        until("a first attempt", tried(1)).await;
        // The retry waits for the clock: nothing happens until it moves.
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        clock.advance_ms(1000);
        until("a second attempt a second later", tried(2)).await;
        clock.advance_ms(GIVE_UP_AFTER_MS + 3_600_000);
        until("a third attempt a day later", tried(3)).await;

        let failed = || {
            let archive = archive.clone();
            async move || {
                let events = archive.events_after(&store_id(), 0, 100).unwrap();
                events.iter().any(|e| e.kind == EventKind::WebhookFailed)
            }
        };
        until("a webhook.failed event", failed()).await;
        let events = archive.events_after(&store_id(), 0, 100).unwrap();
        let order_event = events
            .iter()
            .find(|e| e.kind == EventKind::OrderCreated)
            .unwrap();
        let failure = events.last().unwrap();
        assert_eq!(failure.kind, EventKind::WebhookFailed);
        let EventData::WebhookFailed {
            event_id,
            attempts: n,
            ..
        } = &failure.data
        else {
            panic!("{failure:?}");
        };
        assert_eq!((*event_id, *n), (order_event.id, 3));
        let shown = deliverer.attempts(&hook.webhook_id, 10);
        assert_eq!(shown[0].status, AttemptStatus::Failed);
        assert_eq!(shown.len(), 3);
        // The cursor moved past the event, durably (it is in the store's state).
        let moved = || {
            let directory = directory.clone();
            async move || {
                let hooks = directory.call(&store_id(), ListWebhooks).await.unwrap();
                hooks[0].delivered_to >= order_event.id
            }
        };
        until("the cursor past the failed event", moved()).await;
    });
}
