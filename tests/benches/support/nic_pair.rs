//! Two guests whose e1000 NICs are joined by a link, IOMMU on, with their
//! drivers up: the NIC benchmark's path, shared with the allocation test.
//! Included by path from `benches/nic_path.rs` and `tests/no_alloc.rs`.

use iovirt::platform::{MIB, TwoGuests};
use iovirt_core::Gpa;
use iovirt_drivers::{E1000Config, E1000Driver, GuestPageAllocator, Placement};
use iovirt_iommu::{IotlbConfig, Replacement};

/// The platform and both drivers.
pub(crate) struct NicPair {
    h: TwoGuests,
    a: E1000Driver,
    b: E1000Driver,
}

impl NicPair {
    /// Both guests up, with an IOTLB large enough to stay warm (1,024
    /// entries, 8 ways, LRU) and buffers placed contiguously.
    pub(crate) fn new() -> NicPair {
        let mut h = TwoGuests::new(IotlbConfig {
            entries: 1024,
            ways: 8,
            replacement: Replacement::Lru,
        })
        .unwrap();
        let mut pa = GuestPageAllocator::new(Gpa::new(MIB), 2048, Placement::Contiguous);
        let mut pb = GuestPageAllocator::new(Gpa::new(MIB), 2048, Placement::Contiguous);
        let a = E1000Driver::bring_up(&mut h.guest(0), &mut pa, E1000Config::default()).unwrap();
        let b = E1000Driver::bring_up(&mut h.guest(1), &mut pb, E1000Config::default()).unwrap();
        NicPair { h, a, b }
    }

    /// Driver A transmits `frame`, the link delivers it, driver B
    /// receives: the frames and bytes B took.
    pub(crate) fn one(&mut self, frame: &[u8]) -> (usize, usize) {
        self.a.transmit(&mut self.h.guest(0), frame).unwrap();
        self.h.deliver(0, |_| {});
        let (mut got, mut len) = (0usize, 0usize);
        self.b
            .receive(&mut self.h.guest(1), |bytes| {
                got += 1;
                len += bytes.len();
            })
            .unwrap();
        (got, len)
    }
}
