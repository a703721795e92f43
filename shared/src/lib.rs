//! pagefleet-shared: the domain and the adapters every pagefleet process uses.
//!
//! Pure logic (no I/O): [`spec`], [`pagination`], [`retry`], [`flatten`],
//! [`csv_out`] (writing the file), [`csv_check`] (reading it back, strictly),
//! [`model`], [`verification`] (the counts an export is held to),
//! [`api_token`] (what an API caller presents, and its stored hash),
//! [`rate_keys`] (which bucket a request draws from).
//! I/O adapters: [`source`] (HTTP), [`ratelimit`] (Redis), [`queue`]
//! (RabbitMQ), [`store`] (Postgres), [`telemetry`] (logs and metrics).
//! [`config`] gathers the addresses of the services from the environment;
//! [`tenancy`] says what a tenant's spec may reach on a worker;
//! [`outbound`] says which addresses a worker may connect to; [`redact`]
//! holds every rule that keeps secrets out of what the fleet shows.

pub mod adaptive_rate;
pub mod api_token;
pub mod config;
pub mod csv_check;
pub mod csv_out;
pub mod dispatch;
pub mod failure;
pub mod fingerprint;
pub mod flatten;
pub mod guard;
pub mod lifecycle;
pub mod limits;
pub mod model;
pub mod outbound;
pub mod pagination;
pub mod progress;
pub mod queue;
pub mod rate_keys;
pub mod ratelimit;
pub mod ratelimit_headers;
pub mod redact;
pub mod redis_conn;
pub mod replay_edit;
pub mod retry;
pub mod schedule;
pub mod shutdown;
pub mod source;
pub mod spec;
pub mod store;
pub mod telemetry;
pub mod tenancy;
pub mod verification;
