//! The waiting room's one error type. Redis failures never appear here: the
//! room fails open to the local limiter instead, so every variant is an
//! answer for the caller (the HTTP layer gives each variant its API code).

use crate::target::{BadTarget, Target};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The requested room is not `store`, `coupon:<id>` or `sale:<id>`.
    #[error("unknown waiting room {0:?}: use store, coupon:<id> or sale:<id>")]
    InvalidTarget(String),
    /// Not a token this service hands out.
    #[error("malformed queue token")]
    InvalidToken,
    /// Unknown, expired, or someone else's token (indistinguishable on
    /// purpose: a token's existence is not revealed to others).
    #[error("unknown or expired queue token: enter the waiting room again")]
    TokenNotFound,
    /// A protected route was called without an active token for its room.
    /// `position` is `None` when the caller is not in the queue (or the room
    /// is degraded and has no global order).
    #[error("not admitted yet: wait for an active queue token")]
    NotAdmitted {
        target: Target,
        position: Option<u64>,
        retry_after_secs: u64,
        degraded: bool,
    },
    /// Too many rooms exist; a new one cannot be opened right now.
    #[error("too many waiting rooms are open")]
    RoomsFull { retry_after_secs: u64 },
}

impl QueueError {
    /// Seconds for a `Retry-After` header, when waiting helps.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::NotAdmitted {
                retry_after_secs, ..
            }
            | Self::RoomsFull { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        }
    }
}

impl From<BadTarget> for QueueError {
    fn from(e: BadTarget) -> Self {
        match e {
            BadTarget::Room(raw) => Self::InvalidTarget(raw),
            BadTarget::Token => Self::InvalidToken,
        }
    }
}
