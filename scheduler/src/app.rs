//! The scheduler process: migrations, the HTTP API, the outbox relay and
//! the reconciler, until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use pagefleet_shared::config::ServiceConfig;
use pagefleet_shared::queue::{Broker, QueueError};
use pagefleet_shared::store::{Store, StoreError};

use crate::api::{router, ApiState};
use crate::relay::{run_reconciler, run_relay};

#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    pub listen: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds the API and runs until `shutdown`. `ready` receives the bound
/// address (useful with port 0).
pub async fn run(
    config: &ServiceConfig,
    options: SchedulerOptions,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<(), SchedulerError> {
    let store = Store::connect(&config.database_url, 16)?;
    let applied = store.migrate().await?;
    if !applied.is_empty() {
        tracing::info!(?applied, "migrations applied");
    }
    let broker = Arc::new(Broker::connect(&config.amqp_url, &config.namespace).await?);
    let listener =
        TcpListener::bind(options.listen)
            .await
            .map_err(|source| SchedulerError::Listen {
                addr: options.listen,
                source,
            })?;
    let addr = listener
        .local_addr()
        .map_err(|source| SchedulerError::Listen {
            addr: options.listen,
            source,
        })?;
    tracing::info!(%addr, namespace = %config.namespace, "scheduler listening");
    if let Some(ready) = ready {
        let _ = ready.send(addr);
    }
    let relay = tokio::spawn(run_relay(store.clone(), broker.clone(), shutdown.clone()));
    let reconciler = tokio::spawn(run_reconciler(
        store.clone(),
        broker.clone(),
        shutdown.clone(),
    ));
    let app = router(ApiState {
        store,
        broker: broker.clone(),
        output_root: config.output_root.as_ref().map(std::path::PathBuf::from),
    });
    let stop = shutdown.clone();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    shutdown.cancel();
    let _ = relay.await;
    let _ = reconciler.await;
    broker.close().await;
    served.map_err(|source| SchedulerError::Listen { addr, source })
}
