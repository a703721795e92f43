//! Test support for pagefleet: the mock source API that the end-to-end tests
//! run in-process and that `make demo` runs as the `pagefleet-mock` binary,
//! and the chaos harness behind `make chaos`.

pub mod bench;
pub mod chaos;
pub mod mock;
pub mod tcp_proxy;
