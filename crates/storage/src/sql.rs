//! SQL text that a connection prepares once and keeps.
//!
//! `diesel::sql_query` marks its statement unsafe to cache, so every call
//! sends a Parse (one more round trip) and PostgreSQL parses and plans the
//! text again; multi-row `insert_into(..).values(&vec)` does the same,
//! since its text changes with the row count. On the hot write paths
//! (claiming an Idempotency-Key, batched orders and payments, ledger
//! movements) that was most of PostgreSQL's CPU per request. [`cached`] is
//! a drop-in for `sql_query` whose fixed text is cached by the connection
//! like any query built with the DSL: write batches with arrays
//! (`unnest($1::bigint[], ...)`) so the text does not depend on the batch
//! size.

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{HasSqlType, Untyped};
use diesel::QueryResult;
use std::marker::PhantomData;

/// A statement of fixed text with `$1`, `$2`... placeholders, bound in
/// order with [`Cached::bind`]. Load rows with `QueryableByName` types, as
/// with `sql_query`.
#[must_use = "a query does nothing until it is run"]
pub struct Cached<'q> {
    sql: &'q str,
    binds: Vec<Box<dyn Arg + Send + Sync + 'q>>,
}

/// Starts a statement whose text the connection prepares once.
pub fn cached(sql: &str) -> Cached<'_> {
    Cached {
        sql,
        binds: Vec::new(),
    }
}

impl<'q> Cached<'q> {
    /// Binds the next placeholder (`$1` first) to `value` as SQL type `ST`.
    pub fn bind<ST, U>(mut self, value: U) -> Self
    where
        Pg: HasSqlType<ST>,
        U: ToSql<ST, Pg> + Send + Sync + 'q,
        ST: 'q,
    {
        self.binds.push(Box::new(Bound::<ST, U> {
            value,
            sql_type: PhantomData,
        }));
        self
    }
}

trait Arg {
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()>;
}

struct Bound<ST, U> {
    value: U,
    sql_type: PhantomData<fn() -> ST>,
}

impl<ST, U> Arg for Bound<ST, U>
where
    Pg: HasSqlType<ST>,
    U: ToSql<ST, Pg>,
{
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_bind_param::<ST, U>(&self.value)
    }
}

impl QueryId for Cached<'_> {
    // No static id: the connection caches it by its text and bind types.
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Cached<'_> {
    type SqlType = Untyped;
}

impl QueryFragment<Pg> for Cached<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let mut rest = self.sql;
        while let Some(at) = rest.find('$') {
            let digits = rest[at + 1..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            if digits == 0 {
                out.push_sql(&rest[..=at]);
                rest = &rest[at + 1..];
                continue;
            }
            out.push_sql(&rest[..at]);
            let n: usize = rest[at + 1..at + 1 + digits].parse().unwrap_or(0);
            let arg = n
                .checked_sub(1)
                .and_then(|i| self.binds.get(i))
                .ok_or_else(|| {
                    diesel::result::Error::QueryBuilderError(
                        format!("placeholder ${n} has no bound value").into(),
                    )
                })?;
            // Diesel numbers the parameters it pushes itself, in order.
            arg.push(&mut out)?;
            rest = &rest[at + 1 + digits..];
        }
        out.push_sql(rest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::sql_types::{BigInt, Text};

    fn text(q: &Cached<'_>) -> String {
        diesel::debug_query::<Pg, _>(q).to_string()
    }

    #[test]
    fn placeholders_are_bound_in_order_and_may_repeat() {
        let q = cached("SELECT $1::bigint, $2::text WHERE $1 > 0")
            .bind::<BigInt, _>(7i64)
            .bind::<Text, _>("x");
        let shown = text(&q);
        assert!(
            shown.starts_with("SELECT $1::bigint, $2::text WHERE $3 > 0"),
            "{shown}"
        );
        assert!(shown.contains("[7, \"x\", 7]"), "{shown}");
    }

    #[test]
    fn a_placeholder_without_a_value_is_an_error_not_a_panic() {
        let q = cached("SELECT $2").bind::<BigInt, _>(1i64);
        let mut builder = diesel::pg::PgQueryBuilder::default();
        assert!(q.to_sql(&mut builder, &Pg).is_err());
    }
}
