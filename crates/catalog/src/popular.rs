//! The popular-products board: top 5 by units sold over the last three days.
//!
//! PostgreSQL's `product_sales_daily` is the truth; Redis holds one sorted
//! set per day (member = zero-padded product id, score = units that day),
//! merged on read. Redis is given *absolute* per-day totals (the upsert's
//! `RETURNING units`) with `ZADD GT`, not increments: a write is idempotent,
//! concurrent writers converge on the largest (latest) total whatever their
//! order, and a write lost to an outage is repaired by the next sale of that
//! product or by a rebuild, never double counted.
//!
//! A day's set is trusted only once it has been rebuilt from PostgreSQL (a
//! `:built` marker); until then, or with Redis out, the board is computed
//! from PostgreSQL with the same ordering (units descending, product id
//! ascending), so both paths give the same answer.

use crate::error::CatalogError;
use crate::model::{PopularItem, Served, Source};
use crate::shared::{bump, lock};
use crate::Catalog;
use chrono::{DateTime, Days, NaiveDate, Utc};
use commerce_domain::{ParseCode, ParseError, ProductId};
use commerce_storage::StorageError;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Products on the board.
pub const BOARD_SIZE: usize = 5;
/// Days merged, today (UTC) included.
pub const WINDOW_DAYS: u64 = 3;

/// Merges the day sets into a scratch key and reads the top `ARGV[2]` (all
/// in one atomic script, so nothing lingers). Weights of -1 turn "most units
/// first" into ascending order, where Redis breaks ties by member, i.e. by
/// zero-padded product id ascending. Answers nil when a day is not built.
/// KEYS = scratch, n day keys, n markers; ARGV = n, limit.
pub(crate) const TOP_SCRIPT: &str = r#"
local n = tonumber(ARGV[1])
for i = 1, n do
  if redis.call('EXISTS', KEYS[1 + n + i]) == 0 then return false end
end
local args = {KEYS[1], n}
for i = 1, n do args[#args + 1] = KEYS[1 + i] end
args[#args + 1] = 'WEIGHTS'
for i = 1, n do args[#args + 1] = -1 end
redis.call('ZUNIONSTORE', unpack(args))
local top = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1, 'WITHSCORES')
redis.call('DEL', KEYS[1])
return top
"#;

/// Where a board was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankingOrigin {
    Redis,
    Database,
}

impl RankingOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Database => "database",
        }
    }
}

/// The popular-products answer.
#[derive(Debug, Clone)]
pub struct PopularBoard {
    pub items: Vec<PopularItem>,
    pub origin: RankingOrigin,
    pub computed_at: Instant,
}

fn member(id: i64) -> String {
    format!("{id:019}")
}

/// A day's Redis set lives until its last day in the window is over, plus a
/// day of slack.
fn expires_at(day: NaiveDate) -> i64 {
    day.checked_add_days(Days::new(WINDOW_DAYS + 1))
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(i64::MAX, |d| d.and_utc().timestamp())
}

fn window(today: NaiveDate) -> Vec<NaiveDate> {
    (0..WINDOW_DAYS)
        .filter_map(|back| today.checked_sub_days(Days::new(back)))
        .collect()
}

impl Catalog {
    // The ranking's keys share the hash tag `{ranking}`: the board's script
    // reads every day of the window at once, which a Redis Cluster allows
    // only within one slot (the sets are small: one member per product sold).
    fn day_key(&self, day: NaiveDate) -> String {
        self.inner
            .redis
            .key(&format!("catalog:{{ranking}}:sales:{day}"))
    }

    fn built_key(&self, day: NaiveDate) -> String {
        self.inner
            .redis
            .key(&format!("catalog:{{ranking}}:sales:{day}:built"))
    }

    /// Records units sold at `at` (its UTC day). PostgreSQL first (the truth,
    /// one atomic statement), then Redis; a Redis failure is logged and the
    /// day rebuilt later, never returned. The future is `Send + 'static`
    /// once its arguments are owned, so callers may `tokio::spawn` it; if it
    /// is dropped between the two writes, Redis is repaired the same way.
    /// Records units sold inside the caller's transaction (an event
    /// consumer's inbox transaction: the sale then counts exactly once).
    /// Call [`Catalog::publish_sales`] after the commit to update Redis.
    pub async fn record_sales_in(
        &self,
        conn: &mut diesel_async::AsyncPgConnection,
        sales: &[(ProductId, i64)],
        at: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        let rows = merge_sales(sales)?;
        if rows.is_empty() {
            return Ok(());
        }
        crate::store::add_sales_on(conn, at.date_naive(), &rows)
            .await
            .map_err(|e| match e {
                StorageError::ForeignKeyViolation(_) => CatalogError::NotFound,
                other => CatalogError::Storage(other),
            })?;
        Ok(())
    }

    /// Publishes committed sales of these products to the Redis ranking
    /// (absolute totals under `ZADD GT`: repeating it is harmless).
    pub async fn publish_sales(&self, products: &[ProductId], at: DateTime<Utc>) {
        let day = at.date_naive();
        let ids: Vec<i64> = products.iter().map(|p| p.get()).collect();
        let published = match crate::store::totals_of(&self.inner.db, day, &ids).await {
            Ok(totals) => self.zadd_totals(day, &totals).await.is_ok(),
            Err(_) => false,
        };
        if !published {
            lock(&self.inner.dirty_days).insert(day);
        }
        self.inner.popular.invalidate_all();
    }

    pub async fn record_sales(
        &self,
        sales: &[(ProductId, i64)],
        at: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        let rows = merge_sales(sales)?;
        if rows.is_empty() {
            return Ok(());
        }
        let day = at.date_naive();
        let totals = crate::store::add_sales(&self.inner.db, day, &rows)
            .await
            .map_err(|e| match e {
                StorageError::ForeignKeyViolation(_) => CatalogError::NotFound,
                other => CatalogError::Storage(other),
            })?;
        if let Err(e) = self.zadd_totals(day, &totals).await {
            tracing::info!(%day, error = %e, "sales not in the Redis ranking yet; the day will be rebuilt");
            lock(&self.inner.dirty_days).insert(day);
        }
        self.inner.popular.invalidate_all();
        metrics::counter!("catalog_sales_recorded_total").increment(1);
        Ok(())
    }

    /// `ZADD GT` absolute totals into a day's set (and keep its expiry).
    async fn zadd_totals(
        &self,
        day: NaiveDate,
        totals: &[(i64, i64)],
    ) -> Result<(), commerce_resilience::CallError<redis::RedisError>> {
        let key = self.day_key(day);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for chunk in totals.chunks(500) {
            let cmd = pipe.cmd("ZADD").arg(&key).arg("GT");
            for (id, units) in chunk {
                cmd.arg(*units).arg(member(*id));
            }
            cmd.ignore();
        }
        pipe.cmd("EXPIREAT").arg(&key).arg(expires_at(day)).ignore();
        self.inner
            .redis
            .run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await
    }

    /// Loads a day's set from PostgreSQL and marks it built. Safe alongside
    /// concurrent sales: every write is an absolute total under `GT`.
    pub(crate) async fn rebuild_day(&self, day: NaiveDate) -> Result<(), CatalogError> {
        let rows = crate::store::day_sales(&self.inner.db, day).await?;
        if !rows.is_empty() {
            self.zadd_totals(day, &rows)
                .await
                .map_err(|e| CatalogError::Busy {
                    reason: "redis unavailable",
                    retry_after_secs: e.retry_after_secs(),
                })?;
        }
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.built_key(day))
            .arg(1)
            .arg("EXAT")
            .arg(expires_at(day));
        self.inner
            .redis
            .query::<()>(cmd)
            .await
            .map_err(|e| CatalogError::Busy {
                reason: "redis unavailable",
                retry_after_secs: e.retry_after_secs(),
            })?;
        tracing::debug!(%day, products = rows.len(), "sales ranking rebuilt from PostgreSQL");
        Ok(())
    }

    pub(crate) fn mark_window_dirty(&self) {
        lock(&self.inner.dirty_days).extend(window(Utc::now().date_naive()));
    }

    /// Rebuilds the days marked dirty (stops at the first failure).
    pub(crate) async fn rebuild_dirty_days(&self) {
        let days: Vec<NaiveDate> = lock(&self.inner.dirty_days).iter().copied().collect();
        let oldest = Utc::now()
            .date_naive()
            .checked_sub_days(Days::new(WINDOW_DAYS))
            .unwrap_or(NaiveDate::MIN);
        for day in days {
            if day > oldest {
                if let Err(e) = self.rebuild_day(day).await {
                    tracing::debug!(%day, error = %e, "ranking rebuild deferred");
                    return;
                }
            }
            lock(&self.inner.dirty_days).remove(&day);
        }
    }

    /// `product_stock{product}` for the best sellers of the popular board
    /// (the products a sale is moving now; the board bounds the series), in
    /// Prometheus's text format, read at scrape. Written here rather than
    /// kept as gauges: a product that leaves the board leaves the metrics
    /// with it, instead of showing its last count for ever.
    pub async fn stock_exposition(&self) -> Result<String, CatalogError> {
        let board = self.popular().await?;
        let ids: Vec<i64> = board
            .value
            .items
            .iter()
            .map(|i| i.product_id.get())
            .collect();
        if ids.is_empty() {
            return Ok(String::new());
        }
        let mut out = String::from(
            "# HELP product_stock Units left of each best-selling product (the popular board's, read at scrape).\n\
             # TYPE product_stock gauge\n",
        );
        for (id, stock) in crate::store::stock_of(&self.inner.db, &ids).await? {
            out.push_str(&format!("product_stock{{product=\"{id}\"}} {stock}\n"));
        }
        Ok(out)
    }

    /// Top 5 by units sold over the last three days, ties by product id.
    /// Reused in process for `popular_ttl`; from Redis when its days are
    /// built, else from PostgreSQL; the last board stands in (marked stale)
    /// when both fail.
    pub async fn popular(&self) -> Result<Served<Arc<PopularBoard>>, CatalogError> {
        let ran = AtomicBool::new(false);
        let board = self
            .inner
            .popular
            .try_get_with((), async {
                ran.store(true, Ordering::Relaxed);
                self.compute_board().await
            })
            .await;
        match board {
            Ok(board) => {
                let source = match (ran.load(Ordering::Relaxed), board.origin) {
                    (false, _) => Source::L1,
                    (true, RankingOrigin::Redis) => Source::L2,
                    (true, RankingOrigin::Database) => Source::Db,
                };
                Ok(Served {
                    value: board,
                    source,
                    stale_age: None,
                })
            }
            Err(e) => {
                let last = lock(&self.inner.last_board).clone();
                match last {
                    Some(board) if e.is_unavailable() => {
                        bump(&self.inner.counters.stale_served);
                        let age = board.computed_at.elapsed();
                        Ok(Served {
                            value: board,
                            source: Source::L1,
                            stale_age: Some(age),
                        })
                    }
                    _ => Err(CatalogError::from_shared(&e)),
                }
            }
        }
    }

    async fn compute_board(&self) -> Result<Arc<PopularBoard>, CatalogError> {
        let days = window(Utc::now().date_naive());
        let (ranking, origin) = match self.ranking_from_redis(&days).await {
            Ok(Some(ranking)) => (ranking, RankingOrigin::Redis),
            Ok(None) => {
                // Not built yet (new day, Redis lost its data): rebuild soon.
                lock(&self.inner.dirty_days).extend(days.iter().copied());
                (self.ranking_from_db(&days).await?, RankingOrigin::Database)
            }
            Err(e) => {
                tracing::debug!(error = %e, "ranking from PostgreSQL: Redis unavailable");
                (self.ranking_from_db(&days).await?, RankingOrigin::Database)
            }
        };
        let details =
            futures::future::join_all(ranking.iter().map(|(id, _)| self.detail(*id))).await;
        let mut items = Vec::with_capacity(ranking.len());
        for ((id, units), detail) in ranking.into_iter().zip(details) {
            match detail {
                Ok(d) => items.push(PopularItem {
                    product_id: id,
                    name: d.value.name.clone(),
                    price: d.value.price,
                    units_sold: units,
                }),
                Err(CatalogError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        let board = Arc::new(PopularBoard {
            items,
            origin,
            computed_at: Instant::now(),
        });
        *lock(&self.inner.last_board) = Some(board.clone());
        Ok(board)
    }

    async fn ranking_from_redis(
        &self,
        days: &[NaiveDate],
    ) -> Result<Option<Vec<(ProductId, i64)>>, commerce_resilience::CallError<redis::RedisError>>
    {
        let scratch = self.inner.redis.key("catalog:{ranking}:popular:scratch");
        let mut invocation = self.inner.top_script.key(&scratch);
        for day in days {
            invocation.key(self.day_key(*day));
        }
        for day in days {
            invocation.key(self.built_key(*day));
        }
        invocation.arg(days.len()).arg(BOARD_SIZE);
        let raw: Option<Vec<String>> = self.inner.redis.invoke_script(&invocation).await?;
        bump(&self.inner.counters.popular_redis_loads);
        Ok(raw.map(|flat| {
            flat.chunks_exact(2)
                .filter_map(|pair| {
                    let id = pair[0].parse::<i64>().ok()?;
                    let score = pair[1].parse::<f64>().ok()?;
                    // Scores were negated by the weights; counts fit f64 exactly.
                    #[allow(clippy::cast_possible_truncation)]
                    let units = (-score).round() as i64;
                    Some((ProductId::from_db(id), units))
                })
                .filter(|(_, units)| *units > 0)
                .collect()
        }))
    }

    async fn ranking_from_db(
        &self,
        days: &[NaiveDate],
    ) -> Result<Vec<(ProductId, i64)>, CatalogError> {
        let (Some(to), Some(from)) = (days.first(), days.last()) else {
            return Ok(Vec::new());
        };
        let inner = &self.inner;
        let _permit = self.db_permit().await?;
        bump(&inner.counters.popular_db_loads);
        metrics::counter!("catalog_db_loads_total", "what" => "popular").increment(1);
        let limit = i64::try_from(BOARD_SIZE).unwrap_or(5);
        let (from, to) = (*from, *to);
        let rows = inner
            .reads
            .read(|db| async move { crate::store::top_sales(&db, from, to, limit).await })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, units)| (ProductId::from_db(id), units))
            .collect())
    }
}

/// Sums units per product (sorted by id, so concurrent upserts lock rows in
/// one order); refuses non-positive units.
fn merge_sales(sales: &[(ProductId, i64)]) -> Result<Vec<(i64, i64)>, CatalogError> {
    let mut merged: BTreeMap<i64, i64> = BTreeMap::new();
    for (id, units) in sales {
        if *units <= 0 {
            return Err(
                ParseError::new(ParseCode::InvalidUnits, "units sold must be positive").into(),
            );
        }
        let slot = merged.entry(id.get()).or_default();
        *slot = slot
            .checked_add(*units)
            .ok_or_else(|| ParseError::new(ParseCode::InvalidUnits, "units sold overflow"))?;
    }
    Ok(merged.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_sort_like_ids() {
        let mut ids = [10_i64, 9, 100, 1];
        let mut members: Vec<String> = ids.iter().map(|i| member(*i)).collect();
        members.sort();
        ids.sort();
        assert_eq!(members, ids.iter().map(|i| member(*i)).collect::<Vec<_>>());
        assert_eq!(member(i64::MAX).len(), 19);
    }

    #[test]
    fn window_is_today_and_two_days_back() {
        let today = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap_or_default();
        let w = window(today);
        assert_eq!(w.len(), 3);
        assert_eq!(w[0], today);
        assert_eq!(
            w[2],
            NaiveDate::from_ymd_opt(2026, 2, 27).unwrap_or_default()
        );
        // A day's set outlives the window by one day.
        let exp = DateTime::from_timestamp(expires_at(w[2]), 0).map(|d| d.date_naive());
        assert_eq!(exp, NaiveDate::from_ymd_opt(2026, 3, 3));
    }
}
