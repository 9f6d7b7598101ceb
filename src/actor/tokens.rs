//! Which store a token acts for: the lookup behind every request that carries a store
//! token. Store actors keep it in step with their state (a revocation takes effect the
//! moment the actor applies it, before it is durable); recovery fills it before the first
//! request is served.

use crate::domain::{StoreId, TokenDigest, Tokens};
use std::collections::HashMap;
use std::sync::RwLock;

#[derive(Default)]
pub struct TokenIndex {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    by_digest: HashMap<TokenDigest, StoreId>,
    by_store: HashMap<StoreId, Vec<TokenDigest>>,
}

impl TokenIndex {
    /// The store a token with this digest acts for. The lookup is by a SHA-256 digest, so
    /// its timing tells nothing about the token itself.
    pub fn store_of(&self, digest: &TokenDigest) -> Option<StoreId> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.by_digest.get(digest).cloned()
    }

    /// Makes `store`'s entries exactly `tokens`.
    pub fn set_store(&self, store: &StoreId, tokens: &Tokens) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = inner.by_store.remove(store) {
            for digest in old {
                inner.by_digest.remove(&digest);
            }
        }
        if tokens.is_empty() {
            return;
        }
        let digests: Vec<TokenDigest> = tokens.iter().map(|t| t.digest).collect();
        for digest in &digests {
            inner.by_digest.insert(*digest, store.clone());
        }
        inner.by_store.insert(store.clone(), digests);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Command, Paise, StoreConfig, StoreState, TokenId};

    #[test]
    fn an_index_follows_issue_and_revocation() {
        // Goal: a digest maps to its store while the token lives, and to nothing after.
        let store = StoreId::parse("S1").unwrap();
        let mut state = StoreState::new(StoreConfig {
            store_id: store.clone(),
            name: "S1".into(),
            tax_rate_bp: 500,
            delivery_fee: Paise(2000),
            free_delivery_above: None,
            location: None,
            updated_ms: 0,
            utc_offset_minutes: 330,
        });
        let index = TokenIndex::default();
        for (n, digest) in [(1, [1u8; 32]), (2, [2u8; 32])] {
            let token_id = TokenId::from_number(n);
            state
                .execute(Command::IssueToken { token_id, digest }, 0)
                .unwrap();
        }
        index.set_store(&store, state.tokens());
        assert_eq!(index.store_of(&[1; 32]), Some(store.clone()));
        assert_eq!(index.store_of(&[2; 32]), Some(store.clone()));
        let token_id = TokenId::from_number(1);
        state.execute(Command::RevokeToken { token_id }, 0).unwrap();
        index.set_store(&store, state.tokens());
        assert_eq!(index.store_of(&[1; 32]), None, "revoked");
        assert_eq!(index.store_of(&[2; 32]), Some(store));
        assert_eq!(index.store_of(&[3; 32]), None, "never issued");
    }
}
