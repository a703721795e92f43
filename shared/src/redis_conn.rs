//! One Redis connection a process shares: the limiter's and the guard's
//! calls go over a single multiplexed connection, taken once from a pool
//! that opens it lazily and replaced after an error.
//!
//! A pooled connection is checked with a round trip (`UNWATCH`, `PING`)
//! every time it is taken; the limiter and the guard take one three times
//! a page, which on a chain was a third of the gap between a page's answer
//! and the next request. A multiplexed connection serves any number of
//! callers at once, so it is taken once and cloned; a call that fails
//! drops it (`forget`), and the next takes a fresh one, checked.

use std::sync::{Arc, Mutex};

use deadpool_redis::{Config, Pool, Runtime};
use redis::aio::MultiplexedConnection;

use crate::config::redact_url;
use crate::ratelimit::RateLimitError;

#[derive(Clone)]
pub struct SharedRedis {
    pool: Pool,
    current: Arc<Mutex<Option<MultiplexedConnection>>>,
}

impl SharedRedis {
    /// Opens nothing yet: the first call connects.
    pub fn new(redis_url: &str) -> Result<SharedRedis, RateLimitError> {
        let pool = Config::from_url(redis_url)
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| RateLimitError::Config {
                url: redact_url(redis_url),
                message: e.to_string(),
            })?;
        Ok(SharedRedis {
            pool,
            current: Arc::new(Mutex::new(None)),
        })
    }

    /// The shared connection, connecting (and checking) when there is none.
    pub async fn connection(&self) -> Result<MultiplexedConnection, RateLimitError> {
        if let Some(conn) = self.slot().clone() {
            return Ok(conn);
        }
        let pooled = (self.pool.get().await).map_err(|e| RateLimitError::Redis(e.to_string()))?;
        // Out of the pool: it is this process's to share now.
        let conn = deadpool_redis::Connection::take(pooled);
        *self.slot() = Some(conn.clone());
        Ok(conn)
    }

    /// Drops the shared connection after a failed call: the next call
    /// opens another rather than trusting one that may be broken.
    pub fn forget(&self) {
        *self.slot() = None;
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<MultiplexedConnection>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}
