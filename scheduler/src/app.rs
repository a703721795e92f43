//! The scheduler process: migrations, the HTTP API, the outbox relay and
//! the reconciler, until shutdown.
//!
//! The relay and the reconciler are watched: one that ends before shutdown
//! or panics stops the process with an error naming it, so its supervisor
//! restarts the scheduler instead of leaving it serving without a relay.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use pagefleet_shared::config::{ConfigError, ServiceConfig};
use pagefleet_shared::model::new_id;
use pagefleet_shared::queue::{Broker, QueueError};
use pagefleet_shared::store::{Store, StoreError};

use crate::api::{router, ApiState};
use crate::auth::AuthConfig;
use crate::broker_watch::run_broker_watch;
use crate::firing::run_firing;
use crate::fleet_gauges::run_fleet_gauges;
use crate::relay::{run_reconciler, run_relay};
use crate::retention::run_staging_retention;

#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    pub listen: SocketAddr,
    /// Where `/metrics` is served, apart from the API (none when absent).
    pub metrics_listen: Option<SocketAddr>,
    pub auth: AuthConfig,
}

/// The addresses the scheduler bound (real ports for port 0).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub api: SocketAddr,
    pub metrics: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the {name} {how}; exiting so the supervisor restarts the scheduler")]
    LoopStopped { name: &'static str, how: String },
}

/// Binds the API (and the metrics listener) and runs until `shutdown`.
/// `ready` receives the bound addresses (useful with port 0).
pub async fn run(
    config: &ServiceConfig,
    options: SchedulerOptions,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<Bound>>,
) -> Result<(), SchedulerError> {
    let outbound = Arc::new(config.outbound_policy()?);
    let store = Store::connect(&config.database_url, 16)?;
    let applied = store.migrate().await?;
    if !applied.is_empty() {
        tracing::info!(?applied, "migrations applied");
    }
    let broker = Arc::new(Broker::connect(&config.amqp_url, &config.namespace).await?);
    let (listener, addr) = bind(options.listen).await?;
    tracing::info!(%addr, namespace = %config.namespace, "scheduler listening");
    if options.auth.admin_token.is_none() {
        tracing::warn!("no bootstrap admin token (PAGEFLEET_ADMIN_TOKEN): only tokens already stored can call the API");
    }
    if options.auth.trust_tenant_header {
        tracing::warn!("trusting X-Pagefleet-Tenant on requests without a token: only an authenticating proxy may reach this port");
    }
    let mut loops = Loops::default();
    let metrics = match options.metrics_listen {
        Some(listen) => {
            let (metrics_listener, metrics_addr) = bind(listen).await?;
            tracing::info!(addr = %metrics_addr, "scheduler metrics listening");
            let stop = shutdown.clone();
            loops.spawn("metrics server", async move {
                let router = pagefleet_shared::telemetry::metrics_router();
                let served = axum::serve(metrics_listener, router)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "metrics server stopped");
                }
            });
            Some(metrics_addr)
        }
        None => None,
    };
    if let Some(ready) = ready {
        // A caller that stopped waiting has nothing to be told.
        let _ = ready.send(Bound { api: addr, metrics });
    }
    loops.spawn(
        "relay",
        run_relay(store.clone(), broker.clone(), shutdown.clone()),
    );
    loops.spawn(
        "broker watch",
        run_broker_watch(broker.clone(), shutdown.clone()),
    );
    loops.spawn(
        "schedule firing",
        run_firing(
            store.clone(),
            broker.clone(),
            // The pid tells an operator (and a test) which process fired;
            // the suffix tells apart schedulers sharing one process.
            format!(
                "scheduler-{}-{}",
                std::process::id(),
                &new_id().simple().to_string()[28..]
            ),
            shutdown.clone(),
        ),
    );
    loops.spawn(
        "fleet gauges",
        run_fleet_gauges(store.clone(), broker.clone(), shutdown.clone()),
    );
    loops.spawn(
        "reconciler",
        run_reconciler(store.clone(), broker.clone(), shutdown.clone()),
    );
    loops.spawn(
        "staging retention",
        run_staging_retention(
            store.clone(),
            std::time::Duration::from_secs(config.staging_retention_secs),
            shutdown.clone(),
        ),
    );
    let app = router(ApiState {
        store,
        broker: broker.clone(),
        output_root: config.output_root_path(),
        secrets_dir: config.secrets_dir.as_ref().map(std::path::PathBuf::from),
        auth: Arc::new(options.auth),
        outbound,
    });
    let stop = shutdown.clone();
    let serve = async {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        // However the API ended, the loops end with it.
        shutdown.cancel();
        served
    };
    let (served, watched) = tokio::join!(serve, loops.watch(&shutdown));
    broker.close().await;
    served.map_err(|source| SchedulerError::Listen { addr, source })?;
    watched
}

/// Binds the API's listener; the address is the bound one (a real port
/// for port 0).
async fn bind(listen: SocketAddr) -> Result<(TcpListener, SocketAddr), SchedulerError> {
    let err = |source| SchedulerError::Listen {
        addr: listen,
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    Ok((listener, addr))
}

/// The background loops, each meant to run until shutdown.
#[derive(Default)]
struct Loops {
    set: JoinSet<()>,
    /// Each task's loop name: a panicked task reports only its id.
    names: HashMap<tokio::task::Id, &'static str>,
}

impl Loops {
    fn spawn(&mut self, name: &'static str, body: impl Future<Output = ()> + Send + 'static) {
        let handle = self.set.spawn(body);
        self.names.insert(handle.id(), name);
    }

    /// Waits for every loop to end. One that ends before `shutdown` or
    /// panics is logged and cancels `shutdown` (the API stops too); the
    /// first such failure is the error.
    async fn watch(mut self, shutdown: &CancellationToken) -> Result<(), SchedulerError> {
        let mut first = None;
        while let Some(joined) = self.set.join_next_with_id().await {
            let (id, end) = match joined {
                Ok((id, ())) => (id, LoopEnd::Returned),
                Err(e) if e.is_panic() => (
                    e.id(),
                    LoopEnd::Panicked(panic_text(e.into_panic().as_ref())),
                ),
                Err(e) => (e.id(), LoopEnd::Cancelled(e.to_string())),
            };
            let Some(how) = loop_failure(end, shutdown.is_cancelled()) else {
                continue;
            };
            let name = self.names.get(&id).copied().unwrap_or("background loop");
            tracing::error!(task = name, %how, "background loop stopped; shutting down");
            shutdown.cancel();
            first.get_or_insert(SchedulerError::LoopStopped { name, how });
        }
        first.map_or(Ok(()), Err)
    }
}

/// How a background loop's task ended.
#[derive(Debug)]
enum LoopEnd {
    Returned,
    Panicked(String),
    /// Nothing aborts the set: only a runtime shutting down ends a task so.
    Cancelled(String),
}

/// How a loop's end is a failure, if it is one: a panic, or an end before
/// shutdown was asked for.
fn loop_failure(end: LoopEnd, shutting_down: bool) -> Option<String> {
    match end {
        LoopEnd::Panicked(panic) => Some(format!("loop panicked: {panic}")),
        LoopEnd::Returned if shutting_down => None,
        LoopEnd::Returned => Some("loop ended before shutdown".to_string()),
        LoopEnd::Cancelled(e) => Some(format!("loop did not finish: {e}")),
    }
}

/// The message of a panic, when it has one.
fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_loop_ending_at_shutdown_is_no_failure() {
        assert_eq!(loop_failure(LoopEnd::Returned, true), None);
    }

    #[test]
    fn a_loop_ending_early_is_named() {
        assert_eq!(
            loop_failure(LoopEnd::Returned, false),
            Some("loop ended before shutdown".to_string())
        );
    }

    #[test]
    fn a_panic_is_a_failure_even_during_shutdown() {
        assert_eq!(
            loop_failure(LoopEnd::Panicked("boom".to_string()), true),
            Some("loop panicked: boom".to_string())
        );
    }

    #[test]
    fn panic_messages_are_read_from_str_and_string_payloads() {
        assert_eq!(panic_text(&"static text"), "static text");
        assert_eq!(panic_text(&format!("made {}", 1)), "made 1");
        assert_eq!(panic_text(&42u8), "a panic without a message");
    }

    #[tokio::test]
    async fn a_panicking_loop_stops_the_others_and_is_the_error() {
        let shutdown = CancellationToken::new();
        let mut loops = Loops::default();
        let stop = shutdown.clone();
        loops.spawn("relay", async move { stop.cancelled().await });
        loops.spawn("reconciler", async {
            tokio::task::yield_now().await;
            panic!("reconciler broke");
        });
        let result = tokio::time::timeout(Duration::from_secs(5), loops.watch(&shutdown)).await;
        match result {
            Ok(Err(SchedulerError::LoopStopped { name, how })) => {
                assert_eq!(name, "reconciler");
                assert_eq!(how, "loop panicked: reconciler broke");
            }
            other => panic!("{other:?}"),
        }
        assert!(shutdown.is_cancelled(), "the relay and the API stop too");
    }

    #[tokio::test]
    async fn loops_that_end_at_shutdown_give_ok() {
        let shutdown = CancellationToken::new();
        let mut loops = Loops::default();
        for name in ["relay", "reconciler"] {
            let stop = shutdown.clone();
            loops.spawn(name, async move { stop.cancelled().await });
        }
        shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(5), loops.watch(&shutdown)).await;
        assert!(matches!(result, Ok(Ok(()))), "{result:?}");
    }
}
