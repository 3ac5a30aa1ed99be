//! What the catalog answers besides success (the HTTP layer gives each
//! variant its API code).

use commerce_domain::ParseError;
use commerce_storage::StorageError;

/// The catalog's one error type.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("product not found")]
    NotFound,
    /// PostgreSQL is saturated (the read semaphore's wait ran out) and no
    /// copy could be served: retry shortly.
    #[error("catalog busy: {reason}")]
    Busy {
        reason: &'static str,
        retry_after_secs: u64,
    },
    #[error(transparent)]
    Invalid(#[from] ParseError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl CatalogError {
    /// Whether the infrastructure failed (a stale copy may stand in) rather
    /// than the request being wrong.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Busy { .. } => true,
            Self::Storage(s) => s.is_unavailable(),
            Self::NotFound | Self::Invalid(_) => false,
        }
    }

    /// A copy of an error the caches shared between waiters (they hand out
    /// `Arc<CatalogError>`, and `StorageError` is not `Clone`).
    pub(crate) fn from_shared(e: &CatalogError) -> CatalogError {
        match e {
            Self::NotFound => Self::NotFound,
            Self::Busy {
                reason,
                retry_after_secs,
            } => Self::Busy {
                reason,
                retry_after_secs: *retry_after_secs,
            },
            Self::Invalid(p) => Self::Invalid(p.clone()),
            Self::Storage(s) => Self::Storage(copy_storage_error(s)),
        }
    }
}

fn copy_storage_error(e: &StorageError) -> StorageError {
    match e {
        StorageError::PoolExhausted => StorageError::PoolExhausted,
        StorageError::Unavailable(m) => StorageError::Unavailable(m.clone()),
        StorageError::Timeout => StorageError::Timeout,
        StorageError::UniqueViolation(c) => StorageError::UniqueViolation(c.clone()),
        StorageError::CheckViolation(c) => StorageError::CheckViolation(c.clone()),
        StorageError::ForeignKeyViolation(c) => StorageError::ForeignKeyViolation(c.clone()),
        StorageError::SerializationFailure => StorageError::SerializationFailure,
        StorageError::NotFound => StorageError::NotFound,
        other => StorageError::Other(other.to_string()),
    }
}
