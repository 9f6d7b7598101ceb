//! Metrics, for `/metrics`: the `metrics` facade records them anywhere in godown (a
//! counter is an atomic add), and `metrics-exporter-prometheus` renders them. Labels take
//! only bounded values: route templates, methods, status codes, error phrases, event types,
//! delivery outcomes; never ids.
//!
//! Names: `godown_http_requests_total`, `godown_http_request_duration_seconds`,
//! `godown_orders_total`, `godown_wal_batch_records`, `godown_wal_flush_duration_seconds`,
//! `godown_events_total`, `godown_webhook_attempts_total`,
//! `godown_webhook_delivery_lag_seconds`, and gauges set when `/metrics` is read.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Latency buckets (seconds): a durable order takes about a millisecond; a webhook's lag
/// can be hours while its receiver is down.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 60.0, 600.0, 3600.0,
];
/// Records per group commit: one alone, up to the writer's batch limit.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// How often histogram samples are folded into their buckets. The exporter keeps each
/// sample until then, so without it memory would grow with every request between scrapes.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the recorder (once per process) and returns what renders it.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("godown_wal_batch_records".into()),
                    BATCH_BUCKETS,
                )
            })
            .expect("bucket lists are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // In a test binary another test may have installed one: ours then records nothing,
        // and `/metrics` still renders (what this handle saw).
        let _ = metrics::set_global_recorder(recorder);
        describe();
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            });
        handle
    })
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "godown_http_requests_total",
        "HTTP requests by route, method and status."
    );
    describe_histogram!(
        "godown_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by route and method."
    );
    describe_counter!(
        "godown_orders_total",
        "Orders placed, and refused by reason."
    );
    describe_histogram!(
        "godown_wal_batch_records",
        "Log items per group commit (one fdatasync)."
    );
    describe_histogram!(
        "godown_wal_flush_duration_seconds",
        Unit::Seconds,
        "Time to append and fdatasync one group commit."
    );
    describe_counter!(
        "godown_events_total",
        "Public events made durable, by type."
    );
    describe_counter!(
        "godown_webhook_attempts_total",
        "Webhook delivery attempts by outcome."
    );
    describe_histogram!(
        "godown_webhook_delivery_lag_seconds",
        Unit::Seconds,
        "From an event to its delivery."
    );
    describe_gauge!("godown_sse_subscribers", "Open event streams.");
    describe_gauge!(
        "godown_webhook_oldest_undelivered_seconds",
        Unit::Seconds,
        "Age of the oldest event a webhook is still trying to deliver (the worst webhook)."
    );
    describe_gauge!(
        "godown_mailbox_depth_max",
        "Messages waiting for the busiest store."
    );
    describe_gauge!(
        "godown_mailbox_depth_total",
        "Messages waiting for all stores."
    );
    describe_gauge!("godown_up", "1 while the process runs.");
    describe_gauge!("godown_ready", "1 once recovery is done.");
    describe_gauge!("godown_stores", "Stores hosted.");
    describe_counter!("godown_wal_records_total", "WAL records written.");
    describe_counter!(
        "godown_wal_batches_total",
        "Group commits (one fdatasync each)."
    );
    describe_counter!("godown_wal_snapshots_total", "Store snapshots written.");
    describe_counter!(
        "godown_wal_checkpoints_total",
        "Checkpoints (views out, sled durable, log truncated)."
    );
    describe_gauge!("godown_wal_last_seq", "Last durable WAL sequence number.");
    describe_gauge!(
        "godown_wal_truncated_below",
        "WAL records below this are deleted."
    );
    describe_gauge!(
        "godown_wal_inflight",
        "Changes accepted and not yet durable."
    );
    describe_gauge!(
        "godown_wal_inflight_bytes",
        "Bytes of changes accepted and not yet durable."
    );
    describe_gauge!(
        "godown_views_pending_orders",
        "Orders whose archive entry is still in memory."
    );
    describe_gauge!(
        "godown_views_pending_movements",
        "Ledger movements still in memory."
    );
    describe_gauge!("godown_webhooks", "Webhooks being delivered to.");
}

/// The Prometheus text of every metric.
pub fn render() -> String {
    handle().render()
}
