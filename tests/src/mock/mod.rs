//! The mock source API: an axum server that serves one deterministic record
//! set in several pagination styles, behind a bearer token and a token-bucket
//! rate limit, with seeded, reproducible faults, and counts everything it does
//! so tests can assert on it.
//!
//! Control endpoints on the same server, neither authenticated, rate limited
//! nor counted: `GET /_mock/stats` (a [`MockStats`] as JSON) and
//! `POST /_mock/fail_record` with `{"id": 123}` or `{"id": null}`.

mod bucket;
mod config;
mod cursor;
mod faults;
mod json_server;
mod pages;
mod records;
mod respond;
mod server;
mod stats;
mod styles;

#[cfg(test)]
mod tests;

pub use config::{Faults, MockConfig};
pub use pages::JSON_SERVER_PAGE_SIZE;
pub use records::{all_records, record};
pub use server::MockServer;
pub use stats::{peak_in_window, MockStats, FAULT_KEYS};
pub use styles::{Style, DEFAULT_PAGE_SIZE};
