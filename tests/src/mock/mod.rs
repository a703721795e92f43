//! The mock source API: an axum server that serves one deterministic record
//! set in several pagination styles, behind a bearer token and a token-bucket
//! rate limit, with seeded, reproducible faults, and counts everything it does
//! so tests can assert on it.
//!
//! On request it also lies and moves: totals in headers or a stated total that
//! is wrong, a cursor cycle, and data that drifts (inserts, updates and
//! deletes) while it is read, and leaks (echoes the credential, signs its
//! links); see [`MockConfig`].
//!
//! Control endpoints on the same server, neither authenticated, rate limited
//! nor counted: `GET /_mock/stats` (a [`MockStats`] as JSON),
//! `GET /_mock/truth` (a [`Truth`] as JSON: what the data set really held) and
//! `POST /_mock/fail_record` with `{"id": 123}` or `{"id": null}`.

mod bucket;
mod changes;
mod config;
mod cursor;
mod dataset;
mod drift;
mod faults;
mod json_server;
mod leak;
mod pages;
mod records;
mod respond;
mod server;
mod stats;
mod styles;

#[cfg(test)]
mod tests;

pub use changes::{Changes, BACKFILL_MAX_OFFSET, BACKFILL_PER_MONTH};
pub use config::{Faults, Flood, MockConfig};
pub use drift::{record_revision, Drift, Truth};
pub use leak::LEAKED_SIGNATURE;
pub use pages::JSON_SERVER_PAGE_SIZE;
pub use records::{all_records, record};
pub use server::MockServer;
pub use stats::{peak_in_window, MockStats, FAULT_KEYS};
pub use styles::{Style, DEFAULT_PAGE_SIZE};
