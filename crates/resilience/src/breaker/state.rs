//! What operators see of a breaker: its state, a snapshot, the report.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Breaker state as shown to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    /// Value of the `breaker_state` gauge.
    pub fn gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::HalfOpen => 1.0,
            Self::Open => 2.0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half_open",
            Self::Open => "open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One breaker as `GET /admin/breakers` shows it. Counts are since start.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerSnapshot {
    pub name: String,
    pub state: BreakerState,
    /// Calls that got an answer (business errors included).
    pub successes: u64,
    /// Infrastructure failures and timeouts.
    pub failures: u64,
    /// Calls refused without touching the dependency.
    pub rejected: u64,
    /// When the next probe is allowed; `None` unless open on its own
    /// (a forced-open breaker stays open until reset).
    pub open_until: Option<DateTime<Utc>>,
}

/// Body of `GET /admin/breakers`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakersReport {
    pub breakers: Vec<BreakerSnapshot>,
}
