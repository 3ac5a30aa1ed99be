//! The rules that never break (docs/architecture.md), checked in SQL after every run.
//! ALL table and column names the checks assume are in this file: adjust them
//! here when the schema lands. A rule whose tables do not exist yet
//! (`to_regclass(…) IS NULL`) is skipped; a rule whose query fails (a column
//! named differently) fails the run, so a wrong guess cannot pass silently.
//!
//! Each query returns one row: `(violations bigint, sample text)`.

use std::time::Duration;
use tokio_postgres::Client;

pub struct Rule {
    pub name: &'static str,
    pub design_rule: u8,
    /// Every table the query reads; the rule is skipped while one is missing.
    pub tables: &'static [&'static str],
    pub sql: &'static str,
}

/// The runner's snapshot of every product's stock right after seeding
/// (`CREATE TABLE … AS SELECT id, stock FROM products`).
pub const INITIAL_STOCK_TABLE: &str = "loadtest_initial_stock";
pub const SNAPSHOT_STOCK_SQL: &str =
    "DROP TABLE IF EXISTS loadtest_initial_stock; CREATE TABLE loadtest_initial_stock AS SELECT id, stock FROM products";

pub const SNAPSHOT_NEW_STOCK_SQL: &str = "INSERT INTO loadtest_initial_stock \
     SELECT id, stock FROM products p WHERE NOT EXISTS (SELECT 1 FROM loadtest_initial_stock i WHERE i.id = p.id)";

/// The name prefix of a product a flash sale is meant to sell out (more
/// buyers than units); the runner names such products with it.
pub const SOLD_OUT_PRODUCT_PREFIX: &str = "flash sale";

pub const RULES: &[Rule] = &[
    Rule {
        name: "balance never below zero",
        design_rule: 3,
        tables: &["users"],
        sql: "SELECT count(*), string_agg(id::text || '=' || balance::text, ', ') FILTER (WHERE id IS NOT NULL)
              FROM (SELECT id, balance FROM users WHERE balance < 0 LIMIT 1000) v",
    },
    Rule {
        name: "balance equals the sum of its ledger",
        design_rule: 3,
        tables: &["users", "balance_ledger"],
        sql: "SELECT count(*), string_agg(format('user %s: balance %s, ledger %s', id, balance, ledger), '; ')
              FROM (SELECT u.id, u.balance, COALESCE(l.total, 0) AS ledger
                    FROM users u
                    LEFT JOIN (SELECT user_id, sum(delta) AS total FROM balance_ledger GROUP BY user_id) l
                           ON l.user_id = u.id
                    WHERE u.balance <> COALESCE(l.total, 0)
                    LIMIT 1000) v",
    },
    Rule {
        name: "ledger running balance never below zero",
        design_rule: 3,
        tables: &["balance_ledger"],
        sql: "SELECT count(*), string_agg(user_id::text, ', ')
              FROM (SELECT user_id FROM balance_ledger WHERE balance_after < 0 LIMIT 1000) v",
    },
    Rule {
        name: "each ledger row's balance is the running sum of its user's ledger",
        design_rule: 3,
        tables: &["balance_ledger"],
        sql: "SELECT count(*), string_agg(format('ledger row %s: %s, running %s', id, balance_after, running), '; ')
              FROM (SELECT id, balance_after, running FROM
                      (SELECT id, balance_after, sum(delta) OVER (PARTITION BY user_id ORDER BY id) AS running
                       FROM balance_ledger) l
                    WHERE balance_after <> running LIMIT 1000) v",
    },
    Rule {
        name: "an order is paid at most once (one payment ledger row per reference)",
        design_rule: 4,
        tables: &["balance_ledger"],
        sql: "SELECT count(*), string_agg(reference || ' x' || n::text, ', ')
              FROM (SELECT reference, count(*) AS n FROM balance_ledger
                    WHERE kind = 'payment' AND reference IS NOT NULL
                    GROUP BY reference HAVING count(*) > 1 LIMIT 1000) v",
    },
    Rule {
        name: "an order is paid exactly when it has its one payment row",
        design_rule: 4,
        tables: &["orders", "payments"],
        sql: "SELECT count(*), string_agg(format('order %s (%s)', id, status), ', ')
              FROM (SELECT o.id, o.status FROM orders o
                    WHERE (o.status = 'paid') <> EXISTS (SELECT 1 FROM payments p WHERE p.order_id = o.id)
                    LIMIT 1000) v",
    },
    Rule {
        name: "coupon never issued beyond its quantity",
        design_rule: 1,
        tables: &["coupons", "user_coupons"],
        sql: "SELECT count(*), string_agg(format('coupon %s: %s issued of %s', id, issued, quantity), '; ')
              FROM (SELECT c.id, c.quantity, count(uc.*) AS issued
                    FROM coupons c JOIN user_coupons uc ON uc.coupon_id = c.id
                    GROUP BY c.id, c.quantity HAVING count(uc.*) > c.quantity LIMIT 1000) v",
    },
    Rule {
        name: "coupon never issued twice to one user",
        design_rule: 1,
        tables: &["user_coupons"],
        sql: "SELECT count(*), string_agg(format('coupon %s user %s x%s', coupon_id, user_id, n), '; ')
              FROM (SELECT coupon_id, user_id, count(*) AS n FROM user_coupons
                    GROUP BY coupon_id, user_id HAVING count(*) > 1 LIMIT 1000) v",
    },
    Rule {
        name: "stock never below zero",
        design_rule: 2,
        tables: &["products"],
        sql: "SELECT count(*), string_agg(id::text || '=' || stock::text, ', ')
              FROM (SELECT id, stock FROM products WHERE stock < 0 LIMIT 1000) v",
    },
    Rule {
        name: "stock conserved: initial = current + units held by pending and paid orders",
        design_rule: 2,
        tables: &["products", "orders", "order_items", INITIAL_STOCK_TABLE],
        sql: "SELECT count(*), string_agg(format('product %s: initial %s, now %s, held %s', id, initial, stock, held), '; ')
              FROM (SELECT p.id, i.stock AS initial, p.stock, COALESCE(h.held, 0) AS held
                    FROM products p
                    JOIN loadtest_initial_stock i ON i.id = p.id
                    LEFT JOIN (SELECT oi.product_id, sum(oi.quantity) AS held
                               FROM order_items oi JOIN orders o ON o.id = oi.order_id
                               WHERE o.status IN ('pending', 'paid')
                               GROUP BY oi.product_id) h ON h.product_id = p.id
                    WHERE i.stock <> p.stock + COALESCE(h.held, 0)
                    LIMIT 1000) v",
    },
    // The order path's tables carry no foreign keys (migration
    // 2026-12-07-000008): the writer checks the ids, this checks the writer.
    // An item without its order would drop out of the conservation rule's
    // join above.
    Rule {
        name: "every order, order item and idempotency key has its parent (user, order, product)",
        design_rule: 2,
        tables: &["users", "products", "orders", "order_items", "idempotency_keys"],
        sql: "SELECT count(*), string_agg(what, '; ')
              FROM ((SELECT format('order %s: no user %s', o.id, o.user_id) AS what
                     FROM orders o WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = o.user_id) LIMIT 1000)
                    UNION ALL
                    (SELECT format('item of order %s: no such order', oi.order_id)
                     FROM order_items oi WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = oi.order_id) LIMIT 1000)
                    UNION ALL
                    (SELECT format('item of order %s: no product %s', oi.order_id, oi.product_id)
                     FROM order_items oi WHERE NOT EXISTS (SELECT 1 FROM products p WHERE p.id = oi.product_id) LIMIT 1000)
                    UNION ALL
                    (SELECT format('key of user %s: no such user', k.user_id)
                     FROM idempotency_keys k WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = k.user_id) LIMIT 1000)) v",
    },
    // A flash sale (more buyers than units) never sells more than its units,
    // and its stock is what it did not sell plus what expired or cancelled
    // orders gave back (orders expire after `orders.ttl_secs`, 300 s by
    // default, which a long run of several bursts can outlast). Whether it
    // sold out (exactly its units: stock 0) is the script's threshold
    // `order_created == units`: a sale whose buyers got 503 while units were
    // left is a failed sale, not a broken rule. Selected by name:
    // SOLD_OUT_PRODUCT_PREFIX.
    Rule {
        name: "a flash-sale product never sold beyond its units (one-unit orders ≤ units, stock = units − sold + given back)",
        design_rule: 2,
        tables: &["products", "orders", "order_items", INITIAL_STOCK_TABLE],
        sql: "SELECT count(*), string_agg(format('product %s: %s units, %s sold in %s orders, stock now %s, %s given back', id, initial, sold, orders, stock, returned), '; ')
              FROM (SELECT p.id, i.stock AS initial, p.stock,
                           COALESCE(h.sold, 0) AS sold, COALESCE(h.orders, 0) AS orders,
                           COALESCE(h.returned, 0) AS returned
                    FROM products p
                    JOIN loadtest_initial_stock i ON i.id = p.id
                    LEFT JOIN (SELECT oi.product_id, sum(oi.quantity) AS sold,
                                      count(DISTINCT o.id) AS orders,
                                      COALESCE(sum(oi.quantity) FILTER (WHERE o.status IN ('expired', 'cancelled')), 0) AS returned
                               FROM order_items oi JOIN orders o ON o.id = oi.order_id
                               GROUP BY oi.product_id) h ON h.product_id = p.id
                    WHERE p.name LIKE 'flash sale %'
                      AND (COALESCE(h.sold, 0) > i.stock
                           OR COALESCE(h.orders, 0) <> COALESCE(h.sold, 0)
                           OR p.stock <> i.stock - COALESCE(h.sold, 0) + COALESCE(h.returned, 0))
                    LIMIT 1000) v",
    },
    Rule {
        name: "every paid order has its order_paid event in the outbox",
        design_rule: 6,
        tables: &["orders", "outbox"],
        sql: "SELECT count(*), string_agg(id::text, ', ')
              FROM (SELECT o.id FROM orders o
                    WHERE o.status = 'paid'
                      AND NOT EXISTS (SELECT 1 FROM outbox e
                                      WHERE e.event_type = 'order_paid'
                                        AND e.aggregate_key = o.id::text)
                    LIMIT 1000) v",
    },
];

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Held,
    Broken { violations: i64, sample: String },
    Skipped { missing: Vec<String> },
    Error(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuleResult {
    pub name: String,
    pub design_rule: u8,
    pub outcome: Outcome,
}

impl RuleResult {
    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Broken { .. } | Outcome::Error(_))
    }
}

const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

async fn table_exists(db: &Client, table: &str) -> Result<bool, String> {
    let row = tokio::time::timeout(
        QUERY_TIMEOUT,
        db.query_one("SELECT to_regclass($1) IS NOT NULL", &[&table]),
    )
    .await
    .map_err(|_| "timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

pub async fn check_all(db: &Client) -> Vec<RuleResult> {
    let mut out = Vec::new();
    for rule in RULES {
        let outcome = check_one(db, rule).await;
        out.push(RuleResult {
            name: rule.name.to_owned(),
            design_rule: rule.design_rule,
            outcome,
        });
    }
    out
}

async fn check_one(db: &Client, rule: &Rule) -> Outcome {
    let mut missing = Vec::new();
    for t in rule.tables {
        match table_exists(db, t).await {
            Ok(true) => {}
            Ok(false) => missing.push((*t).to_owned()),
            Err(e) => return Outcome::Error(format!("to_regclass({t}): {e}")),
        }
    }
    if !missing.is_empty() {
        return Outcome::Skipped { missing };
    }
    match tokio::time::timeout(QUERY_TIMEOUT, db.query_one(rule.sql, &[])).await {
        Err(_) => Outcome::Error("query timed out".to_owned()),
        Ok(Err(e)) => Outcome::Error(format!(
            "{e} (the schema differs from what crates/loadtest/src/rules.rs assumes: adjust the query there)"
        )),
        Ok(Ok(row)) => {
            let violations: i64 = row.try_get(0).unwrap_or(-1);
            let sample: Option<String> = row.try_get(1).unwrap_or(None);
            if violations == 0 {
                Outcome::Held
            } else {
                Outcome::Broken {
                    violations,
                    sample: sample.unwrap_or_default().chars().take(500).collect(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sold_out_rule_selects_the_products_the_runner_names() {
        let rule = RULES
            .iter()
            .find(|r| r.name.starts_with("a flash-sale product never sold beyond"))
            .unwrap();
        assert!(rule
            .sql
            .contains(&format!("p.name LIKE '{SOLD_OUT_PRODUCT_PREFIX} %'")));
        // The runner's create_products names them "<prefix> 00000".
        assert!(!"sale product 00000".starts_with(SOLD_OUT_PRODUCT_PREFIX));
    }

    #[test]
    fn every_rule_reads_only_the_tables_it_declares() {
        for r in RULES {
            for t in [
                "balance_ledger",
                "order_items",
                "user_coupons",
                "payments",
                "outbox",
            ] {
                if r.sql.contains(&format!("FROM {t}")) || r.sql.contains(&format!("JOIN {t}")) {
                    assert!(r.tables.contains(&t), "{}: {t} not in tables", r.name);
                }
            }
        }
    }
}
