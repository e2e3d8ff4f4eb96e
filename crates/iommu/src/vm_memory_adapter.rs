//! Adapter to rust-vmm's `vm-memory` (being written).
