//! An RDMA host channel adapter (HCA) for iovirt, after seed 001.
//!
//! Work in progress: this crate is being built module by module under
//! issue 6; the top documentation grows with it.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cqe;
pub mod ids;
pub mod mr;
pub mod qp;
pub mod wire;
pub mod wqe;
