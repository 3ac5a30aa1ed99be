//! The end-of-run checks in the run's PostgreSQL: every write a client was
//! told of is there (rule 5), every event delivered after a broker fault (rule 6).

use super::timeline::Answer;
use tokio_postgres::Client;

/// One kind of acknowledged write, looked up in PostgreSQL.
#[derive(Debug, Clone)]
pub struct AckCheck {
    pub what: &'static str,
    pub acknowledged: usize,
    pub missing: Result<i64, String>,
}

impl AckCheck {
    pub fn failed(&self) -> bool {
        !matches!(self.missing, Ok(0))
    }
}

/// Rule 6 after a broker fault, one row per step: the outbox published,
/// then each consumer group's events applied (its inbox) or parked (an
/// open dead letter, which an operator re-drives).
#[derive(Debug, Clone)]
pub struct DeliveryCheck {
    pub what: String,
    /// Events not there yet.
    pub missing: Result<i64, String>,
}

impl DeliveryCheck {
    pub fn failed(&self) -> bool {
        !matches!(self.missing, Ok(0))
    }
}

/// The consumer groups and the event types each takes (the server's
/// `crates/server/src/events.rs`).
const GROUPS: [(&str, &str); 3] = [
    ("ranking", "'order_paid'"),
    (
        "notification",
        "'order_paid', 'coupon_issued', 'order_cancelled', 'order_expired'",
    ),
    ("data_platform", "'order_paid'"),
];

/// Rule 6 now: the outbox published, every group's events applied.
pub async fn check_delivery(db: &Client) -> Vec<DeliveryCheck> {
    let mut queries = vec![(
        "every outbox event published to the broker".to_owned(),
        "SELECT count(*) FROM outbox WHERE published_at IS NULL".to_owned(),
    )];
    for (group, types) in GROUPS {
        queries.push((
            format!("every event applied once by the `{group}` group (inbox) or parked"),
            format!(
                "SELECT count(*) FROM outbox o WHERE o.event_type IN ({types})
                   AND NOT EXISTS (SELECT 1 FROM inbox_{group} i WHERE i.event_id = o.id)
                   AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.consumer = '{group}'
                                   AND d.event_id = o.id AND d.redriven_at IS NULL)"
            ),
        ));
    }
    let mut out = Vec::new();
    for (what, sql) in queries {
        let missing = match tokio::time::timeout(
            std::time::Duration::from_secs(10),
            db.query_one(sql.as_str(), &[]),
        )
        .await
        {
            Ok(Ok(row)) => row.try_get::<_, i64>(0).map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("query timed out".to_owned()),
        };
        out.push(DeliveryCheck { what, missing });
    }
    out
}

/// Every 2xx a client was told, in PostgreSQL: the user coupons (with their
/// user), the orders (with their user), and the payments (the order paid,
/// with its payment row).
pub async fn check_acks(db: &Client, answers: &[Answer]) -> Vec<AckCheck> {
    let pairs = |steps: &[&str], status: u16| -> (Vec<i64>, Vec<i64>) {
        answers
            .iter()
            .filter(|a| a.status == status && steps.contains(&a.step.as_str()))
            .filter_map(|a| Some((a.id?, a.user?)))
            .unzip()
    };
    let checks: [(&'static str, Vec<&str>, u16, &str); 3] = [
        (
            "coupons issued (201)",
            vec!["coupon"],
            201,
            "SELECT count(*) FROM unnest($1::bigint[], $2::bigint[]) a(id, u)
             WHERE NOT EXISTS (SELECT 1 FROM user_coupons c WHERE c.id = a.id AND c.user_id = a.u)",
        ),
        (
            "orders created (201)",
            vec!["order", "sale"],
            201,
            "SELECT count(*) FROM unnest($1::bigint[], $2::bigint[]) a(id, u)
             WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = a.id AND o.user_id = a.u)",
        ),
        (
            "orders paid (200)",
            vec!["pay"],
            200,
            "SELECT count(*) FROM unnest($1::bigint[], $2::bigint[]) a(id, u)
             WHERE NOT EXISTS (SELECT 1 FROM orders o JOIN payments p ON p.order_id = o.id
                               WHERE o.id = a.id AND o.user_id = a.u AND o.status = 'paid')",
        ),
    ];
    let mut out = Vec::new();
    for (what, steps, status, sql) in checks {
        let (ids, users) = pairs(&steps, status);
        let acknowledged = answers
            .iter()
            .filter(|a| a.status == status && steps.contains(&a.step.as_str()))
            .count();
        let unreadable = (acknowledged - ids.len()) as i64;
        let missing = match tokio::time::timeout(
            std::time::Duration::from_secs(60),
            db.query_one(sql, &[&ids, &users]),
        )
        .await
        {
            Ok(Ok(row)) => row
                .try_get::<_, i64>(0)
                .map(|n| n + unreadable)
                .map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("query timed out".to_owned()),
        };
        out.push(AckCheck {
            what,
            acknowledged,
            missing,
        });
    }
    out
}
