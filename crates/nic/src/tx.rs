//! The transmit engine: from TDH up to TDT, gather each frame's buffers
//! until EOP, send it, write DD back where RS asks, advance TDH. A doorbell
//! runs it over the ring; a transmit backend (`backend.rs`) runs it
//! one descriptor at a time.

use iovirt_core::{AccessKind, DmaPort, InterruptSink, Iova, NetworkPort, Timers};
use zerocopy::{FromBytes, IntoBytes};

use crate::desc::{TxCmd, TxDesc, TxSta};
use crate::nic::{MAX_FRAME, Nic, NicEnv};
use crate::regs::{Cause, Tctl};

/// Shortest frame on the wire without FCS; shorter ones are padded when
/// TCTL.PSP is set.
const MIN_FRAME: usize = 60;

/// What retiring TX descriptors owes the driver when the run ends: the
/// interrupt causes are raised once per run, not once per descriptor.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TxDone {
    /// Whether any DD went back.
    written_back: bool,
    /// Whether one of those asked for the transmit interrupt delay (IDE).
    delayed: bool,
}

impl TxDone {
    /// What two stretches of a run owe together.
    fn and(self, other: TxDone) -> TxDone {
        TxDone {
            written_back: self.written_back || other.written_back,
            delayed: self.delayed || other.delayed,
        }
    }
}

/// Why the transmit engine, or a backend's [`Nic::tx_peek`], finds no
/// descriptor to process at TDH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStop {
    /// The transmitter is disabled (TCTL.EN clear).
    Disabled,
    /// The ring registers are invalid (length 0, or head or tail beyond the
    /// ring): counted in [`NicStats::ring_errors`](crate::NicStats::ring_errors).
    BadRing,
    /// The driver has handed the device nothing: TDH == TDT.
    Empty,
    /// The descriptor fetch faulted: counted in
    /// [`NicStats::dma_faults`](crate::NicStats::dma_faults). TDH stays on it.
    DmaFault,
}

impl Nic {
    /// A TDT or TCTL write: the transmit engine runs, unless a backend
    /// drives the ring ([`Nic::set_tx_backend`]).
    pub(crate) fn doorbell_tx<D, I, N, T>(&mut self, env: &mut NicEnv<'_, D, I, N, T>)
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        if !self.tx_backend {
            self.run_tx(env);
        }
    }

    /// Processes the TX ring from TDH up to TDT (one pass at most).
    pub(crate) fn run_tx<D, I, N, T>(&mut self, env: &mut NicEnv<'_, D, I, N, T>)
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        self.process_tx(u32::MAX, env);
    }

    /// Processes up to `limit` descriptors from TDH, and never more than one
    /// pass over the ring (a guest cannot make the engine spin); then
    /// signals them once (TXDW, TXQE) and runs the TX prefetchers. Returns
    /// the number of descriptors consumed.
    pub(crate) fn process_tx<D, I, N, T>(
        &mut self,
        limit: u32,
        env: &mut NicEnv<'_, D, I, N, T>,
    ) -> u32
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        let Ok(count) = self.tx_ring_ready() else {
            return 0;
        };
        let mut done = TxDone::default();
        let mut consumed = 0;
        while consumed < count.min(limit) {
            // A fetch that faults stops the engine, TDH staying on the
            // descriptor, as a DMA error halts the queue; TDH == TDT ends
            // the run.
            let Ok((at, desc)) = self.fetch_tx_descriptor(env) else {
                break;
            };
            done = done.and(self.execute_tx_descriptor(at, &desc, env));
            consumed += 1;
        }
        self.tx_signal(done, env);
        consumed
    }

    /// The checks before any descriptor: transmitter enabled, something
    /// handed over (TDH != TDT), then a valid ring (a bad one is counted).
    /// Returns the ring's descriptor count.
    pub(crate) fn tx_ring_ready(&mut self) -> Result<u32, TxStop> {
        if self.tctl & Tctl::EN.bits() == 0 {
            return Err(TxStop::Disabled);
        }
        // Before validity, as the engine has always done: a ring with
        // nothing handed over is never counted as bad.
        if self.tx.head == self.tx.tail {
            return Err(TxStop::Empty);
        }
        if !self.tx.valid() {
            self.stats.ring_errors.inc();
            log::debug!(
                "e1000 TX: bad ring (len {:#x}, head {}, tail {})",
                self.tx.len,
                self.tx.head,
                self.tx.tail
            );
            return Err(TxStop::BadRing);
        }
        Ok(self.tx.count())
    }

    /// Reads the descriptor at TDH (its address and contents), on a ring
    /// [`Nic::tx_ring_ready`] accepted; [`TxStop::Empty`] once TDH reaches
    /// TDT.
    pub(crate) fn fetch_tx_descriptor<D, I, N, T>(
        &mut self,
        env: &mut NicEnv<'_, D, I, N, T>,
    ) -> Result<(u64, TxDesc), TxStop>
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        if self.tx.head == self.tx.tail {
            return Err(TxStop::Empty);
        }
        let at = self.tx.head_address();
        let mut raw = [0u8; 16];
        match env.dma.dma_read(Iova::new(at), &mut raw) {
            Ok(cost) => self.count_critical(cost, false),
            Err(f) => {
                self.count_critical(f.cost, false);
                self.stats.dma_faults.inc();
                return Err(TxStop::DmaFault);
            }
        }
        // Sixteen bytes always make a descriptor; the error cannot happen.
        let desc = TxDesc::read_from_bytes(&raw).map_err(|_| TxStop::DmaFault)?;
        Ok((at, desc))
    }

    /// Does what the descriptor at TDH (at `at`) asks: a NOP command, an
    /// unsupported extended descriptor, or a buffer gathered into the frame
    /// (sent at EOP); then retires it.
    fn execute_tx_descriptor<D, I, N, T>(
        &mut self,
        at: u64,
        desc: &TxDesc,
        env: &mut NicEnv<'_, D, I, N, T>,
    ) -> TxDone
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
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
            self.gather(desc, env);
            if cmd.contains(TxCmd::EOP) {
                self.send_frame(env);
            }
        }
        self.retire_tx_descriptor(at, cmd, env)
    }

    /// Hands the descriptor at TDH (at `at`) back to the driver: DD written
    /// back where `cmd` has RS (a fault there is counted, and the
    /// descriptor retired all the same), then TDH moves on.
    pub(crate) fn retire_tx_descriptor<D, I, N, T>(
        &mut self,
        at: u64,
        cmd: TxCmd,
        env: &mut NicEnv<'_, D, I, N, T>,
    ) -> TxDone
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        let mut done = TxDone::default();
        if cmd.contains(TxCmd::RS) {
            let sta_at = at.wrapping_add(12);
            match env
                .dma
                .dma_write(Iova::new(sta_at), TxSta::DD.bits().as_bytes())
            {
                Ok(cost) => {
                    self.count_critical(cost, false);
                    done.written_back = true;
                    done.delayed = cmd.contains(TxCmd::IDE);
                }
                Err(f) => {
                    self.count_critical(f.cost, false);
                    self.stats.dma_faults.inc();
                }
            }
        }
        // Callers checked the ring is valid; `after` keeps a count of 0 from panicking.
        self.tx.head = self.tx.after(self.tx.head);
        done
    }

    /// After descriptors were retired: TXDW if a DD went back (subject to
    /// IDE's delay), TXQE if the queue drained, then the TX prefetchers.
    pub(crate) fn tx_signal<D, I, N, T>(&mut self, done: TxDone, env: &mut NicEnv<'_, D, I, N, T>)
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        if done.written_back {
            self.tx_done(done.delayed, env);
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
            let len = self.padded_len(self.tx_frame.len());
            // Only short frames need padding; skip the empty fill otherwise.
            if len > self.tx_frame.len() {
                self.tx_frame.pad_to(len);
            }
            env.net.send(self.tx_frame.as_slice());
            self.count_sent(self.tx_frame.len());
        }
        self.tx_frame.clear();
        self.tx_discard = false;
    }

    /// How long a frame of `len` bytes goes out: padded to the shortest
    /// frame when TCTL.PSP asks.
    pub(crate) fn padded_len(&self, len: usize) -> usize {
        if self.tctl & Tctl::PSP.bits() != 0 {
            len.max(MIN_FRAME)
        } else {
            len
        }
    }

    /// Counts a frame of `bytes` (padding included) gone out: the counters
    /// and the statistics registers.
    pub(crate) fn count_sent(&mut self, bytes: usize) {
        let bytes = bytes as u64;
        self.stats.tx_frames.inc();
        self.stats.tx_bytes.add(bytes);
        let r = &mut self.regs_stats;
        r.gptc = r.gptc.saturating_add(1);
        r.tpt = r.tpt.saturating_add(1);
        r.gotc = r.gotc.saturating_add(bytes);
    }

    /// Whether a frame is being gathered: descriptors without EOP have
    /// given it bytes, or overflowed or faulted it into being discarded.
    pub(crate) fn tx_gathering(&self) -> bool {
        self.tx_discard || !self.tx_frame.is_empty()
    }
}
