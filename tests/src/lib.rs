//! Test support for the end-to-end tests in `tests/tests/` and the
//! benchmarks in `tests/benches/`: platforms assembled from the iovirt
//! crates, the way the integration crate will assemble them.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Test support: a failed set-up is a failed test, so it panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod platform;
