//! Store tokens (API.md "Auth"): issued and revoked by the admin. The token itself is
//! shown once, in the answer that issues it; godown keeps only its digest.

use super::auth::digest;
use super::error::ApiError;
use super::handlers::exec;
use super::json::{parse_store_id, rfc3339};
use super::{AppState, json_response};
use crate::actor::{ListTokens, Reply};
use crate::domain::{Command, TokenId};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

type ApiResult = Result<HttpResponse, ApiError>;

/// Random bytes in a token: 256 bits, beyond guessing or search.
const TOKEN_BYTES: usize = 32;
/// Marks godown's store tokens, so that one found in a log or a repository is recognised.
const TOKEN_PREFIX: &str = "gdt_";

/// A fresh token from the OS's CSPRNG, or 503 if it has none to give.
fn fresh_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::storage(format!("no randomness: {e}")))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{TOKEN_PREFIX}{hex}"))
}

/// `POST /api/v1/stores/{store_id}/tokens` → 201 `{token_id, token, store_id, created_at}`.
pub async fn issue(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> ApiResult {
    state.require_admin(&req)?;
    let dir = state.dir()?;
    let store_id = parse_store_id(&path)?;
    let token = fresh_token()?;
    let command = Command::IssueToken {
        token_id: TokenId::from_number(0),
        digest: digest(&token),
    };
    let applied = exec(dir, &store_id, command, None).await?;
    let Reply::Token(issued) = applied.reply else {
        return Err(ApiError::storage("unexpected reply"));
    };
    Ok(json_response(
        StatusCode::CREATED,
        &json!({
            "token_id": issued.token_id.as_str(),
            "token": token,
            "store_id": store_id.as_str(),
            "created_at": rfc3339(issued.created_ms),
        }),
    ))
}

/// `GET /api/v1/stores/{store_id}/tokens` → `{store_id, items:[{token_id, created_at}]}`.
pub async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> ApiResult {
    state.require_admin(&req)?;
    let dir = state.dir()?;
    let store_id = parse_store_id(&path)?;
    let tokens = dir.call(&store_id, ListTokens).await?;
    let items: Vec<_> = tokens
        .iter()
        .map(|t| json!({"token_id": t.token_id.as_str(), "created_at": rfc3339(t.created_ms)}))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"store_id": store_id.as_str(), "items": items}),
    ))
}

/// `DELETE /api/v1/stores/{store_id}/tokens/{token_id}` → 200 `{token_id, status: "revoked"}`.
/// The token stops working before this answers; the revocation is durable when it does.
pub async fn revoke(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> ApiResult {
    state.require_admin(&req)?;
    let dir = state.dir()?;
    let store_id = parse_store_id(&path.0)?;
    let token_id = TokenId::parse(&path.1).ok_or_else(|| ApiError::invalid_id("token_id"))?;
    let applied = exec(dir, &store_id, Command::RevokeToken { token_id }, None).await?;
    let Reply::TokenRevoked(id) = applied.reply else {
        return Err(ApiError::storage("unexpected reply"));
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({"token_id": id.as_str(), "status": "revoked"}),
    ))
}
