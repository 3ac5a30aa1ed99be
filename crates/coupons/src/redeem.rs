//! Using an issued coupon, inside a caller's transaction. The coupons
//! crate owns `coupons` and `user_coupons`; orders read a coupon's discount
//! and redeem it at payment through these functions (wired by the server),
//! so the redemption commits or rolls back with the payment.

use chrono::{DateTime, Utc};
use commerce_domain::{OrderId, UserCouponId, UserId};
use commerce_storage::schema::{coupons, user_coupons};
use commerce_storage::StorageError;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

pub use commerce_domain::CouponUnusable as Unusable;

/// The discount `uc` gives `user` if they may use it now (no lock: the
/// redemption at payment is the guard).
pub async fn discount_in(
    c: &AsyncPgConnection,
    user: UserId,
    uc: UserCouponId,
) -> Result<Result<i64, Unusable>, StorageError> {
    let found: Option<(i64, String, i64, Option<DateTime<Utc>>)> = user_coupons::table
        .inner_join(coupons::table)
        .filter(user_coupons::id.eq(uc.get()))
        .select((
            user_coupons::user_id,
            user_coupons::status,
            coupons::discount_amount,
            coupons::expires_at,
        ))
        .first(&mut &*c)
        .await
        .optional()?;
    Ok(match found {
        None => Err(Unusable::NotFound),
        Some((owner, _, _, _)) if owner != user.get() => Err(Unusable::NotYours),
        Some((_, status, _, _)) if status != "issued" => Err(Unusable::AlreadyUsed),
        Some((_, _, _, Some(exp))) if exp <= Utc::now() => Err(Unusable::Expired),
        Some((_, _, discount, _)) => Ok(discount),
    })
}

/// Marks `uc` used by `order`, guarded: still `issued`, `user`'s, and its
/// coupon not expired. A refusal changes nothing; the caller's
/// transaction decides what else to undo.
pub async fn redeem_in(
    c: &AsyncPgConnection,
    user: UserId,
    uc: UserCouponId,
    order: OrderId,
) -> Result<Result<(), Unusable>, StorageError> {
    let used: Option<i64> = diesel::update(
        user_coupons::table
            .filter(user_coupons::id.eq(uc.get()))
            .filter(user_coupons::user_id.eq(user.get()))
            .filter(user_coupons::status.eq("issued")),
    )
    .set((
        user_coupons::status.eq("used"),
        user_coupons::order_id.eq(order.get()),
        user_coupons::used_at.eq(diesel::dsl::now),
    ))
    .returning(user_coupons::coupon_id)
    .get_result(&mut &*c)
    .await
    .optional()?;
    let Some(coupon) = used else {
        return Ok(Err(Unusable::AlreadyUsed));
    };
    let expires: Option<DateTime<Utc>> = coupons::table
        .find(coupon)
        .select(coupons::expires_at)
        .first(&mut &*c)
        .await?;
    // Used but expired: the caller's transaction rolls the use back.
    if expires.is_some_and(|e| e <= Utc::now()) {
        return Ok(Err(Unusable::Expired));
    }
    Ok(Ok(()))
}
