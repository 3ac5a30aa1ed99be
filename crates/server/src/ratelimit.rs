//! Per-user request limits on the routes that move money or stock and on
//! waiting-room entry: one fixed window per user and class, counted in Redis
//! (shared by every instance, one round trip) and, while Redis is out, by
//! this instance alone. Over the limit: 429 `rate_limited` with
//! `Retry-After` (the seconds left in the window).

use crate::config::RateLimitSettings;
use crate::error::{ApiError, ErrorCode};
use commerce_domain::UserId;
use commerce_resilience::RedisClient;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// What a route moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Charges and payments.
    Money,
    /// Order creation and cancellation, coupon issuing.
    Stock,
    /// Waiting-room entry.
    Queue,
    /// Entries into a coupon's or sale's room (rooms are a shared, capped
    /// resource): counted over `rate_limit.rooms_window_secs`.
    Room,
}

impl Class {
    fn as_str(self) -> &'static str {
        match self {
            Self::Money => "money",
            Self::Stock => "stock",
            Self::Queue => "queue",
            Self::Room => "room",
        }
    }
}

/// KEYS: the window's counter. ARGV: its lifetime in ms. Returns the count.
static COUNT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
",
    )
});

/// Entries of the local fallback before it is cleared (bounded memory).
const LOCAL_MAX: usize = 100_000;

/// Per (class, user): the window index and the count in it.
type LocalCounts = HashMap<(Class, i64), (u64, u32)>;

pub struct RateLimiter {
    settings: RateLimitSettings,
    redis: RedisClient,
    /// Shared by every worker's limiter of this instance.
    local: Arc<Mutex<LocalCounts>>,
}

impl RateLimiter {
    pub fn new(settings: RateLimitSettings, redis: RedisClient) -> Self {
        Self {
            settings,
            redis,
            local: Arc::default(),
        }
    }

    /// The same limits counted through `redis` (an HTTP worker's own
    /// connection); the fallback count stays the instance's.
    pub fn through(&self, redis: RedisClient) -> Self {
        Self {
            settings: self.settings.clone(),
            redis,
            local: self.local.clone(),
        }
    }

    fn limit(&self, class: Class) -> u32 {
        match class {
            Class::Money => self.settings.money,
            Class::Stock => self.settings.stock,
            Class::Queue => self.settings.queue,
            Class::Room => self.settings.rooms,
        }
    }

    fn window(&self, class: Class) -> u64 {
        match class {
            Class::Room => self.settings.rooms_window_secs,
            _ => self.settings.window_secs,
        }
        .max(1)
    }

    /// Ok while `user` is within its `class` limit; counts this request.
    pub async fn check(&self, class: Class, user: UserId) -> Result<(), ApiError> {
        if !self.settings.enabled {
            return Ok(());
        }
        let window = self.window(class);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let index = now / window;
        let key = self
            .redis
            .key(&format!("rl:{}:{}:{index}", class.as_str(), user.get()));
        let counted: Result<i64, _> = self
            .redis
            .invoke_script(COUNT.key(&key).arg(window.saturating_mul(1000) + 1000))
            .await;
        let count = match counted {
            Ok(n) => u64::try_from(n).unwrap_or(u64::MAX),
            Err(_) => self.count_locally(class, user, index),
        };
        if count <= u64::from(self.limit(class)) {
            return Ok(());
        }
        let retry_after = ((index + 1) * window).saturating_sub(now).max(1);
        Err(ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "too many {} requests: at most {} per {window} s",
                class.as_str(),
                self.limit(class)
            ),
        )
        .with_retry_after(retry_after))
    }

    fn count_locally(&self, class: Class, user: UserId, index: u64) -> u64 {
        let mut map = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= LOCAL_MAX {
            map.clear();
        }
        let slot = map.entry((class, user.get())).or_insert((index, 0));
        if slot.0 != index {
            *slot = (index, 0);
        }
        slot.1 = slot.1.saturating_add(1);
        u64::from(slot.1)
    }
}
