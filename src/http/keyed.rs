//! `Idempotency-Key` for the calls that honour it (placing an order, taking a return).
//!
//! The first answer to a key is made durable before it is given: with the change itself
//! (the log record carries the key), or, for a refusal, as a log entry of its own. The same
//! key with a JSON-equal body gets that answer again, also after a crash; with another body,
//! 409. A concurrent duplicate waits for the first request (`idempotency::IdemTable`).

use super::AppState;
use super::error::ApiError;
use super::idempotency::{Answer, Begin, body_hash, valid_key};
use crate::actor::now_ms;
use crate::wal::archive::remember;
use crate::wal::{IdemTag, SavedAnswer};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;

/// Answers a request once per `Idempotency-Key`: `work` runs (given the key's tag for the
/// log) only if no answer to the key is remembered or in flight. Without a key it just
/// runs. A 4xx that `work` answers is remembered; a 5xx is not (the client may retry).
pub async fn once_per_key<W, F>(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    body: &Bytes,
    work: W,
) -> Result<Answer, ApiError>
where
    W: FnOnce(Option<IdemTag>) -> F + 'static,
    F: Future<Output = Answer> + 'static,
{
    let Some(key) = req.headers().get("Idempotency-Key") else {
        return Ok(work(None).await);
    };
    if !valid_key(key.as_bytes()) {
        return Err(ApiError::bad_request(
            "Invalid idempotency key",
            "`Idempotency-Key` must be 1 to 128 printable ASCII characters.",
        ));
    }
    state.dir()?;
    let key: Arc<str> = key
        .to_str()
        .map_err(|_| ApiError::bad_request("Invalid idempotency key", "not ASCII"))?
        .into();
    let hash = body_hash(body);
    let mut work = Some(work);
    loop {
        match state.idem.begin(&key, hash) {
            Begin::Follower(h, mut rx) => {
                let answer = rx.wait_for(Option::is_some).await;
                if h == hash
                    && let Ok(answer) = answer
                {
                    return Ok(answer.as_ref().expect("waited for Some").clone());
                }
                // The request in flight had another body (which of the two matches the key's
                // first answer is known only once it is done), or it ended without an
                // answer: start over, against what it left durable.
            }
            Begin::Leader(guard) => {
                let work = work.take().expect("a request leads at most once");
                // Detached, so a client that hangs up cannot cut the work (and the
                // publication of its answer) in half.
                let (state, key) = (state.clone(), key.clone());
                let (req, body) = (req.clone(), body.clone());
                let task = actix_web::rt::spawn(async move {
                    let answer = match saved_answer(&state, &key, hash, &req, &body).await? {
                        Some(answer) => answer,
                        None => {
                            let tag = IdemTag {
                                key: (*key).into(),
                                body_hash: hash,
                                at_ms: now_ms(),
                            };
                            let answer = work(Some(tag)).await;
                            if (400..500).contains(&answer.status) {
                                remember_refusal(&state, &key, hash, &answer).await?;
                            }
                            answer
                        }
                    };
                    guard.finish(answer.clone());
                    Ok(answer)
                });
                return task
                    .await
                    .map_err(|_| ApiError::storage("the keyed task failed"))?;
            }
        }
    }
}

pub fn respond(answer: &Answer) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    if answer.status == 503 {
        response.insert_header(("Retry-After", "1"));
    }
    response
        .content_type("application/json")
        .body(answer.body.clone())
}

fn key_reused() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "Idempotency key reused",
        "This Idempotency-Key was used with a different request body.",
    )
}

/// The remembered answer for `key`, if the durable table has one (read off the worker).
async fn saved_answer(
    state: &AppState,
    key: &Arc<str>,
    hash: [u8; 16],
    req: &HttpRequest,
    body: &Bytes,
) -> Result<Option<Answer>, ApiError> {
    let (archive, k) = (state.archive.clone(), key.clone());
    let saved = web::block(move || archive.saved_answer(&k))
        .await
        .map_err(ApiError::storage)?
        .map_err(ApiError::storage)?;
    let Some(saved) = saved else {
        return Ok(None);
    };
    if saved.body_hash != hash {
        return Err(key_reused());
    }
    let missing = || ApiError::storage("a remembered order is missing");
    match saved.answer {
        SavedAnswer::Answer(bytes) => Answer::from_bytes(&bytes)
            .map(Some)
            .ok_or_else(|| ApiError::storage("a remembered answer is malformed")),
        SavedAnswer::Order(id) => {
            let order = super::handlers::read_order(state, id)
                .await?
                .ok_or_else(missing)?;
            Ok(Some(super::handlers::order_answer(
                &Ok(order),
                &state.order_ids,
            )))
        }
        SavedAnswer::Batch(results) => super::batch::saved_answer(state, req, body, results)
            .await
            .map(Some),
        SavedAnswer::Saga(id) => super::regions::saved_saga_answer(state, &id)
            .await
            .map(Some),
        SavedAnswer::Return {
            order_id,
            return_id,
        } => {
            let order = super::handlers::read_order(state, order_id)
                .await?
                .ok_or_else(missing)?;
            Ok(Some(super::returns::return_answer(
                &Ok((Arc::new(order), return_id)),
                &state.order_ids,
            )))
        }
    }
}

/// Makes an answer that changed nothing durable under its key before it is given.
pub(super) async fn remember_answer(
    state: &AppState,
    key: &str,
    hash: [u8; 16],
    answer: &Answer,
) -> Result<(), ApiError> {
    remember_refusal(state, key, hash, answer).await
}

/// Makes a refusal durable under its key before it is answered.
async fn remember_refusal(
    state: &AppState,
    key: &str,
    hash: [u8; 16],
    answer: &Answer,
) -> Result<(), ApiError> {
    let dir = state.dir()?;
    let item = remember(key, hash, now_ms(), answer.to_bytes());
    let rx = dir
        .wal
        .submit_waiting(item)
        .ok_or_else(ApiError::overloaded)?;
    match rx.await {
        Ok(Ok(_)) => Ok(()),
        _ => Err(ApiError::storage("the write-ahead log stopped")),
    }
}
