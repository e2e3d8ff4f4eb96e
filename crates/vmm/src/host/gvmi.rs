//! The host side of seed 001's HCA: a VM's stage-2 table doubles as its
//! PA2MA table under the VM's GVMI, the host driver services the HCA's
//! host-stage page faults by bringing the VM page in, and seed 004's
//! estimates tell the HCA how long that will take.

use iovirt_core::{CostModel, Gpa, Gvmi, HostMemory};
use iovirt_hca::{FaultOracle, FaultStage};
use iovirt_iommu::{GvmEntry, GvmiPort};
use iovirt_paging::Levels;

use super::{Host, PAGE, Page, Vm, VmId, VmmError};

/// Seed 004's estimates from the host's view of each VM page: a page in
/// the swap store is a major fault, a page never touched (or lent) a minor
/// one, a resident page none.
pub struct HostFaultOracle<'a> {
    vms: &'a [Vm],
    cost: CostModel,
}

impl FaultOracle for HostFaultOracle<'_> {
    fn estimate(&mut self, stage: FaultStage, gvmi: Gvmi, addr: u64) -> Option<u64> {
        let minor = self.cost.minor_fault_ns;
        if stage == FaultStage::Guest {
            // The guest's driver maps a page it already has: a minor fault.
            return Some(minor);
        }
        let vm = self.vms.iter().find(|v| v.gvmi == Some(gvmi))?;
        let page = vm.pages.get(usize::try_from(addr / PAGE).ok()?)?;
        Some(match page {
            Page::Swapped(_) => self.cost.major_fault_ns,
            Page::Untouched | Page::Lent => minor,
            Page::Resident { .. } | Page::Shared { .. } => 0,
        })
    }
}

impl Host {
    /// Gives `vm` the GVMI `gvmi` on the host's HCA (once; GVMI 0 is the
    /// host's and a GVMI serves one VM): the GVM identifier
    /// table entry points at the VM's stage-2 table, so the HCA's second
    /// stage is exactly the VM's memory, and swap-outs invalidate it.
    pub fn assign_gvmi(&mut self, vm: VmId, gvmi: Gvmi) -> Result<(), VmmError> {
        if gvmi == Gvmi::HOST || self.vms.iter().any(|v| v.gvmi == Some(gvmi)) {
            return Err(VmmError::BadVm("GVMI 0 or already assigned"));
        }
        let v = self
            .vms
            .get_mut(usize::from(vm.0))
            .ok_or(VmmError::NoVm(vm))?;
        if v.gvmi.is_some() {
            return Err(VmmError::BadVm("the VM already has a GVMI"));
        }
        v.gvmi = Some(gvmi);
        let root = v.stage2.root();
        self.iommu.set_gvm(
            gvmi,
            GvmEntry {
                pa2ma_root: root,
                levels: Levels::Four,
            },
        );
        Ok(())
    }

    /// The VM holding `gvmi`.
    pub fn vm_of_gvmi(&self, gvmi: Gvmi) -> Option<VmId> {
        self.vms
            .iter()
            .position(|v| v.gvmi == Some(gvmi))
            .map(|i| VmId(i as u16))
    }

    /// The HCA's view of memory (GVMI-tagged DMA through the PA2MA tables)
    /// and the host's fault-time oracle, borrowed together.
    pub fn hca_ports(
        &mut self,
        cost: CostModel,
    ) -> (GvmiPort<'_, HostMemory>, HostFaultOracle<'_>) {
        let Host {
            iommu, mem, vms, ..
        } = self;
        (iommu.gvmi_port(mem), HostFaultOracle { vms, cost })
    }

    /// The host driver's service of an HCA host-stage page fault (seed
    /// 001, paragraphs 0059-0060): brings the VM page at `pa` of `gvmi` in
    /// (swapping it in from the store when it was swapped out). Returns
    /// whether it was a major fault.
    pub fn service_gvmi_fault(&mut self, gvmi: Gvmi, pa: Gpa) -> Result<bool, VmmError> {
        let vm = self
            .vm_of_gvmi(gvmi)
            .ok_or(VmmError::BadVm("no VM has this GVMI"))?;
        let gfn = self.gfn(vm, pa.raw(), 1)?;
        let major = matches!(self.vm(vm)?.pages.get(gfn as usize), Some(Page::Swapped(_)));
        self.resident(vm, gfn)?;
        self.stats.dma_faults_serviced.inc();
        log::debug!("{vm:?}: serviced an HCA host-stage fault at {pa}");
        Ok(major)
    }
}

/// What a VM's HCA driver sees: its function's command interface and
/// doorbell page, and its own guest-physical memory through the host MMU
/// (reads do not bring pages in, writes do, as with [`crate::GuestBus`]).
pub struct HcaGuestBus<'a> {
    /// The host.
    pub host: &'a mut Host,
    /// The VM.
    pub vm: VmId,
    /// The VM's function on the HCA.
    pub port: iovirt_hca::FunctionPort<'a>,
}

impl iovirt_hca::CommandChannel for HcaGuestBus<'_> {
    fn command(
        &mut self,
        cmd: iovirt_hca::Command,
    ) -> Result<iovirt_hca::Reply, iovirt_hca::CmdError> {
        self.port.command(cmd)
    }
}

impl iovirt_core::RegisterAccess for HcaGuestBus<'_> {
    fn read(&mut self, offset: u64, width: iovirt_core::Width) -> u64 {
        self.port.read(offset, width)
    }

    fn write(&mut self, offset: u64, width: iovirt_core::Width, value: u64) {
        self.port.write(offset, width, value);
    }
}

impl iovirt_core::PhysMemory<Gpa> for HcaGuestBus<'_> {
    fn size(&self) -> u64 {
        self.host.vm_memory(self.vm)
    }

    fn read(&self, addr: Gpa, buf: &mut [u8]) -> Result<(), iovirt_core::MemError> {
        self.host.guest_read(self.vm, addr, buf)
    }

    fn write(&mut self, addr: Gpa, data: &[u8]) -> Result<(), iovirt_core::MemError> {
        self.host.guest_write(self.vm, addr, data)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::{HostConfig, VmConfig};
    use iovirt_core::{AccessKind, FaultReason, GvmiDma};
    use iovirt_iommu::{IommuConfig, RequesterId};

    fn host() -> (Host, VmId) {
        let mut h = Host::new(HostConfig {
            table_frames: 64,
            data_frames: 64,
            iommu: IommuConfig::default(),
        })
        .unwrap();
        let vm = h
            .add_vm(VmConfig {
                memory: 1 << 20,
                requester: RequesterId::new(0, 3, 0).unwrap(),
            })
            .unwrap();
        h.assign_gvmi(vm, Gvmi(5)).unwrap();
        (h, vm)
    }

    #[test]
    fn the_hca_sees_the_vm_through_its_stage_2_and_swap_out_invalidates_it() {
        let (mut h, vm) = host();
        assert!(h.assign_gvmi(vm, Gvmi(6)).is_err(), "one GVMI per VM");
        assert!(h.assign_gvmi(vm, Gvmi::HOST).is_err());
        assert_eq!(h.vm_of_gvmi(Gvmi(5)), Some(vm));
        let (mut port, _) = h.hca_ports(CostModel::default());
        // Untouched: not mapped in stage 2, a host-stage fault.
        let f = port
            .dma_write(Gvmi(5), Gpa::new(0x3000), b"rdma")
            .unwrap_err();
        assert_eq!(f.reason, FaultReason::NotPresent);
        assert!(
            !h.service_gvmi_fault(Gvmi(5), Gpa::new(0x3000)).unwrap(),
            "a minor fault"
        );
        let (mut port, _) = h.hca_ports(CostModel::default());
        port.dma_write(Gvmi(5), Gpa::new(0x3000), b"rdma").unwrap();
        let mut back = [0u8; 4];
        h.peek(vm, Gpa::new(0x3000), &mut back).unwrap();
        assert_eq!(&back, b"rdma");
        // Swapped out: the cached translation is gone, the fault is major.
        h.swap_out(vm, Gpa::new(0x3000)).unwrap();
        let (mut port, _) = h.hca_ports(CostModel::default());
        assert_eq!(
            port.probe(Gvmi(5), Gpa::new(0x3000), AccessKind::Read)
                .unwrap_err()
                .reason,
            FaultReason::NotPresent
        );
        assert!(
            h.service_gvmi_fault(Gvmi(5), Gpa::new(0x3000)).unwrap(),
            "a major fault"
        );
        h.peek(vm, Gpa::new(0x3000), &mut back).unwrap();
        assert_eq!(&back, b"rdma", "swapped back in with its contents");
        assert!(h.service_gvmi_fault(Gvmi(9), Gpa::new(0)).is_err());
    }

    #[test]
    fn the_oracle_estimates_by_page_state() {
        let (mut h, vm) = host();
        let cost = CostModel::default();
        h.write(vm, Gpa::new(0x1000), &[1]).unwrap();
        h.write(vm, Gpa::new(0x2000), &[2]).unwrap();
        h.swap_out(vm, Gpa::new(0x2000)).unwrap();
        let (_, mut oracle) = h.hca_ports(cost);
        let est = |o: &mut HostFaultOracle<'_>, stage, addr| o.estimate(stage, Gvmi(5), addr);
        assert_eq!(est(&mut oracle, FaultStage::Host, 0x1000), Some(0));
        assert_eq!(
            est(&mut oracle, FaultStage::Host, 0x2000),
            Some(cost.major_fault_ns)
        );
        assert_eq!(
            est(&mut oracle, FaultStage::Host, 0x5000),
            Some(cost.minor_fault_ns)
        );
        assert_eq!(
            est(&mut oracle, FaultStage::Guest, 0x7fff_0000),
            Some(cost.minor_fault_ns)
        );
        assert_eq!(
            est(&mut oracle, FaultStage::Host, 1 << 30),
            None,
            "outside the VM"
        );
        assert_eq!(
            oracle.estimate(FaultStage::Host, Gvmi(8), 0),
            None,
            "no such GVMI"
        );
    }
}
