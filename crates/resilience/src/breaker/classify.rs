//! What a call through a breaker returns: the classification of a
//! dependency's errors (an outage or a business answer), the call error, and
//! fallbacks on it.

use std::future::Future;
use std::time::Duration;

/// Says whether an error means the dependency is failing (counts towards
/// opening) or is a business outcome that proves it is alive.
pub trait Classify {
    fn is_failure(&self) -> bool;
}

impl Classify for redis::RedisError {
    fn is_failure(&self) -> bool {
        use redis::{ErrorKind, ServerErrorKind};
        if self.is_io_error()
            || self.is_timeout()
            || self.is_connection_dropped()
            || self.is_connection_refusal()
            || self.is_unrecoverable_error()
        {
            return true;
        }
        match self.kind() {
            ErrorKind::AuthenticationFailed | ErrorKind::ClusterConnectionNotFound => true,
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::ReadOnly,
            ) => true,
            // Out of memory, or a script hogging the server.
            _ => matches!(self.code(), Some("OOM" | "BUSY" | "MISCONF")),
        }
    }
}

impl Classify for std::io::Error {
    fn is_failure(&self) -> bool {
        true
    }
}

impl Classify for reqwest::Error {
    /// A 4xx answer is the peer rejecting our request, not the peer failing.
    fn is_failure(&self) -> bool {
        !self.status().is_some_and(|s| s.is_client_error())
    }
}

impl Classify for commerce_storage::StorageError {
    fn is_failure(&self) -> bool {
        self.is_unavailable()
    }
}

impl Classify for std::convert::Infallible {
    fn is_failure(&self) -> bool {
        match *self {}
    }
}

/// Why a call through a breaker did not return the dependency's answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    /// The breaker is open (or the half-open probes are taken): nothing was sent.
    #[error("circuit breaker is open; retry after {retry_after:?}")]
    Rejected { retry_after: Duration },
    /// The dependency did not answer within the timeout; counted as a failure.
    #[error("call timed out after {after:?}")]
    Timeout { after: Duration },
    /// The dependency's own error (classified as failure or business outcome).
    #[error("{0}")]
    Inner(E),
}

impl<E> CallError<E> {
    /// Seconds for a `Retry-After` header: until the breaker admits a probe,
    /// at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            Self::Rejected { retry_after } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                secs.max(1)
            }
            _ => 1,
        }
    }

    pub fn is_rejected(&self) -> bool {
        matches!(self, Self::Rejected { .. })
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }

    pub fn inner(&self) -> Option<&E> {
        match self {
            Self::Inner(e) => Some(e),
            _ => None,
        }
    }

    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(e) => Some(e),
            _ => None,
        }
    }

    pub fn map_inner<F, E2>(self, f: F) -> CallError<E2>
    where
        F: FnOnce(E) -> E2,
    {
        match self {
            Self::Rejected { retry_after } => CallError::Rejected { retry_after },
            Self::Timeout { after } => CallError::Timeout { after },
            Self::Inner(e) => CallError::Inner(f(e)),
        }
    }
}

impl<E: Classify> CallError<E> {
    /// Whether the dependency is unavailable (answer 503 + Retry-After)
    /// rather than having given a business answer.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Rejected { .. } | Self::Timeout { .. } => true,
            Self::Inner(e) => e.is_failure(),
        }
    }
}

/// Attaches a fallback to any call that returns `Result<T, CallError<E>>`
/// (a [`Breaker::call`], a `RedisClient` method), so the call site names the
/// call and its degraded answer in one expression:
/// `redis.get(&key).or_fallback(|_| None).await`.
pub trait Fallback<T, E>: Future<Output = Result<T, CallError<E>>> + Sized {
    /// The answer, or `fallback(error)` when rejected, timed out or failed.
    fn or_fallback<FB>(self, fallback: FB) -> impl Future<Output = T>
    where
        FB: FnOnce(CallError<E>) -> T,
    {
        async move {
            match self.await {
                Ok(v) => v,
                Err(e) => fallback(e),
            }
        }
    }

    /// [`Fallback::or_fallback`] with an async fallback.
    fn or_fallback_async<FB, FF>(self, fallback: FB) -> impl Future<Output = T>
    where
        FB: FnOnce(CallError<E>) -> FF,
        FF: Future<Output = T>,
    {
        async move {
            match self.await {
                Ok(v) => v,
                Err(e) => fallback(e).await,
            }
        }
    }
}

impl<T, E, F> Fallback<T, E> for F where F: Future<Output = Result<T, CallError<E>>> {}
