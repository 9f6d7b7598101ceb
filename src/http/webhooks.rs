//! Webhooks (API.md "Webhooks"): registered, listed and removed by the admin or the store's
//! token; delivered by `delivery::Deliverer`.

use super::error::ApiError;
use super::handlers::exec;
use super::json::parse_query;
use super::json::{parse_body, parse_limit, rfc3339};
use super::{AppState, json_response};
use crate::actor::{ListWebhooks, Reply};
use crate::domain::{Command, EventKind, Webhook, WebhookId};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

type ApiResult = Result<HttpResponse, ApiError>;

/// Longest webhook URL: any real endpoint fits; it is kept in the store's state.
const URL_LEN_MAX: usize = 2048;
/// A secret given by the client: long enough to be a key, short enough to keep.
const SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=256;
/// Random bytes of a generated secret.
const SECRET_BYTES: usize = 32;
/// Default and largest number of attempts shown.
const ATTEMPTS_DEFAULT: usize = 50;

#[derive(Deserialize)]
struct WebhookBody {
    url: Option<String>,
    events: Option<Vec<String>>,
    secret: Option<String>,
}

fn parse_url(url: Option<&str>, allowed: Option<&[String]>) -> Result<Box<str>, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "Invalid url",
            "`url` must be an http:// or https:// URL of at most 2048 characters.",
        )
    };
    let url = url.ok_or_else(invalid)?;
    let parsed = reqwest::Url::parse(url).map_err(|_| invalid())?;
    let Some(host) = parsed.host_str() else {
        return Err(invalid());
    };
    if url.len() > URL_LEN_MAX || !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid());
    }
    if allowed.is_some_and(|hosts| !hosts.iter().any(|h| h == host)) {
        return Err(ApiError::bad_request(
            "Invalid url",
            format!(
                "Webhooks may point only at these hosts: {}.",
                allowed.unwrap_or_default().join(", ")
            ),
        ));
    }
    Ok(url.into())
}

/// `["*"]` (every type: an empty list) or known types, each once.
fn parse_kinds(events: Option<&[String]>) -> Result<Vec<EventKind>, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "Invalid events",
            "`events` must be [\"*\"] or a list of event types (order.created, stock.low, …).",
        )
    };
    let events = events.ok_or_else(invalid)?;
    if events.len() == 1 && events[0] == "*" {
        return Ok(Vec::new());
    }
    let mut kinds = Vec::new();
    for e in events {
        let kind = EventKind::parse(e).ok_or_else(invalid)?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    if kinds.is_empty() {
        return Err(invalid());
    }
    Ok(kinds)
}

fn fresh_secret() -> Result<String, ApiError> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::storage(format!("no randomness: {e}")))?;
    Ok(format!(
        "whsec_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

fn kinds_json(w: &Webhook) -> Value {
    if w.kinds.is_empty() {
        json!(["*"])
    } else {
        json!(w.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>())
    }
}

fn view(w: &Webhook) -> Value {
    json!({
        "webhook_id": w.webhook_id.as_str(),
        "url": &*w.url,
        "events": kinds_json(w),
        "created_at": rfc3339(w.created_ms),
        "delivered_to": w.delivered_to,
    })
}

/// `POST /api/v1/stores/{store_id}/webhooks` → 201 with the secret (shown only here).
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: Bytes,
) -> ApiResult {
    let (dir, store_id) = state.store_route(&req, &path)?;
    let parsed: WebhookBody = parse_body(&req, &body)?;
    let url = parse_url(parsed.url.as_deref(), state.webhook_hosts.as_deref())?;
    let kinds = parse_kinds(parsed.events.as_deref())?;
    let secret = match parsed.secret {
        None => fresh_secret()?,
        Some(s) if SECRET_LEN.contains(&s.len()) && !s.chars().any(char::is_control) => s,
        Some(_) => {
            return Err(ApiError::bad_request(
                "Invalid secret",
                "`secret` must be 16 to 256 characters.",
            ));
        }
    };
    let webhook = Webhook {
        webhook_id: WebhookId::from_number(0),
        url,
        kinds,
        secret: secret.as_str().into(),
        created_ms: 0,
        delivered_to: 0,
    };
    let applied = exec(dir, &store_id, Command::AddWebhook(Box::new(webhook)), None).await?;
    let Reply::Webhook(webhook) = applied.reply else {
        return Err(ApiError::storage("unexpected reply"));
    };
    if let Some(deliverer) = state.deliverer.get() {
        deliverer.start(store_id, (*webhook).clone());
    }
    let mut body = view(&webhook);
    body["secret"] = json!(secret);
    Ok(json_response(StatusCode::CREATED, &body))
}

/// `GET /api/v1/stores/{store_id}/webhooks` → `{items:[webhook without secret]}`.
pub async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> ApiResult {
    let (dir, store_id) = state.store_route(&req, &path)?;
    let hooks = dir.call(&store_id, ListWebhooks).await?;
    let items: Vec<Value> = hooks.iter().map(view).collect();
    Ok(json_response(StatusCode::OK, &json!({"items": items})))
}

fn webhook_id(s: &str) -> Result<WebhookId, ApiError> {
    WebhookId::parse(s).ok_or_else(|| ApiError::invalid_id("webhook_id"))
}

/// `DELETE /api/v1/stores/{store_id}/webhooks/{webhook_id}` → 200; delivery stops.
pub async fn remove(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (dir, store_id) = state.store_route(&req, &path.0)?;
    let webhook_id = webhook_id(&path.1)?;
    let command = Command::RemoveWebhook { webhook_id };
    let applied = exec(dir, &store_id, command, None).await?;
    let Reply::WebhookRemoved(id) = applied.reply else {
        return Err(ApiError::storage("unexpected reply"));
    };
    if let Some(deliverer) = state.deliverer.get() {
        deliverer.stop(&id);
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"webhook_id": id.as_str(), "status": "removed"}),
    ))
}

#[derive(Deserialize)]
struct LimitQuery {
    limit: Option<String>,
}

/// `GET …/webhooks/{webhook_id}/deliveries?limit=` → recent attempts, newest first.
pub async fn deliveries(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (dir, store_id) = state.store_route(&req, &path.0)?;
    let id = webhook_id(&path.1)?;
    let q = parse_query::<LimitQuery>(&req)?;
    let max = crate::delivery::ATTEMPTS_KEPT;
    let limit = parse_limit(q.limit.as_deref(), ATTEMPTS_DEFAULT, max)?;
    let hooks = dir.call(&store_id, ListWebhooks).await?;
    if !hooks.iter().any(|w| w.webhook_id == id) {
        return Err(crate::domain::DomainError::WebhookNotFound.into());
    }
    let attempts = state
        .deliverer
        .get()
        .map(|d| d.attempts(&id, limit))
        .unwrap_or_default();
    let items: Vec<Value> = attempts
        .iter()
        .map(|a| {
            json!({
                "event_id": a.event_id,
                "attempt": a.attempt,
                "status": a.status.as_str(),
                "response_status": a.response_status,
                "at": rfc3339(a.at_ms),
                "next_attempt_at": a.next_attempt_ms.map(rfc3339),
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"items": items})))
}
