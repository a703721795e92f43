//! The Redis connection a component shares across a process: the limiter's
//! calls (and, apart, the guard's) go over one multiplexed connection,
//! taken once from a pool that opens it lazily, and replaced after an
//! error.
//!
//! A pooled connection is checked with a round trip (`UNWATCH`, `PING`)
//! every time it is taken; the limiter and the guard took one three times
//! a page, which on a chain was a third of the gap between a page's answer
//! and the next request. A multiplexed connection serves any number of
//! callers at once, so it is taken once and cloned; a call that fails
//! forgets it, and the next call opens another. Each connection has a
//! generation, so a caller that failed on an old one never drops the one
//! that replaced it.

use std::sync::{Arc, Mutex, MutexGuard};

use deadpool_redis::{Config, Pool, Runtime};
use redis::aio::MultiplexedConnection;

use crate::config::redact_url;
use crate::ratelimit::RateLimitError;

#[derive(Clone)]
pub struct SharedRedis {
    pool: Pool,
    current: Arc<Mutex<Current>>,
}

#[derive(Default)]
struct Current {
    conn: Option<MultiplexedConnection>,
    generation: u64,
}

impl Current {
    fn held(&self) -> Option<Held> {
        let conn = self.conn.clone()?;
        Some(Held {
            conn,
            generation: self.generation,
        })
    }
}

/// The shared connection as one caller holds it.
pub struct Held {
    pub conn: MultiplexedConnection,
    generation: u64,
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
            current: Arc::new(Mutex::new(Current::default())),
        })
    }

    /// The shared connection, connecting when there is none.
    pub async fn connection(&self) -> Result<Held, RateLimitError> {
        if let Some(held) = self.current().held() {
            return Ok(held);
        }
        let pooled = (self.pool.get().await).map_err(|e| RateLimitError::Redis(e.to_string()))?;
        // Out of the pool: it is this process's to share now.
        let conn = deadpool_redis::Connection::take(pooled);
        let mut current = self.current();
        // Another caller may have connected meanwhile: then share theirs.
        if current.conn.is_none() {
            current.generation += 1;
            current.conn = Some(conn);
        }
        current
            .held()
            .ok_or_else(|| RateLimitError::Redis("no shared Redis connection".into()))
    }

    /// Forgets the connection `held` came from after a call on it failed,
    /// unless it was replaced already: the next call opens another rather
    /// than trusting one that may be broken.
    pub fn forget(&self, held: &Held) {
        let mut current = self.current();
        if current.generation == held.generation {
            current.conn = None;
        }
    }

    fn current(&self) -> MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}
