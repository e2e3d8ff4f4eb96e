//! Seed 000's device-side DMA enhancer: once a frame has been handled,
//! warm the IOMMU's translations of the descriptor and buffer the next
//! frame will use, off the critical path.
//!
//! - RX descriptor prefetcher: a DMA read of the descriptor at RDH, without
//!   advancing RDH (FIG. 5, block 540).
//! - RX buffer prefetcher: a dummy read or a null write of the buffer that
//!   descriptor names, never signalled to the driver (block 545).
//! - TX descriptor and TX buffer prefetchers: the same at TDH after a
//!   transmit (FIG. 7, blocks 740 and 745); the buffer address may be stale
//!   unless the driver keeps its copy buffers fixed in the descriptors.
//!
//! A prefetch is a [`DmaPort::prefetch`]: the port translates and caches,
//! and no data moves. Its faults are counted and otherwise ignored: a
//! prefetch of a descriptor the driver has not filled yet is expected to
//! miss sometimes.

use iovirt_core::{AccessKind, Cost, DmaPort, InterruptSink, Iova, NetworkPort, Timers};
use serde::{Deserialize, Serialize};
use zerocopy::FromBytes;

use crate::desc::{RxDesc, TxDesc};
use crate::nic::{Nic, NicEnv, Ring};

/// How the RX buffer prefetcher touches the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BufferTouch {
    /// A dummy read.
    Read,
    /// A null write (a write of no bytes), for IOMMUs that cache per
    /// access kind.
    NullWrite,
}

/// Which prefetchers run. All off by default: the baseline NIC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Prefetchers {
    /// Prefetch the next RX descriptor after storing a frame.
    pub rx_descriptor: bool,
    /// Prefetch the next RX buffer after storing a frame.
    pub rx_buffer: Option<BufferTouch>,
    /// Prefetch the next TX descriptor after transmitting.
    pub tx_descriptor: bool,
    /// Prefetch the next TX buffer after transmitting.
    pub tx_buffer: bool,
}

impl Prefetchers {
    /// Every prefetcher on (buffers by dummy read).
    pub const ALL: Prefetchers = Prefetchers {
        rx_descriptor: true,
        rx_buffer: Some(BufferTouch::Read),
        tx_descriptor: true,
        tx_buffer: true,
    };
}

impl Nic {
    /// Chooses the prefetchers (seed 000's device side).
    pub fn set_prefetchers(&mut self, prefetchers: Prefetchers) {
        self.prefetchers = prefetchers;
    }

    /// The prefetchers in use.
    pub fn prefetchers(&self) -> Prefetchers {
        self.prefetchers
    }

    /// After a frame was stored: warm the next RX descriptor and buffer.
    pub(crate) fn prefetch_rx<D, I, N, T>(&mut self, env: &mut NicEnv<'_, D, I, N, T>)
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        let p = self.prefetchers;
        if !p.rx_descriptor && p.rx_buffer.is_none() {
            return;
        }
        let ring = self.rx;
        let Some(at) = next_descriptor(&ring) else {
            return;
        };
        // The buffer prefetch reads the descriptor (warming its translation
        // too); its contents are the driver's only while RDH != RDT.
        match p.rx_buffer {
            Some(touch) if ring.head != ring.tail => {
                if let Some(d) = self.read_descriptor::<D, I, N, T, RxDesc>(at, env)
                    && d.addr.get() != 0
                {
                    let kind = match touch {
                        BufferTouch::Read => AccessKind::Read,
                        BufferTouch::NullWrite => AccessKind::Write,
                    };
                    self.touch(d.addr.get(), kind, env);
                }
            }
            _ if p.rx_descriptor => self.touch(at, AccessKind::Read, env),
            _ => {}
        }
    }

    /// After a transmit: warm the next TX descriptor and its buffer.
    pub(crate) fn prefetch_tx<D, I, N, T>(&mut self, env: &mut NicEnv<'_, D, I, N, T>)
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        let p = self.prefetchers;
        if !p.tx_descriptor && !p.tx_buffer {
            return;
        }
        let Some(at) = next_descriptor(&self.tx) else {
            return;
        };
        if p.tx_buffer {
            // Reading the descriptor warms its translation too.
            if let Some(d) = self.read_descriptor::<D, I, N, T, TxDesc>(at, env)
                && d.addr.get() != 0
            {
                self.touch(d.addr.get(), AccessKind::Read, env);
            }
        } else {
            self.touch(at, AccessKind::Read, env);
        }
    }

    /// A prefetch DMA: translate and cache, count it and its cost.
    fn touch<D, I, N, T>(&mut self, addr: u64, kind: AccessKind, env: &mut NicEnv<'_, D, I, N, T>)
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        self.stats.prefetches.inc();
        match env.dma.prefetch(Iova::new(addr), kind) {
            Ok(cost) => self.count_prefetch(cost),
            Err(f) => {
                self.stats.prefetch_faults.inc();
                self.count_prefetch(f.cost);
            }
        }
    }

    /// A descriptor read done for a prefetcher (its cost is off the critical path).
    fn read_descriptor<D, I, N, T, R: FromBytes>(
        &mut self,
        at: u64,
        env: &mut NicEnv<'_, D, I, N, T>,
    ) -> Option<R>
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        let mut raw = [0u8; 16];
        self.stats.prefetches.inc();
        match env.dma.dma_read(Iova::new(at), &mut raw) {
            Ok(cost) => {
                self.count_prefetch(Cost { bytes: 0, ..cost });
                R::read_from_bytes(&raw).ok()
            }
            Err(f) => {
                self.stats.prefetch_faults.inc();
                self.count_prefetch(f.cost);
                None
            }
        }
    }
}

/// The address of the descriptor at the ring's head, if the ring is valid.
fn next_descriptor(ring: &Ring) -> Option<u64> {
    ring.valid().then(|| ring.head_address())
}
