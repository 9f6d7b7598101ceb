//! Webhook delivery (API.md "Webhooks"): each webhook has a task of its own that reads its
//! store's event log from the webhook's cursor on, POSTs each event it wants, signed, and
//! moves the cursor (a command to the store, so it is in the log: a restart resumes where
//! delivery stopped). A failed attempt is retried with exponential backoff and jitter; an
//! event that cannot be delivered for [`GIVE_UP_AFTER_MS`] is given up (`webhook.failed`)
//! and delivery goes on with the next.
//!
//! The log is the outbox: nothing is queued in memory but the attempts shown by the
//! deliveries view. A task never holds up a store actor or the log writer, and a slow or
//! dead receiver costs only its own task.

use crate::actor::{Clock, Directory, Exec};
use crate::domain::{Command, OrderIdCodec, StoreEvent, StoreId, TimeMs, Webhook, WebhookId};
use crate::http::events::event_json;
use crate::wal::{Archive, EventBus};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An attempt is a delivery if the receiver answers 2xx within this (API.md: 10 s).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The wait after the first failed attempt; it doubles after each (API.md: 1 s).
pub const BACKOFF_FIRST_MS: i64 = 1000;
/// The longest wait between attempts (API.md: at most 1 h apart).
pub const BACKOFF_MAX_MS: i64 = 3_600_000;
/// An event not delivered this long after its first attempt is given up (API.md: 24 h).
pub const GIVE_UP_AFTER_MS: i64 = 24 * 3_600_000;
/// Jitter: each wait is this many thousandths of the full backoff, or more (up to all of
/// it), so receivers coming back are not hit by every webhook at once, and waits still grow.
const JITTER_MIN_PERMILLE: i64 = 750;
/// Attempts kept per webhook for the deliveries view.
pub const ATTEMPTS_KEPT: usize = 100;
/// Events read from the log per step.
const READ_PAGE: usize = 64;
/// With no news from the store's live events, the log is looked at again this often.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// A command the store refused for a moment (overloaded) is sent again after this.
const COMMAND_RETRY: Duration = Duration::from_millis(200);

/// The wait before attempt `attempt + 1`, after `attempt` failed ones (1 → about 1 s).
pub fn backoff_ms(attempt: u32, jitter_permille: i64) -> i64 {
    let full = BACKOFF_FIRST_MS
        .saturating_mul(1i64 << attempt.saturating_sub(1).min(30))
        .min(BACKOFF_MAX_MS);
    full * jitter_permille.clamp(JITTER_MIN_PERMILLE, 1000) / 1000
}

/// `Godown-Signature`: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &str, t_secs: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(t_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t_secs},v1={hex}")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptStatus {
    Delivered,
    Retrying,
    Failed,
}

impl AttemptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::Delivered => "delivered",
            AttemptStatus::Retrying => "retrying",
            AttemptStatus::Failed => "failed",
        }
    }
}

/// One attempt to deliver one event.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub event_id: u64,
    pub attempt: u32,
    pub status: AttemptStatus,
    /// The receiver's status code; `None` when it did not answer in time.
    pub response_status: Option<u16>,
    pub at_ms: TimeMs,
    pub next_attempt_ms: Option<TimeMs>,
}

type Attempts = Arc<Mutex<VecDeque<Attempt>>>;

/// A task's view for the deliverer: its attempts, and when the event it is still trying to
/// deliver was made (0 when it has none).
#[derive(Clone, Default)]
struct Progress {
    attempts: Attempts,
    undelivered_since_ms: Arc<std::sync::atomic::AtomicI64>,
}

/// Runs the delivery tasks of every webhook.
pub struct Deliverer {
    dir: Arc<Directory>,
    archive: Archive,
    bus: Arc<EventBus>,
    ids: OrderIdCodec,
    clock: Arc<dyn Clock>,
    client: reqwest::Client,
    tasks: Mutex<HashMap<WebhookId, (tokio::task::AbortHandle, Progress)>>,
}

impl Deliverer {
    pub fn new(
        dir: Arc<Directory>,
        archive: Archive,
        bus: Arc<EventBus>,
        ids: OrderIdCodec,
        clock: Arc<dyn Clock>,
    ) -> Result<Deliverer, String> {
        // One TLS provider for the process (a second install is a no-op error).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("the webhook HTTP client: {e}"))?;
        Ok(Deliverer {
            dir,
            archive,
            bus,
            ids,
            clock,
            client,
            tasks: Mutex::default(),
        })
    }

    fn tasks(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<WebhookId, (tokio::task::AbortHandle, Progress)>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts delivering to `webhook` of `store` from its cursor on (on the current tokio
    /// runtime); a task already running for it is replaced.
    pub fn start(self: &Arc<Self>, store: StoreId, webhook: Webhook) {
        let progress = Progress::default();
        let task = Task {
            deliverer: self.clone(),
            store,
            progress: progress.clone(),
            webhook: webhook.clone(),
        };
        let handle = tokio::spawn(task.run()).abort_handle();
        if let Some((old, _)) = self.tasks().insert(webhook.webhook_id, (handle, progress)) {
            old.abort();
        }
    }

    /// Stops delivering to a webhook (removed).
    pub fn stop(&self, id: &WebhookId) {
        if let Some((task, _)) = self.tasks().remove(id) {
            task.abort();
        }
    }

    /// A webhook's recent attempts, newest first.
    pub fn attempts(&self, id: &WebhookId, limit: usize) -> Vec<Attempt> {
        let tasks = self.tasks();
        let Some((_, progress)) = tasks.get(id) else {
            return Vec::new();
        };
        let attempts = progress.attempts.lock().unwrap_or_else(|e| e.into_inner());
        attempts.iter().rev().take(limit).cloned().collect()
    }

    /// How long the oldest event any webhook is still trying to deliver has waited.
    pub fn oldest_undelivered_ms(&self) -> TimeMs {
        let now = self.clock.now_ms();
        let tasks = self.tasks();
        tasks
            .values()
            .map(|(_, p)| {
                p.undelivered_since_ms
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .filter(|&since| since > 0)
            .map(|since| (now - since).max(0))
            .max()
            .unwrap_or(0)
    }

    /// Webhooks being delivered to.
    pub fn len(&self) -> usize {
        self.tasks().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What became of an event.
enum Outcome {
    Delivered,
    GaveUp { attempts: u32 },
}

struct Task {
    deliverer: Arc<Deliverer>,
    store: StoreId,
    webhook: Webhook,
    progress: Progress,
}

impl Task {
    async fn run(self) {
        let d = &self.deliverer;
        let mut cursor = self.webhook.delivered_to;
        let mut live = d.bus.subscribe(&self.store);
        loop {
            let page = {
                let (archive, store) = (d.archive.clone(), self.store.clone());
                tokio::task::spawn_blocking(move || archive.events_after(&store, cursor, READ_PAGE))
                    .await
            };
            let page = match page {
                Ok(Ok(page)) => page,
                Ok(Err(e)) => {
                    tracing::warn!(webhook = %self.webhook.webhook_id, error = %e, "reading events for a webhook failed");
                    tokio::time::sleep(IDLE_POLL).await;
                    continue;
                }
                Err(_) => return,
            };
            if page.is_empty() {
                tokio::select! {
                    _ = live.recv() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                }
                continue;
            }
            let mut skipped_to = None;
            for event in &page {
                if !self.wants(event) {
                    skipped_to = Some(event.id);
                    cursor = event.id;
                    continue;
                }
                let command = match self.deliver(event).await {
                    Outcome::Delivered => Command::WebhookProgress {
                        webhook_id: self.webhook.webhook_id.clone(),
                        up_to: event.id,
                    },
                    Outcome::GaveUp { attempts } => Command::WebhookGaveUp {
                        webhook_id: self.webhook.webhook_id.clone(),
                        event_id: event.id,
                        attempts,
                    },
                };
                skipped_to = None;
                if !self.tell_store(command).await {
                    return;
                }
                cursor = event.id;
            }
            if let Some(up_to) = skipped_to {
                let webhook_id = self.webhook.webhook_id.clone();
                if !self
                    .tell_store(Command::WebhookProgress { webhook_id, up_to })
                    .await
                {
                    return;
                }
            }
        }
    }

    /// Whether this webhook gets the event (its own failures are never sent to it).
    fn wants(&self, event: &StoreEvent) -> bool {
        let own_failure = matches!(&event.data, crate::domain::EventData::WebhookFailed { webhook_id, .. }
            if **webhook_id == *self.webhook.webhook_id.as_str());
        self.webhook.wants(event.kind) && !own_failure
    }

    /// Sends a command about this webhook to its store; false if the webhook is gone.
    async fn tell_store(&self, command: Command) -> bool {
        loop {
            let exec = Exec {
                command: command.clone(),
                idem: None,
                at_ms: None,
                given_ids: false,
            };
            match self.deliverer.dir.call(&self.store, exec).await {
                Ok(Ok(_)) => return true,
                Ok(Err(crate::actor::StoreError::Domain(_))) => return false,
                // Overloaded, or the store is busy: the cursor can wait a moment.
                _ => tokio::time::sleep(COMMAND_RETRY).await,
            }
        }
    }

    /// Attempts `event` until it is delivered or given up.
    async fn deliver(&self, event: &StoreEvent) -> Outcome {
        let d = &self.deliverer;
        let body = event_json(event, &self.store, &d.ids).to_string();
        let first_ms = d.clock.now_ms();
        let since = &self.progress.undelivered_since_ms;
        since.store(event.at_ms.max(1), std::sync::atomic::Ordering::Relaxed);
        let _done = Reset(since);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let now = d.clock.now_ms();
            let response_status = self.post(event, &body, now).await;
            let delivered = response_status.is_some_and(|s| (200..300).contains(&s));
            let give_up = !delivered && now - first_ms >= GIVE_UP_AFTER_MS;
            let jitter = JITTER_MIN_PERMILLE + fastrand::i64(0..=1000 - JITTER_MIN_PERMILLE);
            let next = (!delivered && !give_up)
                .then(|| (now + backoff_ms(attempt, jitter)).min(first_ms + GIVE_UP_AFTER_MS));
            let status = match (delivered, give_up) {
                (true, _) => AttemptStatus::Delivered,
                (false, true) => AttemptStatus::Failed,
                (false, false) => AttemptStatus::Retrying,
            };
            metrics::counter!("godown_webhook_attempts_total", "outcome" => status.as_str())
                .increment(1);
            if delivered {
                let lag_ms = (now - event.at_ms).max(0);
                metrics::histogram!("godown_webhook_delivery_lag_seconds")
                    .record(lag_ms as f64 / 1000.0);
            }
            self.record(Attempt {
                event_id: event.id,
                attempt,
                status,
                response_status,
                at_ms: now,
                next_attempt_ms: next,
            });
            match (status, next) {
                (AttemptStatus::Delivered, _) => return Outcome::Delivered,
                (AttemptStatus::Failed, _) => {
                    tracing::warn!(webhook = %self.webhook.webhook_id, event = event.id, attempts = attempt, "webhook delivery failed for 24 h; giving up on this event");
                    return Outcome::GaveUp { attempts: attempt };
                }
                (_, Some(at)) => {
                    tracing::warn!(webhook = %self.webhook.webhook_id, event = event.id, attempt, status = ?response_status, "webhook delivery failed; retrying");
                    d.clock.sleep_until(at).await;
                }
                (_, None) => return Outcome::GaveUp { attempts: attempt },
            }
        }
    }

    /// One POST; the receiver's status, or `None` if it did not answer in time.
    async fn post(&self, event: &StoreEvent, body: &str, now_ms: TimeMs) -> Option<u16> {
        let t = now_ms.div_euclid(1000);
        let response = self
            .deliverer
            .client
            .post(&*self.webhook.url)
            .header("content-type", "application/json")
            .header("godown-event-id", event.id.to_string())
            .header("godown-event-type", event.kind.as_str())
            .header(
                "godown-signature",
                signature(&self.webhook.secret, t, body.as_bytes()),
            )
            .body(body.to_string())
            .send()
            .await;
        response.ok().map(|r| r.status().as_u16())
    }

    fn record(&self, attempt: Attempt) {
        let mut attempts = self
            .progress
            .attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if attempts.len() == ATTEMPTS_KEPT {
            attempts.pop_front();
        }
        attempts.push_back(attempt);
    }
}

/// Clears "undelivered since" when an event is done (or its task is stopped).
struct Reset<'a>(&'a std::sync::atomic::AtomicI64);

impl Drop for Reset<'_> {
    fn drop(&mut self) {
        self.0.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_second_to_an_hour_with_bounded_jitter() {
        assert_eq!(backoff_ms(1, 1000), 1000);
        assert_eq!(backoff_ms(2, 1000), 2000);
        assert_eq!(backoff_ms(3, 1000), 4000);
        assert_eq!(backoff_ms(13, 1000), BACKOFF_MAX_MS);
        assert_eq!(backoff_ms(60, 1000), BACKOFF_MAX_MS);
        assert_eq!(backoff_ms(1, 0), 750, "jitter takes at most a quarter");
        for attempt in 1..12 {
            assert!(backoff_ms(attempt + 1, 750) > backoff_ms(attempt, 1000));
        }
    }

    #[test]
    fn signatures_are_stripe_style_hmac_sha256() {
        // Goal: the documented scheme, checked against a value computed independently
        // (python3: hmac.new(b"whsec", b"1700000000.{}", hashlib.sha256).hexdigest()).
        let sig = signature("whsec", 1_700_000_000, b"{}");
        assert_eq!(
            sig,
            "t=1700000000,v1=7d44587dddbaf4c7f70fef20f48cd594834ffea1641e3ac227b84408298738af"
        );
        assert_ne!(signature("other", 1_700_000_000, b"{}"), sig);
    }
}
