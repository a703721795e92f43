//! The worker process: connect, consume page and finalize tasks
//! concurrently, and drain on shutdown.
//!
//! A delivery is acked only after its task reached a final state in
//! Postgres (landed, dead-lettered, skipped). When Postgres is unreachable
//! the delivery is handed back (nack with requeue) and comes again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicNackOptions};
use lapin::{Channel, Consumer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use pagefleet_shared::config::{ConfigError, ServiceConfig};
use pagefleet_shared::guard::SourceGuard;
use pagefleet_shared::model::{QueueRole, TaskMessage};
use pagefleet_shared::queue::{Broker, Outage, QueueError};
use pagefleet_shared::ratelimit::{RateLimitError, RateLimiter};
use pagefleet_shared::source::{SourceClient, SourceError};
use pagefleet_shared::store::{Store, StoreError};

use crate::context::WorkerContext;
use crate::finalize::{handle_finalize, FinalizeError, FinalizeResult};
use crate::follow::follow_chain;
use crate::page::{handle_page, Follow, PageError, PageResult, Taken};

/// How often the worker checks its broker connection and the fleet size.
const WATCH_INTERVAL: Duration = Duration::from_secs(5);
/// How long the broker may be unreachable before the worker exits.
const BROKER_GIVE_UP: Duration = Duration::from_secs(90);
/// How long tasks get to release their claims once a drain timed out.
const HAND_BACK_WAIT: Duration = Duration::from_secs(5);
/// How long a failed task waits for Postgres before it is handed back.
const STORE_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Page tasks in flight at once (the consumer prefetch).
    pub concurrency: u16,
    /// How long a drain waits for tasks in flight before handing them back.
    pub drain_timeout: Duration,
    /// Tag shown in RabbitMQ's consumer list, and recorded on claimed tasks.
    pub name: String,
    /// Waits for a source longer than this park the task.
    pub park_after: Duration,
    /// See `WorkerContext::shared_limiter`.
    pub shared_limiter: bool,
    /// See `WorkerContext::follow_chains`.
    pub follow_chains: bool,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            concurrency: 8,
            drain_timeout: Duration::from_secs(30),
            name: format!(
                "{}-{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into()),
                std::process::id()
            ),
            park_after: Duration::from_secs(5),
            shared_limiter: true,
            follow_chains: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    RateLimit(#[from] RateLimitError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the {0} consumer stopped; exiting so the supervisor restarts a fresh worker")]
    ConsumerGone(&'static str),
}

/// Runs a worker until `shutdown` is cancelled, then drains.
pub async fn run(
    config: &ServiceConfig,
    options: WorkerOptions,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let (ctx, broker) = connect(config, &options).await?;
    let name = &options.name;
    let mut pages = Feed::start(&broker, PAGES, options.concurrency, name).await?;
    let mut finals = Feed::start(&broker, FINALIZE, 1, name).await?;
    tracing::info!(concurrency = options.concurrency, namespace = %config.namespace, "worker consuming");
    let tracker = TaskTracker::new();
    let result = consume(&ctx, &broker, &tracker, &mut pages, &mut finals, &shutdown).await;
    drain(&ctx, &tracker, [&pages, &finals], options.drain_timeout).await;
    for feed in [pages, finals] {
        feed.close().await;
    }
    broker.close().await;
    result
}

/// Connects to Postgres (migrating it), RabbitMQ and Redis.
async fn connect(
    config: &ServiceConfig,
    options: &WorkerOptions,
) -> Result<(Arc<WorkerContext>, Arc<Broker>), WorkerError> {
    let store = Store::connect(&config.database_url, options.concurrency as usize + 4)?;
    store.migrate().await?;
    let broker = Arc::new(Broker::connect(&config.amqp_url, &config.namespace).await?);
    let limiter = RateLimiter::new(&config.redis_url, &config.namespace)?;
    let policy = config.outbound_policy()?;
    let mut ctx = WorkerContext::new(
        store,
        limiter,
        SourceClient::new(policy)?,
        broker.clone(),
        SourceGuard::new(&config.redis_url, &config.namespace)?,
        options,
    );
    ctx.output_root = config.output_root_path();
    ctx.secrets_dir = config.secrets_dir.as_ref().map(std::path::PathBuf::from);
    // Every worker must fingerprint a credential alike (it names the
    // credential's rate-limit bucket): the configured key, else the one
    // the fleet keeps in Postgres.
    ctx.fingerprint_key = match &config.fingerprint_key {
        Some(key) => key.clone(),
        None => ctx.store.fingerprint_key().await?,
    };
    ctx.limits = config.limits;
    ctx.shared_rate_keys = config.shared_rate_keys.clone();
    Ok((Arc::new(ctx), broker))
}

/// The queues a worker consumes, with their names in consumer tags and logs.
const PAGES: (QueueRole, &str) = (QueueRole::Pages, "pages");
const FINALIZE: (QueueRole, &str) = (QueueRole::Finalize, "finalize");

/// One consumer: its channel, its tag and its stream of deliveries.
struct Feed {
    /// The queue's name in logs and in `ConsumerGone`.
    name: &'static str,
    tag: String,
    channel: Channel,
    deliveries: Consumer,
}

impl Feed {
    async fn start(
        broker: &Broker,
        (role, name): (QueueRole, &'static str),
        prefetch: u16,
        worker: &str,
    ) -> Result<Feed, QueueError> {
        let tag = format!("{worker}-{name}");
        let (channel, deliveries) = broker.consume(role, prefetch, &tag).await?;
        Ok(Feed {
            name,
            tag,
            channel,
            deliveries,
        })
    }

    /// Stops new deliveries; the channel stays open so the tasks in flight
    /// can still ack.
    async fn cancel(&self) {
        let options = BasicCancelOptions::default();
        if let Err(e) = self
            .channel
            .basic_cancel(self.tag.as_str().into(), options)
            .await
        {
            tracing::debug!(error = %e, consumer = self.name, "consumer not cancelled");
        }
    }

    /// Closes the channel; whatever is still unacked is redelivered.
    async fn close(self) {
        if let Err(e) = self.channel.close(200, "drained".into()).await {
            tracing::debug!(error = %e, consumer = self.name, "channel not closed cleanly");
        }
    }
}

/// Takes deliveries until `shutdown` or until a consumer is gone for good,
/// and runs each as a task on `tracker`.
async fn consume(
    ctx: &Arc<WorkerContext>,
    broker: &Broker,
    tracker: &TaskTracker,
    pages: &mut Feed,
    finals: &mut Feed,
    shutdown: &CancellationToken,
) -> Result<(), WorkerError> {
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    let mut watch = BrokerWatch::default();
    loop {
        // Only the waits race; each handler runs to its end (a recovery in
        // progress is not cut short by another queue's delivery).
        let delivery = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {
                watch.check(ctx, broker).await?;
                None
            }
            next = pages.deliveries.next() => taken(next, &pages.channel, pages.name).await?,
            next = finals.deliveries.next() => taken(next, &finals.channel, finals.name).await?,
        };
        if let Some(delivery) = delivery {
            // A delivery waits for a slot: a chain its task leads to keeps
            // its slot after the delivery is acked.
            let slot = tokio::select! {
                slot = ctx.slots.clone().acquire_owned() => slot,
                // Unacked, it comes again once this channel closes.
                _ = shutdown.cancelled() => return Ok(()),
            };
            let Ok(slot) = slot else { return Ok(()) };
            let ctx = ctx.clone();
            tracker.spawn(async move {
                process(&ctx, delivery).await;
                drop(slot);
            });
        }
    }
}

/// What a consumer stream gave: a delivery to run, nothing (an error the
/// channel recovered from), or the end of the consumer.
async fn taken(
    next: Option<Result<Delivery, lapin::Error>>,
    channel: &Channel,
    name: &'static str,
) -> Result<Option<Delivery>, WorkerError> {
    match next {
        Some(Ok(delivery)) => Ok(Some(delivery)),
        Some(Err(e)) => {
            tracing::warn!(error = %e, consumer = name, "consumer error; waiting for recovery");
            if let Err(e) = channel.wait_for_recovery(e).await {
                tracing::error!(error = %e, consumer = name, "RabbitMQ did not recover");
                return Err(WorkerError::ConsumerGone(name));
            }
            Ok(None)
        }
        None => Err(WorkerError::ConsumerGone(name)),
    }
}

/// Liveness: when recovery fails the consumer stream can go silent; a
/// worker that cannot reach the broker for long exits so its supervisor
/// starts a fresh one.
#[derive(Debug, Default)]
struct BrokerWatch {
    outage: Outage,
}

impl BrokerWatch {
    async fn check(&mut self, ctx: &WorkerContext, broker: &Broker) -> Result<(), WorkerError> {
        let connected = broker.is_connected();
        if self.gave_up(connected, Instant::now()) {
            tracing::error!("RabbitMQ unreachable for {:?}; exiting", BROKER_GIVE_UP);
            return Err(WorkerError::ConsumerGone("pages"));
        }
        if connected {
            // The fleet size only refines each worker's share of the
            // bucket; a failed count keeps the last one.
            if let Ok(n) = broker.consumer_count(QueueRole::Pages).await {
                ctx.limiter.set_fleet_size(n);
            }
        }
        Ok(())
    }

    /// Notes the connection state seen at `now`; true once the broker has
    /// been unreachable for longer than `BROKER_GIVE_UP`.
    fn gave_up(&mut self, connected: bool, now: Instant) -> bool {
        self.outage.observe(connected, now) > BROKER_GIVE_UP
    }
}

/// Drain: stop taking work (cancel the consumers, keep the channels open
/// so the tasks in flight can still ack), let those tasks finish within
/// the bound, then hand back what is left. Whatever is still unacked is
/// redelivered.
async fn drain(ctx: &WorkerContext, tracker: &TaskTracker, feeds: [&Feed; 2], timeout: Duration) {
    tracker.close();
    ctx.draining.cancel();
    for feed in feeds {
        feed.cancel().await;
    }
    let in_flight = tracker.len();
    if in_flight > 0 {
        tracing::info!(in_flight, ?timeout, "draining");
    }
    if tokio::time::timeout(timeout, tracker.wait()).await.is_ok() {
        return;
    }
    tracing::warn!(
        unfinished = tracker.len(),
        "drain timed out; handing unfinished tasks back"
    );
    ctx.hand_back.cancel();
    if tokio::time::timeout(HAND_BACK_WAIT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("tasks still running after the hand-back; they will be redelivered");
    }
}

/// Handles one delivery and acks it, or hands it back.
async fn process(ctx: &WorkerContext, delivery: Delivery) {
    match serde_json::from_slice::<TaskMessage>(&delivery.data) {
        Ok(message) => {
            let (settled, follow) = handle(ctx, message).await;
            if settled {
                ack(delivery).await;
            } else {
                hand_back(ctx, delivery).await;
            }
            // The delivery is finished with; its slot goes on down the chain.
            if let Some(follow) = follow {
                follow_chain(ctx, follow).await;
            }
        }
        Err(e) => {
            // Unreadable forever: reject without requeue (to the dead-letter queue).
            tracing::error!(error = %e, "unreadable task message; rejecting");
            nack(delivery, false).await;
        }
    }
}

/// Runs a task; true when its delivery is finished with, and the chain's
/// next page when this worker is to fetch it.
async fn handle(ctx: &WorkerContext, message: TaskMessage) -> (bool, Option<Follow>) {
    match message {
        TaskMessage::Page { task_id, .. } => {
            let result = handle_page(ctx, Taken::Delivered(task_id)).await;
            match &result {
                Ok(result) => tracing::trace!(?result, %task_id, "page task finished"),
                Err(e) => tracing::warn!(error = %e, "page task not finished; handing it back"),
            }
            let settled = page_settled(&result);
            let follow = match result {
                Ok(PageResult::Landed { follow, .. }) => follow,
                _ => None,
            };
            (settled, follow)
        }
        TaskMessage::Finalize { export_id } => {
            let result = handle_finalize(ctx, export_id).await;
            match &result {
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "finalize not finished; handing it back")
                }
                // Other failures were logged as the export failed.
                _ => {}
            }
            (finalize_settled(&result), None)
        }
        TaskMessage::DeadLetter { .. } => (true, None),
    }
}

/// A page task's delivery is finished with once the task reached a final
/// state in Postgres; one handed back or cut short by Postgres comes again.
fn page_settled(result: &Result<PageResult, PageError>) -> bool {
    !matches!(result, Ok(PageResult::HandedBack) | Err(_))
}

/// A finalize task's delivery comes again only when Postgres was away; a
/// failure of the data or the disk has already failed the export.
fn finalize_settled(result: &Result<FinalizeResult, FinalizeError>) -> bool {
    match result {
        Ok(_) => true,
        Err(e) => !e.is_retryable(),
    }
}

async fn ack(delivery: Delivery) {
    match delivery.ack(BasicAckOptions::default()).await {
        Ok(true) => {}
        // The channel was recovered since this delivery: the ack did not
        // count and the message will come again, harmlessly.
        Ok(false) => {
            tracing::info!("ack on a recovered channel did not count; expect a redelivery")
        }
        Err(e) => tracing::warn!(error = %e, "ack failed; expect a redelivery"),
    }
}

/// Hands the task back only once Postgres answers again: each requeue
/// counts towards the queue's delivery limit.
async fn hand_back(ctx: &WorkerContext, delivery: Delivery) {
    let started = Instant::now();
    while ctx.store.ping().await.is_err() && started.elapsed() < STORE_WAIT {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    nack(delivery, true).await;
}

async fn nack(delivery: Delivery, requeue: bool) {
    let options = BasicNackOptions {
        requeue,
        ..BasicNackOptions::default()
    };
    // A nack that fails went with its channel; the broker redelivers an
    // unacked message by itself.
    if let Err(e) = delivery.nack(options).await {
        tracing::warn!(error = %e, requeue, "nack failed; the broker redelivers the message");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagefleet_shared::store::StoreError;
    use uuid::Uuid;

    fn down() -> StoreError {
        StoreError::Pool("connection refused".into())
    }

    #[test]
    fn page_deliveries_are_acked_only_for_final_states() {
        for done in [
            PageResult::Landed {
                rows: 3,
                finalize: false,
                follow: None,
            },
            PageResult::Duplicate,
            PageResult::DeadLettered,
            PageResult::Skipped,
            PageResult::Parked,
        ] {
            assert!(page_settled(&Ok(done)));
        }
        assert!(!page_settled(&Ok(PageResult::HandedBack)));
        let store = PageError::Store {
            task_id: Uuid::nil(),
            source: down(),
        };
        assert!(!page_settled(&Err(store)));
    }

    #[test]
    fn finalize_deliveries_come_again_only_when_postgres_was_away() {
        assert!(finalize_settled(&Ok(FinalizeResult::Skipped)));
        let away = FinalizeError::Store {
            export_id: Uuid::nil(),
            source: down(),
        };
        assert!(!finalize_settled(&Err(away)));
        let short = FinalizeError::CountMismatch {
            export_id: Uuid::nil(),
            written: 1,
            staged: 2,
        };
        assert!(finalize_settled(&Err(short)), "the export has failed");
    }

    #[test]
    fn the_watch_gives_up_after_a_long_disconnection_only() {
        let mut watch = BrokerWatch::default();
        let t0 = Instant::now();
        assert!(!watch.gave_up(false, t0));
        assert!(!watch.gave_up(false, t0 + BROKER_GIVE_UP));
        assert!(watch.gave_up(false, t0 + BROKER_GIVE_UP + Duration::from_secs(1)));
        // A reconnection starts the count again.
        assert!(!watch.gave_up(true, t0 + BROKER_GIVE_UP * 2));
        assert!(!watch.gave_up(false, t0 + BROKER_GIVE_UP * 2));
        assert!(!watch.gave_up(false, t0 + BROKER_GIVE_UP * 3));
        assert!(watch.gave_up(false, t0 + BROKER_GIVE_UP * 3 + Duration::from_millis(1)));
    }
}
