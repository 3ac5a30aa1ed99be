//! Orders, their lines and payments as the rest of the service sees them,
//! and a new order parsed once from what a user sent.

use chrono::{DateTime, Utc};
use commerce_domain::{OrderId, ParseCode, ParseError, ProductId, UserCouponId, UserId};
use serde::Serialize;
use std::collections::HashSet;

pub const MAX_ITEMS: usize = 20;
pub const MAX_QUANTITY: i64 = 100;

/// A validated order line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub product: ProductId,
    pub quantity: i32,
}

/// Validated order request: 1..=MAX_ITEMS distinct products, quantities
/// 1..=MAX_QUANTITY. Lines are sorted by product so concurrent orders touch
/// product rows in one order (no deadlocks between multi-item orders).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub lines: Vec<Line>,
    pub user_coupon: Option<UserCouponId>,
}

impl NewOrder {
    pub fn parse(items: &[(i64, i64)], user_coupon: Option<i64>) -> Result<Self, ParseError> {
        if items.is_empty() {
            return Err(ParseError::new(
                ParseCode::InvalidItems,
                "items must not be empty",
            ));
        }
        if items.len() > MAX_ITEMS {
            return Err(ParseError::new(
                ParseCode::InvalidItems,
                format!("at most {MAX_ITEMS} items"),
            ));
        }
        let mut seen = HashSet::new();
        let mut lines = Vec::with_capacity(items.len());
        for &(product, quantity) in items {
            let product = ProductId::parse(product)?;
            if !(1..=MAX_QUANTITY).contains(&quantity) {
                return Err(ParseError::new(
                    ParseCode::InvalidQuantity,
                    format!("quantity must be between 1 and {MAX_QUANTITY}"),
                ));
            }
            if !seen.insert(product) {
                return Err(ParseError::new(
                    ParseCode::DuplicateProduct,
                    "each product may appear once",
                ));
            }
            lines.push(Line {
                product,
                quantity: i32::try_from(quantity)
                    .map_err(|_| ParseError::new(ParseCode::InvalidQuantity, "too large"))?,
            });
        }
        lines.sort_by_key(|l| l.product);
        let user_coupon = user_coupon.map(UserCouponId::parse).transpose()?;
        Ok(Self { lines, user_coupon })
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OrderItem {
    pub product_id: ProductId,
    pub quantity: i32,
    pub unit_price: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Order {
    pub id: OrderId,
    pub user_id: UserId,
    pub status: String,
    pub total: i64,
    pub discount: i64,
    pub pay_amount: i64,
    pub user_coupon_id: Option<UserCouponId>,
    pub items: Vec<OrderItem>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Payment {
    pub order_id: OrderId,
    pub status: &'static str,
    pub paid_amount: i64,
    pub balance: i64,
    pub paid_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_requests_are_validated() {
        assert_eq!(
            NewOrder::parse(&[], None).unwrap_err().code,
            ParseCode::InvalidItems
        );
        assert_eq!(
            NewOrder::parse(&[(1, 0)], None).unwrap_err().code,
            ParseCode::InvalidQuantity
        );
        assert_eq!(
            NewOrder::parse(&[(1, 101)], None).unwrap_err().code,
            ParseCode::InvalidQuantity
        );
        assert_eq!(
            NewOrder::parse(&[(0, 1)], None).unwrap_err().code,
            ParseCode::InvalidId
        );
        assert_eq!(
            NewOrder::parse(&[(1, 1), (1, 2)], None).unwrap_err().code,
            ParseCode::DuplicateProduct
        );
        let many: Vec<(i64, i64)> = (1..=21).map(|i| (i, 1)).collect();
        assert_eq!(
            NewOrder::parse(&many, None).unwrap_err().code,
            ParseCode::InvalidItems
        );
        let ok = NewOrder::parse(&[(9, 1), (3, 2)], Some(4)).unwrap();
        assert_eq!(ok.lines[0].product.get(), 3, "sorted by product");
        assert_eq!(ok.user_coupon.map(UserCouponId::get), Some(4));
    }
}
