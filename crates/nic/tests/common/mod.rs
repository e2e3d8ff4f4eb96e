//! Set-up shared by the NIC's integration tests: a NIC on host memory, the
//! environment each call into it needs, and register access built on that;
//! then, in submodules, the descriptor-ring helpers and a NIC behind an
//! IOMMU.

// Each test binary includes this module and uses a part of it (`link.rs`
// and `moderation.rs` no rings, `registers.rs` no IOMMU): the rest is unused
// there.
#![allow(dead_code)]

use iovirt_core::{DmaPort, HostMemory, Irq, MmioDevice, PassthroughDma, TimerQueue, Width};
use iovirt_nic::{Nic, NicConfig, NicEnv, NicStats, RxOutcome};

/// The interrupt every test NIC raises.
pub(crate) const IRQ: Irq = Irq(11);
/// The size of a [`Rig`]'s memory: 1 MiB.
pub(crate) const MEM: u64 = 1 << 20;

/// The environment of one call into the NIC: a DMA port, the interrupts
/// raised, and where transmitted frames go.
pub(crate) type Env<'a> = NicEnv<'a, dyn DmaPort + 'a, Vec<Irq>, dyn FnMut(&[u8]) + 'a, TimerQueue>;

/// A NIC on a test platform: what each call into it needs, and the register
/// and frame helpers built on that.
pub(crate) trait Platform {
    /// Runs `f` on the NIC with the platform's environment: its DMA port,
    /// its interrupt record, and a network that records what is sent.
    fn with_env<R>(&mut self, f: impl FnOnce(&mut Nic, &mut Env<'_>) -> R) -> R;

    /// An MMIO write of `width` at `offset`.
    fn write_w(&mut self, offset: u64, width: Width, value: u64) {
        self.with_env(|nic, env| nic.mmio_write(offset, width, value, env));
    }

    /// An MMIO read of `width` at `offset`.
    fn read_w(&mut self, offset: u64, width: Width) -> u64 {
        self.with_env(|nic, env| nic.mmio_read(offset, width, env))
    }

    /// A 32-bit register write.
    fn write(&mut self, reg: u64, value: u32) {
        self.write_w(reg, Width::U32, u64::from(value));
    }

    /// A 32-bit register read, checking it returned no more than 32 bits.
    fn read(&mut self, reg: u64) -> u32 {
        let v = self.read_w(reg, Width::U32);
        assert!(v <= u64::from(u32::MAX), "a 32-bit read returned {v:#x}");
        v as u32
    }

    /// Offers `frame` from the wire to the NIC.
    fn receive(&mut self, frame: &[u8]) -> RxOutcome {
        self.with_env(|nic, env| nic.receive(frame, env))
    }
}

/// A NIC on 1 MiB of memory without an IOMMU, with what it raised and sent,
/// and its clock: the timers it arms wait there until a test runs the clock
/// (until then it stays at 0, as a fresh queue's would).
pub(crate) struct Rig {
    pub(crate) mem: HostMemory,
    pub(crate) nic: Nic,
    pub(crate) irqs: Vec<Irq>,
    pub(crate) wire: Vec<Vec<u8>>,
    pub(crate) timers: TimerQueue,
}

impl Rig {
    /// A freshly reset NIC with address `mac` raising [`IRQ`], on [`MEM`]
    /// bytes of zeroed memory.
    pub(crate) fn new(mac: [u8; 6]) -> Rig {
        Rig {
            mem: HostMemory::new(MEM).unwrap(),
            nic: Nic::new(NicConfig { mac, irq: IRQ }),
            irqs: Vec::new(),
            wire: Vec::new(),
            timers: TimerQueue::new(),
        }
    }

    /// A copy of the NIC's counters.
    pub(crate) fn stats(&self) -> NicStats {
        *self.nic.stats()
    }
}

impl Platform for Rig {
    fn with_env<R>(&mut self, f: impl FnOnce(&mut Nic, &mut Env<'_>) -> R) -> R {
        let Rig {
            mem,
            nic,
            irqs,
            wire,
            timers,
        } = self;
        run(nic, &mut PassthroughDma::new(mem), irqs, wire, timers, f)
    }
}

/// Runs `f` on `nic` with an environment of `dma`, `irqs` for the
/// interrupts it raises, `wire` for the frames it sends, and `timers`.
fn run<R>(
    nic: &mut Nic,
    dma: &mut dyn DmaPort,
    irqs: &mut Vec<Irq>,
    wire: &mut Vec<Vec<u8>>,
    timers: &mut TimerQueue,
    f: impl FnOnce(&mut Nic, &mut Env<'_>) -> R,
) -> R {
    let mut net = |frame: &[u8]| wire.push(frame.to_vec());
    let mut env: Env<'_> = NicEnv {
        timers,
        dma,
        irq: irqs,
        net: &mut net,
    };
    f(nic, &mut env)
}

/// Descriptor rings on a [`Rig`]: where they and their buffers live, and
/// helpers that lay them out and read them back.
pub(crate) mod rings {
    use super::{Platform, Rig};
    use iovirt_core::{Hpa, PhysMemory};
    use iovirt_nic::desc::{RxDesc, TxCmd, TxDesc};
    use iovirt_nic::regs::{self, Tctl};
    use proptest::prelude::{Strategy, any};
    use zerocopy::byteorder::little_endian::{U16, U64};
    use zerocopy::{FromBytes, IntoBytes};

    /// Where the rings and buffers live in each NIC's memory.
    pub(crate) const TX_RING: u64 = 0x1_0000;
    pub(crate) const RX_RING: u64 = 0x2_0000;
    pub(crate) const TX_BUFS: u64 = 0x4_0000;
    pub(crate) const RX_BUFS: u64 = 0x8_0000;
    /// RX buffers are this far apart, so bytes past each one can be watched.
    pub(crate) const RX_STRIDE: u64 = 0x1000;
    /// What unwritten buffer bytes hold.
    pub(crate) const SENTINEL: u8 = 0xee;
    /// RCTL's BSIZE field (bits 17:16) for 256-byte buffers.
    pub(crate) const BSIZE_256: u32 = 3 << 16;

    /// A ring for a property: its descriptor count (a multiple of 8, up to
    /// 32), a head inside it, and a tail now and then on the head (nothing
    /// for the NIC) and now and then up to 2 beyond the ring (a bad ring).
    pub(crate) fn geometry() -> impl Strategy<Value = (u32, u32, u32)> {
        (1u32..=4, any::<(u32, u32)>()).prop_map(|(blocks, (h, t))| {
            let count = 8 * blocks;
            let tail = if t % 8 == 0 {
                h % count
            } else {
                t % (count + 2)
            };
            (count, h % count, tail)
        })
    }

    /// End of packet, report status: a whole frame whose DD is written back.
    pub(crate) fn eop_rs() -> TxCmd {
        TxCmd::EOP | TxCmd::RS
    }

    /// A NOP transmit command (seed 000's: DEXT with descriptor type 0xF in
    /// the high nibble of byte 10) for `addr`.
    pub(crate) fn nop(addr: u64, cmd: TxCmd) -> TxDesc {
        let d = TxDesc {
            addr: U64::new(addr),
            cso: 0xf0,
            cmd: (TxCmd::DEXT | cmd).bits(),
            ..TxDesc::default()
        };
        assert!(d.is_nop());
        assert_eq!(d.as_bytes()[10] >> 4, 0xf);
        d
    }

    impl Rig {
        /// A TX ring of `count` descriptors at [`TX_RING`], head and tail 0.
        pub(crate) fn tx_ring(&mut self, count: u32, tctl: Tctl) {
            self.write(regs::TDBAL, TX_RING as u32);
            self.write(regs::TDBAH, 0);
            self.write(regs::TDLEN, count * 16);
            self.write(regs::TDH, 0);
            self.write(regs::TDT, 0);
            self.write(regs::TCTL, tctl.bits());
        }

        /// A TX descriptor in slot `slot` for `len` bytes at `addr`.
        pub(crate) fn put_tx_desc(&mut self, slot: u64, addr: u64, len: u16, cmd: TxCmd) {
            let d = TxDesc {
                addr: U64::new(addr),
                length: U16::new(len),
                cmd: cmd.bits(),
                ..TxDesc::default()
            };
            self.mem
                .write(Hpa::new(TX_RING + 16 * slot), d.as_bytes())
                .unwrap();
        }

        /// Puts `data` at `addr` and a descriptor for it in TX slot `slot`.
        pub(crate) fn put_tx(&mut self, slot: u64, addr: u64, data: &[u8], cmd: TxCmd) {
            self.mem.write(Hpa::new(addr), data).unwrap();
            self.put_tx_desc(slot, addr, data.len() as u16, cmd);
        }

        /// The TX descriptor in slot `slot`, as the NIC left it.
        pub(crate) fn tx_desc(&self, slot: u64) -> TxDesc {
            let mut raw = [0u8; 16];
            self.mem
                .read(Hpa::new(TX_RING + 16 * slot), &mut raw)
                .unwrap();
            TxDesc::read_from_bytes(&raw).unwrap()
        }

        /// An RX ring of `count` descriptors at [`RX_RING`] with buffers
        /// [`RX_STRIDE`] apart from [`RX_BUFS`], filled with [`SENTINEL`];
        /// RDH 0, RDT `tail` (`count - 1` gives the NIC every descriptor but
        /// one).
        pub(crate) fn rx_ring(&mut self, count: u32, tail: u32, rctl: u32) {
            for i in 0..u64::from(count) {
                let d = RxDesc {
                    addr: U64::new(RX_BUFS + RX_STRIDE * i),
                    ..RxDesc::default()
                };
                self.mem
                    .write(Hpa::new(RX_RING + 16 * i), d.as_bytes())
                    .unwrap();
                self.mem
                    .write(
                        Hpa::new(RX_BUFS + RX_STRIDE * i),
                        &[SENTINEL; RX_STRIDE as usize],
                    )
                    .unwrap();
            }
            self.write(regs::RDBAL, RX_RING as u32);
            self.write(regs::RDBAH, 0);
            self.write(regs::RDLEN, count * 16);
            self.write(regs::RDH, 0);
            self.write(regs::RDT, tail);
            self.write(regs::RCTL, rctl);
        }

        /// The RX descriptor in slot `slot`, as the NIC left it.
        pub(crate) fn rx_desc(&self, slot: u64) -> RxDesc {
            let mut raw = [0u8; 16];
            self.mem
                .read(Hpa::new(RX_RING + 16 * slot), &mut raw)
                .unwrap();
            RxDesc::read_from_bytes(&raw).unwrap()
        }

        /// The first `len` bytes of RX buffer `slot`.
        pub(crate) fn rx_buf(&self, slot: u64, len: usize) -> Vec<u8> {
            let mut buf = vec![0u8; len];
            self.mem
                .read(Hpa::new(RX_BUFS + RX_STRIDE * slot), &mut buf)
                .unwrap();
            buf
        }
    }
}

/// A NIC behind an IOMMU, reaching memory only through the IOMMU's port.
pub(crate) mod iommu {
    use super::{Env, IRQ, MEM, Platform, run};
    use iovirt_core::{BitmapFrameAllocator, HostMemory, Hpa, Iova, Irq, TimerQueue};
    use iovirt_iommu::{ContextEntry, DmaRequest, DomainId, Iommu, IommuConfig, RequesterId};
    use iovirt_nic::{Nic, NicConfig};
    use iovirt_paging::{Levels, Mapping, PageTable, PagingConfig, PteFlags};

    /// The NIC's requester ID at the IOMMU.
    pub(crate) fn requester() -> RequesterId {
        RequesterId::new(0, 3, 0).unwrap()
    }

    /// A NIC behind an IOMMU, with the IOMMU's fault events, and what the
    /// NIC raised and sent (each call into it gets a fresh clock).
    pub(crate) struct IommuRig {
        pub(crate) mem: HostMemory,
        pub(crate) iommu: Iommu,
        pub(crate) faults: Vec<Irq>,
        pub(crate) nic: Nic,
        pub(crate) irqs: Vec<Irq>,
        pub(crate) wire: Vec<Vec<u8>>,
    }

    impl IommuRig {
        /// A NIC with address `mac` on 4 MiB of memory whose [`requester`]
        /// translates through domain 1, a four-level second-stage table (its
        /// frames allocated from `tables` up) that maps `mappings`.
        pub(crate) fn with_mappings(
            mac: [u8; 6],
            tables: Hpa,
            mappings: &[Mapping<Iova, Hpa>],
        ) -> IommuRig {
            IommuRig::with_config(mac, 4 * MEM, IommuConfig::default(), tables, 256, mappings)
        }

        /// A NIC with address `mac` on `mem` bytes of memory behind an
        /// IOMMU configured by `config`, whose [`requester`] translates
        /// through domain 1, a four-level second-stage table that maps
        /// `mappings` (in that order), its frames allocated from the
        /// `table_frames` frames from `tables` up.
        pub(crate) fn with_config(
            mac: [u8; 6],
            mem: u64,
            config: IommuConfig,
            tables: Hpa,
            table_frames: u64,
            mappings: &[Mapping<Iova, Hpa>],
        ) -> IommuRig {
            let mut mem = HostMemory::new(mem).unwrap();
            let mut frames = BitmapFrameAllocator::new(tables, table_frames);
            let mut stage2 = PageTable::<Iova, Hpa>::new(
                &mut mem,
                &mut frames,
                PagingConfig::second_stage(Levels::Four),
            )
            .unwrap();
            for &m in mappings {
                stage2.map(&mut mem, &mut frames, m).unwrap();
            }
            let mut iommu = Iommu::new(config).unwrap();
            iommu.set_domain(DomainId(1), stage2.root(), Levels::Four);
            iommu.set_context(
                requester(),
                ContextEntry::Translate {
                    domain: DomainId(1),
                    pasid_enabled: false,
                },
            );
            IommuRig {
                mem,
                iommu,
                faults: Vec::new(),
                nic: Nic::new(NicConfig { mac, irq: IRQ }),
                irqs: Vec::new(),
                wire: Vec::new(),
            }
        }

        /// [`IommuRig::with_mappings`] a ring page at `ring` the NIC may
        /// read but not write (its write-backs fault) and eight buffer pages
        /// from `bufs` it may read and write, both identity-mapped.
        pub(crate) fn with_read_only_ring(mac: [u8; 6], ring: u64, bufs: u64) -> IommuRig {
            let ring = Mapping::new(Iova::new(ring), Hpa::new(ring), 0x1000, PteFlags::empty());
            let bufs = Mapping::new(Iova::new(bufs), Hpa::new(bufs), 0x8000, PteFlags::RW);
            IommuRig::with_mappings(mac, Hpa::new(2 * MEM), &[ring, bufs])
        }
    }

    impl Platform for IommuRig {
        fn with_env<R>(&mut self, f: impl FnOnce(&mut Nic, &mut Env<'_>) -> R) -> R {
            let IommuRig {
                mem,
                iommu,
                faults,
                nic,
                irqs,
                wire,
            } = self;
            let mut port = iommu.port(mem, faults, DmaRequest::new(requester()));
            run(nic, &mut port, irqs, wire, &mut TimerQueue::new(), f)
        }
    }
}
