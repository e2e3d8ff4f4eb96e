//! The demultiplexer (seed 002): frames the physical NIC received go to the
//! vNIC owning their destination MAC, by copy (baseline) or by remapping
//! the page that holds them (page flipping, FIG. 3).

use iovirt_core::{Gpa, Hpa, PhysMemory, Width};
use iovirt_nic::{RxOutcome, regs};

use super::uplink::Received;
use super::{DemuxMode, Network};
use crate::VmmError;
use crate::host::Host;

const PAGE: u64 = 4096;
const DESC: u64 = 16;
/// An Ethernet header: a shorter frame has no destination to go by.
const HEADER: usize = 14;

impl Network {
    /// Takes every frame the physical NIC has received off its ring and
    /// hands each to its VM.
    pub(super) fn demux_uplink(&mut self, host: &mut Host) -> Result<(), VmmError> {
        while let Some(rx) = self.uplink.next_received(host)? {
            self.stats.uplink_rx_frames.inc();
            if !rx.whole || rx.len < HEADER {
                log::debug!("uplink: dropped a frame of {} bytes", rx.len);
                self.stats.no_destination.inc();
                self.recycle(host, rx.buffer)?;
                continue;
            }
            match self.config.demux {
                DemuxMode::Copy => self.deliver_by_copy(host, &rx)?,
                DemuxMode::Flip => self.deliver_by_flip(host, &rx)?,
            }
        }
        Ok(())
    }

    /// Gives the physical NIC the buffers it can take.
    pub(super) fn refill_uplink(&mut self, host: &mut Host) -> Result<(), VmmError> {
        if self
            .uplink
            .refill(host, &mut self.pool, &mut self.outgoing)?
        {
            self.stats.pool_empty.inc();
        }
        Ok(())
    }

    /// Baseline (FIG. 1): read the frame out of the host buffer and copy it
    /// into each destination VM's receive buffer.
    fn deliver_by_copy(&mut self, host: &mut Host, rx: &Received) -> Result<(), VmmError> {
        let mut frame = core::mem::take(&mut self.scratch);
        frame.clear();
        if let Some(bytes) = frame.append(rx.len) {
            host.memory().read(rx.buffer, bytes)?;
        }
        self.deliver_copies(host, frame.as_slice());
        self.scratch = frame;
        Ok(())
    }

    /// Copies `frame` to every vNIC its destination names; counts a frame
    /// for none.
    fn deliver_copies(&mut self, host: &mut Host, frame: &[u8]) {
        let Some(dst) = frame.first_chunk::<6>().copied() else {
            return;
        };
        let group = dst[0] & 1 != 0;
        let mut delivered = false;
        for to in 0..self.vnics.len() {
            if group || self.vnics.get(to).map(|v| v.mac) == Some(dst) {
                delivered = true;
                self.copy_into(host, to, frame);
            }
        }
        if !delivered {
            self.stats.no_destination.inc();
        }
    }

    /// Enhanced (FIG. 2 and 3): the frame is in a pool frame; claim the
    /// destination vNIC's next receive descriptor, map the pool frame under
    /// its buffer's guest-physical page, and complete the descriptor. What
    /// cannot be flipped (broadcast to several VMs, a buffer that is not a
    /// whole page, a pinned page) is copied instead.
    fn deliver_by_flip(&mut self, host: &mut Host, rx: &Received) -> Result<(), VmmError> {
        let mut dst = [0u8; 6];
        host.memory().read(rx.buffer, &mut dst)?;
        let to = self.vnics.iter().position(|v| v.mac == dst);
        let (Some(to), false) = (to, dst[0] & 1 != 0) else {
            // Group frames go to every VM: one page cannot be in all.
            if dst[0] & 1 != 0 {
                self.stats.flip_fallbacks.inc();
                self.deliver_by_copy(host, rx)?;
            } else {
                self.stats.no_destination.inc();
            }
            return self.recycle(host, rx.buffer);
        };
        let len = rx.len;
        let claim = self.with_vnic(host, to, |nic, env| nic.rx_claim(dst, len, env))?;
        let slot = match claim {
            Ok(slot) => slot,
            Err(outcome) => {
                self.stats.vnic_refused.inc();
                log::debug!("vNIC {to} refused a frame: {outcome:?}");
                return self.recycle(host, rx.buffer);
            }
        };
        let vm = self
            .vnics
            .get(to)
            .map(|v| v.vm)
            .ok_or(VmmError::BadVm("no vNIC"))?;
        let gpa = slot.buffer.raw();
        let adopted = if gpa.is_multiple_of(PAGE) {
            host.adopt_frame(vm, Gpa::new(gpa), rx.buffer)
        } else {
            Err(VmmError::BadVm("receive buffer not page-aligned"))
        };
        match adopted {
            Ok(displaced) => {
                self.pool.extend(displaced);
                let done = self.with_vnic(host, to, |nic, env| nic.rx_commit(&slot, len, env))?;
                if matches!(done, RxOutcome::Stored { .. }) {
                    self.stats.flips.inc();
                } else {
                    // Nothing ran between claim and commit; the page is the
                    // guest's either way.
                    log::warn!("vNIC {to}: commit after a flip refused: {done:?}");
                    self.stats.vnic_refused.inc();
                }
                Ok(())
            }
            Err(err) => {
                log::debug!("{vm:?}: cannot flip into {gpa:#x} ({err}); copying");
                self.stats.flip_fallbacks.inc();
                self.deliver_by_copy(host, rx)?;
                self.recycle(host, rx.buffer)
            }
        }
    }

    /// A pool frame whose packet no VM took: zeroed and back in the pool.
    /// (In copy mode the buffer stays in its descriptor: nothing to do.)
    fn recycle(&mut self, host: &mut Host, frame: Hpa) -> Result<(), VmmError> {
        if self.config.demux == DemuxMode::Flip {
            host.zero_pool_frame(frame)?;
            self.pool.push(frame);
            self.stats.pool_recycled.inc();
        }
        Ok(())
    }

    /// The receive tail (RDT) of vNIC `i` as its guest last wrote it.
    pub(super) fn rx_tail(&mut self, host: &mut Host, i: usize) -> u32 {
        self.rx_reg(host, i, regs::RDT)
    }

    pub(super) fn rx_reg(&mut self, host: &mut Host, i: usize, reg: u64) -> u32 {
        use iovirt_core::MmioDevice;
        self.with_vnic(host, i, |nic, env| nic.mmio_read(reg, Width::U32, env))
            .map_or(0, |v| v as u32)
    }

    /// Seed 002 steps 301-303: the guest of vNIC `i` moved RDT from
    /// `before`, posting the descriptors in between; each one's buffer page
    /// is unmapped, cleared and put in the pool. Buffers that are not whole
    /// pages stay mapped (frames for them are copied).
    pub(super) fn lend_posted(&mut self, host: &mut Host, i: usize, before: u32) {
        let base = u64::from(self.rx_reg(host, i, regs::RDBAL))
            | u64::from(self.rx_reg(host, i, regs::RDBAH)) << 32;
        let count = self.rx_reg(host, i, regs::RDLEN) / DESC as u32;
        let after = self.rx_tail(host, i);
        let Some(vm) = self.vnics.get(i).map(|v| v.vm) else {
            return;
        };
        if count == 0 || before >= count || after >= count {
            return;
        }
        let mut d = before;
        // At most one lap, whatever the guest wrote.
        while d != after {
            let mut addr = [0u8; 8];
            let at = base.wrapping_add(u64::from(d) * DESC);
            if host.read(vm, Gpa::new(at), &mut addr).is_ok() {
                let buffer = u64::from_le_bytes(addr);
                if buffer != 0 && buffer.is_multiple_of(PAGE) {
                    match host.lend_page(vm, Gpa::new(buffer)) {
                        Ok(Some(frame)) => {
                            self.pool.push(frame);
                            self.stats.pages_lent.inc();
                        }
                        Ok(None) => {}
                        Err(err) => log::debug!("{vm:?}: RX buffer {buffer:#x} not lent: {err}"),
                    }
                }
            }
            d = (d + 1) % count;
        }
        if let Err(err) = self.refill_uplink(host) {
            log::warn!("uplink refill: {err}");
        }
    }
}
