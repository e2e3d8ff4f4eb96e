//! Seed 001's second translation stage as a device sees it: DMA tagged with
//! the guest virtual machine identifier (GVMI) of the memory key that named
//! the buffer, at that VM's "physical" address.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::addr::Gpa;
use crate::cost::Cost;
use crate::dma::{DmaFault, DmaPort as _};
use crate::page::AccessKind;

/// A guest virtual machine identifier (seed 001): keys the PA2MA tables of
/// the IOMMU inside a device. GVMI 0 is the host domain, whose "physical"
/// addresses are machine addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Gvmi(pub u16);

impl Gvmi {
    /// The host domain, whose "physical" addresses are machine addresses.
    pub const HOST: Gvmi = Gvmi(0);
}

impl fmt::Display for Gvmi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gvmi {}", self.0)
    }
}

/// Memory as a device with seed 001's two-stage translation sees it after
/// its own first stage: every access names the GVMI and the VM-physical
/// address the first stage produced; the port does the second stage
/// (GVMI → PA2MA table → machine address).
///
/// Implemented by the IOMMU (`iovirt_iommu::GvmiPort`); called by the HCA.
/// A fault moves no byte and names the first faulting VM-physical address
/// (in [`DmaFault::addr`]); the device turns it into a page-fault event for
/// the host driver.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait GvmiDma {
    /// Reads `buf.len()` bytes at `pa` of `gvmi`.
    fn dma_read(&mut self, gvmi: Gvmi, pa: Gpa, buf: &mut [u8]) -> Result<Cost, DmaFault>;

    /// Writes `data` at `pa` of `gvmi`.
    fn dma_write(&mut self, gvmi: Gvmi, pa: Gpa, data: &[u8]) -> Result<Cost, DmaFault>;

    /// Checks (and caches) the translation of `pa` for `access` without
    /// moving data: what a device does before it commits to a transfer.
    fn probe(&mut self, gvmi: Gvmi, pa: Gpa, access: AccessKind) -> Result<Cost, DmaFault>;
}

/// Seed 001's second stage switched off: every GVMI's "physical" address
/// is the host-physical address. For embedders without an IOMMU and for
/// examples; faults only outside memory.
#[derive(Debug)]
pub struct FlatGvmiDma<'m, M> {
    mem: &'m mut M,
}

impl<'m, M: crate::mem::PhysMemory<crate::addr::Hpa>> FlatGvmiDma<'m, M> {
    /// A port onto `mem`.
    pub fn new(mem: &'m mut M) -> Self {
        FlatGvmiDma { mem }
    }
}

impl<M: crate::mem::PhysMemory<crate::addr::Hpa>> GvmiDma for FlatGvmiDma<'_, M> {
    fn dma_read(&mut self, _gvmi: Gvmi, pa: Gpa, buf: &mut [u8]) -> Result<Cost, DmaFault> {
        crate::dma::PassthroughDma::new(&mut *self.mem)
            .dma_read(crate::addr::Iova::new(pa.raw()), buf)
    }

    fn dma_write(&mut self, _gvmi: Gvmi, pa: Gpa, data: &[u8]) -> Result<Cost, DmaFault> {
        crate::dma::PassthroughDma::new(&mut *self.mem)
            .dma_write(crate::addr::Iova::new(pa.raw()), data)
    }

    fn probe(&mut self, _gvmi: Gvmi, pa: Gpa, access: AccessKind) -> Result<Cost, DmaFault> {
        crate::dma::PassthroughDma::new(&mut *self.mem)
            .prefetch(crate::addr::Iova::new(pa.raw()), access)
    }
}
