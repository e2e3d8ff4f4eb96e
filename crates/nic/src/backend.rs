//! A paravirtual backend: a hypervisor that moves some of a guest's frames
//! itself (by page flipping, a copy of its own, or seed 003's DMA
//! crossover) instead of the NIC's engines moving them by DMA.
//!
//! # Receive
//!
//! The backend puts a received frame into the guest's RX buffer itself, in
//! two steps:
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
//!
//! # Transmit
//!
//! The backend decides, descriptor by descriptor, which frames the NIC
//! sends and which it delivers itself (seed 003: a frame to another local VM
//! handed over by remapping memory, its descriptor completed only when that
//! VM gives the buffer back):
//!
//! 1. [`Nic::set_tx_backend`] takes the TX ring from the doorbell: TDT and
//!    TCTL writes still take their values but no longer run the transmit
//!    engine.
//! 2. [`Nic::tx_peek`] makes the engine's checks and names the descriptor at
//!    TDH in a [`TxSlot`], consuming nothing.
//! 3. Either [`Nic::tx_step`] has the engine process that one descriptor as
//!    a doorbell would (gather, send at EOP, NOP, DD write-back, TDH on), or
//!    the backend delivers the descriptor's frame itself and, whenever it is
//!    done, [`Nic::tx_complete`] retires the descriptor: DD written back
//!    where RS asks, TDH moved on, the frame counted as sent.
//!
//! Descriptors complete in ring order (TDH is one head), so a frame the
//! backend holds back holds back the descriptors behind it. The backend
//! completes only a frame in one descriptor; the descriptors of a longer
//! frame are stepped. As on receive, a completion after the guest
//! reprogrammed its ring is refused and changes nothing.

use iovirt_core::{DmaPort, InterruptSink, Iova, NetworkPort, Timers};

use crate::desc::{RxSta, TxCmd};
use crate::filter::Accept;
use crate::nic::{MAX_FRAME, Nic, NicEnv};
use crate::regs::Rctl;
use crate::rx::{ADDRESS_LEN, RxOutcome, frame_limit};
use crate::tx::TxStop;

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

/// The TX descriptor at TDH, as a transmit backend sees it with
/// [`Nic::tx_peek`]: to hand to the engine with [`Nic::tx_step`], or to
/// deliver itself and retire with [`Nic::tx_complete`].
///
/// It stays valid until the NIC's TX ring moves on or is reprogrammed: a
/// completion after the guest wrote TDBAL, TDBAH, TDLEN or TDH, after a
/// reset, or after the descriptor was stepped or completed, is refused.
/// The fields are what the descriptor said at peek time; a guest that
/// rewrites in memory a descriptor it has handed over cannot change them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxSlot {
    /// The index of the descriptor in the TX ring (TDH at peek time).
    pub index: u32,
    /// The buffer address the descriptor names: where the frame's bytes
    /// are (I/O-virtual, unchecked: as the guest wrote it, maybe null or
    /// unmapped).
    pub addr: Iova,
    /// The bytes in the buffer.
    pub length: u16,
    /// The raw command byte ([`TxCmd`] bits).
    pub cmd: u8,
    /// End of packet: the last descriptor of its frame.
    pub eop: bool,
    /// Report status: retiring the descriptor writes DD back.
    pub rs: bool,
    /// Seed 000's NOP transmit command
    /// ([`TxDesc::is_nop`](crate::desc::TxDesc::is_nop)): no frame, only a
    /// translation to prefetch.
    pub nop: bool,
    /// An extended descriptor (DEXT): a context or offload data descriptor
    /// this model does not implement, or a NOP; never a frame.
    pub dext: bool,
    /// The ring's epoch at peek time, to tell a reprogrammed ring.
    epoch: u64,
}

impl Nic {
    /// Gives the TX ring to a transmit backend (`on`), or back to the
    /// doorbell.
    ///
    /// While on, a write of TDT or TCTL takes its value as always but does
    /// not run the transmit engine: the backend processes the ring with
    /// [`Nic::tx_peek`], [`Nic::tx_step`] and [`Nic::tx_complete`]. Turning
    /// it off runs nothing either: descriptors already handed over wait for
    /// the guest's next doorbell. The hypervisor's setting, not the guest's:
    /// a device reset (CTRL.RST) keeps it. Off by default.
    pub fn set_tx_backend(&mut self, on: bool) {
        self.tx_backend = on;
    }

    /// Whether a transmit backend drives the TX ring
    /// ([`Nic::set_tx_backend`]).
    pub fn tx_backend(&self) -> bool {
        self.tx_backend
    }

    /// The descriptor at TDH, without consuming it.
    ///
    /// Makes the transmit engine's checks in its order: transmitter enabled
    /// ([`TxStop::Disabled`]), a descriptor handed over, TDH != TDT
    /// ([`TxStop::Empty`]), a valid ring ([`TxStop::BadRing`], counted in
    /// [`NicStats::ring_errors`](crate::NicStats::ring_errors)). Then reads
    /// the descriptor ([`TxStop::DmaFault`] if that faults, counted in
    /// [`NicStats::dma_faults`](crate::NicStats::dma_faults)), its cost
    /// counted on the critical path as the engine's fetch is. Nothing else
    /// changes: TDH stays, nothing is written, sent or signalled, and
    /// peeking again gives the same slot while the descriptor's bytes stay.
    ///
    /// Works whether or not [`Nic::tx_backend`] is on.
    pub fn tx_peek<D, I, N, T>(
        &mut self,
        env: &mut NicEnv<'_, D, I, N, T>,
    ) -> Result<TxSlot, TxStop>
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        self.tx_ring_ready()?;
        let (_, desc) = self.fetch_tx_descriptor(env)?;
        let cmd = desc.cmd();
        Ok(TxSlot {
            index: self.tx.head,
            addr: Iova::new(desc.addr.get()),
            length: desc.length.get(),
            cmd: desc.cmd,
            eop: cmd.contains(TxCmd::EOP),
            rs: cmd.contains(TxCmd::RS),
            nop: desc.is_nop(),
            dext: cmd.contains(TxCmd::DEXT),
            epoch: self.tx_epoch,
        })
    }

    /// Has the transmit engine process the one descriptor at TDH, exactly
    /// as a doorbell processes each descriptor: its buffer gathered into the
    /// frame being assembled and the frame sent at EOP, a NOP command
    /// executed, an extended descriptor skipped as unsupported; DD written
    /// back where RS asks, TDH moved on; then TXDW if DD went back (subject
    /// to IDE's delay), TXQE if TDH reached TDT, and the TX prefetchers.
    ///
    /// Returns whether it consumed a descriptor: false where
    /// [`Nic::tx_peek`] would stop, with the same counters (after a fetch
    /// that faults the TX prefetchers run, as after a doorbell's). Where a
    /// doorbell raises its interrupt causes once for all the descriptors it
    /// processed, each step raises them for its one; since a cause stays
    /// pending until the driver reads ICR, stepping a ring through leaves
    /// the same causes as one doorbell unless IDE's delay is in use.
    ///
    /// Works whether or not [`Nic::tx_backend`] is on.
    pub fn tx_step<D, I, N, T>(&mut self, env: &mut NicEnv<'_, D, I, N, T>) -> bool
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        self.process_tx(1, env) == 1
    }

    /// Retires `slot`'s descriptor, whose frame the backend has delivered
    /// itself.
    ///
    /// Refused, returning false and changing nothing (no write, no counter,
    /// no cause), unless the slot is still the device's to retire and holds
    /// a whole frame: [`Nic::tx_backend`] on; the ring neither reprogrammed
    /// nor reset since the peek, TDH still `slot.index`, the ring registers
    /// valid and the descriptor still handed over (TDH != TDT); the slot EOP
    /// and neither NOP nor DEXT, with no frame being gathered from earlier
    /// descriptors (step a frame of several descriptors instead); and a
    /// length from 1 to [`MAX_FRAME`], a frame the engine would send.
    ///
    /// Then writes DD back to the descriptor's status byte if `slot.rs` (a
    /// fault there is counted in
    /// [`NicStats::dma_faults`](crate::NicStats::dma_faults) and the
    /// descriptor retired all the same), moves TDH on, and counts the
    /// descriptor and a frame of `slot.length` bytes (padded to 60 under
    /// TCTL.PSP) as the engine counts what it sends (the counters, GPTC,
    /// TPT, GOTC), and in
    /// [`NicStats::tx_backend_completed`](crate::NicStats::tx_backend_completed).
    /// Signals it as [`Nic::tx_step`] does: TXDW if DD went back (subject to
    /// IDE's delay), TXQE if TDH reached TDT, the TX prefetchers. The
    /// transmitter need not be enabled still: the frame has gone.
    pub fn tx_complete<D, I, N, T>(
        &mut self,
        slot: &TxSlot,
        env: &mut NicEnv<'_, D, I, N, T>,
    ) -> bool
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        if !self.tx_completable(slot) {
            return false;
        }
        // `rs` is what decides the write-back; the raw byte only adds IDE.
        let mut cmd = TxCmd::from_bits_retain(slot.cmd);
        cmd.set(TxCmd::RS, slot.rs);
        self.stats.tx_descriptors.inc();
        self.stats.tx_backend_completed.inc();
        let done = self.retire_tx_descriptor(self.tx.head_address(), cmd, env);
        self.count_sent(self.padded_len(usize::from(slot.length)));
        self.tx_signal(done, env);
        true
    }

    /// Whether [`Nic::tx_complete`] may retire `slot`.
    fn tx_completable(&self, slot: &TxSlot) -> bool {
        // The epoch tells a reprogrammed ring even when TDH reads the same.
        let ours = self.tx_backend && slot.epoch == self.tx_epoch && slot.index == self.tx.head;
        let handed_over = self.tx.valid() && self.tx.head != self.tx.tail;
        let one_frame = slot.eop && !slot.nop && !slot.dext && !self.tx_gathering();
        // The engine sends no empty frame and drops one beyond MAX_FRAME.
        let sendable = (1..=MAX_FRAME).contains(&usize::from(slot.length));
        ours && handed_over && one_frame && sendable
    }
}
