//! Publishing the outbox: the step between "Postgres committed" and "the
//! broker has it". Used by workers and the API right after their own
//! transactions (fast path) and by the scheduler's relay (safety net).

use crate::queue::{Broker, Publisher, QueueError};
use crate::store::{OutboxFilter, OutboxMessage, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Messages marked sent per transaction.
pub const CHUNK: usize = 100;

/// A publisher that reopens its channel after a failure.
#[derive(Default)]
pub struct Dispatcher {
    publisher: Option<Publisher>,
}

impl Dispatcher {
    pub fn new() -> Self {
        Dispatcher { publisher: None }
    }

    /// Publishes the unsent outbox messages the filter selects, with
    /// confirms, in order, and marks the published ones sent. Stops at the
    /// first failure (the rest stay for the relay). Returns how many went.
    pub async fn publish(
        &mut self,
        store: &Store,
        broker: &Broker,
        filter: OutboxFilter<'_>,
    ) -> Result<usize, DispatchError> {
        let (sent, failure) = store
            .publish_outbox(filter, |messages| self.publish_all(broker, messages))
            .await?;
        crate::telemetry::metrics()
            .outbox_published
            .inc_by(sent as u64);
        match failure {
            Some(e) => {
                self.publisher = None;
                Err(e.into())
            }
            None => Ok(sent),
        }
    }

    async fn publish_all(
        &mut self,
        broker: &Broker,
        messages: Vec<OutboxMessage>,
    ) -> (Vec<i64>, Option<QueueError>) {
        if self.publisher.as_ref().is_none_or(|p| !p.is_open()) {
            match broker.publisher().await {
                Ok(p) => self.publisher = Some(p),
                Err(e) => return (Vec::new(), Some(e)),
            }
        }
        let Some(publisher) = &self.publisher else {
            return (Vec::new(), None);
        };
        let bodies: Vec<_> = messages
            .iter()
            .map(|m| (m.queue, m.body.to_string().into_bytes()))
            .collect();
        let (confirmed, error) = publisher.publish_all(&bodies).await;
        (messages[..confirmed].iter().map(|m| m.id).collect(), error)
    }

    /// Publishes the outbox rows with these ids (those a transaction of the
    /// caller just wrote), committing every `CHUNK`: a publisher that dies
    /// mid-way leaves at most one chunk to be published twice.
    pub async fn publish_ids(
        &mut self,
        store: &Store,
        broker: &Broker,
        ids: &[i64],
    ) -> Result<usize, DispatchError> {
        let mut sent = 0;
        for chunk in ids.chunks(CHUNK) {
            sent += self
                .publish(store, broker, OutboxFilter::Ids(chunk))
                .await?;
        }
        Ok(sent)
    }
}
