//! The transmit engine: from TDH up to TDT, gather each frame's buffers
//! until EOP, send it, write DD back where RS asks, advance TDH.

use iovirt_core::{AccessKind, DmaPort, InterruptSink, Iova, NetworkPort, Timers};
use zerocopy::{FromBytes, IntoBytes};

use crate::desc::{TxCmd, TxDesc, TxSta};
use crate::nic::{MAX_FRAME, Nic, NicEnv};
use crate::regs::{Cause, Tctl};

/// Shortest frame on the wire without FCS; shorter ones are padded when
/// TCTL.PSP is set.
const MIN_FRAME: usize = 60;

impl Nic {
    /// Processes the TX ring after a TDT or TCTL write.
    pub(crate) fn run_tx<D, I, N, T>(&mut self, env: &mut NicEnv<'_, D, I, N, T>)
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        if self.tctl & Tctl::EN.bits() == 0 || self.tx.head == self.tx.tail {
            return;
        }
        if !self.tx.valid() {
            self.stats.ring_errors.inc();
            log::debug!(
                "e1000 TX: bad ring (len {:#x}, head {}, tail {})",
                self.tx.len,
                self.tx.head,
                self.tx.tail
            );
            return;
        }
        let count = self.tx.count();
        // Whether any DD went back, and whether one of those asked for the
        // transmit interrupt delay (IDE).
        let (mut written_back, mut delayed) = (false, false);
        // One pass at most: a guest cannot make the engine spin.
        for _ in 0..count {
            if self.tx.head == self.tx.tail {
                break;
            }
            let at = self.tx.head_address();
            let mut raw = [0u8; 16];
            match env.dma.dma_read(Iova::new(at), &mut raw) {
                Ok(cost) => self.count_critical(cost, false),
                Err(f) => {
                    // The descriptor fetch faulted: the engine stops here, TDH
                    // stays at the descriptor, as a DMA error halts the queue.
                    self.count_critical(f.cost, false);
                    self.stats.dma_faults.inc();
                    break;
                }
            }
            let Ok(desc) = TxDesc::read_from_bytes(&raw) else {
                break;
            };
            self.stats.tx_descriptors.inc();
            let cmd = desc.cmd();
            if desc.is_nop() {
                // Seed 000's NOP transmit command: touch the address so the
                // IOMMU caches its translation; move and send nothing.
                self.stats.nop_commands.inc();
                match env
                    .dma
                    .prefetch(Iova::new(desc.addr.get()), AccessKind::Read)
                {
                    Ok(cost) => self.count_prefetch(cost),
                    Err(f) => {
                        self.count_prefetch(f.cost);
                        self.stats.prefetch_faults.inc();
                    }
                }
            } else if cmd.contains(TxCmd::DEXT) {
                // Context and data descriptors (offloads) are not modelled.
                self.stats.tx_unsupported.inc();
            } else {
                self.gather(&desc, env);
                if cmd.contains(TxCmd::EOP) {
                    self.send_frame(env);
                }
            }
            if cmd.contains(TxCmd::RS) {
                let sta_at = at.wrapping_add(12);
                match env
                    .dma
                    .dma_write(Iova::new(sta_at), TxSta::DD.bits().as_bytes())
                {
                    Ok(cost) => {
                        self.count_critical(cost, false);
                        written_back = true;
                        delayed |= cmd.contains(TxCmd::IDE);
                    }
                    Err(f) => {
                        self.count_critical(f.cost, false);
                        self.stats.dma_faults.inc();
                    }
                }
            }
            self.tx.head = (self.tx.head + 1) % count;
        }
        if written_back {
            self.tx_done(delayed, env);
        }
        if self.tx.head == self.tx.tail {
            self.set_causes(Cause::TXQE, env);
        }
        self.prefetch_tx(env);
    }

    /// Appends the descriptor's buffer to the frame being gathered.
    fn gather<D, I, N, T>(&mut self, desc: &TxDesc, env: &mut NicEnv<'_, D, I, N, T>)
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        let len = usize::from(desc.length.get());
        let start = self.tx_frame.len();
        if self.tx_discard || start + len > MAX_FRAME {
            if !self.tx_discard {
                self.stats.tx_oversize.inc();
                log::debug!("e1000 TX: frame beyond {MAX_FRAME} bytes dropped");
            }
            self.tx_discard = true;
            return;
        }
        if len == 0 {
            return;
        }
        // The piece may hold an earlier frame's bytes until the DMA fills
        // it; a fault below discards the whole frame, so none leaks.
        let Some(piece) = self.tx_frame.append(len) else {
            return;
        };
        match env.dma.dma_read(Iova::new(desc.addr.get()), piece) {
            Ok(cost) => self.count_critical(cost, false),
            Err(f) => {
                self.count_critical(f.cost, false);
                self.stats.dma_faults.inc();
                // A frame with a buffer that could not be read is not sent.
                self.tx_discard = true;
            }
        }
    }

    /// Sends the gathered frame (or drops it) and starts the next one.
    fn send_frame<D, I, N, T>(&mut self, env: &mut NicEnv<'_, D, I, N, T>)
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        if !self.tx_discard && !self.tx_frame.is_empty() {
            if self.tctl & Tctl::PSP.bits() != 0 {
                self.tx_frame.pad_to(MIN_FRAME);
            }
            let bytes = self.tx_frame.len() as u64;
            env.net.send(self.tx_frame.as_slice());
            self.stats.tx_frames.inc();
            self.stats.tx_bytes.add(bytes);
            let r = &mut self.regs_stats;
            r.gptc = r.gptc.saturating_add(1);
            r.tpt = r.tpt.saturating_add(1);
            r.gotc = r.gotc.saturating_add(bytes);
        }
        self.tx_frame.clear();
        self.tx_discard = false;
    }
}
