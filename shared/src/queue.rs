//! RabbitMQ: topology, publishing with confirms, consuming with manual acks.
//!
//! Queues are durable quorum queues with a delivery limit and a dead-letter
//! exchange, so a message that crashes every consumer ends up in the
//! dead-letter queue instead of looping forever. RabbitMQ is not the truth:
//! anything lost here is re-published from Postgres.
//!
//! lapin's own recovery has no handshake timeout: a reconnect that reached
//! a broker still starting can wait for its handshake forever. A process
//! that must stay (the scheduler) watches its connection with an
//! [`Outage`] and [`Broker::renew`]s it when it stays down.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};

use crate::config::redact_url;
use crate::model::QueueRole;

/// A poison message is dead-lettered by the broker after this many deliveries.
pub const DELIVERY_LIMIT: i32 = 20;
/// How long a publish waits for the broker's confirmation.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);
/// AMQP heartbeat: a dead peer is noticed within about twice this.
const HEARTBEAT_SECS: u16 = 10;
/// How long opening a connection (TCP, handshake, topology) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot connect to RabbitMQ at {url}: {source}")]
    Connect { url: String, source: lapin::Error },
    #[error("RabbitMQ at {url} did not complete a connection within {secs} s")]
    ConnectTimeout { url: String, secs: u64 },
    #[error("RabbitMQ {op} on `{queue}` failed: {source}")]
    Op {
        op: &'static str,
        queue: String,
        source: lapin::Error,
    },
    #[error("RabbitMQ did not confirm a publish to `{queue}` within {secs} s")]
    ConfirmTimeout { queue: String, secs: u64 },
    #[error("RabbitMQ refused a publish to `{queue}` ({reason})")]
    NotConfirmed { queue: String, reason: String },
}

/// The broker names of the queues of one namespace.
#[derive(Debug, Clone)]
pub struct QueueNames {
    namespace: String,
}

impl QueueNames {
    pub fn new(namespace: &str) -> Self {
        QueueNames {
            namespace: namespace.to_string(),
        }
    }

    pub fn name(&self, role: QueueRole) -> String {
        format!("{}.{}", self.namespace, role.as_str())
    }
}

/// One AMQP connection with automatic recovery, and the topology declared.
/// The connection can be replaced by a fresh one ([`Broker::renew`]).
pub struct Broker {
    /// With credentials: never logged (errors carry `redact_url`).
    url: String,
    names: QueueNames,
    connection: RwLock<Arc<Connection>>,
}

impl Broker {
    pub async fn connect(amqp_url: &str, namespace: &str) -> Result<Broker, QueueError> {
        let names = QueueNames::new(namespace);
        let connection = open(amqp_url, &names).await?;
        Ok(Broker {
            url: amqp_url.to_string(),
            names,
            connection: RwLock::new(Arc::new(connection)),
        })
    }

    /// Opens a new connection, declares the topology on it and puts it in
    /// place of the current one, which is closed in the background. Channels
    /// opened on the old connection stay with it: their owners notice
    /// (`Publisher::is_open`) and open new ones.
    pub async fn renew(&self) -> Result<(), QueueError> {
        let fresh = Arc::new(open(&self.url, &self.names).await?);
        let old = {
            let mut current = self
                .connection
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            std::mem::replace(&mut *current, fresh)
        };
        tokio::spawn(async move {
            // A stuck connection may never answer a close.
            let _ = tokio::time::timeout(CONFIRM_TIMEOUT, old.close(200, "renewed".into())).await;
        });
        Ok(())
    }

    fn current(&self) -> Arc<Connection> {
        self.connection
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn names(&self) -> &QueueNames {
        &self.names
    }

    pub fn is_connected(&self) -> bool {
        self.current().status().connected()
    }

    async fn channel(&self, queue: &str) -> Result<Channel, QueueError> {
        open_channel(&self.current(), queue).await
    }
    /// A channel in confirm mode.
    pub async fn publisher(&self) -> Result<Publisher, QueueError> {
        let channel = self.channel("publisher").await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|source| QueueError::Op {
                op: "confirm_select",
                queue: "publisher".into(),
                source,
            })?;
        Ok(Publisher {
            channel,
            names: self.names.clone(),
        })
    }

    /// A consumer with manual acks and at most `prefetch` unacked deliveries.
    pub async fn consume(
        &self,
        role: QueueRole,
        prefetch: u16,
        tag: &str,
    ) -> Result<(Channel, Consumer), QueueError> {
        let queue = self.names.name(role);
        let channel = self.channel(&queue).await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(|source| QueueError::Op {
                op: "basic_qos",
                queue: queue.clone(),
                source,
            })?;
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|source| QueueError::Op {
                op: "basic_consume",
                queue: queue.clone(),
                source,
            })?;
        Ok((channel, consumer))
    }

    /// Messages ready for delivery (not counting those delivered and not
    /// yet acked).
    pub async fn ready_count(&self, role: QueueRole) -> Result<u32, QueueError> {
        Ok(self.counts(role).await?.0)
    }

    /// Consumers attached to the queue: the number of live workers.
    pub async fn consumer_count(&self, role: QueueRole) -> Result<u32, QueueError> {
        Ok(self.counts(role).await?.1)
    }

    async fn counts(&self, role: QueueRole) -> Result<(u32, u32), QueueError> {
        let name = self.names.name(role);
        let channel = self.channel(&name).await?;
        let queue = channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|source| QueueError::Op {
                op: "queue_declare (passive)",
                queue: name.clone(),
                source,
            });
        let _ = channel.close(200, "counted".into()).await;
        let queue = queue?;
        Ok((queue.message_count(), queue.consumer_count()))
    }

    /// Deletes this namespace's queues (tests and `make clean`).
    pub async fn delete_queues(&self) -> Result<(), QueueError> {
        let channel = self.channel("delete").await?;
        for role in [QueueRole::Pages, QueueRole::Finalize, QueueRole::Dead] {
            let name = self.names.name(role);
            channel
                .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await
                .map_err(|source| QueueError::Op {
                    op: "queue_delete",
                    queue: name.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    pub async fn close(&self) {
        let _ = self.current().close(200, "bye".into()).await;
    }
}

/// Connects (with a heartbeat, bounded by `CONNECT_TIMEOUT`) and declares
/// the topology.
async fn open(amqp_url: &str, names: &QueueNames) -> Result<Connection, QueueError> {
    let url = with_heartbeat(amqp_url);
    let properties = ConnectionProperties::default()
        .enable_auto_recover()
        .with_connection_name(format!("pagefleet-{}", names.namespace).into());
    let opening = async {
        let connection = Connection::connect(&url, properties)
            .await
            .map_err(|source| QueueError::Connect {
                url: redact_url(amqp_url),
                source,
            })?;
        declare_topology(&connection, names).await?;
        Ok(connection)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, opening)
        .await
        .map_err(|_| QueueError::ConnectTimeout {
            url: redact_url(amqp_url),
            secs: CONNECT_TIMEOUT.as_secs(),
        })?
}

async fn open_channel(connection: &Connection, queue: &str) -> Result<Channel, QueueError> {
    connection
        .create_channel()
        .await
        .map_err(|source| QueueError::Op {
            op: "open channel",
            queue: queue.to_string(),
            source,
        })
}

/// Declares the queues (idempotent: same arguments every time).
async fn declare_topology(connection: &Connection, names: &QueueNames) -> Result<(), QueueError> {
    let dead = names.name(QueueRole::Dead);
    let channel = open_channel(connection, &dead).await?;
    let mut dead_args = FieldTable::default();
    dead_args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    declare(&channel, &dead, dead_args).await?;
    for role in [QueueRole::Pages, QueueRole::Finalize] {
        let name = names.name(role);
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(DELIVERY_LIMIT),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(dead.clone().into()),
        );
        declare(&channel, &name, args).await?;
    }
    let _ = channel.close(200, "declared".into()).await;
    Ok(())
}

async fn declare(channel: &Channel, name: &str, args: FieldTable) -> Result<(), QueueError> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .map_err(|source| QueueError::Op {
            op: "queue_declare",
            queue: name.to_string(),
            source,
        })?;
    Ok(())
}

/// Publishes persistent messages and waits for each confirmation.
pub struct Publisher {
    channel: Channel,
    names: QueueNames,
}

/// Publishes in flight at once before waiting for their confirmations.
pub const CONFIRM_WINDOW: usize = 64;

impl Publisher {
    /// Returns only when the broker has taken responsibility for the
    /// message: confirmed with an ack, and not returned as unroutable.
    pub async fn publish(&self, role: QueueRole, body: &[u8]) -> Result<(), QueueError> {
        let confirm = self.start(role, body).await?;
        self.confirmed(role, confirm).await
    }

    /// Publishes messages in order with up to `CONFIRM_WINDOW` awaiting
    /// confirmation at once. Returns how many, from the first, the broker
    /// confirmed, and the error that stopped it (the rest are to be
    /// published again; some of them may arrive twice, which consumers
    /// absorb).
    pub async fn publish_all(
        &self,
        messages: &[(QueueRole, Vec<u8>)],
    ) -> (usize, Option<QueueError>) {
        let mut confirmed = 0;
        for window in messages.chunks(CONFIRM_WINDOW) {
            let mut pending = Vec::with_capacity(window.len());
            for (role, body) in window {
                match self.start(*role, body).await {
                    Ok(confirm) => pending.push((*role, confirm)),
                    Err(e) => return (confirmed, Some(e)),
                }
            }
            for (role, confirm) in pending {
                if let Err(e) = self.confirmed(role, confirm).await {
                    return (confirmed, Some(e));
                }
                confirmed += 1;
            }
        }
        (confirmed, None)
    }

    async fn start(
        &self,
        role: QueueRole,
        body: &[u8],
    ) -> Result<lapin::PublisherConfirm, QueueError> {
        let queue = self.names.name(role);
        self.channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into()),
            )
            .await
            .map_err(|source| QueueError::Op {
                op: "basic_publish",
                queue,
                source,
            })
    }

    async fn confirmed(
        &self,
        role: QueueRole,
        confirm: lapin::PublisherConfirm,
    ) -> Result<(), QueueError> {
        let queue = self.names.name(role);
        let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
            .await
            .map_err(|_| QueueError::ConfirmTimeout {
                queue: queue.clone(),
                secs: CONFIRM_TIMEOUT.as_secs(),
            })?
            .map_err(|source| QueueError::Op {
                op: "publish confirm",
                queue: queue.clone(),
                source,
            })?;
        if !confirmation.is_ack() {
            return Err(QueueError::NotConfirmed {
                queue,
                reason: "nack".into(),
            });
        }
        if let Some(returned) = confirmation.take_message() {
            return Err(QueueError::NotConfirmed {
                queue,
                reason: format!("returned: {}", returned.reply_text),
            });
        }
        Ok(())
    }

    pub fn is_open(&self) -> bool {
        self.channel.status().connected()
    }
}

fn with_heartbeat(url: &str) -> String {
    if url.contains("heartbeat=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&heartbeat={HEARTBEAT_SECS}")
    } else {
        format!("{url}?heartbeat={HEARTBEAT_SECS}")
    }
}

/// How long a connection has been down, from periodic looks at it: the
/// pure half of a liveness watch.
#[derive(Debug, Default)]
pub struct Outage {
    down_since: Option<Instant>,
}

impl Outage {
    /// Notes the state seen at `now` and returns how long the connection
    /// has been down without a break (zero while it is up).
    pub fn observe(&mut self, connected: bool, now: Instant) -> Duration {
        if connected {
            self.down_since = None;
            return Duration::ZERO;
        }
        let since = *self.down_since.get_or_insert(now);
        now.saturating_duration_since(since)
    }

    /// Starts the count again (after a fresh connection).
    pub fn reset(&mut self) {
        self.down_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_lasts_from_the_first_look_that_saw_it_down() {
        let mut outage = Outage::default();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(outage.observe(false, t0), Duration::ZERO);
        assert_eq!(outage.observe(false, t0 + s(5)), s(5));
        // A look that saw it up starts the count again.
        assert_eq!(outage.observe(true, t0 + s(6)), Duration::ZERO);
        assert_eq!(outage.observe(false, t0 + s(7)), Duration::ZERO);
        assert_eq!(outage.observe(false, t0 + s(9)), s(2));
        outage.reset();
        assert_eq!(outage.observe(false, t0 + s(10)), Duration::ZERO);
    }
}
