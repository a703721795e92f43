//! pagefleet-scheduler: the control plane, and the `pagefleet` operator CLI.
//!
//! [`api`] is the HTTP API (submit, status, dead letters), [`auth`] says
//! who calls it and for which tenant, [`admin`] manages its tokens; the
//! planner lives in the store's submission transaction (an export's
//! partitions and first pages are written with it). [`relay`] publishes the
//! outbox to RabbitMQ and re-queues tasks whose lease ran out;
//! [`retention`] removes the staging of exports ended long enough. [`app`] wires
//! them into one process. [`client`] is the HTTP client the CLI uses, and
//! [`terminal`] makes the text it prints safe for a terminal.

pub mod admin;
pub mod api;
pub mod app;
pub mod auth;
pub mod broker_watch;
pub mod client;
pub mod console;
pub mod dlq;
pub mod download;
pub mod export_actions;
pub mod firing;
pub mod fleet_gauges;
pub mod openapi;
pub mod relay;
pub mod retention;
pub mod schedules;
pub mod terminal;

pub use app::{run, Bound, SchedulerOptions};
