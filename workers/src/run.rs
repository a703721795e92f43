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
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use pagefleet_shared::config::ServiceConfig;
use pagefleet_shared::guard::SourceGuard;
use pagefleet_shared::model::{QueueRole, TaskMessage};
use pagefleet_shared::queue::{Broker, QueueError};
use pagefleet_shared::ratelimit::{RateLimitError, RateLimiter};
use pagefleet_shared::source::{SourceClient, SourceError};
use pagefleet_shared::store::{Store, StoreError};

use crate::context::WorkerContext;
use crate::finalize::handle_finalize;
use crate::page::{handle_page, PageResult};

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
    #[error("the {0} consumer stopped; exiting so the supervisor restarts a fresh worker")]
    ConsumerGone(&'static str),
}

/// Runs a worker until `shutdown` is cancelled, then drains.
pub async fn run(
    config: &ServiceConfig,
    options: WorkerOptions,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let store = Store::connect(&config.database_url, options.concurrency as usize + 4)?;
    store.migrate().await?;
    let broker = Arc::new(Broker::connect(&config.amqp_url, &config.namespace).await?);
    let limiter = RateLimiter::new(&config.redis_url, &config.namespace)?;
    let mut ctx = WorkerContext::new(
        store,
        limiter,
        SourceClient::new()?,
        broker.clone(),
        SourceGuard::new(&config.redis_url, &config.namespace)?,
        &options,
    );
    ctx.output_root = config.output_root.as_ref().map(std::path::PathBuf::from);
    let ctx = Arc::new(ctx);
    let pages_tag = format!("{}-pages", options.name);
    let finalize_tag = format!("{}-finalize", options.name);
    let (pages_channel, mut pages) = broker
        .consume(QueueRole::Pages, options.concurrency, &pages_tag)
        .await?;
    let (finalize_channel, mut finals) = broker
        .consume(QueueRole::Finalize, 1, &finalize_tag)
        .await?;
    tracing::info!(concurrency = options.concurrency, namespace = %config.namespace, "worker consuming");

    let tracker = TaskTracker::new();
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    let mut disconnected_since: Option<Instant> = None;
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = tick.tick() => {
                // Liveness: when recovery fails the consumer stream can go
                // silent; a worker that cannot reach the broker for long
                // exits so its supervisor starts a fresh one.
                if broker.is_connected() {
                    disconnected_since = None;
                    if let Ok(n) = broker.consumer_count(QueueRole::Pages).await {
                        ctx.limiter.set_fleet_size(n);
                    }
                } else {
                    let since = *disconnected_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > BROKER_GIVE_UP {
                        tracing::error!("RabbitMQ unreachable for {:?}; exiting", BROKER_GIVE_UP);
                        break Err(WorkerError::ConsumerGone("pages"));
                    }
                }
            }
            next = pages.next() => match next {
                Some(Ok(delivery)) => {
                    let ctx = ctx.clone();
                    tracker.spawn(async move { process(&ctx, delivery).await });
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "page consumer error; waiting for recovery");
                    if let Err(e) = pages_channel.wait_for_recovery(e).await {
                        tracing::error!(error = %e, "RabbitMQ did not recover");
                        break Err(WorkerError::ConsumerGone("pages"));
                    }
                }
                None => break Err(WorkerError::ConsumerGone("pages")),
            },
            next = finals.next() => match next {
                Some(Ok(delivery)) => {
                    let ctx = ctx.clone();
                    tracker.spawn(async move { process(&ctx, delivery).await });
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "finalize consumer error; waiting for recovery");
                    if let Err(e) = finalize_channel.wait_for_recovery(e).await {
                        tracing::error!(error = %e, "RabbitMQ did not recover");
                        break Err(WorkerError::ConsumerGone("finalize"));
                    }
                }
                None => break Err(WorkerError::ConsumerGone("finalize")),
            },
        }
    };
    // Drain: stop taking work (cancel the consumers, keep the channels open
    // so the tasks in flight can still ack), let those tasks finish within
    // the bound, then close. Whatever is still unacked is redelivered.
    tracker.close();
    ctx.draining.cancel();
    for (channel, tag) in [
        (&pages_channel, &pages_tag),
        (&finalize_channel, &finalize_tag),
    ] {
        let _ = channel
            .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
            .await;
    }
    let in_flight = tracker.len();
    if in_flight > 0 {
        tracing::info!(in_flight, timeout = ?options.drain_timeout, "draining");
    }
    if tokio::time::timeout(options.drain_timeout, tracker.wait())
        .await
        .is_err()
    {
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
    let _ = pages_channel.close(200, "drained".into()).await;
    let _ = finalize_channel.close(200, "drained".into()).await;
    broker.close().await;
    result
}

/// Handles one delivery and acks it, or hands it back.
async fn process(ctx: &WorkerContext, delivery: Delivery) {
    let message: TaskMessage = match serde_json::from_slice(&delivery.data) {
        Ok(m) => m,
        Err(e) => {
            // Unreadable forever: reject without requeue (to the dead-letter queue).
            tracing::error!(error = %e, "unreadable task message; rejecting");
            let _ = delivery
                .nack(BasicNackOptions {
                    requeue: false,
                    ..BasicNackOptions::default()
                })
                .await;
            return;
        }
    };
    let done = match message {
        TaskMessage::Page { task_id, .. } => match handle_page(ctx, task_id).await {
            Ok(PageResult::HandedBack) => false,
            Ok(result) => {
                tracing::trace!(?result, %task_id, "page task finished");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "page task not finished; handing it back");
                false
            }
        },
        TaskMessage::Finalize { export_id } => match handle_finalize(ctx, export_id).await {
            Ok(_) => true,
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "finalize not finished; handing it back");
                false
            }
            Err(_) => true,
        },
        TaskMessage::DeadLetter { .. } => true,
    };
    if done {
        match delivery.ack(BasicAckOptions::default()).await {
            Ok(true) => {}
            // The channel was recovered since this delivery: the ack did not
            // count and the message will come again, harmlessly.
            Ok(false) => {
                tracing::info!("ack on a recovered channel did not count; expect a redelivery")
            }
            Err(e) => tracing::warn!(error = %e, "ack failed; expect a redelivery"),
        }
    } else {
        // Hand the task back only once Postgres answers again: each requeue
        // counts towards the queue's delivery limit.
        let started = Instant::now();
        while ctx.store.ping().await.is_err() && started.elapsed() < STORE_WAIT {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let _ = delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            })
            .await;
    }
}
