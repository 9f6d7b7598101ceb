//! A process's side of moving a store to another process (`crate::moving`), driven by the
//! mover (`godown cluster move`): `POST /api/v1/stores/{store_id}/move-out` on the process
//! the store leaves and `…/move-in` on the one it arrives at. Admin only. Steps and answers
//! are checksummed bincode frames (`application/octet-stream`): the state, history and
//! records of a store are large and only godown reads them.

use super::AppState;
use super::json::parse_store_id;
use crate::domain::StoreId;
use crate::http::ApiError;
use crate::moving::{InStep, MoveError, Moves, OutStep};
use crate::wal::format::{decode_frame, encode_frame};
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::json;

/// The largest step or answer: a store's state (10,000 products are about 2 MB) or a chunk
/// of its history or records, with room to spare.
pub const MOVE_BODY_MAX: usize = 64 << 20;

type Data = web::Data<AppState>;

impl From<MoveError> for ApiError {
    fn from(e: MoveError) -> ApiError {
        match e {
            MoveError::StoreNotFound => ApiError::store_not_found(),
            MoveError::Conflict(why) => ApiError::new(StatusCode::CONFLICT, "Move refused", why),
            MoveError::KeyMismatch => {
                ApiError::new(StatusCode::CONFLICT, "Move refused", e.to_string())
            }
            MoveError::Invalid(why) => ApiError::bad_request("Invalid move step", why),
            MoveError::Storage(why) => ApiError::storage(why),
        }
    }
}

/// What both routes check first: the admin, the store id, the step; then that the process
/// is ready.
fn step<'a, T: for<'de> serde::Deserialize<'de>>(
    state: &'a AppState,
    req: &HttpRequest,
    path: &str,
    body: &[u8],
) -> Result<(&'a Moves, StoreId, T), ApiError> {
    state.require_admin(req)?;
    let store = parse_store_id(path)?;
    let step = decode_frame(body, &|| "the move step".into())
        .map_err(|e| ApiError::bad_request("Invalid move step", e.to_string()))?;
    state.dir()?;
    let moves = state.moves.get().ok_or_else(ApiError::not_ready)?;
    Ok((moves, store, step))
}

/// `POST /api/v1/stores/{store_id}/move-out`: a step of the process the store leaves.
pub async fn post_move_out(
    state: Data,
    req: HttpRequest,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let (moves, store, step): (_, _, OutStep) = step(&state, &req, &path, &body)?;
    let reply = moves.out(&store, step).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .body(encode_frame(&reply)))
}

/// `POST /api/v1/stores/{store_id}/move-in`: a step of the process the store arrives at.
pub async fn post_move_in(
    state: Data,
    req: HttpRequest,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let (moves, store, step): (_, _, InStep) = step(&state, &req, &path, &body)?;
    moves.arrive(&store, step).await?;
    Ok(HttpResponse::Ok().json(json!({"store_id": store.as_str(), "status": "ok"})))
}
