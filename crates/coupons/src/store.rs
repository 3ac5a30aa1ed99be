//! PostgreSQL side of coupons: the truth and the last guard.

use crate::error::CouponError;
use crate::model::{Coupon, IssuedCoupon, MyCoupon, NewCoupon};
use commerce_domain::{CouponId, UserCouponId, UserId};
use commerce_storage::schema::{coupons, user_coupons};
use commerce_storage::{conn, DbPool, StorageError};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Integer, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

type CouponRow = (
    i64,
    String,
    i64,
    i32,
    chrono::DateTime<chrono::Utc>,
    Option<chrono::DateTime<chrono::Utc>>,
);

fn to_coupon(r: CouponRow) -> Coupon {
    Coupon {
        id: CouponId::from_db(r.0),
        name: r.1,
        discount_amount: r.2,
        quantity: r.3,
        opens_at: r.4,
        expires_at: r.5,
    }
}

const COUPON_COLUMNS: (
    coupons::id,
    coupons::name,
    coupons::discount_amount,
    coupons::quantity,
    coupons::opens_at,
    coupons::expires_at,
) = (
    coupons::id,
    coupons::name,
    coupons::discount_amount,
    coupons::quantity,
    coupons::opens_at,
    coupons::expires_at,
);

pub async fn create(pool: &DbPool, new: &NewCoupon) -> Result<Coupon, CouponError> {
    let mut c = conn(pool).await?;
    let row: CouponRow = diesel::insert_into(coupons::table)
        .values((
            coupons::name.eq(&new.name),
            coupons::discount_amount.eq(new.discount_amount),
            coupons::quantity.eq(new.quantity),
            coupons::opens_at.eq(new.opens_at),
            coupons::expires_at.eq(new.expires_at),
        ))
        .returning(COUPON_COLUMNS)
        .get_result(&mut c)
        .await
        .map_err(StorageError::from)?;
    Ok(to_coupon(row))
}

pub async fn find(pool: &DbPool, id: CouponId) -> Result<Option<Coupon>, CouponError> {
    let mut c = conn(pool).await?;
    let row: Option<CouponRow> = coupons::table
        .find(id.get())
        .select(COUPON_COLUMNS)
        .first(&mut c)
        .await
        .optional()
        .map_err(StorageError::from)?;
    Ok(row.map(to_coupon))
}

/// Coupons that can be issued now (for periodic reconciliation).
pub async fn open_now(pool: &DbPool) -> Result<Vec<Coupon>, CouponError> {
    let mut c = conn(pool).await?;
    let now = chrono::Utc::now();
    let rows: Vec<CouponRow> = coupons::table
        .filter(coupons::opens_at.le(now))
        .filter(
            coupons::expires_at
                .is_null()
                .or(coupons::expires_at.gt(now)),
        )
        .select(COUPON_COLUMNS)
        .order(coupons::id)
        .limit(1000)
        .load(&mut c)
        .await
        .map_err(StorageError::from)?;
    Ok(rows.into_iter().map(to_coupon).collect())
}

/// (id, issued, quantity) of the `limit` open coupons that opened last,
/// in one statement (the metrics' issued-vs-quantity, read at scrape).
pub async fn open_issued(pool: &DbPool, limit: i64) -> Result<Vec<(i64, i64, i32)>, CouponError> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        issued: i64,
        #[diesel(sql_type = diesel::sql_types::Integer)]
        quantity: i32,
    }
    let mut c = conn(pool).await?;
    // One index-only count per coupon (user_coupons_one_per_slot leads
    // with coupon_id), bounded by `limit` coupons.
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT c.id, c.quantity, \
                (SELECT count(*) FROM user_coupons u WHERE u.coupon_id = c.id) AS issued \
         FROM coupons c \
         WHERE c.opens_at <= now() AND (c.expires_at IS NULL OR c.expires_at > now()) \
         ORDER BY c.opens_at DESC, c.id DESC LIMIT $1",
    )
    .bind::<diesel::sql_types::BigInt, _>(limit)
    .load(&mut c)
    .await
    .map_err(StorageError::from)?;
    Ok(rows
        .into_iter()
        .map(|r| (r.id, r.issued, r.quantity))
        .collect())
}

/// (user, slot) of every issued coupon.
pub async fn holders(pool: &DbPool, id: CouponId) -> Result<Vec<(i64, i32)>, CouponError> {
    let mut c = conn(pool).await?;
    Ok(user_coupons::table
        .filter(user_coupons::coupon_id.eq(id.get()))
        .select((user_coupons::user_id, user_coupons::slot))
        .load(&mut c)
        .await
        .map_err(StorageError::from)?)
}

pub async fn issued_count(pool: &DbPool, id: CouponId) -> Result<i64, CouponError> {
    let mut c = conn(pool).await?;
    Ok(user_coupons::table
        .filter(user_coupons::coupon_id.eq(id.get()))
        .count()
        .get_result(&mut c)
        .await
        .map_err(StorageError::from)?)
}

pub async fn holds(pool: &DbPool, id: CouponId, user: UserId) -> Result<bool, CouponError> {
    let mut c = conn(pool).await?;
    let found: Option<i64> = user_coupons::table
        .filter(user_coupons::coupon_id.eq(id.get()))
        .filter(user_coupons::user_id.eq(user.get()))
        .select(user_coupons::id)
        .first(&mut c)
        .await
        .optional()
        .map_err(StorageError::from)?;
    Ok(found.is_some())
}

/// Why an insert of an issued coupon was refused by the database.
pub enum InsertError {
    AlreadyIssued,
    SlotTaken,
    Storage(StorageError),
}

/// Writes the issued coupon in its slot. Constraints decide the races.
pub async fn insert(
    conn: &mut AsyncPgConnection,
    coupon: &Coupon,
    user: UserId,
    slot: i32,
) -> Result<IssuedCoupon, InsertError> {
    // The row and its `coupon_issued` event commit together (outbox), in
    // one statement: one round trip on the winners' hot path.
    #[derive(QueryableByName)]
    struct Inserted {
        #[diesel(sql_type = BigInt)]
        id: i64,
        #[diesel(sql_type = diesel::sql_types::Timestamptz)]
        issued_at: chrono::DateTime<chrono::Utc>,
    }
    let res: Result<(i64, chrono::DateTime<chrono::Utc>), StorageError> = commerce_storage::sql::cached(
        "WITH ins AS (\
           INSERT INTO user_coupons (coupon_id, coupon_quantity, user_id, slot) VALUES ($1, $2, $3, $4) \
           RETURNING id, issued_at), \
         ev AS (\
           INSERT INTO outbox (id, event_type, aggregate_key, payload) \
           SELECT $5, $6, $3::text, jsonb_build_object('user_coupon_id', id, 'coupon_id', $1::bigint, \
                  'user_id', $3::bigint, 'issued_at', issued_at) FROM ins) \
         SELECT id, issued_at FROM ins",
    )
    .bind::<BigInt, _>(coupon.id.get())
    .bind::<Integer, _>(coupon.quantity)
    .bind::<BigInt, _>(user.get())
    .bind::<Integer, _>(slot)
    .bind::<diesel::sql_types::Uuid, _>(uuid::Uuid::now_v7())
    .bind::<diesel::sql_types::Text, _>(commerce_storage::outbox::event::COUPON_ISSUED)
    .get_result::<Inserted>(conn)
    .await
    .map(|r| (r.id, r.issued_at))
    .map_err(StorageError::from);
    match res {
        Ok((id, issued_at)) => {
            commerce_storage::outbox::written();
            Ok(IssuedCoupon {
                user_coupon_id: UserCouponId::from_db(id),
                coupon_id: coupon.id,
                user_id: user,
                discount_amount: coupon.discount_amount,
                issued_at,
                expires_at: coupon.expires_at,
            })
        }
        Err(StorageError::UniqueViolation(c)) if c == "user_coupons_one_per_user" => {
            Err(InsertError::AlreadyIssued)
        }
        Err(StorageError::UniqueViolation(c)) if c == "user_coupons_one_per_slot" => {
            Err(InsertError::SlotTaken)
        }
        Err(StorageError::CheckViolation(c)) if c == "user_coupons_slot_range" => {
            Err(InsertError::SlotTaken)
        }
        Err(e) => Err(InsertError::Storage(e)),
    }
}

/// One winner to write: its coupon, user and slot, and the id of its
/// `coupon_issued` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Winner {
    pub coupon_id: CouponId,
    pub coupon_quantity: i32,
    pub user: UserId,
    pub slot: i32,
}

/// A row [`insert_batch`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub coupon_id: CouponId,
    pub user: UserId,
    pub user_coupon_id: UserCouponId,
    pub issued_at: chrono::DateTime<chrono::Utc>,
}

/// Writes many winners in one statement and one commit, each row with its
/// `coupon_issued` event. A row that breaks a UNIQUE constraint is skipped,
/// not fatal: the answer lists the rows written, and the caller sorts out
/// the rest one by one. Other constraint failures (a slot beyond the
/// quantity, an unknown user) fail the whole statement. `winners` must not
/// repeat a (coupon, user) pair.
pub async fn insert_batch(
    conn: &mut AsyncPgConnection,
    winners: &[Winner],
) -> Result<Vec<Written>, StorageError> {
    // An empty batch still runs (it warms a connection: parse, plan, the
    // tables' caches) and writes nothing.
    let rows: Vec<(i64, i64, i64, chrono::DateTime<chrono::Utc>)> = InsertWinners::new(winners)
        .load(conn)
        .await
        .map_err(StorageError::from)?;
    if !rows.is_empty() {
        commerce_storage::outbox::written();
    }
    Ok(rows
        .into_iter()
        .map(|(id, coupon_id, user_id, issued_at)| Written {
            coupon_id: CouponId::from_db(coupon_id),
            user: UserId::from_db(user_id),
            user_coupon_id: UserCouponId::from_db(id),
            issued_at,
        })
        .collect())
}

/// The winners' insert as a query type of its own: its static query id lets
/// the connection prepare it once and keep it. A `sql_query` is prepared
/// again on every call, one more round trip to PostgreSQL per batch, on the
/// hottest write of a flash sale.
struct InsertWinners {
    coupon_ids: Vec<i64>,
    quantities: Vec<i32>,
    users: Vec<i64>,
    slots: Vec<i32>,
    event_ids: Vec<uuid::Uuid>,
}

impl InsertWinners {
    fn new(winners: &[Winner]) -> Self {
        Self {
            coupon_ids: winners.iter().map(|w| w.coupon_id.get()).collect(),
            quantities: winners.iter().map(|w| w.coupon_quantity).collect(),
            users: winners.iter().map(|w| w.user.get()).collect(),
            slots: winners.iter().map(|w| w.slot).collect(),
            event_ids: winners.iter().map(|_| uuid::Uuid::now_v7()).collect(),
        }
    }
}

impl QueryId for InsertWinners {
    type QueryId = InsertWinners;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for InsertWinners {
    type SqlType = (BigInt, BigInt, BigInt, Timestamptz);
}

impl QueryFragment<Pg> for InsertWinners {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH input AS (SELECT * FROM unnest(");
        out.push_bind_param::<Array<BigInt>, _>(&self.coupon_ids)?;
        out.push_sql("::bigint[], ");
        out.push_bind_param::<Array<Integer>, _>(&self.quantities)?;
        out.push_sql("::int[], ");
        out.push_bind_param::<Array<BigInt>, _>(&self.users)?;
        out.push_sql("::bigint[], ");
        out.push_bind_param::<Array<Integer>, _>(&self.slots)?;
        out.push_sql("::int[], ");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.event_ids)?;
        out.push_sql(
            "::uuid[]) AS t(coupon_id, coupon_quantity, user_id, slot, event_id)), \
             ins AS (\
               INSERT INTO user_coupons (coupon_id, coupon_quantity, user_id, slot) \
               SELECT coupon_id, coupon_quantity, user_id, slot FROM input \
               ON CONFLICT DO NOTHING \
               RETURNING id, coupon_id, user_id, issued_at), \
             ev AS (\
               INSERT INTO outbox (id, event_type, aggregate_key, payload) \
               SELECT input.event_id, ",
        );
        out.push_bind_param::<Text, _>(&commerce_storage::outbox::event::COUPON_ISSUED)?;
        out.push_sql(
            ", ins.user_id::text, \
                      jsonb_build_object('user_coupon_id', ins.id, 'coupon_id', ins.coupon_id, \
                                         'user_id', ins.user_id, 'issued_at', ins.issued_at) \
               FROM ins JOIN input ON input.coupon_id = ins.coupon_id AND input.user_id = ins.user_id) \
             SELECT id, coupon_id, user_id, issued_at FROM ins",
        );
        Ok(())
    }
}

#[derive(QueryableByName)]
struct FreeSlot {
    #[diesel(sql_type = Integer)]
    slot: i32,
}

/// Any free slot, drawn at random among all free ones: used after a
/// collision, when the free slots are few and every searcher converges on
/// the same first free one.
pub async fn random_free_slot(
    conn: &mut AsyncPgConnection,
    coupon: &Coupon,
) -> Result<Option<i32>, StorageError> {
    let found: Option<FreeSlot> = commerce_storage::sql::cached(
        "SELECT s::int AS slot FROM generate_series(1, $2::int) AS s \
         WHERE NOT EXISTS (SELECT 1 FROM user_coupons u WHERE u.coupon_id = $1 AND u.slot = s) \
         ORDER BY random() LIMIT 1",
    )
    .bind::<BigInt, _>(coupon.id.get())
    .bind::<Integer, _>(coupon.quantity)
    .get_result(conn)
    .await
    .optional()?;
    Ok(found.map(|f| f.slot))
}

/// A free slot, searched from a random start so concurrent searchers spread.
pub async fn free_slot(
    conn: &mut AsyncPgConnection,
    coupon: &Coupon,
) -> Result<Option<i32>, StorageError> {
    let start = rand::random_range(1..=coupon.quantity.max(1));
    for (from, to) in [(start, coupon.quantity), (1, start - 1)] {
        if from > to {
            continue;
        }
        let found: Option<FreeSlot> = commerce_storage::sql::cached(
            "SELECT s::int AS slot FROM generate_series($2::int, $3::int) AS s \
             WHERE NOT EXISTS (SELECT 1 FROM user_coupons u WHERE u.coupon_id = $1 AND u.slot = s) LIMIT 1",
        )
        .bind::<BigInt, _>(coupon.id.get())
        .bind::<Integer, _>(from)
        .bind::<Integer, _>(to)
        .get_result(conn)
        .await
        .optional()?;
        if let Some(f) = found {
            return Ok(Some(f.slot));
        }
    }
    Ok(None)
}

type MyRow = (
    i64,
    i64,
    String,
    i64,
    String,
    Option<i64>,
    chrono::DateTime<chrono::Utc>,
    Option<chrono::DateTime<chrono::Utc>>,
    Option<chrono::DateTime<chrono::Utc>>,
);

pub async fn mine(pool: &DbPool, user: UserId) -> Result<Vec<MyCoupon>, CouponError> {
    let mut c = conn(pool).await?;
    let rows: Vec<MyRow> = user_coupons::table
        .inner_join(coupons::table)
        .filter(user_coupons::user_id.eq(user.get()))
        .select((
            user_coupons::id,
            coupons::id,
            coupons::name,
            coupons::discount_amount,
            user_coupons::status,
            user_coupons::order_id,
            user_coupons::issued_at,
            user_coupons::used_at,
            coupons::expires_at,
        ))
        .order(user_coupons::id.desc())
        .limit(500)
        .load(&mut c)
        .await
        .map_err(StorageError::from)?;
    let now = chrono::Utc::now();
    Ok(rows
        .into_iter()
        .map(|r| {
            let expired = r.8.is_some_and(|e| e <= now);
            MyCoupon {
                user_coupon_id: UserCouponId::from_db(r.0),
                coupon_id: CouponId::from_db(r.1),
                name: r.2,
                discount_amount: r.3,
                status: if r.4 == "issued" && expired {
                    "expired".to_owned()
                } else {
                    r.4
                },
                order_id: r.5,
                issued_at: r.6,
                used_at: r.7,
                expires_at: r.8,
            }
        })
        .collect())
}
