//! What every task handler needs: the adapters, shared by all tasks of a
//! worker process.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use pagefleet_shared::dispatch::Dispatcher;
use pagefleet_shared::fingerprint::FingerprintKey;
use pagefleet_shared::guard::SourceGuard;
use pagefleet_shared::limits::FleetLimits;
use pagefleet_shared::queue::Broker;
use pagefleet_shared::rate_keys::SharedRateKey;
use pagefleet_shared::ratelimit::RateLimiter;
use pagefleet_shared::source::SourceClient;
use pagefleet_shared::store::Store;

pub struct WorkerContext {
    pub store: Store,
    pub limiter: RateLimiter,
    pub source: SourceClient,
    pub broker: Arc<Broker>,
    dispatcher: Mutex<Dispatcher>,
    /// The longest a task holds a reserved token slot before giving it up.
    pub max_token_wait: Duration,
    /// This worker's name, recorded on the tasks it claims.
    pub worker: String,
    pub guard: SourceGuard,
    /// Waits longer than this park the task instead of holding it.
    pub park_after: Duration,
    /// Off only for the naive baseline in `make bench`: no shared bucket,
    /// no breaker; each task only waits out its own 429s.
    pub shared_limiter: bool,
    /// The worker that lands a chain's page fetches the next one itself
    /// (its message is still written, and marked sent): no hop through the
    /// queue between a chain's pages. Off only for the baseline in `make
    /// bench`.
    pub follow_chains: bool,
    /// One permit per task running, a followed chain included (it goes on
    /// after its delivery is acked): the worker runs at most
    /// `--concurrency` at once.
    pub slots: Arc<tokio::sync::Semaphore>,
    /// Cancelled when a drain runs out of time: page tasks still running
    /// release their claims and are handed back to the queue.
    pub hand_back: CancellationToken,
    /// Cancelled when the worker starts draining: deliveries still waiting
    /// for another worker's claim are handed back at once.
    pub draining: CancellationToken,
    /// See `ServiceConfig::output_root` (absolute once configured).
    pub output_root: std::path::PathBuf,
    /// See `ServiceConfig::secrets_dir`.
    pub secrets_dir: Option<std::path::PathBuf>,
    /// The fleet's key of credential fingerprints (see `fingerprint`); set
    /// at start from the configuration or Postgres.
    pub fingerprint_key: FingerprintKey,
    /// See `ServiceConfig::limits`: what a page may cost this worker.
    pub limits: FleetLimits,
    /// See `ServiceConfig::shared_rate_keys`.
    pub shared_rate_keys: Vec<SharedRateKey>,
}

impl WorkerContext {
    pub fn new(
        store: Store,
        limiter: RateLimiter,
        source: SourceClient,
        broker: Arc<Broker>,
        guard: SourceGuard,
        options: &crate::run::WorkerOptions,
    ) -> Self {
        WorkerContext {
            store,
            limiter,
            source,
            broker,
            dispatcher: Mutex::new(Dispatcher::new()),
            max_token_wait: Duration::from_secs(5),
            worker: options.name.clone(),
            guard,
            park_after: options.park_after,
            shared_limiter: options.shared_limiter,
            follow_chains: options.follow_chains,
            slots: Arc::new(tokio::sync::Semaphore::new(usize::from(
                options.concurrency.max(1),
            ))),
            hand_back: CancellationToken::new(),
            draining: CancellationToken::new(),
            output_root: std::path::PathBuf::from("out"),
            secrets_dir: None,
            // Replaced at start; a fresh random key until then keeps no
            // two contexts sharing one by accident.
            fingerprint_key: FingerprintKey::generate(),
            limits: FleetLimits::default(),
            shared_rate_keys: Vec::new(),
        }
    }

    /// Publishes the outbox messages a transaction just wrote and marks them
    /// sent. A failure is only logged: the scheduler's relay publishes
    /// whatever stays unsent.
    pub async fn publish_outbox(&self, ids: &[i64]) {
        let mut dispatcher = self.dispatcher.lock().await;
        if let Err(e) = dispatcher.publish_ids(&self.store, &self.broker, ids).await {
            tracing::warn!(error = %e, "publish failed; the relay will retry");
        }
    }
}
