//! [`Caller`]: who is calling — a tenant, and the database key used — as the auth
//! middleware identified it; routes take it as an extractor.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::{ApiError, AuthError};

/// The tenant of the master key.
pub const MASTER_TENANT: &str = "master";

/// Who is calling: a tenant, and the database key used (none for the master key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Owner of the sessions the caller creates and sees.
    pub tenant: String,
    /// The database key's id; `None` for the master key.
    pub key_id: Option<String>,
}

impl Caller {
    /// The master key's caller.
    pub fn master() -> Caller {
        Caller {
            tenant: MASTER_TENANT.into(),
            key_id: None,
        }
    }

    /// True for the master key.
    pub fn is_master(&self) -> bool {
        self.key_id.is_none()
    }

    /// Refuses database keys (`403`).
    pub fn require_master(&self) -> Result<(), ApiError> {
        if self.is_master() {
            Ok(())
        } else {
            Err(AuthError::MasterKeyRequired.into())
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    /// The caller the auth middleware identified; on a route without it (a bug), the
    /// request is refused as unauthenticated.
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError::Auth(AuthError::MissingHeader))
    }
}
