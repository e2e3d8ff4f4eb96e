//! The receive engine: filter a frame, store it in the buffers of the
//! descriptors from RDH on, write status back, advance RDH.

use iovirt_core::{DmaPort, InterruptSink, Iova, NetworkPort, Timers};
use zerocopy::byteorder::little_endian::U16;
use zerocopy::{FromBytes, IntoBytes};

use crate::desc::{DESC_SIZE, RxDesc, RxSta};
use crate::filter::Accept;
use crate::nic::{MAX_FRAME, MAX_STANDARD_FRAME, Nic, NicEnv};
use crate::regs::{Cause, Rctl};

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
        let rctl = Rctl::from_bits_retain(self.rctl);
        if !rctl.contains(Rctl::EN) {
            self.stats.rx_disabled.inc();
            return RxOutcome::Disabled;
        }
        let Some(dst) = frame.first_chunk::<6>().copied() else {
            self.stats.rx_filtered.inc();
            return RxOutcome::Filtered;
        };
        let Some(accept) = self.filter.accept(rctl, dst) else {
            self.stats.rx_filtered.inc();
            return RxOutcome::Filtered;
        };
        let limit = if rctl.contains(Rctl::LPE) {
            MAX_FRAME
        } else {
            MAX_STANDARD_FRAME
        };
        if frame.len() > limit {
            self.stats.rx_oversize.inc();
            return RxOutcome::Oversize;
        }
        if !self.rx.valid() {
            self.stats.ring_errors.inc();
            self.miss(env);
            return RxOutcome::BadRing;
        }
        let count = self.rx.count();
        let buf = rctl.buffer_size();
        let needed = frame.len().div_ceil(buf).max(1) as u32;
        let free = (self.rx.tail + count - self.rx.head) % count;
        if free < needed {
            self.stats.rx_no_descriptor.inc();
            self.miss(env);
            return RxOutcome::NoDescriptor;
        }
        let mut used = 0u32;
        let mut rest = frame;
        // At most one pass over the ring, whatever the descriptors say.
        while used < count {
            if self.rx.head == self.rx.tail {
                self.stats.rx_no_descriptor.inc();
                self.miss(env);
                return RxOutcome::NoDescriptor;
            }
            let at = self
                .rx
                .base()
                .wrapping_add(u64::from(self.rx.head) * DESC_SIZE);
            let mut raw = [0u8; 16];
            match env.dma.dma_read(Iova::new(at), &mut raw) {
                Ok(cost) => self.count_critical(cost, true),
                Err(f) => {
                    self.count_critical(f.cost, true);
                    self.stats.dma_faults.inc();
                    return RxOutcome::DmaFault;
                }
            }
            let Ok(mut desc) = RxDesc::read_from_bytes(&raw) else {
                return RxOutcome::DmaFault;
            };
            used += 1;
            let addr = desc.addr.get();
            let n = rest.len().min(buf);
            let (piece, tail) = rest.split_at(n);
            let mut status = RxSta::DD;
            if addr == 0 {
                // A null buffer: skip the descriptor, done but empty.
                self.stats.rx_null_buffers.inc();
                desc.length = U16::new(0);
            } else {
                match env.dma.dma_write(Iova::new(addr), piece) {
                    Ok(cost) => self.count_critical(cost, true),
                    Err(f) => {
                        self.count_critical(f.cost, true);
                        self.stats.dma_faults.inc();
                        return RxOutcome::DmaFault;
                    }
                }
                desc.length = U16::new(n as u16);
                rest = tail;
                if rest.is_empty() {
                    status |= RxSta::EOP;
                }
            }
            desc.status = status.bits();
            desc.errors = 0;
            // No checksum offload or VLAN stripping: both fields read zero.
            desc.checksum = U16::new(0);
            desc.special = U16::new(0);
            let writeback = desc.as_bytes().get(8..).unwrap_or(&[]);
            match env.dma.dma_write(Iova::new(at.wrapping_add(8)), writeback) {
                Ok(cost) => self.count_critical(cost, true),
                Err(f) => {
                    self.count_critical(f.cost, true);
                    self.stats.dma_faults.inc();
                    return RxOutcome::DmaFault;
                }
            }
            self.stats.rx_descriptors.inc();
            self.rx.head = (self.rx.head + 1) % count;
            if rest.is_empty() {
                break;
            }
        }
        if !rest.is_empty() {
            self.stats.rx_no_descriptor.inc();
            self.miss(env);
            return RxOutcome::NoDescriptor;
        }
        let bytes = frame.len() as u64;
        self.stats.rx_frames.inc();
        self.stats.rx_bytes.add(bytes);
        let r = &mut self.regs_stats;
        r.gprc = r.gprc.saturating_add(1);
        r.tpr = r.tpr.saturating_add(1);
        r.gorc = r.gorc.saturating_add(bytes);
        self.rx_done(env);
        self.prefetch_rx(env);
        RxOutcome::Stored {
            accept,
            descriptors: used,
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
