//! Store tokens: bearer secrets that act for one store (its tablet, its payment provider).
//!
//! The domain never sees a token, only its SHA-256 digest, made at the HTTP edge: a copy of
//! the log or of a snapshot gives nobody a working token. Tokens are state like stock, so
//! they are issued and revoked by events in the store's log and survive any crash.

use super::ids::TokenId;
use super::model::TimeMs;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most live tokens per store: a store has a few devices and one or two payment providers;
/// the bound keeps each store's snapshot and the process's token index small.
pub const TOKENS_PER_STORE_MAX: usize = 64;

/// The SHA-256 digest of a token.
pub type TokenDigest = [u8; 32];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreToken {
    pub token_id: TokenId,
    pub digest: TokenDigest,
    pub created_ms: TimeMs,
}

/// A store's live tokens by id.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tokens(BTreeMap<TokenId, StoreToken>);

impl Tokens {
    pub fn get(&self, id: &TokenId) -> Option<&StoreToken> {
        self.0.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &StoreToken> {
        self.0.values()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a digest is already in use (a token is never issued twice).
    pub fn has_digest(&self, digest: &TokenDigest) -> bool {
        self.0.values().any(|t| &t.digest == digest)
    }

    pub(super) fn insert(&mut self, token: StoreToken) {
        self.0.insert(token.token_id.clone(), token);
    }

    pub(super) fn remove(&mut self, id: &TokenId) {
        self.0.remove(id);
    }
}
