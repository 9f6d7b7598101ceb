//! Who may do what (API.md "Auth"): the admin token, store tokens (each acts for one
//! store), and the optional client token, which only places orders and reads stock.
//!
//! No token is kept in memory or on disk, only SHA-256 digests. The admin and client
//! digests are compared in constant time; a store token is found by looking its digest up,
//! whose timing tells nothing about the token (finding a token from its digest is as hard
//! as breaking SHA-256).

use super::error::ApiError;
use crate::actor::TokenIndex;
use crate::domain::{StoreId, TokenDigest};
use actix_web::HttpRequest;
use actix_web::http::header;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The tokens set by the operator.
#[derive(Default)]
pub struct Auth {
    admin: Option<TokenDigest>,
    client: Option<TokenDigest>,
}

/// Who sent a request, by its token. Admin > store > client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    Client,
    Store(StoreId),
    Admin,
}

pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

fn same(a: &Option<TokenDigest>, b: &TokenDigest) -> bool {
    a.as_ref().is_some_and(|a| bool::from(a.ct_eq(b)))
}

impl Auth {
    /// An empty token counts as unset.
    pub fn new(admin: Option<&str>, client: Option<&str>) -> Auth {
        Auth {
            admin: admin.filter(|t| !t.is_empty()).map(digest),
            client: client.filter(|t| !t.is_empty()).map(digest),
        }
    }

    pub fn has_admin(&self) -> bool {
        self.admin.is_some()
    }

    pub fn has_client(&self) -> bool {
        self.client.is_some()
    }

    /// The request's caller. A header that is not a valid token is 401 wherever it is
    /// sent; store tokens are looked up in `stores` (`None` until recovery is done: 503).
    pub fn caller(
        &self,
        req: &HttpRequest,
        stores: Option<&TokenIndex>,
    ) -> Result<Caller, ApiError> {
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return Ok(Caller::Anonymous);
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(ApiError::unauthorized)?;
        let digest = digest(token);
        if same(&self.admin, &digest) {
            return Ok(Caller::Admin);
        }
        if same(&self.client, &digest) {
            return Ok(Caller::Client);
        }
        let stores = stores.ok_or_else(ApiError::not_ready)?;
        match stores.store_of(&digest) {
            Some(store) => Ok(Caller::Store(store)),
            None => Err(ApiError::unauthorized()),
        }
    }
}

impl Caller {
    /// Store settings and tokens: the admin only.
    pub fn admin(&self) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Anonymous => Err(ApiError::unauthorized()),
            _ => Err(ApiError::forbidden()),
        }
    }

    /// Whether this caller may act for some store (checked before the store is known, as
    /// for an order's payment): 401 without a token, 403 for the client token.
    pub fn any_store(&self) -> Result<(), ApiError> {
        match self {
            Caller::Admin | Caller::Store(_) => Ok(()),
            Caller::Anonymous => Err(ApiError::unauthorized()),
            Caller::Client => Err(ApiError::forbidden()),
        }
    }

    /// A store's catalogue, ledger, alerts and orders: the admin or that store's token.
    pub fn store(&self, store: &StoreId) -> Result<(), ApiError> {
        self.any_store()?;
        match self {
            Caller::Store(own) if own != store => Err(ApiError::forbidden()),
            _ => Ok(()),
        }
    }

    /// Placing orders and reading stock: open unless the client token is set, then any
    /// valid token.
    pub fn client(&self, client_token_set: bool) -> Result<(), ApiError> {
        match self {
            Caller::Anonymous if client_token_set => Err(ApiError::unauthorized()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_caller_gets_exactly_its_rights() {
        // Goal: the rules of API.md "Auth", caller by caller.
        let (a, b) = (StoreId::parse("A").unwrap(), StoreId::parse("B").unwrap());
        let admin = Caller::Admin;
        let own = Caller::Store(a.clone());
        let status = |r: Result<(), ApiError>| r.map_or_else(|e| e.status.as_u16(), |_| 200);
        assert_eq!(status(admin.admin()), 200);
        assert_eq!(status(own.admin()), 403);
        assert_eq!(status(Caller::Client.admin()), 403);
        assert_eq!(status(Caller::Anonymous.admin()), 401);
        assert_eq!(status(admin.store(&a)), 200);
        assert_eq!(status(own.store(&a)), 200);
        assert_eq!(status(own.store(&b)), 403);
        assert_eq!(status(Caller::Client.store(&a)), 403);
        assert_eq!(status(Caller::Anonymous.store(&a)), 401);
        assert_eq!(status(Caller::Anonymous.client(false)), 200);
        assert_eq!(status(Caller::Anonymous.client(true)), 401);
        assert_eq!(status(own.client(true)), 200);
        assert_eq!(status(Caller::Client.client(true)), 200);
    }
}
