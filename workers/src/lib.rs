//! pagefleet-workers: the worker daemon.
//!
//! A worker consumes page tasks and finalize tasks from RabbitMQ. For a page
//! it takes a token from the fleet-wide bucket, fetches, classifies, and
//! lands the page in Postgres ([`page`]); once every page has landed, a
//! finalize task writes the CSV, reads it back ([`file_check`]) and writes
//! its manifest ([`finalize`]). [`run`] wires the consumers, the drain on
//! shutdown, and the metrics endpoint.

mod clock;
pub mod context;
pub mod file_check;
pub mod finalize;
mod follow;
pub mod page;
pub mod run;
mod staged_csv;

pub use run::{run, WorkerOptions};
