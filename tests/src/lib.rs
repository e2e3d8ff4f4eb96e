//! End-to-end tests of the iovirt crates live in `tests/tests/`, and the
//! whole-path benchmarks in `tests/benches/`; the platforms they run on come
//! from the `iovirt` integration crate. This library is empty on purpose.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
