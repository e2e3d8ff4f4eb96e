//! A guest's view of its vNIC and memory, for its driver.

use iovirt_core::{Gpa, MemError, PhysMemory, RegisterAccess, Width};

use super::Network;
use crate::host::{Host, VmId};

/// What the driver in `vm` sees: its vNIC's registers (each access a trap
/// into the VMM) and its own guest-physical memory (through the host MMU,
/// demand-paged).
pub struct GuestBus<'a> {
    net: &'a mut Network,
    host: &'a mut Host,
    vm: VmId,
}

impl<'a> GuestBus<'a> {
    pub(super) fn new(net: &'a mut Network, host: &'a mut Host, vm: VmId) -> GuestBus<'a> {
        GuestBus { net, host, vm }
    }
}

impl RegisterAccess for GuestBus<'_> {
    fn read(&mut self, offset: u64, width: Width) -> u64 {
        self.net.mmio_read(self.host, self.vm, offset, width)
    }

    fn write(&mut self, offset: u64, width: Width, value: u64) {
        self.net
            .mmio_write(self.host, self.vm, offset, width, value);
    }
}

impl PhysMemory<Gpa> for GuestBus<'_> {
    fn size(&self) -> u64 {
        self.host.vm_memory(self.vm)
    }

    /// A read does not bring pages in (the trait reads through `&self`): a
    /// page not in a frame reads as what it holds, from the swap store or
    /// as zeros.
    fn read(&self, addr: Gpa, buf: &mut [u8]) -> Result<(), MemError> {
        self.host.guest_read(self.vm, addr, buf)
    }

    fn write(&mut self, addr: Gpa, data: &[u8]) -> Result<(), MemError> {
        self.host.guest_write(self.vm, addr, data)
    }
}
