//! First-sight user checks, many to one query: a sale's crowd of users this
//! instance has not seen yet (their tokens were signed elsewhere) costs a
//! few `= ANY` lookups, not one query and one pool checkout each.

use crate::AccountsError;
use commerce_domain::UserId;
use commerce_storage::batch::{Batch, Batcher};
use commerce_storage::StorageError;
use diesel::sql_types::{Array, BigInt};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::future::BoxFuture;
use std::collections::HashSet;
use std::time::Instant;
use tokio::sync::oneshot;

/// One user to look up, and where its answer goes.
pub struct Lookup {
    user: UserId,
    reply: oneshot::Sender<Result<bool, StorageError>>,
    queued: Instant,
}

/// Looks users up in batches (see [`exists`]).
pub struct UserLookups;

impl Batch for UserLookups {
    type Job = Lookup;
    const NAME: &'static str = "user_lookup";

    fn queued(job: &Lookup) -> Instant {
        job.queued
    }

    fn fail(job: Lookup, error: StorageError) {
        let _ = job.reply.send(Err(error));
    }

    fn write<'c>(
        &'c self,
        conn: &'c mut AsyncPgConnection,
        jobs: Vec<Lookup>,
    ) -> BoxFuture<'c, ()> {
        Box::pin(async move {
            let ids: Vec<i64> = jobs.iter().map(|j| j.user.get()).collect();
            let found = commerce_storage::sql::cached("SELECT id FROM users WHERE id = ANY($1)")
                .bind::<Array<BigInt>, _>(&ids)
                .load::<Found>(conn)
                .await;
            match found {
                Ok(rows) => {
                    let known: HashSet<i64> = rows.into_iter().map(|r| r.id).collect();
                    for job in jobs {
                        let _ = job.reply.send(Ok(known.contains(&job.user.get())));
                    }
                }
                Err(e) => {
                    let e = StorageError::from(e);
                    for job in jobs {
                        let _ = job.reply.send(Err(e.clone()));
                    }
                }
            }
        })
    }
}

#[derive(diesel::QueryableByName)]
struct Found {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Whether `user` exists, asked in the next batch of `lookups`.
pub async fn exists(lookups: &Batcher<UserLookups>, user: UserId) -> Result<bool, AccountsError> {
    let (reply, answer) = oneshot::channel();
    let job = Lookup {
        user,
        reply,
        queued: Instant::now(),
    };
    Ok(lookups.submit::<bool, StorageError>(job, answer).await?)
}
