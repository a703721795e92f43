//! Publishing the outbox: the step between "Postgres committed" and "the
//! broker has it". Used by workers and the API right after their own
//! transactions (fast path) and by the scheduler's relay (safety net).

use crate::queue::{Broker, Publisher, QueueError};
use crate::store::{OutboxMessage, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// A publisher that reopens its channel after a failure.
pub struct Dispatcher {
    publisher: Option<Publisher>,
}

impl Dispatcher {
    pub fn new() -> Self {
        Dispatcher { publisher: None }
    }

    /// Publishes `messages` in order with confirms and marks the published
    /// ones sent. Stops at the first failure (the rest stay for the relay).
    /// Returns how many were published.
    pub async fn publish(
        &mut self,
        store: &Store,
        broker: &Broker,
        messages: &[OutboxMessage],
    ) -> Result<usize, DispatchError> {
        if messages.is_empty() {
            return Ok(0);
        }
        if self.publisher.as_ref().is_none_or(|p| !p.is_open()) {
            self.publisher = Some(broker.publisher().await?);
        }
        let mut sent = Vec::with_capacity(messages.len());
        let mut failure = None;
        if let Some(publisher) = &self.publisher {
            for message in messages {
                let body = message.body.to_string();
                match publisher.publish(message.queue, body.as_bytes()).await {
                    Ok(()) => sent.push(message.id),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
        }
        store.outbox_mark_sent(&sent).await?;
        crate::telemetry::metrics()
            .outbox_published
            .inc_by(sent.len() as u64);
        match failure {
            Some(e) => {
                self.publisher = None;
                Err(e.into())
            }
            None => Ok(sent.len()),
        }
    }

    /// Publishes the outbox rows with these ids (those a transaction of the
    /// caller just wrote).
    pub async fn publish_ids(
        &mut self,
        store: &Store,
        broker: &Broker,
        ids: &[i64],
    ) -> Result<usize, DispatchError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let messages = store.outbox_by_ids(ids).await?;
        self.publish(store, broker, &messages).await
    }
}

impl Default for Dispatcher {
    fn default() -> Self {
        Self::new()
    }
}
