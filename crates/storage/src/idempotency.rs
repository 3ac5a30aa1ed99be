//! Idempotency keys (rule 5). A key is claimed in its own short statement;
//! the work's transaction stores the answer in the same commit as its effects,
//! so a replay never disagrees with what happened.

use crate::schema::idempotency_keys::dsl as ik;
use crate::StorageError;
use commerce_domain::{IdempotencyKey, UserId};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use sha2::{Digest, Sha256};

/// Keys are remembered this long (24 h).
pub const KEY_TTL_SECS: i64 = 24 * 3600;
/// A claim with no answer after this long belongs to a crashed holder.
pub const ABANDONED_AFTER_SECS: i64 = 60;
/// The constraint a key claimed twice violates.
pub const KEYS_PKEY: &str = "idempotency_keys_pkey";

/// Digest of what a key promises to mean: the route and the canonical body.
pub fn request_hash(route: &str, canonical_body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(route.as_bytes());
    h.update([0]);
    h.update(canonical_body);
    hex::encode(h.finalize())
}

#[derive(Debug, Clone)]
pub struct Claim {
    pub user_id: UserId,
    pub key: IdempotencyKey,
    pub request_hash: String,
}

impl Claim {
    /// The (user, key) pair that names the key, as [`taken`] answers it.
    pub fn id(&self) -> (i64, String) {
        (self.user_id.get(), self.key.as_str().to_owned())
    }
}

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// The caller owns the key and must do the work.
    Started,
    /// The first request's answer, to send again.
    Replay {
        status: u16,
        body: serde_json::Value,
    },
    /// The key was used with another request.
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
}

#[derive(Queryable)]
struct Existing {
    request_hash: String,
    response_status: Option<i16>,
    response_body: Option<serde_json::Value>,
    abandoned: bool,
    expired: bool,
}

/// Claims the key. The claim commits without waiting for its WAL flush
/// (`synchronous_commit = off` for this statement only): it tells no one
/// anything, and it cannot be lost while the work it guards survives,
/// because the work's own durable commit flushes the WAL up to and past the
/// claim. A crash that loses it loses no work either, so a retry runs the
/// work once. That saves a flush per request on every money or stock POST.
pub async fn begin(conn: &mut AsyncPgConnection, claim: &Claim) -> Result<Begin, StorageError> {
    use diesel::sql_types::{BigInt, Text};
    let inserted = crate::sql::cached(
        "WITH lazy AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true)) \
         INSERT INTO idempotency_keys (user_id, key, request_hash) \
         SELECT $1, $2, $3 FROM lazy ON CONFLICT DO NOTHING",
    )
    .bind::<BigInt, _>(claim.user_id.get())
    .bind::<Text, _>(claim.key.as_str())
    .bind::<Text, _>(&claim.request_hash)
    .execute(conn)
    .await?;
    if inserted == 1 {
        return Ok(Begin::Started);
    }
    let abandoned_sql = format!("locked_at < now() - interval '{ABANDONED_AFTER_SECS} seconds'");
    let expired_sql = format!("created_at < now() - interval '{KEY_TTL_SECS} seconds'");
    let found: Option<Existing> = ik::idempotency_keys
        .filter(ik::user_id.eq(claim.user_id.get()))
        .filter(ik::key.eq(claim.key.as_str()))
        .select((
            ik::request_hash,
            ik::response_status,
            ik::response_body,
            diesel::dsl::sql::<diesel::sql_types::Bool>(&abandoned_sql),
            diesel::dsl::sql::<diesel::sql_types::Bool>(&expired_sql),
        ))
        .first(conn)
        .await
        .optional()?;
    let Some(found) = found else {
        // Purged between our insert and read: the key is free again.
        return Box::pin(begin(conn, claim)).await;
    };
    let take_over = |reset: bool| async move {
        let target = ik::idempotency_keys
            .filter(ik::user_id.eq(claim.user_id.get()))
            .filter(ik::key.eq(claim.key.as_str()));
        let n = if reset {
            diesel::update(target.filter(diesel::dsl::sql::<diesel::sql_types::Bool>(&expired_sql)))
                .set((
                    ik::request_hash.eq(&claim.request_hash),
                    ik::response_status.eq(None::<i16>),
                    ik::response_body.eq(None::<serde_json::Value>),
                    ik::locked_at.eq(diesel::dsl::now),
                    ik::created_at.eq(diesel::dsl::now),
                ))
                .execute(conn)
                .await?
        } else {
            diesel::update(
                target
                    .filter(ik::response_status.is_null())
                    .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(&abandoned_sql)),
            )
            .set(ik::locked_at.eq(diesel::dsl::now))
            .execute(conn)
            .await?
        };
        Ok::<_, StorageError>(if n == 1 {
            Begin::Started
        } else {
            Begin::InProgress
        })
    };
    if found.expired {
        return take_over(true).await;
    }
    if found.request_hash != claim.request_hash {
        return Ok(Begin::Mismatch);
    }
    match (found.response_status, found.response_body) {
        (Some(status), Some(body)) => Ok(Begin::Replay {
            status: u16::try_from(status).unwrap_or(500),
            body,
        }),
        _ if found.abandoned => take_over(false).await,
        _ => Ok(Begin::InProgress),
    }
}

/// Claims the key with a refusal already decided before any work (nothing
/// changed, e.g. sold out at the stock gate): one statement records it as
/// the key's first answer. A key already used answers as [`begin`] does; one
/// this call takes over (abandoned, expired) gets the refusal stored.
/// `Started` means the refusal is now the key's answer.
pub async fn begin_refused(
    conn: &mut AsyncPgConnection,
    claim: &Claim,
    status: u16,
    body: &serde_json::Value,
) -> Result<Begin, StorageError> {
    let inserted = diesel::insert_into(ik::idempotency_keys)
        .values((
            ik::user_id.eq(claim.user_id.get()),
            ik::key.eq(claim.key.as_str()),
            ik::request_hash.eq(&claim.request_hash),
            ik::response_status.eq(i16::try_from(status).unwrap_or(500)),
            ik::response_body.eq(body),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    if inserted == 1 {
        return Ok(Begin::Started);
    }
    let begun = begin(conn, claim).await?;
    if begun == Begin::Started {
        complete(conn, claim, status, body).await?;
    }
    Ok(begun)
}

/// A (user, key) an `INSERT … RETURNING` claimed.
#[derive(QueryableByName)]
struct Taken {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    user_id: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    key: String,
}

/// Claims several keys and stores their answers in one row each, inside the
/// caller's transaction: a batch that already knows its answers writes each
/// key once instead of claiming it and then updating it. A key already
/// taken (by another request, or twice in `answers`) fails the statement
/// with [`StorageError::UniqueViolation`] on `idempotency_keys_pkey`, which
/// aborts the caller's transaction: nothing of the batch is written.
pub async fn insert_answered(
    conn: &AsyncPgConnection,
    answers: &[(Claim, u16, serde_json::Value)],
) -> Result<(), StorageError> {
    if answers.is_empty() {
        return Ok(());
    }
    let rows = AnswerRows::of(answers.iter().map(|(c, s, b)| (c, *s, b)));
    rows.bind(crate::sql::cached(
        "INSERT INTO idempotency_keys (user_id, key, request_hash, response_status, response_body) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::smallint[], $5::jsonb[])",
    ))
    .execute(&mut &*conn)
    .await?;
    Ok(())
}

/// Keys with their answers, column by column, for the statements that
/// insert many at once (`$1` to `$5`).
struct AnswerRows<'a> {
    users: Vec<i64>,
    keys: Vec<&'a str>,
    hashes: Vec<&'a str>,
    statuses: Vec<i16>,
    bodies: Vec<&'a serde_json::Value>,
}

impl<'a> AnswerRows<'a> {
    fn of(answers: impl Iterator<Item = (&'a Claim, u16, &'a serde_json::Value)>) -> Self {
        let mut rows = Self {
            users: Vec::new(),
            keys: Vec::new(),
            hashes: Vec::new(),
            statuses: Vec::new(),
            bodies: Vec::new(),
        };
        for (claim, status, body) in answers {
            rows.users.push(claim.user_id.get());
            rows.keys.push(claim.key.as_str());
            rows.hashes.push(&claim.request_hash);
            rows.statuses.push(i16::try_from(status).unwrap_or(500));
            rows.bodies.push(body);
        }
        rows
    }

    fn bind<'q>(&'q self, query: crate::sql::Cached<'q>) -> crate::sql::Cached<'q> {
        use diesel::sql_types::{Array, BigInt, Jsonb, SmallInt, Text};
        query
            .bind::<Array<BigInt>, _>(&self.users)
            .bind::<Array<Text>, _>(&self.keys)
            .bind::<Array<Text>, _>(&self.hashes)
            .bind::<Array<SmallInt>, _>(&self.statuses)
            .bind::<Array<Jsonb>, _>(&self.bodies)
    }
}

/// The (user, key) pairs of `claims` that are already taken.
pub async fn taken(
    conn: &AsyncPgConnection,
    claims: &[&Claim],
) -> Result<std::collections::HashSet<(i64, String)>, StorageError> {
    use diesel::sql_types::{Array, BigInt, Text};
    if claims.is_empty() {
        return Ok(Default::default());
    }
    let users: Vec<i64> = claims.iter().map(|c| c.user_id.get()).collect();
    let keys: Vec<&str> = claims.iter().map(|c| c.key.as_str()).collect();
    let rows: Vec<Taken> = crate::sql::cached(
        "SELECT k.user_id, k.key FROM idempotency_keys k \
         JOIN unnest($1::bigint[], $2::text[]) AS v(user_id, key) \
           ON k.user_id = v.user_id AND k.key = v.key \
         WHERE k.user_id = ANY($1)",
    )
    .bind::<Array<BigInt>, _>(&users)
    .bind::<Array<Text>, _>(&keys)
    .load(&mut &*conn)
    .await?;
    Ok(rows.into_iter().map(|t| (t.user_id, t.key)).collect())
}

/// Stores the answer. Call inside the work's transaction for success answers,
/// or on its own for a business refusal (which changed nothing).
pub async fn complete(
    conn: &AsyncPgConnection,
    claim: &Claim,
    status: u16,
    body: &serde_json::Value,
) -> Result<(), StorageError> {
    diesel::update(
        ik::idempotency_keys
            .filter(ik::user_id.eq(claim.user_id.get()))
            .filter(ik::key.eq(claim.key.as_str())),
    )
    .set((
        ik::response_status.eq(i16::try_from(status).unwrap_or(500)),
        ik::response_body.eq(body),
    ))
    .execute(&mut &*conn)
    .await?;
    Ok(())
}

/// Stores several answers (a batch of writes that commit together, each
/// with its own key): one statement per key, pipelined in one round trip.
/// Each is a primary-key lookup, whatever the table's statistics say (a
/// join against an unnested array was planned as a scan of the whole table
/// while its statistics were those of an empty one).
pub async fn complete_many(
    conn: &AsyncPgConnection,
    answers: &[(Claim, u16, serde_json::Value)],
) -> Result<(), StorageError> {
    let done = futures::future::join_all(
        answers
            .iter()
            .map(|(claim, status, body)| complete(conn, claim, *status, body)),
    )
    .await;
    done.into_iter().collect()
}

/// Frees a claimed key whose work failed for infrastructure reasons, so a
/// retry can run it again.
pub async fn release(conn: &mut AsyncPgConnection, claim: &Claim) -> Result<(), StorageError> {
    diesel::delete(
        ik::idempotency_keys
            .filter(ik::user_id.eq(claim.user_id.get()))
            .filter(ik::key.eq(claim.key.as_str()))
            .filter(ik::response_status.is_null()),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes expired keys, a bounded batch at a time; returns how many went.
pub async fn purge_expired(
    conn: &mut AsyncPgConnection,
    batch: i64,
) -> Result<usize, StorageError> {
    let n = diesel::sql_query(format!(
        "DELETE FROM idempotency_keys WHERE ctid = ANY (ARRAY(SELECT ctid FROM idempotency_keys \
         WHERE created_at < now() - interval '{KEY_TTL_SECS} seconds' LIMIT $1))"
    ))
    .bind::<diesel::sql_types::BigInt, _>(batch)
    .execute(conn)
    .await?;
    Ok(n)
}

/// A stored answer to write inside a capability's transaction: the capability
/// calls `save` with its result; `render` (from the HTTP layer) turns the
/// result into the status and body that will be replayed.
pub struct SaveAnswer<T> {
    pub claim: Claim,
    pub render: Render<T>,
}

/// Turns a result into the (status, body) that a retry will get.
/// `Fn`, not `FnOnce`: a batch that is rolled back renders again when its
/// requests are written one by one.
pub type Render<T> = Box<dyn Fn(&T) -> (u16, serde_json::Value) + Send + Sync>;

impl<T> SaveAnswer<T> {
    /// Takes a shared reference, so it can be pipelined with the work's
    /// last statements (see `outbox::enqueue`).
    pub async fn save(self, conn: &AsyncPgConnection, result: &T) -> Result<(), StorageError> {
        let (status, body) = (self.render)(result);
        complete(conn, &self.claim, status, &body).await
    }

    /// The claim and the rendered answer, for [`complete_many`].
    pub fn render(&self, result: &T) -> (Claim, u16, serde_json::Value) {
        let (status, body) = (self.render)(result);
        (self.claim.clone(), status, body)
    }
}

/// Refusals decided before any work (a flash sale's sold-out answers),
/// recorded as their keys' first answers in batches: one insert and one
/// commit for many keys, instead of one each. A key the insert finds taken
/// is settled alone with [`begin_refused`].
pub struct RefusalBatch;

pub struct RefusalJob {
    claim: Claim,
    status: u16,
    body: serde_json::Value,
    reply: tokio::sync::oneshot::Sender<Result<Begin, StorageError>>,
    queued: std::time::Instant,
}

impl crate::batch::Batch for RefusalBatch {
    type Job = RefusalJob;
    const NAME: &'static str = "refusal";

    fn queued(job: &RefusalJob) -> std::time::Instant {
        job.queued
    }

    fn fail(job: RefusalJob, error: StorageError) {
        let _ = job.reply.send(Err(error));
    }

    fn write<'c>(
        &'c self,
        conn: &'c mut AsyncPgConnection,
        jobs: Vec<RefusalJob>,
    ) -> futures::future::BoxFuture<'c, ()> {
        Box::pin(record_refusals(conn, jobs))
    }
}

/// Records `status`/`body` as the key's first answer through `batcher`
/// (see [`begin_refused`] for what the answer means).
pub async fn refuse_batched(
    batcher: &crate::batch::Batcher<RefusalBatch>,
    claim: &Claim,
    status: u16,
    body: &serde_json::Value,
) -> Result<Begin, StorageError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job = RefusalJob {
        claim: claim.clone(),
        status,
        body: body.clone(),
        reply,
        queued: std::time::Instant::now(),
    };
    batcher.submit(job, answer).await
}

async fn record_refusals(conn: &mut AsyncPgConnection, jobs: Vec<RefusalJob>) {
    let rows = AnswerRows::of(jobs.iter().map(|j| (&j.claim, j.status, &j.body)));
    let inserted = rows
        .bind(crate::sql::cached(
            "INSERT INTO idempotency_keys (user_id, key, request_hash, response_status, response_body) \
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::smallint[], $5::jsonb[]) \
             ON CONFLICT DO NOTHING RETURNING user_id, key",
        ))
        .load::<Taken>(conn)
        .await;
    let mut inserted: std::collections::HashSet<(i64, String)> = match inserted {
        Ok(rows) => rows.into_iter().map(|t| (t.user_id, t.key)).collect(),
        Err(e) => {
            let e = StorageError::from(e);
            for job in jobs {
                let _ = job.reply.send(Err(e.clone()));
            }
            return;
        }
    };
    for job in jobs {
        // `remove`: a key twice in one batch was inserted once, for the first.
        let mine = inserted.remove(&job.claim.id());
        let answer = if mine {
            Ok(Begin::Started)
        } else {
            begin_refused(conn, &job.claim, job.status, &job.body).await
        };
        let _ = job.reply.send(answer);
    }
}
