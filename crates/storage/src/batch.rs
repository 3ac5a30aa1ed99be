//! Writes grouped into batches: a few writer tasks share one queue, and each
//! takes whatever is waiting (up to `max_batch`) as soon as it is free, so a
//! lone request is written at once and a crowd forms batches by itself (no
//! timer holds anyone back). One transaction and one commit for many
//! requests costs PostgreSQL a fraction of one per request, and a hot row is
//! locked once per batch instead of once per request.

use crate::{DbPool, StorageError};
use diesel_async::AsyncPgConnection;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Mutex};

/// One kind of batched write.
pub trait Batch: Send + Sync + 'static {
    type Job: Send + 'static;
    /// Metric label (`order`, `payment`, `refusal`).
    const NAME: &'static str;
    fn queued(job: &Self::Job) -> Instant;
    /// Answers a job that could not be written (no connection).
    fn fail(job: Self::Job, error: StorageError);
    /// Writes the jobs and answers each of them.
    fn write<'c>(
        &'c self,
        conn: &'c mut AsyncPgConnection,
        jobs: Vec<Self::Job>,
    ) -> BoxFuture<'c, ()>;
}

/// Settings of [`Batcher::start`].
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    pub writers: usize,
    pub max_batch: usize,
    /// Bound on one request's wait for its answer (queue, pool, statement).
    pub timeout: Duration,
}

/// The queue in front of the writer tasks. Cheap to clone; the tasks stop
/// when the last handle is dropped.
pub struct Batcher<B: Batch> {
    tx: mpsc::Sender<B::Job>,
    timeout: Duration,
}

impl<B: Batch> Clone for Batcher<B> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            timeout: self.timeout,
        }
    }
}

impl<B: Batch> Batcher<B> {
    /// Spawns the writer tasks on the current Tokio runtime.
    pub fn start(db: DbPool, work: B, config: BatchConfig) -> Self {
        let max_batch = config.max_batch.max(1);
        let (tx, rx) = mpsc::channel(max_batch.saturating_mul(64).max(1024));
        let rx = Arc::new(Mutex::new(rx));
        let work = Arc::new(work);
        for _ in 0..config.writers.max(1) {
            tokio::spawn(run(db.clone(), work.clone(), rx.clone(), max_batch));
        }
        Self {
            tx,
            timeout: config.timeout,
        }
    }

    /// Queues `job` (built around `answer`'s sender) and waits for its
    /// answer. A timeout means the write may still land: callers treat it
    /// as an unknown outcome that PostgreSQL's guards keep safe.
    pub async fn submit<T, E: From<StorageError>>(
        &self,
        job: B::Job,
        answer: oneshot::Receiver<Result<T, E>>,
    ) -> Result<T, E> {
        let waited = tokio::time::timeout(self.timeout, async {
            self.tx
                .send(job)
                .await
                .map_err(|_| StorageError::Unavailable("writers stopped".into()))?;
            answer
                .await
                .map_err(|_| StorageError::Unavailable("writer dropped the write".into()))
        })
        .await;
        match waited {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(StorageError::Timeout.into()),
        }
    }
}

async fn run<B: Batch>(
    db: DbPool,
    work: Arc<B>,
    rx: Arc<Mutex<mpsc::Receiver<B::Job>>>,
    max_batch: usize,
) {
    let mut jobs = Vec::with_capacity(max_batch);
    loop {
        {
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut jobs, max_batch).await == 0 {
                return; // every sender is gone
            }
        }
        metrics::histogram!("write_batch_size", "kind" => B::NAME).record(jobs.len() as f64);
        let picked = Instant::now();
        for job in &jobs {
            metrics::histogram!("write_batch_queue_seconds", "kind" => B::NAME)
                .record(picked.duration_since(B::queued(job)).as_secs_f64());
        }
        let batch = std::mem::take(&mut jobs);
        // A connection per batch, back to the pool right after (the LIFO
        // pool hands back a warm one; an idle writer holds none).
        match crate::conn(&db).await {
            Ok(mut conn) => {
                work.write(&mut conn, batch).await;
                metrics::histogram!("write_batch_seconds", "kind" => B::NAME)
                    .record(picked.elapsed().as_secs_f64());
            }
            Err(e) => {
                for job in batch {
                    B::fail(job, e.clone());
                }
            }
        }
    }
}

/// Why a batch's transaction wrote nothing.
pub enum BatchError {
    /// Something the whole batch needs is short (a product's stock, a
    /// payer's balance): nothing was written, and the requests are written
    /// one by one, each learning its own answer.
    Short,
    Failed(StorageError),
}

impl From<diesel::result::Error> for BatchError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Failed(e.into())
    }
}

impl From<StorageError> for BatchError {
    fn from(e: StorageError) -> Self {
        Self::Failed(e)
    }
}
