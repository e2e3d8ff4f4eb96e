//! # iovirt-nic
//!
//! An e1000-style NIC, modelled on the Intel 8254x register interface,
//! that reaches memory only through [`iovirt_core::DmaPort`] (so an IOMMU,
//! or none, sits wherever the platform puts one).
//!
//! ## What it models
//!
//! - **Registers** with their 8254x semantics ([`regs`]): CTRL (RST
//!   self-clears and resets the device), STATUS (link up, full duplex,
//!   1000 Mb/s), the EEPROM read path EERD (MAC address in words 0-2,
//!   checksum word 0x3f), ICR (clear on read; writing 1s clears), ICS, IMS,
//!   IMC, RCTL, TCTL, the RX and TX ring registers, the delay timers (stored),
//!   the statistics registers MPC, GPRC, GPTC, GORC, GOTC, TPR, TPT (clear on
//!   read), MTA and RAL/RAH (16 entries, AV bit). Unknown offsets read 0,
//!   ignore writes, and are counted.
//! - **Legacy descriptors** ([`desc`]) and the rings: writing TDT (or
//!   enabling TCTL) sends the frames from TDH to TDT (unless a transmit
//!   backend drives the ring, below), gathered over
//!   descriptors until EOP, with DD written back where RS asks;
//!   [`Nic::receive`] stores a frame at RDH while RDH != RDT, over several
//!   descriptors of RCTL's buffer size, and writes length and DD/EOP back.
//!   Interrupt causes TXDW, TXQE, RXT0, RXO, and LSC when the driver sets
//!   CTRL.SLU; the interrupt is raised
//!   when an unmasked cause becomes pending.
//! - **The receive filter** ([`filter`]): exact addresses, broadcast (BAM),
//!   the multicast hash table (MTA, with RCTL.MO), unicast and multicast
//!   promiscuous modes.
//! - **Seed 000's NOP transmit command**: a descriptor with DEXT set and
//!   descriptor type 0xF (bits 23:20 of its length/type word, a type the
//!   8254x reserves) makes the NIC prefetch the translation of its buffer
//!   address through the DMA port, moving and sending nothing; DD is
//!   written back when RS is set.
//! - **Seed 000's device-side prefetchers** ([`Prefetchers`], all off by
//!   default): after a frame is stored, the next RX descriptor at RDH and the
//!   buffer it names (dummy read or null write); after a transmit, the next
//!   TX descriptor at TDH and its buffer. Every DMA's [`iovirt_core::Cost`]
//!   is counted as critical-path or prefetch, so the IOTLB misses a
//!   prefetcher takes off the critical path show in [`NicStats`].
//! - **A paravirtual backend's receive** ([`Nic::rx_claim`],
//!   [`Nic::rx_commit`], [`RxSlot`]): a hypervisor that puts a received frame
//!   into the guest's RX buffer itself (page flipping, say) claims the
//!   buffer at RDH after the same checks as [`Nic::receive`], places the
//!   frame in that one buffer, and commits it: the NIC writes the descriptor
//!   back as for a frame it stored, moves RDH on, counts and signals it. A
//!   commit after the guest reprogrammed its ring is refused and writes
//!   nothing.
//! - **A paravirtual backend's transmit** ([`Nic::set_tx_backend`],
//!   [`Nic::tx_peek`], [`Nic::tx_step`], [`Nic::tx_complete`], [`TxSlot`],
//!   [`TxStop`]): a hypervisor that delivers some frames itself (seed 003's
//!   DMA crossover) takes the TX ring from the doorbell, so TDT and TCTL
//!   writes no longer run the engine. It peeks at the descriptor at TDH,
//!   then either has the engine process that one descriptor, or delivers
//!   its one-descriptor frame itself and later completes it: DD written
//!   back where RS asks, TDH moved on, counted as sent, in ring order. A
//!   completion after the guest reprogrammed its ring is refused.
//! - **Interrupt moderation**: RDTR/RADV delay RXT0, TIDV/TADV delay TXDW
//!   of descriptors with IDE, RDTR.FPD flushes, and ITR spaces interrupts;
//!   the NIC arms the platform's [`iovirt_core::Timers`] and the platform
//!   calls [`Nic::on_timer`].
//!
//! ## Hostile guests
//!
//! Ring lengths are taken in multiples of 128 bytes; a ring of length 0, or
//! a head or tail beyond the ring, stops processing and is counted (never a
//! loop). Each doorbell processes at most one pass over the ring. TX frames
//! are gathered into one buffer allocated at creation and capped at 16 KiB;
//! longer ones are dropped. RX frames longer than 1522 bytes (16 KiB with
//! RCTL.LPE) are dropped. A null RX buffer address is skipped with DD
//! written back. A descriptor fetch that faults stops the engine (the head
//! stays on it); a TX buffer that faults drops its frame; an RX buffer or
//! write-back that faults stops the frame. Each is counted. Nothing panics.
//!
//! ## Not modelled (yet)
//!
//! Extended descriptors and offloads (TSO, checksums, VLAN insertion),
//! the RXDMT0 threshold, flow control, the PHY, and the FCS (frames are
//! exchanged without it).
//!
//! ## Example
//!
//! See [`Nic`].

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod backend;
pub mod desc;
pub mod filter;
mod moderation;
mod nic;
mod prefetch;
pub mod regs;
mod rx;
mod tx;

pub use backend::{RxSlot, TxSlot};
pub use filter::{Accept, ReceiveFilter};
pub use moderation::{
    ITR_TIMER, RX_ABSOLUTE_TIMER, RX_PACKET_TIMER, TX_ABSOLUTE_TIMER, TX_PACKET_TIMER,
};
pub use nic::{MAX_FRAME, MAX_STANDARD_FRAME, Nic, NicConfig, NicEnv, NicStats};
pub use prefetch::{BufferTouch, Prefetchers};
pub use rx::RxOutcome;
pub use tx::TxStop;
