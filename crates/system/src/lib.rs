//! # iovirt
//!
//! The integration crate: it assembles platforms from the iovirt device
//! models and runs the scenarios that measure what a technique buys over
//! its baseline on the same traffic. The `iovirt` binary is its command
//! line: `iovirt run` runs every scenario on the built-in defaults and
//! prints the report.
//!
//! ## What it has today
//!
//! - [`platform::TwoGuests`]: two VMs on one host, each with an e1000-style
//!   NIC behind the IOMMU in its own domain, joined by a cable of two
//!   [`link::Link`]s; each VM sees its NIC's registers and its own
//!   guest-physical memory. [`platform::TwoGuests::run_until`] is its
//!   discrete-event loop (link arrivals, NIC timers, interrupts delivered to
//!   the guests' handlers).
//! - [`host_sim::HostSim`]: a host from `iovirt-vmm` with its network and
//!   guests on the same kind of loop, and [`host_sim::Fabric`], two hosts
//!   joined by a cable between their physical NICs.
//! - The `iotlb-prefetch` scenario ([`iotlb_prefetch`], seed 000):
//!   prefetchers off, device side, driver side, both; buffers random or
//!   packed; two IOTLB sizes. Headline: IOTLB misses on the receive
//!   critical path per frame.
//! - The `demux` scenario ([`demux`], seed 002): N VMs behind one physical
//!   NIC, copy vs page-flip demultiplexer. Headline: bytes the host copies
//!   per frame.
//! - The `crossover` scenario ([`crossover`], seed 003): two VMs talking
//!   both ways through the physical NIC's loopback, the VMM's bridge, or by
//!   crossover. Headline: frames on the physical NIC per VM-to-VM frame.
//! - The `custom` scenario ([`custom`]): a host, its VMs and the flows
//!   between them and the wire, as the configuration describes them; or two
//!   hosts joined by a cable (a [`host_sim::Fabric`]) and the flows between
//!   their VMs.
//! - [`report`]: a readable table, and JSON with `--json`.
//! - [`config`]: what runs, as TOML; the built-in default is
//!   [`config::DEFAULT_CONFIG`] (`iovirt config` prints it).
//!
//! - [`rdma_sim::RdmaHost`] and [`rdma_sim::RdmaFabric`]: hosts whose VMs
//!   drive their own HCA functions, the VMM servicing host-stage faults,
//!   two hosts joined by a cable; and the `rdma-odp` scenario
//!   ([`rdma_odp`], seed 001): pinned vs on-demand memory with faults in
//!   both stages. Headline: the throughput of the QPs that did not fault,
//!   next to a pinned baseline.
//!
//! ## Not yet
//!
//! More than two hosts (a switch between their
//! physical NICs); the host's own work (copies, remaps,
//! invalidations) as CPU time on the event loop: the scenarios report it
//! as the cost model's sum per frame, and in lock-step pacing their traffic
//! runs in program order.
//!
//! ## Example
//!
//! ```
//! use iovirt::iotlb_prefetch::{self, Params, PrefetchMode};
//! use iovirt_core::CostModel;
//!
//! let params = Params { frames: 100, iotlb_entries: vec![8], ..Params::default() };
//! let rows = iotlb_prefetch::run(&params, &CostModel::default(), 1)?;
//! let off = rows.iter().find(|r| r.prefetch == PrefetchMode::Off).unwrap();
//! let both = rows.iter().find(|r| r.prefetch == PrefetchMode::Both).unwrap();
//! assert!(off.critical_misses_per_frame >= 1.0);
//! assert!(both.critical_misses_per_frame < 0.1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod crossover;
pub mod custom;
pub mod demux;
pub mod host_sim;
pub mod iotlb_prefetch;
pub mod link;
pub mod platform;
pub mod rdma_odp;
pub mod rdma_sim;
pub mod report;
