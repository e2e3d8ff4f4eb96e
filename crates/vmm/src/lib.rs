//! The hypervisor side of iovirt: VMs, their guest-physical memory, the
//! host MMU that backs it, and the host's network of vNICs.
//!
//! # What it models
//!
//! - **Stage 2 is the IOMMU domain.** Each VM's guest-physical pages are
//!   mapped to host frames by a second-stage table built with
//!   `iovirt-paging` in host memory. The same table is the IOMMU domain of
//!   the device assigned to the VM, so the device's DMA addresses are guest
//!   physical, as with VT-d device assignment.
//! - **Demand paging and oversubscription.** A page gets a frame the first
//!   time it is touched (a minor fault: a zeroed frame). When frames run
//!   out, the unpinned page that came in first (FIFO) goes. That page is
//!   unmapped, the IOTLB is told (a page-selective invalidation), its
//!   contents go to a swap store, and its frame is zeroed before reuse. The
//!   next touch brings it back (a major fault).
//! - **No stale translation reaches a recycled frame.** The stage-2 entry is
//!   cleared and the IOTLB and walk cache invalidated before the frame is
//!   freed. A device that DMAs to a swapped page therefore gets a fault
//!   record, never the frame's next owner's data.
//!   [`Host::service_pending_faults`] is the host's fault handler: it drains
//!   the IOMMU's fault log and brings each faulting page in, so the
//!   device's retry succeeds.
//! - **Pinning** keeps pages of an assigned device that cannot take faults
//!   in their frames.
//! - **Page flipping (seed 002).** [`Host::lend_page`] unmaps a guest page,
//!   invalidates its translation and zeroes its frame into a DMA buffer
//!   pool; [`Host::adopt_frame`] maps a pool frame in under a guest page.
//! - **The host's network** ([`Network`]). Each VM gets an emulated
//!   `iovirt-nic` (a vNIC) whose DMA reaches its memory through the host
//!   MMU ([`GuestDma`]); its driver reaches it through [`GuestBus`]. A
//!   switch by MAC address joins the vNICs and the physical NIC (the
//!   uplink, driven by the host with untranslated DMA). Frames from the wire
//!   reach their VM through one of seed 002's demultiplexers
//!   ([`DemuxMode`]): the baseline copies each frame from a host buffer;
//!   the enhanced one lends the guests' receive pages to a pool the
//!   physical NIC receives into, and remaps the page holding a frame under
//!   the destination's next receive buffer, with no copy. Between local
//!   VMs ([`VmToVm`]) frames are bridged (copied), looped back through the
//!   physical NIC (seed 003's baseline), or crossed over (seed 003): the
//!   sender's transmit page is shared read-only under the receiver's next
//!   receive buffer ([`Host::share_page`]) and the registers move as a
//!   crossover cable would; [`Network::wire_vms`] wires two VMs as a
//!   private cable (the seed's static embodiment).
//! - **Interrupt injection.** Each VM has a [`Lapic`], an `InterruptSink`
//!   for its devices. It models the IRR and ISR, coalescing per vector,
//!   priority classes, acknowledge and EOI, and illegal vectors 0 to 15
//!   (dropped, ESR bit 6).
//!
//! # What it does not model (yet)
//!
//! A learning switch (the switch knows the MAC address each vNIC was
//! given), VLANs, offloads, a crossover of frames that span several
//! descriptors or share a page with other data (they are copied), APIC
//! features beyond fixed delivery to one CPU (TPR,
//! logical destinations, IPIs, timers), and swap latency. Costs come from
//! the counters in [`VmmStats`] through the integration crate's cost model.
//!
//! # Example
//!
//! Two VMs of 256 KiB on a host with 256 KiB for guest pages: half the
//! memory is oversubscribed, and everything written reads back.
//!
//! ```
//! use iovirt_core::{DmaPort, Gpa, Iova, Irq};
//! use iovirt_iommu::{IommuConfig, RequesterId};
//! use iovirt_vmm::{Host, HostConfig, VmConfig};
//!
//! let mut host = Host::new(HostConfig {
//!     table_frames: 32,
//!     data_frames: 64,
//!     iommu: IommuConfig::default(),
//! })?;
//! let vm = |n: u8| VmConfig { memory: 256 << 10, requester: RequesterId::new(0, n, 0).unwrap() };
//! let (a, b) = (host.add_vm(vm(2))?, host.add_vm(vm(3))?);
//! for page in 0..64u64 {
//!     host.write(a, Gpa::new(page << 12), &[0xaa; 16])?;
//!     host.write(b, Gpa::new(page << 12), &[0xbb; 16])?;
//! }
//! let mut back = [0u8; 16];
//! host.read(a, Gpa::new(5 << 12), &mut back)?;
//! assert_eq!(back, [0xaa; 16]);
//! assert!(host.stats().swap_outs.get() >= 64, "B's pages pushed A's out");
//!
//! // A's device DMAs to a page that is swapped out: a fault, serviced by
//! // the host, and the retry reads A's bytes.
//! let mut irq: Vec<Irq> = Vec::new();
//! let page = Iova::new(9 << 12);
//! assert!(host.dma_port(a, &mut irq)?.dma_read(page, &mut back).is_err());
//! assert_eq!(host.service_pending_faults()?.serviced, 1);
//! host.dma_port(a, &mut irq)?.dma_read(page, &mut back).expect("serviced");
//! assert_eq!(back, [0xaa; 16]);
//! # Ok::<(), iovirt_vmm::VmmError>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod host;
mod lapic;
mod net;
mod stats;
mod swap;

pub use host::{
    FaultService, HcaGuestBus, Host, HostConfig, HostFaultOracle, SwapOut, VmConfig, VmId, VmmError,
};
pub use lapic::{ESR_RECEIVE_ILLEGAL_VECTOR, Lapic, LapicStats};
pub use net::{DemuxMode, GuestBus, GuestDma, NetStats, Network, NetworkConfig, VmToVm};
pub use stats::VmmStats;
