//! Manual control of a breaker by an operator.

use std::str::FromStr;

/// Manual control of a breaker (`POST /admin/breakers/{name}/{action}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerAction {
    ForceOpen,
    ForceClose,
    Reset,
}

impl FromStr for BreakerAction {
    type Err = UnknownAction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "force-open" | "force_open" => Ok(Self::ForceOpen),
            "force-close" | "force_close" => Ok(Self::ForceClose),
            "reset" => Ok(Self::Reset),
            other => Err(UnknownAction(other.to_owned())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown breaker action {0:?} (expected force-open, force-close or reset)")]
pub struct UnknownAction(pub String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no breaker named {0:?}")]
pub struct UnknownBreaker(pub String);
