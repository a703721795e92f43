//! pagefleet-fuzz: every parser of outside input under generated input,
//! for a bounded time (`make fuzz`), and the same generators as property
//! tests at small case counts (`cargo test -p pagefleet-fuzz`).
//!
//! libFuzzer (`cargo fuzz`) needs a nightly toolchain; proptest runs on
//! stable and shrinks what it finds to a small input, so the targets are
//! proptest strategies driven until a deadline. [`gen`] holds the
//! generators, [`targets`] one target per entry point with its oracles, and
//! [`runner`] the loop that runs a target and catches its panics.

pub mod gen;
pub mod runner;
pub mod targets;
