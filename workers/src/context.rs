//! What every task handler needs: the adapters, shared by all tasks of a
//! worker process.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use pagefleet_shared::model::QueueRole;
use pagefleet_shared::queue::{Broker, Publisher, QueueError};
use pagefleet_shared::ratelimit::RateLimiter;
use pagefleet_shared::source::SourceClient;
use pagefleet_shared::store::Store;

pub struct WorkerContext {
    pub store: Store,
    pub limiter: RateLimiter,
    pub source: SourceClient,
    pub broker: Arc<Broker>,
    publisher: Mutex<Option<Publisher>>,
    /// The longest a task holds a reserved token slot before giving it up.
    pub max_token_wait: Duration,
}

impl WorkerContext {
    pub fn new(
        store: Store,
        limiter: RateLimiter,
        source: SourceClient,
        broker: Arc<Broker>,
        publisher: Publisher,
    ) -> Self {
        WorkerContext {
            store,
            limiter,
            source,
            broker,
            publisher: Mutex::new(Some(publisher)),
            max_token_wait: Duration::from_secs(5),
        }
    }

    /// Publishes the outbox messages a transaction just wrote and marks them
    /// sent. A failure is only logged: the scheduler's relay publishes
    /// whatever stays unsent.
    pub async fn publish_outbox(&self, ids: &[i64]) {
        if ids.is_empty() {
            return;
        }
        let messages = match self.store.outbox_by_ids(ids).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read outbox; the relay will publish");
                return;
            }
        };
        let mut sent = Vec::with_capacity(messages.len());
        for message in &messages {
            let body = message.body.to_string();
            match self.publish(message.queue, body.as_bytes()).await {
                Ok(()) => sent.push(message.id),
                Err(e) => {
                    tracing::warn!(error = %e, "publish failed; the relay will retry");
                    break;
                }
            }
        }
        if let Err(e) = self.store.outbox_mark_sent(&sent).await {
            tracing::warn!(error = %e, "cannot mark outbox sent; messages may be published twice");
        }
    }

    async fn publish(&self, queue: QueueRole, body: &[u8]) -> Result<(), QueueError> {
        let mut guard = self.publisher.lock().await;
        if guard.as_ref().is_none_or(|p| !p.is_open()) {
            *guard = Some(self.broker.publisher().await?);
        }
        match guard.as_ref() {
            Some(p) => {
                let result = p.publish(queue, body).await;
                if result.is_err() {
                    *guard = None;
                }
                result
            }
            None => Ok(()),
        }
    }
}
