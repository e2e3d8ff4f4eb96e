//! End-to-end tests of the iovirt crates live in `tests/tests/`; this library is empty on purpose.
