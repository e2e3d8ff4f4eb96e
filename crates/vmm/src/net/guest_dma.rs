//! An emulated device's view of its VM's memory.

use iovirt_core::{AccessKind, Cost, DmaFault, DmaPort, FaultReason, Gpa, Iova};

use crate::VmmError;
use crate::host::{Host, VmId};

/// The DMA of a device the VMM emulates for `vm` (a vNIC): the VMM's own
/// accesses to guest memory through the host MMU, so I/O-virtual addresses
/// are the VM's guest-physical ones, translated by its stage 2. A page not
/// in a frame is brought in (minor or major fault), as a VMM process's
/// access to guest RAM would, instead of failing: an emulated device never
/// sees a host page fault. An address outside the VM faults.
pub struct GuestDma<'a> {
    host: &'a mut Host,
    vm: VmId,
}

impl<'a> GuestDma<'a> {
    /// The DMA port of `vm`'s emulated devices.
    pub fn new(host: &'a mut Host, vm: VmId) -> GuestDma<'a> {
        GuestDma { host, vm }
    }

    fn fault(&self, addr: Iova, access: AccessKind, err: &VmmError) -> DmaFault {
        log::debug!(
            "{:?} emulated DMA {access} at {:#x}: {err}",
            self.vm,
            addr.raw()
        );
        let reason = match err {
            VmmError::OutOfRange { .. } => FaultReason::OutsideMemory,
            // The host could not find a frame: the page is not present.
            _ => FaultReason::NotPresent,
        };
        DmaFault {
            addr,
            access,
            reason,
            cost: Cost::ZERO,
        }
    }
}

impl DmaPort for GuestDma<'_> {
    fn dma_read(&mut self, addr: Iova, buf: &mut [u8]) -> Result<Cost, DmaFault> {
        match self.host.read(self.vm, Gpa::new(addr.raw()), buf) {
            Ok(()) => Ok(Cost {
                bytes: buf.len() as u64,
                ..Cost::ZERO
            }),
            Err(err) => Err(self.fault(addr, AccessKind::Read, &err)),
        }
    }

    fn dma_write(&mut self, addr: Iova, data: &[u8]) -> Result<Cost, DmaFault> {
        match self.host.write(self.vm, Gpa::new(addr.raw()), data) {
            Ok(()) => Ok(Cost {
                bytes: data.len() as u64,
                ..Cost::ZERO
            }),
            Err(err) => Err(self.fault(addr, AccessKind::Write, &err)),
        }
    }

    /// An emulated device has no IOTLB to warm: nothing to do.
    fn prefetch(&mut self, _addr: Iova, _access: AccessKind) -> Result<Cost, DmaFault> {
        Ok(Cost::ZERO)
    }
}
