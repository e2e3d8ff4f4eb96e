//! Receive through a paravirtual backend: a hypervisor that puts a received
//! frame into the guest's RX buffer itself (by page flipping, or a copy of
//! its own) instead of the NIC's receive engine writing it by DMA.
//!
//! The backend works in two steps:
//!
//! 1. [`Nic::rx_claim`] makes every check [`Nic::receive`] makes, in the
//!    same order and with the same counters and interrupt causes, and names
//!    the buffer of the descriptor at RDH in an [`RxSlot`]. RDH does not
//!    move (only over descriptors with a null buffer, skipped as `receive`
//!    skips them), so claiming again before committing gives the same slot.
//! 2. The backend places the frame in [`RxSlot::buffer`], then
//!    [`Nic::rx_commit`] writes the descriptor back exactly as `receive`
//!    does for a frame in one descriptor, moves RDH on and signals the frame
//!    (statistics, interrupt moderation, prefetchers).
//!
//! A frame goes into one buffer: a frame longer than RCTL's buffer size is
//! refused at claim time. Between the two steps the guest may reprogram its
//! ring; the commit then refuses and changes nothing, so the guest never sees
//! a descriptor completed that it did not give the backend. What the commit
//! cannot see is the guest rewriting, in memory, a descriptor it had already
//! handed to the device: as with the receive engine, that guest gets what it
//! asked for.

use iovirt_core::{DmaPort, InterruptSink, Iova, NetworkPort, Timers};

use crate::desc::RxSta;
use crate::filter::Accept;
use crate::nic::{Nic, NicEnv};
use crate::regs::Rctl;
use crate::rx::{ADDRESS_LEN, RxOutcome, frame_limit};

/// A receive buffer claimed by a paravirtual backend with [`Nic::rx_claim`],
/// to be filled and then completed with [`Nic::rx_commit`].
///
/// It stays valid until the NIC's RX ring moves on or is reprogrammed: a
/// commit after the guest wrote RDBAL, RDBAH, RDLEN or RDH, after a reset,
/// or after another frame took the descriptor, is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxSlot {
    /// The index of the claimed descriptor in the RX ring (RDH at claim time).
    pub index: u32,
    /// The buffer address the descriptor names (I/O-virtual, never 0): where
    /// the backend puts the frame.
    pub buffer: Iova,
    /// The buffer's size in bytes (RCTL's BSIZE/BSEX at claim time): the
    /// most the backend may put there.
    pub buffer_size: usize,
    /// Why the receive filter let the frame in.
    pub accept: Accept,
    /// The ring's epoch at claim time, to tell a reprogrammed ring.
    epoch: u64,
}

impl Nic {
    /// Claims the receive buffer a paravirtual backend should put a frame
    /// of `len` bytes to `dst` into.
    ///
    /// Makes the checks of [`Nic::receive`] in its order, with its counters
    /// and its missed-frame path (MPC, TPR, the RXO cause): receiver enabled
    /// ([`RxOutcome::Disabled`]), `len` at least an address and `dst`
    /// accepted by the filter ([`RxOutcome::Filtered`]), `len` within the
    /// limit of RCTL.LPE ([`RxOutcome::Oversize`]); then `len` within one
    /// buffer ([`RxOutcome::Oversize`] too, counted in
    /// [`NicStats::rx_backend_too_long`](crate::NicStats::rx_backend_too_long));
    /// then a valid ring ([`RxOutcome::BadRing`]) with a descriptor the
    /// device owns, RDH != RDT ([`RxOutcome::NoDescriptor`]).
    ///
    /// Then reads the descriptor at RDH ([`RxOutcome::DmaFault`] if that
    /// faults). A descriptor with a null buffer is skipped as `receive` skips
    /// it (DD written back with length 0, RDH moved on), over one pass of the
    /// ring at most. RDH stays on the descriptor claimed.
    pub fn rx_claim<D, I, N, T>(
        &mut self,
        dst: [u8; 6],
        len: usize,
        env: &mut NicEnv<'_, D, I, N, T>,
    ) -> Result<RxSlot, RxOutcome>
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        let (accept, rctl) = self.rx_admit(dst, len)?;
        let buffer_size = rctl.buffer_size();
        // The backend places a frame in one buffer: it cannot scatter one.
        if len > buffer_size {
            self.stats.rx_backend_too_long.inc();
            return Err(RxOutcome::Oversize);
        }
        let count = self.rx_ring_ready(env)?;
        // At most one pass over the ring, whatever the descriptors say.
        for _ in 0..count {
            let (at, desc) = self.next_rx_descriptor(env)?;
            let buffer = desc.addr.get();
            if buffer != 0 {
                return Ok(RxSlot {
                    index: self.rx.head,
                    buffer: Iova::new(buffer),
                    buffer_size,
                    accept,
                    epoch: self.rx_epoch,
                });
            }
            self.skip_null_buffer(at, env)?;
        }
        // Unreachable in practice (a pass reaches RDT), kept as a plain drop.
        Err(self.rx_no_descriptor(env))
    }

    /// Completes a frame of `len` bytes that a paravirtual backend has put
    /// in `slot`'s buffer.
    ///
    /// Refused, changing nothing (no write, no counter), when the slot is no
    /// longer the device's to complete: receiver disabled since
    /// ([`RxOutcome::Disabled`]); ring registers now invalid
    /// ([`RxOutcome::BadRing`]); ring reprogrammed or reset, RDH moved, or
    /// the descriptor given back (RDH == RDT) ([`RxOutcome::NoDescriptor`]);
    /// `len` shorter than an address ([`RxOutcome::Filtered`]) or longer
    /// than the slot's buffer, RCTL's buffer size now, or the LPE limit
    /// ([`RxOutcome::Oversize`]).
    ///
    /// Otherwise writes the descriptor back as [`Nic::receive`] does for a
    /// frame in one descriptor (length `len`, DD and EOP, no errors, zero
    /// checksum and VLAN tag; [`RxOutcome::DmaFault`] if that faults, RDH
    /// staying), moves RDH on, counts the frame as `receive` does (and in
    /// [`NicStats::rx_backend_placed`](crate::NicStats::rx_backend_placed)),
    /// signals it (RXT0, subject to interrupt moderation), runs the RX
    /// prefetchers, and returns [`RxOutcome::Stored`] with one descriptor.
    pub fn rx_commit<D, I, N, T>(
        &mut self,
        slot: &RxSlot,
        len: usize,
        env: &mut NicEnv<'_, D, I, N, T>,
    ) -> RxOutcome
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        let rctl = Rctl::from_bits_retain(self.rctl);
        if !rctl.contains(Rctl::EN) {
            return RxOutcome::Disabled;
        }
        if !self.rx.valid() {
            return RxOutcome::BadRing;
        }
        // The epoch tells a reprogrammed ring even when RDH reads the same.
        let ours = slot.epoch == self.rx_epoch && slot.index == self.rx.head;
        if !ours || self.rx.head == self.rx.tail {
            return RxOutcome::NoDescriptor;
        }
        if len < ADDRESS_LEN {
            return RxOutcome::Filtered;
        }
        let room = slot
            .buffer_size
            .min(rctl.buffer_size())
            .min(frame_limit(rctl));
        let length = match u16::try_from(len) {
            Ok(length) if len <= room => length,
            _ => return RxOutcome::Oversize,
        };
        let at = self.rx.head_address();
        if let Err(outcome) = self.complete_rx_descriptor(at, length, RxSta::DD | RxSta::EOP, env) {
            return outcome;
        }
        self.stats.rx_backend_placed.inc();
        self.rx_delivered(len, env);
        RxOutcome::Stored {
            accept: slot.accept,
            descriptors: 1,
        }
    }
}
