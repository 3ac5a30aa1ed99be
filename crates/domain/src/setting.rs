//! A configuration value that cannot be used, named by its key. Each crate
//! validates its own section with these; the server adds the section name.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSetting {
    /// The key within its section, e.g. `write_batch`.
    pub key: &'static str,
    pub message: String,
}

impl InvalidSetting {
    pub fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
        }
    }
}

impl fmt::Display for InvalidSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for InvalidSetting {}

/// Every wait is bounded: a zero would mean none.
pub fn nonzero(key: &'static str, value: impl Into<u128>) -> Result<(), InvalidSetting> {
    if value.into() == 0 {
        Err(InvalidSetting::new(key, "must be greater than 0"))
    } else {
        Ok(())
    }
}

/// `nonzero` for a duration (its unit is in the key's name).
pub fn nonzero_duration(
    key: &'static str,
    value: std::time::Duration,
) -> Result<(), InvalidSetting> {
    nonzero(key, value.as_nanos())
}

/// `value` within `range` (both ends included), e.g. a batch size.
pub fn within(
    key: &'static str,
    value: usize,
    range: std::ops::RangeInclusive<usize>,
) -> Result<(), InvalidSetting> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(InvalidSetting::new(
            key,
            format!("must be between {} and {}", range.start(), range.end()),
        ))
    }
}
