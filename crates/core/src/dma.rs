//! The device DMA port: how a device reads and writes memory at I/O-virtual
//! addresses, and what a failed translation looks like to it.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::addr::{Hpa, Iova};
use crate::cost::Cost;
use crate::mem::{MemError, PhysMemory};
use crate::page::AccessKind;

/// Why a DMA was refused. The names follow Intel VT-d's fault reasons; an
/// IOMMU maps its own detailed reasons onto these for the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FaultReason {
    /// The requester has no context (root or context entry not present): all
    /// its DMA is blocked.
    ContextNotPresent,
    /// The address is beyond the translation's input width.
    AddressBeyondWidth,
    /// A table entry on the way (or the leaf) is not present.
    NotPresent,
    /// A write to a page mapped read-only.
    WriteDenied,
    /// A read of a page mapped without read permission.
    ReadDenied,
    /// An instruction fetch from a page mapped no-execute.
    ExecuteDenied,
    /// A user-mode (unprivileged) access to a supervisor-only page.
    PrivilegeDenied,
    /// A table entry has a reserved bit set.
    ReservedBit,
    /// A table entry points outside memory.
    TableOutsideMemory,
    /// The translated address is outside memory.
    OutsideMemory,
    /// The PASID carried by the request is not valid for the requester.
    InvalidPasid,
    /// The first-stage (process) table faulted in a nested translation.
    FirstStage,
}

impl fmt::Display for FaultReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaultReason::ContextNotPresent => "context not present",
            FaultReason::AddressBeyondWidth => "address beyond width",
            FaultReason::NotPresent => "not present",
            FaultReason::WriteDenied => "write to read-only page",
            FaultReason::ReadDenied => "read without permission",
            FaultReason::ExecuteDenied => "execute on a no-execute page",
            FaultReason::PrivilegeDenied => "user access to a supervisor page",
            FaultReason::ReservedBit => "reserved bit set",
            FaultReason::TableOutsideMemory => "table outside memory",
            FaultReason::OutsideMemory => "address outside memory",
            FaultReason::InvalidPasid => "invalid PASID",
            FaultReason::FirstStage => "first-stage fault",
        })
    }
}

/// A DMA the translation refused. No byte was transferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("DMA {access} at {addr} faulted: {reason}")]
pub struct DmaFault {
    /// The I/O-virtual address that faulted (the first faulting byte).
    pub addr: Iova,
    /// What the device tried to do.
    pub access: AccessKind,
    /// Why it was refused.
    pub reason: FaultReason,
    /// What the attempt cost before it failed (the walk that found the fault).
    pub cost: Cost,
}

/// Memory as one device sees it: reads, writes and translation prefetches at
/// I/O-virtual addresses, each returning its [`Cost`] or a [`DmaFault`].
///
/// Implemented by an IOMMU per requester (bus:device.function), and by
/// [`PassthroughDma`] when there is none; called by device models (NIC, HCA).
/// A port is bound to one requester, so the calls carry no requester id. An
/// access that faults transfers nothing: a real device would see an
/// unsupported-request completion for the whole TLP.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait DmaPort {
    /// Reads `buf.len()` bytes at `addr`.
    fn dma_read(&mut self, addr: Iova, buf: &mut [u8]) -> Result<Cost, DmaFault>;

    /// Writes `data` at `addr`.
    fn dma_write(&mut self, addr: Iova, data: &[u8]) -> Result<Cost, DmaFault>;

    /// Warms the translation of `addr` for `access` (seed 000's dummy DMA:
    /// walk and fill the IOTLB, move no data). A port without a translation
    /// cache returns [`Cost::ZERO`].
    fn prefetch(&mut self, addr: Iova, access: AccessKind) -> Result<Cost, DmaFault>;
}

/// DMA with no IOMMU: the I/O-virtual address is the host-physical address.
/// What a device sees on a platform with translation off (the baseline of
/// every IOMMU experiment).
///
/// ```
/// use iovirt_core::{DmaPort, HostMemory, Iova, PassthroughDma};
///
/// let mut mem = HostMemory::new(1 << 20)?;
/// let mut port = PassthroughDma::new(&mut mem);
/// let cost = port.dma_write(Iova::new(0x2000), b"frame")?;
/// assert_eq!(cost.bytes, 5);
/// let mut buf = [0u8; 5];
/// port.dma_read(Iova::new(0x2000), &mut buf)?;
/// assert_eq!(&buf, b"frame");
/// assert!(port.dma_read(Iova::new(1 << 20), &mut buf).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct PassthroughDma<'m, M> {
    mem: &'m mut M,
}

impl<'m, M: PhysMemory<Hpa>> PassthroughDma<'m, M> {
    /// A port onto `mem`.
    pub fn new(mem: &'m mut M) -> Self {
        PassthroughDma { mem }
    }

    fn fault(addr: Iova, access: AccessKind, err: MemError) -> DmaFault {
        log::debug!("passthrough DMA {access} at {addr}: {err}");
        DmaFault {
            addr,
            access,
            reason: FaultReason::OutsideMemory,
            cost: Cost::ZERO,
        }
    }
}

impl<M: PhysMemory<Hpa>> DmaPort for PassthroughDma<'_, M> {
    fn dma_read(&mut self, addr: Iova, buf: &mut [u8]) -> Result<Cost, DmaFault> {
        self.mem
            .read(Hpa::new(addr.raw()), buf)
            .map(|()| Cost::bytes(buf.len() as u64))
            .map_err(|e| Self::fault(addr, AccessKind::Read, e))
    }

    fn dma_write(&mut self, addr: Iova, data: &[u8]) -> Result<Cost, DmaFault> {
        self.mem
            .write(Hpa::new(addr.raw()), data)
            .map(|()| Cost::bytes(data.len() as u64))
            .map_err(|e| Self::fault(addr, AccessKind::Write, e))
    }

    fn prefetch(&mut self, addr: Iova, access: AccessKind) -> Result<Cost, DmaFault> {
        if addr.raw() < self.mem.size() {
            Ok(Cost::ZERO)
        } else {
            Err(DmaFault {
                addr,
                access,
                reason: FaultReason::OutsideMemory,
                cost: Cost::ZERO,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HostMemory;

    #[test]
    fn passthrough_faults_name_the_address() {
        let mut mem = HostMemory::new(8192).unwrap();
        let mut port = PassthroughDma::new(&mut mem);
        let err = port.dma_write(Iova::new(8190), &[1, 2, 3]).unwrap_err();
        assert_eq!(err.reason, FaultReason::OutsideMemory);
        assert_eq!(err.access, AccessKind::Write);
        assert_eq!(
            err.to_string(),
            "DMA write at 0x1ffe faulted: address outside memory"
        );
        assert_eq!(
            port.prefetch(Iova::new(0), AccessKind::Read),
            Ok(Cost::ZERO)
        );
        assert!(port.prefetch(Iova::new(8192), AccessKind::Read).is_err());
        // Nothing was written by the faulting DMA.
        assert_eq!(mem.resident_frames(), 0);
    }

    #[test]
    fn a_mocked_port_stands_in_for_an_iommu() {
        let mut port = MockDmaPort::new();
        port.expect_prefetch()
            .withf(|a, k| *a == Iova::new(0x5000) && *k == AccessKind::Write)
            .times(1)
            .returning(|_, _| {
                Ok(Cost {
                    iotlb_misses: 1,
                    table_reads: 4,
                    ..Cost::ZERO
                })
            });
        let cost = port.prefetch(Iova::new(0x5000), AccessKind::Write).unwrap();
        assert_eq!(cost.table_reads, 4);
    }
}
