//! Coupons and issued coupons as the rest of the service sees them, and a
//! new coupon parsed once from what an admin sent.

use chrono::{DateTime, Utc};
use commerce_domain::{CouponId, ParseCode, ParseError, UserCouponId, UserId};
use serde::Serialize;

use crate::gate::GateState;

#[derive(Debug, Clone, Serialize)]
pub struct Coupon {
    pub id: CouponId,
    pub name: String,
    pub discount_amount: i64,
    pub quantity: i32,
    pub opens_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A validated coupon definition.
#[derive(Debug, Clone)]
pub struct NewCoupon {
    pub name: String,
    pub discount_amount: i64,
    pub quantity: i32,
    pub opens_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

pub const MAX_QUANTITY: i64 = 10_000_000;
pub const MAX_DISCOUNT: i64 = 100_000_000_000;

impl NewCoupon {
    pub fn parse(
        name: &str,
        discount_amount: i64,
        quantity: i64,
        opens_at: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<Self, ParseError> {
        // Trimmed, 1..=100 characters, no control characters (NUL would
        // reach PostgreSQL, which refuses it).
        let name = commerce_domain::parse_name(name, 100)?;
        if !(1..=MAX_DISCOUNT).contains(&discount_amount) {
            return Err(ParseError::new(
                ParseCode::InvalidDiscount,
                format!("discount_amount must be between 1 and {MAX_DISCOUNT}"),
            ));
        }
        if !(1..=MAX_QUANTITY).contains(&quantity) {
            return Err(ParseError::new(
                ParseCode::InvalidQuantity,
                format!("quantity must be between 1 and {MAX_QUANTITY}"),
            ));
        }
        if expires_at.is_some_and(|e| e <= opens_at) {
            return Err(ParseError::new(
                ParseCode::InvalidExpiry,
                "expires_at must be after opens_at",
            ));
        }
        Ok(Self {
            name,
            discount_amount,
            quantity: i32::try_from(quantity)
                .map_err(|_| ParseError::new(ParseCode::InvalidQuantity, "quantity too large"))?,
            opens_at,
            expires_at,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IssuedCoupon {
    pub user_coupon_id: UserCouponId,
    pub coupon_id: CouponId,
    pub user_id: UserId,
    pub discount_amount: i64,
    pub issued_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MyCoupon {
    pub user_coupon_id: UserCouponId,
    pub coupon_id: CouponId,
    pub name: String,
    pub discount_amount: i64,
    /// `issued`, `used` or `expired`.
    pub status: String,
    pub order_id: Option<i64>,
    pub issued_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// What a reconciliation found and did.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileReport {
    pub coupon_id: CouponId,
    pub issued_in_database: i64,
    pub gate_before: Option<GateState>,
    pub gate_after: GateState,
    /// Whether the gate disagreed with PostgreSQL and was rewritten.
    pub repaired: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn coupon_definitions_are_validated() {
        let open = t("2026-01-01T00:00:00Z");
        assert!(NewCoupon::parse("c", 100, 10, open, None).is_ok());
        assert_eq!(
            NewCoupon::parse(" ", 100, 10, open, None).unwrap_err().code,
            ParseCode::InvalidName
        );
        assert_eq!(
            NewCoupon::parse("c", 0, 10, open, None).unwrap_err().code,
            ParseCode::InvalidDiscount
        );
        assert_eq!(
            NewCoupon::parse("c", 1, 0, open, None).unwrap_err().code,
            ParseCode::InvalidQuantity
        );
        assert_eq!(
            NewCoupon::parse("c", 1, MAX_QUANTITY + 1, open, None)
                .unwrap_err()
                .code,
            ParseCode::InvalidQuantity
        );
        assert_eq!(
            NewCoupon::parse("c", 1, 1, open, Some(open))
                .unwrap_err()
                .code,
            ParseCode::InvalidExpiry
        );
    }
}
