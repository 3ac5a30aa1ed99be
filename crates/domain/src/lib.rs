//! Domain newtypes. Values are parsed once at the edge (HTTP, config) and are
//! valid by construction afterwards, so capability code never re-checks them.

pub mod setting;

use serde::{Deserialize, Serialize};
use std::fmt;

/// The largest balance one user can hold (minor units). Keeps every sum far
/// from `i64` overflow; the database enforces the same bound.
pub const MAX_BALANCE: i64 = 1_000_000_000_000_000;
/// The largest single charge (minor units).
pub const MAX_CHARGE: i64 = 100_000_000_000;

/// Which rule a raw value broke: the domain's own codes, with no transport
/// in them (the HTTP layer maps each to its error code and status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParseCode {
    /// An id that is not a positive integer.
    InvalidId,
    /// A charge amount out of its bounds.
    InvalidAmount,
    /// A display name that is empty, too long or has control characters.
    InvalidName,
    /// An idempotency key that is not 1 to 255 visible ASCII characters.
    InvalidIdempotencyKey,
    /// A product description that is too long or has control characters.
    InvalidDescription,
    InvalidPrice,
    InvalidStock,
    /// A product change that changes nothing.
    EmptyPatch,
    InvalidPage,
    InvalidSize,
    /// A count of units sold that is not positive (or overflows).
    InvalidUnits,
    /// An order's item list that is empty or too long.
    InvalidItems,
    InvalidQuantity,
    /// The same product twice in one order.
    DuplicateProduct,
    InvalidDiscount,
    InvalidExpiry,
}

impl ParseCode {
    /// A stable snake_case name (logs and tests).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidId => "invalid_id",
            Self::InvalidAmount => "invalid_amount",
            Self::InvalidName => "invalid_name",
            Self::InvalidIdempotencyKey => "invalid_idempotency_key",
            Self::InvalidDescription => "invalid_description",
            Self::InvalidPrice => "invalid_price",
            Self::InvalidStock => "invalid_stock",
            Self::EmptyPatch => "empty_patch",
            Self::InvalidPage => "invalid_page",
            Self::InvalidSize => "invalid_size",
            Self::InvalidUnits => "invalid_units",
            Self::InvalidItems => "invalid_items",
            Self::InvalidQuantity => "invalid_quantity",
            Self::DuplicateProduct => "duplicate_product",
            Self::InvalidDiscount => "invalid_discount",
            Self::InvalidExpiry => "invalid_expiry",
        }
    }
}

impl fmt::Display for ParseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a raw value was refused: the rule broken and a message safe to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    pub code: ParseCode,
    pub message: String,
}

impl ParseError {
    pub fn new(code: ParseCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

macro_rules! id_type {
    ($name:ident, $what:literal) => {
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(i64);

        impl $name {
            /// Ids are positive database keys; anything else cannot name a row.
            pub fn parse(raw: i64) -> Result<Self, ParseError> {
                if raw > 0 {
                    Ok(Self(raw))
                } else {
                    Err(ParseError::new(
                        ParseCode::InvalidId,
                        concat!($what, " id must be a positive integer"),
                    ))
                }
            }
            /// For values read back from the database, which only holds valid ids.
            pub fn from_db(raw: i64) -> Self {
                Self(raw)
            }
            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(UserId, "user");
id_type!(ProductId, "product");
id_type!(CouponId, "coupon");
id_type!(UserCouponId, "user coupon");
id_type!(OrderId, "order");

/// A positive amount of money in minor units, bounded by [`MAX_CHARGE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ChargeAmount(i64);

impl ChargeAmount {
    pub fn parse(raw: i64) -> Result<Self, ParseError> {
        if raw <= 0 {
            return Err(ParseError::new(
                ParseCode::InvalidAmount,
                "amount must be a positive integer",
            ));
        }
        if raw > MAX_CHARGE {
            return Err(ParseError::new(
                ParseCode::InvalidAmount,
                format!("amount must be at most {MAX_CHARGE}"),
            ));
        }
        Ok(Self(raw))
    }
    pub fn get(self) -> i64 {
        self.0
    }
}

/// A display name (user, product, coupon): trimmed, 1..=`max_chars`
/// characters, no control characters. Refusals carry `invalid_name`.
pub fn parse_name(raw: &str, max_chars: usize) -> Result<String, ParseError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(ParseError::new(
            ParseCode::InvalidName,
            "name must not be empty",
        ));
    }
    // The limit applies to what was sent (as the API description says),
    // surrounding spaces included.
    if raw.chars().count() > max_chars {
        return Err(ParseError::new(
            ParseCode::InvalidName,
            format!("name must be at most {max_chars} characters"),
        ));
    }
    // Anywhere in what was sent: a control character at either end (a
    // tab, a form feed) is refused like one inside, as the schema says,
    // not trimmed away.
    if raw.chars().any(char::is_control) {
        return Err(ParseError::new(
            ParseCode::InvalidName,
            "name must not contain control characters",
        ));
    }
    Ok(trimmed.to_owned())
}

/// A user's display name: trimmed, 1..=64 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct UserName(String);

impl UserName {
    pub const MAX_CHARS: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        parse_name(raw, Self::MAX_CHARS).map(Self)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A client-chosen idempotency key: 1..=255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if raw.is_empty() || raw.len() > 255 || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ParseError::new(
                ParseCode::InvalidIdempotencyKey,
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            ));
        }
        Ok(Self(raw.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What reserving stock did (the catalog's answer to an order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockReserved {
    /// The units were taken, at this unit price.
    Taken { price: i64 },
    /// Fewer units are left than asked for; nothing was taken.
    Short,
    /// No such product.
    Unknown,
}

/// One product's part of a batch taking stock: `units` at the `price` the
/// batch priced its orders with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockTake {
    pub product: i64,
    pub units: i32,
    pub price: i64,
}

/// Why an issued coupon cannot be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CouponUnusable {
    NotFound,
    NotYours,
    AlreadyUsed,
    Expired,
}

impl CouponUnusable {
    /// What a client is told.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "no such coupon",
            Self::NotYours => "not your coupon",
            Self::AlreadyUsed => "coupon already used",
            Self::Expired => "coupon expired",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_positive() {
        assert!(UserId::parse(0).is_err());
        assert!(UserId::parse(-3).is_err());
        assert_eq!(UserId::parse(7).map(UserId::get), Ok(7));
    }

    #[test]
    fn charge_amount_bounds() {
        assert_eq!(
            ChargeAmount::parse(0).map_err(|e| e.code),
            Err(ParseCode::InvalidAmount)
        );
        assert!(ChargeAmount::parse(-1).is_err());
        assert!(ChargeAmount::parse(MAX_CHARGE + 1).is_err());
        assert_eq!(
            ChargeAmount::parse(MAX_CHARGE).map(ChargeAmount::get),
            Ok(MAX_CHARGE)
        );
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            UserName::parse("  kim ").map(UserName::into_inner),
            Ok("kim".to_owned())
        );
        assert!(UserName::parse("   ").is_err());
        assert!(UserName::parse(&"x".repeat(65)).is_err());
        assert!(UserName::parse("a\u{0}b").is_err());
        // Schemathesis found these accepted (trimmed) against the schema.
        assert!(UserName::parse("\u{fd}\u{c}").is_err());
        assert!(UserName::parse("\tkim").is_err());
        assert!(UserName::parse("kim\n").is_err());
        assert!(UserName::parse(&"가".repeat(64)).is_ok());
    }

    #[test]
    fn idempotency_keys() {
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("a b").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse("order-1:retry").is_ok());
    }
}
