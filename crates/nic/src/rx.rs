//! The receive engine: filter a frame, store it in the buffers of the
//! descriptors from RDH on, write status back, advance RDH.

use iovirt_core::{Cost, DmaFault, DmaPort, InterruptSink, Iova, NetworkPort, Timers};
use zerocopy::byteorder::little_endian::U16;
use zerocopy::{FromBytes, IntoBytes};

use crate::desc::{RxDesc, RxSta};
use crate::filter::Accept;
use crate::nic::{MAX_FRAME, MAX_STANDARD_FRAME, Nic, NicEnv};
use crate::regs::{Cause, Rctl};

/// Bytes of a destination MAC address: a shorter frame is filtered.
pub(crate) const ADDRESS_LEN: usize = 6;

/// What became of a frame offered to the NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxOutcome {
    /// Stored in `descriptors` descriptors.
    Stored {
        /// Why the filter let it in.
        accept: Accept,
        /// Descriptors used (including skipped null ones).
        descriptors: u32,
    },
    /// Receiver disabled.
    Disabled,
    /// Shorter than an Ethernet header, or refused by the filter.
    Filtered,
    /// Longer than allowed.
    Oversize,
    /// Not enough free descriptors (RDH reached RDT): MPC and RXO.
    NoDescriptor,
    /// The ring registers are invalid: counted as missed.
    BadRing,
    /// A descriptor or buffer DMA faulted part way.
    DmaFault,
}

impl Nic {
    /// Offers a frame from the wire (without FCS) to the NIC.
    pub fn receive<D, I, N, T>(
        &mut self,
        frame: &[u8],
        env: &mut NicEnv<'_, D, I, N, T>,
    ) -> RxOutcome
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        match self.store(frame, env) {
            Ok(outcome) | Err(outcome) => outcome,
        }
    }

    /// [`Nic::receive`], with every way of not storing the frame as `Err`.
    fn store<D, I, N, T>(
        &mut self,
        frame: &[u8],
        env: &mut NicEnv<'_, D, I, N, T>,
    ) -> Result<RxOutcome, RxOutcome>
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        // A frame shorter than an address is refused by `rx_admit` on its
        // length, so the zeros stand in for a destination never looked at.
        let dst = frame
            .first_chunk::<ADDRESS_LEN>()
            .copied()
            .unwrap_or_default();
        let (accept, rctl) = self.rx_admit(dst, frame.len())?;
        let count = self.rx_ring_ready(env)?;
        let buf = rctl.buffer_size();
        let needed = frame.len().div_ceil(buf).max(1) as u32;
        // Head and tail are below `count` (a valid ring), so the sum is
        // below `2 * count`: a compare, dividing only if that ever fails.
        let ahead = self.rx.tail + count - self.rx.head;
        let free = if ahead < count { ahead } else { ahead % count };
        if free < needed {
            return Err(self.rx_no_descriptor(env));
        }
        let mut used = 0u32;
        let mut rest = frame;
        // At most one pass over the ring, whatever the descriptors say.
        while used < count {
            let (at, desc) = self.next_rx_descriptor(env)?;
            used += 1;
            let addr = desc.addr.get();
            if addr == 0 {
                self.skip_null_buffer(at, env)?;
                continue;
            }
            let n = rest.len().min(buf);
            let (piece, tail) = rest.split_at(n);
            self.rx_dma(env.dma.dma_write(Iova::new(addr), piece))?;
            rest = tail;
            let status = if rest.is_empty() {
                RxSta::DD | RxSta::EOP
            } else {
                RxSta::DD
            };
            // `n` is at most the buffer size, 16 KiB: it fits the field.
            self.complete_rx_descriptor(at, n as u16, status, env)?;
            if rest.is_empty() {
                break;
            }
        }
        if !rest.is_empty() {
            return Err(self.rx_no_descriptor(env));
        }
        self.rx_delivered(frame.len(), env);
        Ok(RxOutcome::Stored {
            accept,
            descriptors: used,
        })
    }

    /// The checks on a frame itself, before any ring state: receiver
    /// enabled, at least a destination address long, accepted by the
    /// filter, within the length limit. Counts what it refuses.
    pub(crate) fn rx_admit(
        &mut self,
        dst: [u8; ADDRESS_LEN],
        len: usize,
    ) -> Result<(Accept, Rctl), RxOutcome> {
        let rctl = Rctl::from_bits_retain(self.rctl);
        if !rctl.contains(Rctl::EN) {
            self.stats.rx_disabled.inc();
            return Err(RxOutcome::Disabled);
        }
        let accept = if len < ADDRESS_LEN {
            None
        } else {
            self.filter.accept(rctl, dst)
        };
        let Some(accept) = accept else {
            self.stats.rx_filtered.inc();
            return Err(RxOutcome::Filtered);
        };
        if len > frame_limit(rctl) {
            self.stats.rx_oversize.inc();
            return Err(RxOutcome::Oversize);
        }
        Ok((accept, rctl))
    }

    /// The ring's descriptor count, or (counted, and as a missed frame)
    /// `BadRing` when its registers are invalid.
    pub(crate) fn rx_ring_ready<D, I, N, T>(
        &mut self,
        env: &mut NicEnv<'_, D, I, N, T>,
    ) -> Result<u32, RxOutcome>
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        if !self.rx.valid() {
            self.stats.ring_errors.inc();
            self.miss(env);
            return Err(RxOutcome::BadRing);
        }
        Ok(self.rx.count())
    }

    /// A frame dropped for want of descriptors: counted and missed.
    pub(crate) fn rx_no_descriptor<D, I, N, T>(
        &mut self,
        env: &mut NicEnv<'_, D, I, N, T>,
    ) -> RxOutcome
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        self.stats.rx_no_descriptor.inc();
        self.miss(env);
        RxOutcome::NoDescriptor
    }

    /// Reads the descriptor at RDH (its address and contents), or drops the
    /// frame as missed when the NIC owns none (RDH == RDT).
    pub(crate) fn next_rx_descriptor<D, I, N, T>(
        &mut self,
        env: &mut NicEnv<'_, D, I, N, T>,
    ) -> Result<(u64, RxDesc), RxOutcome>
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        if self.rx.head == self.rx.tail {
            return Err(self.rx_no_descriptor(env));
        }
        let at = self.rx.head_address();
        let mut raw = [0u8; 16];
        self.rx_dma(env.dma.dma_read(Iova::new(at), &mut raw))?;
        let desc = RxDesc::read_from_bytes(&raw).map_err(|_| RxOutcome::DmaFault)?;
        Ok((at, desc))
    }

    /// Skips the descriptor at RDH (at `at`), whose buffer address is null:
    /// done but empty.
    pub(crate) fn skip_null_buffer<D, I, N, T>(
        &mut self,
        at: u64,
        env: &mut NicEnv<'_, D, I, N, T>,
    ) -> Result<(), RxOutcome>
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        self.stats.rx_null_buffers.inc();
        self.complete_rx_descriptor(at, 0, RxSta::DD, env)
    }

    /// Writes back the upper half of the descriptor at RDH (at `at`):
    /// `length` and `status`, no errors, and zero checksum and VLAN tag
    /// (no offloads); then RDH moves on. Inlined into the receive loop,
    /// where it runs once per frame.
    #[inline(always)]
    pub(crate) fn complete_rx_descriptor<D, I, N, T>(
        &mut self,
        at: u64,
        length: u16,
        status: RxSta,
        env: &mut NicEnv<'_, D, I, N, T>,
    ) -> Result<(), RxOutcome>
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        let desc = RxDesc {
            length: U16::new(length),
            status: status.bits(),
            ..RxDesc::default()
        };
        // The address half is the driver's: only bytes 8..16 go back.
        let writeback = desc.as_bytes().get(8..).unwrap_or(&[]);
        self.rx_dma(env.dma.dma_write(Iova::new(at.wrapping_add(8)), writeback))?;
        self.stats.rx_descriptors.inc();
        // Callers checked the ring is valid; `after` keeps a count of 0 from panicking.
        self.rx.head = self.rx.after(self.rx.head);
        Ok(())
    }

    /// A frame of `bytes` is in the ring: the counters, the statistics
    /// registers, the receive interrupt and the prefetchers.
    pub(crate) fn rx_delivered<D, I, N, T>(
        &mut self,
        bytes: usize,
        env: &mut NicEnv<'_, D, I, N, T>,
    ) where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        let bytes = bytes as u64;
        self.stats.rx_frames.inc();
        self.stats.rx_bytes.add(bytes);
        let r = &mut self.regs_stats;
        r.gprc = r.gprc.saturating_add(1);
        r.tpr = r.tpr.saturating_add(1);
        r.gorc = r.gorc.saturating_add(bytes);
        self.rx_done(env);
        self.prefetch_rx(env);
    }

    /// Counts a receive-path DMA: its cost on the critical path, and a
    /// fault as `DmaFault`. Inlined so an IOTLB hit's constant cost folds
    /// into the counting instead of crossing a call in memory.
    #[inline(always)]
    fn rx_dma(&mut self, result: Result<Cost, DmaFault>) -> Result<(), RxOutcome> {
        match result {
            Ok(cost) => {
                self.count_critical(cost, true);
                Ok(())
            }
            Err(f) => {
                self.count_critical(f.cost, true);
                self.stats.dma_faults.inc();
                Err(RxOutcome::DmaFault)
            }
        }
    }

    /// A frame missed for want of descriptors: MPC and the RXO cause.
    fn miss<D, I, N, T>(&mut self, env: &mut NicEnv<'_, D, I, N, T>)
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        self.regs_stats.mpc = self.regs_stats.mpc.saturating_add(1);
        self.regs_stats.tpr = self.regs_stats.tpr.saturating_add(1);
        self.set_causes(Cause::RXO, env);
    }
}

/// The longest frame RCTL lets in: 16 KiB with long-packet enable, else
/// a standard frame with a VLAN tag.
pub(crate) fn frame_limit(rctl: Rctl) -> usize {
    if rctl.contains(Rctl::LPE) {
        MAX_FRAME
    } else {
        MAX_STANDARD_FRAME
    }
}
