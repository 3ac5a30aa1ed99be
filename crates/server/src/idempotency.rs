//! `Idempotency-Key` handling for POSTs that change money or stock (rule 5):
//! claim the key, run the work (which stores its answer in its own
//! transaction), replay stored answers, refuse mismatches and overlaps.

use crate::error::{ApiError, ErrorCode};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use commerce_domain::{IdempotencyKey, UserId};
use commerce_storage::batch::Batcher;
use commerce_storage::idempotency::RefusalBatch;
use commerce_storage::idempotency::{self, Begin, Claim, SaveAnswer};
use commerce_storage::DbPool;
use serde::Serialize;
use std::future::Future;

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// How long a request waits for a concurrent one with the same key.
const IN_PROGRESS_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);

/// Runs `work` at most once per (user, key). Without the header the work just
/// runs. `canonical_body` is the parsed request body, so formatting changes
/// do not count as a different request.
/// `present` turns the capability's result into the response body.
pub async fn run<D, R, F, Fut>(
    db: &DbPool,
    req: &HttpRequest,
    user: UserId,
    canonical_body: &serde_json::Value,
    status: StatusCode,
    present: fn(&D) -> R,
    work: F,
) -> Result<HttpResponse, ApiError>
where
    D: 'static,
    R: Serialize + 'static,
    F: FnOnce(Option<SaveAnswer<D>>) -> Fut,
    Fut: Future<Output = Result<D, ApiError>>,
{
    let Some(claim) = claim_of(req, user, canonical_body)? else {
        let value = work(None).await?;
        return Ok(HttpResponse::build(status).json(present(&value)));
    };
    // A double click usually arrives while the first request is still
    // running: wait briefly for its answer rather than refusing. The
    // connection goes back to the pool between looks (the first request
    // needs one to finish).
    let begun = patiently(|| async {
        let mut c = commerce_storage::conn(db).await?;
        idempotency::begin(&mut c, &claim).await
    })
    .await?;
    if begun != Begin::Started {
        return answer_existing(begun);
    }
    match work(Some(answer_for(claim.clone(), status, present))).await {
        Ok(value) => Ok(HttpResponse::build(status).json(present(&value))),
        Err(err) => {
            finish_failed(db, &claim, &err).await;
            Err(err)
        }
    }
}

/// The answer `work` stores under `claim` in its own transaction.
pub fn answer_for<D: 'static, R: Serialize + 'static>(
    claim: Claim,
    status: StatusCode,
    present: fn(&D) -> R,
) -> SaveAnswer<D> {
    SaveAnswer {
        claim,
        render: Box::new(move |value: &D| {
            let body = serde_json::to_value(present(value)).unwrap_or(serde_json::Value::Null);
            (status.as_u16(), body)
        }),
    }
}

/// A refusal decided before any work and before the key was claimed (the
/// stock gate's sold out): recorded as the key's first answer, many keys
/// to one insert and one commit, so a crowd of losers costs the database a
/// few batches, not a claim and an answer each. A key already used answers as it would in [`run`] (a retry of
/// a request that succeeded still gets its success). Not a 4xx, or no key:
/// the error as it is.
pub async fn refuse(
    refusals: &Batcher<RefusalBatch>,
    req: &HttpRequest,
    user: UserId,
    canonical_body: &serde_json::Value,
    err: ApiError,
) -> Result<HttpResponse, ApiError> {
    if !err.status().is_client_error() {
        return Err(err);
    }
    let Some(claim) = claim_of(req, user, canonical_body)? else {
        return Err(err);
    };
    let body = err.body();
    let begun =
        patiently(|| idempotency::refuse_batched(refusals, &claim, err.status().as_u16(), &body))
            .await?;
    match begun {
        Begin::Started => Err(err),
        other => answer_existing(other),
    }
}

/// The request's claim on a route where a naive retry would move money or
/// stock twice: the key is required (400 `idempotency_key_required`,
/// before anything is done).
pub fn required_claim(
    req: &HttpRequest,
    user: UserId,
    canonical_body: &serde_json::Value,
) -> Result<Claim, ApiError> {
    claim_of(req, user, canonical_body)?.ok_or_else(missing_key)
}

fn missing_key() -> ApiError {
    ApiError::new(
        ErrorCode::IdempotencyKeyRequired,
        "the Idempotency-Key header is required on this route: send a new unique value \
         (a UUID, say) per intended request, and the same value when retrying it",
    )
}

/// The request's claim, if it sent an `Idempotency-Key`.
pub fn claim_of(
    req: &HttpRequest,
    user: UserId,
    canonical_body: &serde_json::Value,
) -> Result<Option<Claim>, ApiError> {
    let Some(raw) = req.headers().get(HEADER) else {
        return Ok(None);
    };
    let key = raw
        .to_str()
        .map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidIdempotencyKey,
                "Idempotency-Key must be ASCII",
            )
        })
        .and_then(|s| IdempotencyKey::parse(s).map_err(ApiError::from))?;
    let route = format!("{} {}", req.method(), req.path());
    let body = serde_json::to_vec(canonical_body).map_err(|_| ApiError::internal())?;
    Ok(Some(Claim {
        user_id: user,
        key,
        request_hash: idempotency::request_hash(&route, &body),
    }))
}

/// Asks `look` until the key is no longer in progress, for a bounded time.
async fn patiently<F, Fut>(look: F) -> Result<Begin, ApiError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Begin, commerce_storage::StorageError>>,
{
    let deadline = std::time::Instant::now() + IN_PROGRESS_WAIT;
    loop {
        let begun = look().await?;
        if begun != Begin::InProgress || std::time::Instant::now() >= deadline {
            return Ok(begun);
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// The answer for a key that was already used.
fn answer_existing(begun: Begin) -> Result<HttpResponse, ApiError> {
    match begun {
        Begin::Replay { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            Ok(HttpResponse::build(status)
                .insert_header((REPLAYED_HEADER, "true"))
                .json(body))
        }
        Begin::Mismatch => Err(ApiError::new(
            ErrorCode::IdempotencyKeyMismatch,
            "this Idempotency-Key was used with a different request",
        )),
        Begin::InProgress | Begin::Started => Err(ApiError::new(
            ErrorCode::RequestInProgress,
            "a request with this Idempotency-Key is still running",
        )
        .with_retry_after(1)),
    }
}

/// A refusal about the request (4xx) is the first answer and is kept; an
/// infrastructure failure frees the key so a retry can do the work.
async fn finish_failed(db: &DbPool, claim: &Claim, err: &ApiError) {
    let outcome = async {
        let mut c = commerce_storage::conn(db).await?;
        if err.status().is_client_error() {
            idempotency::complete(&c, claim, err.status().as_u16(), &err.body()).await
        } else {
            idempotency::release(&mut c, claim).await
        }
    }
    .await;
    if let Err(e) = outcome {
        // The key stays claimed; it is taken over once it counts as abandoned.
        tracing::warn!(error = %e, "could not settle idempotency key");
    }
}
