//! `GET /api/v1/stores/{store_id}/events` (API.md "Events"): a page of a store's public
//! events for polling clients, or, with `Accept: text/event-stream`, Server-Sent Events:
//! every kept event after `Last-Event-ID` (or `?after=`), then the live ones as they become
//! durable, with a comment every [`KEEPALIVE`] so proxies keep the connection.
//!
//! A subscriber's stream is fed by a task of its own through a channel of [`STREAM_CHUNKS`];
//! when the client reads too slowly the task falls behind the store's live channel, and
//! once more than `wal::bus::SUBSCRIBER_BUFFER` events behind it is ended with a final
//! comment. Nothing a subscriber does reaches the store or the log.

use super::error::ApiError;
use super::json::parse_query;
use super::json::{OrderView, PAGE_DEFAULT, PAGE_MAX, ReservationView, parse_limit};
use super::json::{qty_json, rfc3339, signed_milli_json};
use super::{AppState, json_response};
use crate::actor::GetStore;
use crate::domain::{EventData, OrderIdCodec, StoreEvent, StoreId};
use crate::wal::Archive;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// A comment at least this often keeps proxies from closing an idle stream (API.md: 15 s).
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// Chunks of a stream waiting for a slow client before its task waits too.
const STREAM_CHUNKS: usize = 16;
/// Events read from the event log per step of a replay.
const REPLAY_PAGE: usize = 256;

type ApiResult = Result<HttpResponse, ApiError>;

#[derive(Deserialize)]
struct EventsQuery {
    after: Option<String>,
    limit: Option<String>,
}

/// The event as the API shows it: `{id, type, store_id, created_at, data}`.
pub fn event_json(event: &StoreEvent, store: &StoreId, ids: &OrderIdCodec) -> Value {
    let data = match &event.data {
        EventData::Order(o) => serde_json::to_value(OrderView::new(o, false, ids)),
        EventData::HoldOpened(r) => serde_json::to_value(ReservationView::new(store, r)),
        EventData::HoldClosed { reservation_id } => {
            Ok(json!({"reservation_id": reservation_id.as_str()}))
        }
        EventData::Adjusted(m) => Ok(json!({
            "product_id": m.product_id.as_str(),
            "movement_id": m.movement_id,
            "quantity_change": signed_milli_json(m.on_hand_change),
            "reason": &*m.reference,
            "on_hand": qty_json(m.on_hand_after),
            "reserved": qty_json(m.reserved_after),
            "current_stock": qty_json(crate::domain::Qty(m.on_hand_after.0 - m.reserved_after.0)),
        })),
        EventData::Low {
            product_id,
            product_name,
            unit,
            current_stock,
            threshold,
        } => Ok(json!({
            "product_id": product_id.as_str(),
            "product_name": product_name.as_deref(),
            "unit": unit.map(|u| u.as_str()),
            "current_stock": qty_json(*current_stock),
            "low_stock_threshold": qty_json(*threshold),
        })),
        EventData::WebhookFailed {
            webhook_id,
            event_id,
            attempts,
        } => Ok(json!({"webhook_id": &**webhook_id, "event_id": event_id, "attempts": attempts})),
    };
    json!({
        "id": event.id,
        "type": event.kind.as_str(),
        "store_id": store.as_str(),
        "created_at": rfc3339(event.at_ms),
        "data": data.unwrap_or(Value::Null),
    })
}

fn bad_after() -> ApiError {
    ApiError::bad_request("Invalid after", "`after` must be an event id.")
}

fn parse_after(s: Option<&str>) -> Result<u64, ApiError> {
    match s {
        None | Some("") => Ok(0),
        Some(s) => s.parse().map_err(|_| bad_after()),
    }
}

/// Events of `store` after `after`, read on a blocking thread.
async fn read_events(
    archive: &Archive,
    store: &StoreId,
    after: u64,
    limit: usize,
) -> Result<Vec<Arc<StoreEvent>>, ApiError> {
    let (archive, store) = (archive.clone(), store.clone());
    web::block(move || archive.events_after(&store, after, limit))
        .await
        .map_err(ApiError::storage)?
        .map_err(ApiError::storage)
}

pub async fn events(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> ApiResult {
    let (dir, store_id) = state.store_route(&req, &path)?;
    dir.call(&store_id, GetStore).await?;
    let q = parse_query::<EventsQuery>(&req)?;
    // `Last-Event-ID` (what an EventSource sends when it reconnects) wins over `?after=`.
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .map(|v| v.to_str().map_err(|_| bad_after()));
    let query_after = parse_after(q.after.as_deref())?;
    let after = match last_event_id {
        Some(v) => parse_after(Some(v?))?,
        None => query_after,
    };
    let streaming = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !streaming {
        let limit = parse_limit(q.limit.as_deref(), PAGE_DEFAULT, PAGE_MAX)?;
        let mut items = read_events(&state.archive, &store_id, after, limit + 1).await?;
        let more = items.len() > limit;
        items.truncate(limit);
        let next_after = items.last().filter(|_| more).map(|e| e.id);
        let items: Vec<Value> = items
            .iter()
            .map(|e| event_json(e, &store_id, &state.order_ids))
            .collect();
        return Ok(json_response(
            StatusCode::OK,
            &json!({"items": items, "next_after": next_after}),
        ));
    }
    // Subscribe before reading what is kept: an event made meanwhile is in one or both,
    // and the stream skips what it already sent.
    let live = state.bus.subscribe(&store_id);
    let (tx, rx) = mpsc::channel::<Bytes>(STREAM_CHUNKS);
    let feed = Feed {
        _open: OpenStream::count(&state.sse_streams),
        archive: state.archive.clone(),
        store: store_id,
        ids: state.order_ids.clone(),
        closing: state.closing.subscribe(),
        tx,
    };
    actix_web::rt::spawn(feed.run(after, live));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, actix_web::Error>(chunk), rx))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body))
}

/// Counts an open stream for as long as it lives.
struct OpenStream(Arc<std::sync::atomic::AtomicUsize>);

impl OpenStream {
    fn count(streams: &Arc<std::sync::atomic::AtomicUsize>) -> OpenStream {
        streams.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OpenStream(streams.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The task behind one subscriber's stream.
struct Feed {
    /// Dropped with the task: the stream is no longer counted.
    _open: OpenStream,
    archive: Archive,
    store: StoreId,
    ids: OrderIdCodec,
    closing: tokio::sync::watch::Receiver<bool>,
    tx: mpsc::Sender<Bytes>,
}

impl Feed {
    fn frame(&self, event: &StoreEvent) -> Bytes {
        let data = event_json(event, &self.store, &self.ids);
        Bytes::from(format!(
            "id: {}\nevent: {}\ndata: {}\n\n",
            event.id,
            event.kind.as_str(),
            data
        ))
    }

    /// Sends `chunk`; false once the client is gone.
    async fn send(&self, chunk: Bytes) -> bool {
        self.tx.send(chunk).await.is_ok()
    }

    async fn run(mut self, mut sent: u64, mut live: broadcast::Receiver<Arc<StoreEvent>>) {
        if !self.send(Bytes::from_static(b": godown events\n\n")).await {
            return;
        }
        // What is kept, page by page.
        loop {
            let page = match read_events(&self.archive, &self.store, sent, REPLAY_PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    let _ = self
                        .send(Bytes::from(format!(": error: {}\n\n", e.message)))
                        .await;
                    return;
                }
            };
            for event in &page {
                if !self.send(self.frame(event)).await {
                    return;
                }
                sent = event.id;
            }
            if page.len() < REPLAY_PAGE {
                break;
            }
        }
        // Then live.
        loop {
            let next = tokio::select! {
                next = live.recv() => next,
                _ = tokio::time::sleep(KEEPALIVE) => {
                    if !self.send(Bytes::from_static(b": keep-alive\n\n")).await {
                        return;
                    }
                    continue;
                }
                // The client went away: end now, not at the next event or keep-alive.
                _ = self.tx.closed() => return,
                _ = self.closing.changed() => {
                    let _ = self.send(Bytes::from_static(b": the server is shutting down\n\n")).await;
                    return;
                }
            };
            match next {
                Ok(event) if event.id > sent => {
                    if !self.send(self.frame(&event)).await {
                        return;
                    }
                    sent = event.id;
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let note = format!(
                        ": dropped: this client fell {n} events behind; reconnect with Last-Event-ID: {sent}\n\n"
                    );
                    let _ = self.send(Bytes::from(note)).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
