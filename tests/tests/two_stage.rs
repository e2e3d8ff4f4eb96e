//! End to end across iovirt-core and iovirt-paging: a guest's own page
//! tables live in guest-physical memory, which the host maps to host frames
//! with a second-stage table. The same walker serves both stages; walking
//! the guest's tables through a guest-physical view of host memory costs the
//! classic two-dimensional walk (24 table reads for 4 + 4 levels).

// Test code: a panic here is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::cell::Cell;

use iovirt_core::{
    Access, Address, BitmapFrameAllocator, Gpa, Gva, HostMemory, Hpa, MemError, PageSize,
    PhysMemory,
};
use iovirt_paging::{Levels, Mapping, PageTable, PagingConfig, PteFlags, WalkFault};

const MIB: u64 = 1 << 20;

/// A VM's guest-physical memory: every access is translated by the host's
/// second-stage table, and every second-stage table read is counted.
struct GuestMemory<'a> {
    host: &'a mut HostMemory,
    stage2: &'a PageTable<Gpa, Hpa>,
    size: u64,
    host_table_reads: Cell<u64>,
}

impl GuestMemory<'_> {
    fn translate(&self, gpa: Gpa, access: Access) -> Result<(Hpa, u64), MemError> {
        let walk = self.stage2.walk(&*self.host, gpa, access);
        self.host_table_reads
            .set(self.host_table_reads.get() + walk.trace.len() as u64);
        let t = walk.result.map_err(|_| MemError::Unmapped {
            space: Gpa::SPACE,
            addr: gpa.raw(),
        })?;
        // Bytes left in this page.
        Ok((t.addr, t.size.bytes() - (gpa.raw() & t.size.mask())))
    }
}

impl PhysMemory<Gpa> for GuestMemory<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&self, addr: Gpa, buf: &mut [u8]) -> Result<(), MemError> {
        iovirt_core::check_range(addr, buf.len() as u64, self.size)?;
        let mut done = 0usize;
        while done < buf.len() {
            let (hpa, room) = self.translate(Gpa::new(addr.raw() + done as u64), Access::READ)?;
            let n = (buf.len() - done).min(room as usize);
            self.host.read(hpa, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    fn write(&mut self, addr: Gpa, data: &[u8]) -> Result<(), MemError> {
        iovirt_core::check_range(addr, data.len() as u64, self.size)?;
        let mut done = 0usize;
        while done < data.len() {
            let (hpa, room) = self.translate(Gpa::new(addr.raw() + done as u64), Access::WRITE)?;
            let n = (data.len() - done).min(room as usize);
            self.host.write(hpa, &data[done..done + n])?;
            done += n;
        }
        Ok(())
    }
}

struct Platform {
    host: HostMemory,
    host_frames: BitmapFrameAllocator<Hpa>,
    stage2: PageTable<Gpa, Hpa>,
    /// Host address of guest-physical 0.
    backing: Hpa,
}

/// A host with 256 MiB; a VM of `guest_mib` MiB backed by contiguous,
/// 2 MiB-aligned host frames, mapped with pages up to `largest`.
fn platform(guest_mib: u64, largest: PageSize) -> Platform {
    let mut host = HostMemory::new(256 * MIB).unwrap();
    let mut host_frames = BitmapFrameAllocator::new(Hpa::new(0), 256 * MIB / 4096);
    let mut stage2 = PageTable::new(
        &mut host,
        &mut host_frames,
        PagingConfig::second_stage(Levels::Four),
    )
    .unwrap();
    let backing = host_frames
        .alloc_contiguous(guest_mib * MIB / 4096, 512)
        .unwrap();
    let m = Mapping::new(Gpa::new(0), backing, guest_mib * MIB, PteFlags::RW).with_largest(largest);
    stage2.map(&mut host, &mut host_frames, m).unwrap();
    Platform {
        host,
        host_frames,
        stage2,
        backing,
    }
}

#[test]
fn guest_tables_walked_through_the_second_stage() {
    let mut p = platform(64, PageSize::Size4K);
    let mut guest = GuestMemory {
        host: &mut p.host,
        stage2: &p.stage2,
        size: 64 * MIB,
        host_table_reads: Cell::new(0),
    };
    // The guest builds its own tables in its own memory, from its own frames.
    let mut guest_frames = BitmapFrameAllocator::new(Gpa::new(MIB), 256);
    let mut gpt =
        PageTable::<Gva, Gpa>::new(&mut guest, &mut guest_frames, PagingConfig::default()).unwrap();
    let m = Mapping::new(
        Gva::new(0x7f00_0000_0000),
        Gpa::new(16 * MIB),
        8 * 4096,
        PteFlags::RW | PteFlags::US,
    );
    gpt.map(&mut guest, &mut guest_frames, m).unwrap();
    guest
        .write(Gpa::new(16 * MIB + 0x1234), b"hello from the guest")
        .unwrap();

    guest.host_table_reads.set(0);
    let walk = gpt.walk(&guest, Gva::new(0x7f00_0000_1234), Access::READ.user());
    let t = walk.result.unwrap();
    assert_eq!(t.addr, Gpa::new(16 * MIB + 0x1234));
    assert_eq!(walk.trace.len(), 4, "guest table reads");
    assert_eq!(
        guest.host_table_reads.get(),
        16,
        "each guest table read walks 4 host levels"
    );
    let (hpa, _) = guest.translate(t.addr, Access::READ).unwrap();
    assert_eq!(
        guest.host_table_reads.get(),
        20,
        "4 x 4 + 4: the 2D walk of nested paging"
    );
    let mut bytes = [0u8; 20];
    p.host.read(hpa, &mut bytes).unwrap();
    assert_eq!(&bytes, b"hello from the guest");
    // The bytes sit in the host frame that backs guest-physical 16 MiB + 0x1234.
    assert_eq!(hpa, Hpa::new(p.backing.raw() + 16 * MIB + 0x1234));
}

#[test]
fn huge_second_stage_pages_shorten_the_nested_walk() {
    let mut p = platform(64, PageSize::Size2M);
    let guest = GuestMemory {
        host: &mut p.host,
        stage2: &p.stage2,
        size: 64 * MIB,
        host_table_reads: Cell::new(0),
    };
    let (hpa, room) = guest
        .translate(Gpa::new(3 * MIB + 5), Access::WRITE)
        .unwrap();
    assert_eq!(hpa, Hpa::new(p.backing.raw() + 3 * MIB + 5));
    assert_eq!(room, 2 * MIB - MIB - 5);
    assert_eq!(guest.host_table_reads.get(), 3, "PML4E, PDPTE, PDE");
}

#[test]
fn guest_bugs_stay_inside_the_guest() {
    let mut p = platform(8, PageSize::Size4K);
    let resident_before = p.host.resident_frames();
    let host_frames_free = p.host_frames.free_frames();
    let mut guest = GuestMemory {
        host: &mut p.host,
        stage2: &p.stage2,
        size: 8 * MIB,
        host_table_reads: Cell::new(0),
    };
    // Guest-physical space beyond the VM's memory is not reachable.
    assert!(guest.write(Gpa::new(8 * MIB - 2), &[1, 2, 3, 4]).is_err());
    // A guest table whose root is beyond guest memory faults in the walk.
    let gpt = PageTable::<Gva, Gpa>::from_root(Gpa::new(100 * MIB), PagingConfig::default());
    let fault = gpt
        .translate(&guest, Gva::new(0), Access::READ)
        .unwrap_err();
    assert!(matches!(fault, WalkFault::TableOutsideMemory { .. }));
    // A guest table full of garbage pointing everywhere: every walk ends, none escapes.
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    guest.write(Gpa::new(0x5000), &garbage).unwrap();
    let gpt = PageTable::<Gva, Gpa>::from_root(Gpa::new(0x5000), PagingConfig::default());
    for i in 0..512u64 {
        let walk = gpt.walk(
            &guest,
            Gva::new((i << 39) | (i << 21) | (i << 12)),
            Access::WRITE,
        );
        assert!(walk.trace.len() <= 4);
        if let Ok(t) = walk.result {
            assert!(t.addr.raw() < 1 << 52);
        }
    }
    // Only the guest's own frames were written.
    assert_eq!(p.host.resident_frames(), resident_before + 1);
    assert_eq!(p.host_frames.free_frames(), host_frames_free);
}
