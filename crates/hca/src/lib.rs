//! An RDMA host channel adapter (HCA) for iovirt, after seed 001.
//!
//! Work in progress: this crate is being built module by module under
//! issue 6; the top documentation grows with it.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cmd;
pub mod cq;
pub mod cqe;
pub mod device;
pub mod event;
pub mod ids;
pub mod mr;
pub mod qp;
pub mod transport;
pub mod wire;
pub mod wqe;

pub use cmd::{Command, CommandChannel, FunctionPort, Reply};
pub use device::{CmdError, FunctionConfig, Hca, HcaConfig, HcaStats, MkeySpec};
pub use event::{Event, FaultStage, PageFault};
pub use ids::{Cqn, FunctionId, Mkey, Pdn, Qpn};
pub use transport::{FaultOracle, HcaEnv, QpStats, doorbell};
