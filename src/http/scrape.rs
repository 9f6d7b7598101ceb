//! `GET /metrics`: what the `telemetry` recorder has counted, plus gauges read at scrape
//! time from the parts that own them (the log writer, the directory, the views, the event
//! bus, the deliverer).

use super::AppState;
use actix_web::{HttpResponse, web};
use metrics::{counter, gauge};
use std::sync::atomic::Ordering::Relaxed;

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let handle = crate::telemetry::handle();
    gauge!("godown_up").set(1.0);
    gauge!("godown_ready").set(f64::from(u8::from(state.directory.get().is_some())));
    gauge!("godown_sse_subscribers").set(state.sse_streams.load(Relaxed) as f64);
    if let Some(dir) = state.directory.get() {
        let s = &dir.wal.stats;
        gauge!("godown_stores").set(dir.len() as f64);
        counter!("godown_wal_records_total").absolute(s.records.load(Relaxed));
        counter!("godown_wal_batches_total").absolute(s.batches.load(Relaxed));
        counter!("godown_wal_snapshots_total").absolute(s.snapshots.load(Relaxed));
        counter!("godown_wal_checkpoints_total").absolute(s.checkpoints());
        gauge!("godown_wal_last_seq").set(s.last_seq.load(Relaxed) as f64);
        gauge!("godown_wal_truncated_below").set(s.truncated_below.load(Relaxed) as f64);
        gauge!("godown_wal_inflight").set(dir.wal.inflight() as f64);
        gauge!("godown_wal_inflight_bytes").set(dir.wal.inflight_bytes() as f64);
        let (max, total) = dir.mailbox_depths();
        gauge!("godown_mailbox_depth_max").set(max as f64);
        gauge!("godown_mailbox_depth_total").set(total as f64);
        let (orders, movements) = state.archive.pending_views();
        gauge!("godown_views_pending_orders").set(orders as f64);
        gauge!("godown_views_pending_movements").set(movements as f64);
    }
    if let Some(d) = state.deliverer.get() {
        gauge!("godown_webhooks").set(d.len() as f64);
        gauge!("godown_webhook_oldest_undelivered_seconds")
            .set(d.oldest_undelivered_ms() as f64 / 1000.0);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render())
}
