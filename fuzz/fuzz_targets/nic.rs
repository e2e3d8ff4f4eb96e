//! The e1000-style NIC under a hostile guest and a hostile wire: arbitrary
//! sequences of MMIO reads and writes (any offset, width and value) and
//! received frames (up to 20 KiB), a paravirtual backend's claims,
//! placements and commits of arbitrary lengths (on the slot it claimed, or
//! on one with forged fields), and a transmit backend taking the TX ring
//! and giving it back, peeking, stepping and completing (the slot it
//! peeked, or one with forged fields), over 256 KiB of memory whose
//! descriptor rings and buffers come from the input, without an IOMMU.
//!
//! Nothing may panic or hang, and whatever the input: the NIC's counters
//! never go down, every frame it sends is at most 16 KiB, the frames the
//! network saw are the frames it counted (less those a transmit backend
//! completed), reads return no more bits than their width, and only the
//! NIC's own interrupt is raised. A claimed slot names a non-null buffer at
//! least as long as the claim; a commit that stores a frame stores it in
//! one descriptor and counts it once, and one refused changes no counter
//! and raises nothing. A peeked slot is the descriptor at TDH; a step
//! consumes at most one descriptor; a completion retires one whole frame of
//! 1 to 16 KiB bytes at TDH, counted once, and one refused changes no
//! counter, no byte of memory, and raises nothing; a backend operation on a
//! valid ring leaves TDH inside it.

#![no_main]

use arbitrary::Arbitrary;
use iovirt_core::{
    DmaPort, HostMemory, Hpa, InterruptSink, Iova, Irq, MmioDevice, NetworkPort, PassthroughDma,
    PhysMemory, Timers, Width,
};
use iovirt_nic::{
    BufferTouch, MAX_FRAME, Nic, NicConfig, NicEnv, NicStats, Prefetchers, RxOutcome, RxSlot,
    TxSlot, regs,
};
use libfuzzer_sys::fuzz_target;

/// Memory the rings and buffers live in.
const MEM: u64 = 256 << 10;
/// Operations per input.
const MAX_OPS: usize = 128;
/// Longest frame offered to the receiver: beyond the 16 KiB it accepts.
const MAX_RX_FRAME: usize = 20 << 10;
/// Where the optional setup puts the rings.
const TX_RING: u64 = 0x1000;
const RX_RING: u64 = 0x3000;
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const IRQ: Irq = Irq(9);

/// Offsets beside `regs::IMPLEMENTED` worth trying: another receive-address
/// entry and two offsets the model does not implement.
const MORE_OFFSETS: [u64; 3] = [regs::RAL0 + 8, 0x0018, 0x5800];

#[derive(Debug, Arbitrary)]
struct Input {
    /// Which of seed 000's device-side prefetchers run (bits).
    prefetchers: u8,
    /// The TX ring is the transmit backend's from the start, so that a
    /// peek and a completion need no operation before them.
    tx_backend: bool,
    /// Program sane rings before the operations.
    setup: Option<Setup>,
    /// Bytes written into memory before anything runs.
    fills: Vec<Fill>,
    /// Descriptors written into the setup's rings.
    descriptors: Vec<Desc>,
    ops: Vec<Op>,
}

#[derive(Debug, Arbitrary)]
struct Setup {
    /// Ring lengths in units of 8 descriptors.
    tx_blocks: u8,
    rx_blocks: u8,
    rdt: u8,
    /// TDT, written after TCTL: with the transmit backend on, descriptors
    /// from TDH 0 handed over for it to peek at.
    tdt: u8,
    rctl: u32,
    tctl: u32,
    ims: u32,
}

#[derive(Debug, Arbitrary)]
struct Fill {
    at: u32,
    bytes: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
struct Desc {
    rx: bool,
    slot: u8,
    addr: Addr,
    length: u16,
    /// Bytes 10 to 15: CSO, CMD, STA, CSS, special (TX); the rest (RX).
    tail: [u8; 6],
}

#[derive(Debug, Arbitrary)]
enum Addr {
    /// In memory or just past it.
    Near(u32),
    Null,
    Raw(u64),
}

impl Addr {
    fn get(&self) -> u64 {
        match *self {
            Addr::Near(a) => u64::from(a) % (MEM + 0x1000),
            Addr::Null => 0,
            Addr::Raw(a) => a,
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Offset {
    Known(u8),
    /// A known register plus a small misalignment.
    Nudged(u8, u8),
    InBar(u32),
    Raw(u64),
}

impl Offset {
    fn get(&self) -> u64 {
        let known = |i: u8| {
            let all = || regs::IMPLEMENTED.iter().chain(&MORE_OFFSETS);
            let n = usize::from(i) % all().count();
            all().nth(n).copied().unwrap_or(regs::CTRL)
        };
        match *self {
            Offset::Known(i) => known(i),
            Offset::Nudged(i, d) => known(i) + u64::from(d % 8),
            Offset::InBar(o) => u64::from(o) % regs::BAR_SIZE,
            Offset::Raw(o) => o,
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Dst {
    Own,
    Broadcast,
    Multicast(u8),
    Raw([u8; 6]),
}

#[derive(Debug, Arbitrary)]
enum Op {
    Read {
        offset: Offset,
        width: u8,
    },
    Write {
        offset: Offset,
        width: u8,
        value: u64,
    },
    /// A doorbell: a small value into a head or tail register.
    Doorbell {
        which: u8,
        value: u8,
    },
    Receive {
        dst: Dst,
        len: u16,
        head: Vec<u8>,
        fill: u8,
    },
    /// A paravirtual backend claims the buffer at RDH for a frame.
    Claim {
        dst: Dst,
        len: u16,
    },
    /// The backend writes `len` bytes of `fill` into the claimed buffer.
    Place {
        len: u16,
        fill: u8,
    },
    /// The backend commits `len` bytes (by default the length it claimed)
    /// in the claimed slot, or in a copy whose fields it forged.
    Commit {
        len: Option<u16>,
        forge: Option<Forge>,
    },
    /// The hypervisor gives the TX ring to its transmit backend, or back.
    SetTxBackend {
        on: bool,
    },
    /// The transmit backend looks at the descriptor at TDH.
    TxPeek,
    /// The transmit backend has the engine process one descriptor.
    TxStep,
    /// The transmit backend retires the slot it peeked (just now when
    /// `fresh`, else whenever it last did), or a copy whose fields it forged.
    TxComplete {
        fresh: bool,
        forge: Option<TxForge>,
    },
}

/// A transmit backend lying about its slot.
#[derive(Debug, Arbitrary)]
struct TxForge {
    index: u8,
    addr: u64,
    length: u16,
    cmd: u8,
    /// EOP, RS, NOP and DEXT in bits 0 to 3.
    flags: u8,
}

impl TxForge {
    fn apply(&self, slot: &mut TxSlot) {
        slot.index = u32::from(self.index);
        slot.addr = Iova::new(self.addr);
        slot.length = self.length;
        slot.cmd = self.cmd;
        slot.eop = self.flags & 1 != 0;
        slot.rs = self.flags & 2 != 0;
        slot.nop = self.flags & 4 != 0;
        slot.dext = self.flags & 8 != 0;
    }
}

/// A backend lying about its slot.
#[derive(Debug, Arbitrary)]
struct Forge {
    index: u8,
    buffer_size: u16,
}

fn width(w: u8) -> Width {
    match w % 8 {
        0 => Width::U8,
        1 => Width::U16,
        2 => Width::U64,
        _ => Width::U32,
    }
}

impl Dst {
    fn get(&self) -> [u8; 6] {
        match *self {
            Dst::Own => MAC,
            Dst::Broadcast => [0xff; 6],
            Dst::Multicast(g) => [0x01, 0x00, 0x5e, 0x00, g >> 4, g],
            Dst::Raw(a) => a,
        }
    }
}

/// A frame length from the input: up to [`MAX_RX_FRAME`].
fn frame_len(len: u16) -> usize {
    usize::from(len) % (MAX_RX_FRAME + 1)
}

fn frame(dst: &Dst, len: u16, head: &[u8], fill: u8) -> Vec<u8> {
    let mut f = vec![fill; frame_len(len)];
    for (b, s) in f.iter_mut().zip(dst.get().iter().chain(head)) {
        *b = *s;
    }
    f
}

/// Where `counters` puts the counters checked one by one.
const TX_FRAMES: usize = 0;
const TX_BYTES: usize = 1;
const TX_DESCRIPTORS: usize = 2;
const RX_FRAMES: usize = 3;
const RX_BACKEND_PLACED: usize = 12;
const TX_BACKEND_COMPLETED: usize = 29;

/// The counters, to check none goes down.
fn counters(s: &NicStats) -> [u64; 30] {
    [
        s.tx_frames.get(),
        s.tx_bytes.get(),
        s.tx_descriptors.get(),
        s.rx_frames.get(),
        s.rx_bytes.get(),
        s.rx_descriptors.get(),
        s.rx_no_descriptor.get(),
        s.rx_filtered.get(),
        s.rx_disabled.get(),
        s.rx_oversize.get(),
        s.tx_oversize.get(),
        s.rx_null_buffers.get(),
        s.rx_backend_placed.get(),
        s.rx_backend_too_long.get(),
        s.dma_faults.get(),
        s.ring_errors.get(),
        s.tx_unsupported.get(),
        s.nop_commands.get(),
        s.interrupts.get(),
        s.unknown_register_accesses.get(),
        s.critical_iotlb_hits.get(),
        s.critical_iotlb_misses.get(),
        s.critical_table_reads.get(),
        s.rx_critical_iotlb_misses.get(),
        s.tx_critical_iotlb_misses.get(),
        s.prefetches.get(),
        s.prefetch_faults.get(),
        s.prefetch_iotlb_misses.get(),
        s.prefetch_table_reads.get(),
        s.tx_backend_completed.get(),
    ]
}

/// The TX ring's descriptor count, TDH and TDT, and whether they make a
/// valid ring (reading them has no side effect).
fn tx_ring<D, I, N, T>(nic: &mut Nic, env: &mut NicEnv<'_, D, I, N, T>) -> (u64, u64, u64, bool)
where
    D: DmaPort + ?Sized,
    I: InterruptSink + ?Sized,
    N: NetworkPort + ?Sized,
    T: Timers + ?Sized,
{
    let mut read = |reg| nic.mmio_read(reg, Width::U32, env);
    let count = (read(regs::TDLEN) & !0x7f) / 16;
    let (head, tail) = (read(regs::TDH), read(regs::TDT));
    (
        count,
        head,
        tail,
        count != 0 && head < count && tail < count,
    )
}

/// The transmit backend's peek, checked: the descriptor at TDH of a valid
/// ring.
fn peek<D, I, N, T>(nic: &mut Nic, env: &mut NicEnv<'_, D, I, N, T>) -> Option<TxSlot>
where
    D: DmaPort + ?Sized,
    I: InterruptSink + ?Sized,
    N: NetworkPort + ?Sized,
    T: Timers + ?Sized,
{
    let (_, head, _, valid) = tx_ring(nic, env);
    let s = nic.tx_peek(env).ok()?;
    assert!(valid, "peeked {s:?} on an invalid ring");
    assert_eq!(u64::from(s.index), head);
    assert!(!s.nop || s.dext, "a NOP is extended: {s:?}");
    Some(s)
}

/// All of memory, to check a refused completion wrote nothing.
fn snapshot(mem: &HostMemory) -> Vec<u8> {
    let mut bytes = vec![0u8; MEM as usize];
    assert!(mem.read(Hpa::new(0), &mut bytes).is_ok());
    bytes
}

fuzz_target!(|input: Input| {
    let Ok(mut mem) = HostMemory::new(MEM) else {
        return;
    };
    for fill in input.fills.iter().take(64) {
        let at = u64::from(fill.at) % MEM;
        let room = (MEM - at) as usize;
        let bytes = &fill.bytes[..fill.bytes.len().min(room)];
        assert!(mem.write(Hpa::new(at), bytes).is_ok());
    }
    for d in input.descriptors.iter().take(256) {
        let ring = if d.rx { RX_RING } else { TX_RING };
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&d.addr.get().to_le_bytes());
        raw[8..10].copy_from_slice(&d.length.to_le_bytes());
        raw[10..].copy_from_slice(&d.tail);
        // Rings of up to 32 descriptors (512 bytes) each.
        let at = ring + 16 * u64::from(d.slot % 32);
        assert!(mem.write(Hpa::new(at), &raw).is_ok());
    }

    let mut nic = Nic::new(NicConfig { mac: MAC, irq: IRQ });
    let p = input.prefetchers;
    nic.set_prefetchers(Prefetchers {
        rx_descriptor: p & 1 != 0,
        rx_buffer: match (p >> 1) & 3 {
            1 => Some(BufferTouch::Read),
            2 => Some(BufferTouch::NullWrite),
            _ => None,
        },
        tx_descriptor: p & 8 != 0,
        tx_buffer: p & 16 != 0,
    });
    nic.set_tx_backend(input.tx_backend);

    let mut setup = Vec::new();
    if let Some(s) = &input.setup {
        let tx_len = 128 * u32::from(s.tx_blocks % 5);
        let rx_len = 128 * u32::from(s.rx_blocks % 5);
        setup.extend([
            (regs::TDBAL, u64::from(TX_RING as u32)),
            (regs::TDLEN, u64::from(tx_len)),
            (regs::RDBAL, u64::from(RX_RING as u32)),
            (regs::RDLEN, u64::from(rx_len)),
            (regs::RDT, u64::from(s.rdt % 40)),
            (regs::IMS, u64::from(s.ims)),
            (regs::RCTL, u64::from(s.rctl | 2)),
            (regs::TCTL, u64::from(s.tctl | 2)),
            (regs::TDT, u64::from(s.tdt % 40)),
        ]);
    }

    let mut sent = 0u64;
    let mut irqs: Vec<Irq> = Vec::new();
    // The backend's last claimed slot, kept across operations (and across
    // whatever the guest does to its ring in between).
    let mut slot: Option<(RxSlot, usize)> = None;
    // The transmit backend's last peeked slot, kept likewise.
    let mut tx_slot: Option<TxSlot> = None;
    let mut before = counters(nic.stats());
    let setup_ops = setup.into_iter().map(|(offset, value)| Op::Write {
        offset: Offset::Raw(offset),
        width: 3,
        value,
    });
    for op in setup_ops.chain(input.ops.into_iter().take(MAX_OPS)) {
        let sent_before = sent;
        // A commit refused (it must have changed nothing), or one that stored.
        let (mut refused, mut committed) = (false, false);
        // A completion refused (it must have written nothing), or done.
        let (mut tx_refused, mut tx_completed) = (false, false);
        let memory = matches!(op, Op::TxComplete { .. }).then(|| snapshot(&mem));
        {
            let mut dma = PassthroughDma::new(&mut mem);
            let mut net = |f: &[u8]| {
                assert!(f.len() <= MAX_FRAME, "sent a frame of {} bytes", f.len());
                sent += 1;
            };
            let mut timers = iovirt_core::TimerQueue::new();
            let mut env = NicEnv {
                timers: &mut timers,
                dma: &mut dma,
                irq: &mut irqs,
                net: &mut net,
            };
            match &op {
                Op::Read { offset, width: w } => {
                    let w = width(*w);
                    let v = nic.mmio_read(offset.get(), w, &mut env);
                    assert!(v <= w.mask(), "a {w:?} read returned {v:#x}");
                }
                Op::Write {
                    offset,
                    width: w,
                    value,
                } => nic.mmio_write(offset.get(), width(*w), *value, &mut env),
                Op::Doorbell { which, value } => {
                    let reg = [regs::TDT, regs::RDT, regs::TDH, regs::RDH][usize::from(which % 4)];
                    nic.mmio_write(reg, Width::U32, u64::from(*value % 40), &mut env);
                }
                Op::Receive {
                    dst,
                    len,
                    head,
                    fill,
                } => {
                    let f = frame(dst, *len, head, *fill);
                    nic.receive(&f, &mut env);
                }
                Op::Claim { dst, len } => {
                    let len = frame_len(*len);
                    if let Ok(s) = nic.rx_claim(dst.get(), len, &mut env) {
                        assert_ne!(s.buffer.raw(), 0, "claimed a null buffer");
                        assert!(s.buffer_size >= len, "{len} bytes claimed in {s:?}");
                        slot = Some((s, len));
                    }
                }
                Op::Place { len, fill } => {
                    if let Some((s, _)) = &slot {
                        let bytes = vec![*fill; usize::from(*len).min(s.buffer_size)];
                        // The backend's own write: it may fault, as its buffer
                        // address came from the guest.
                        let _ = env.dma.dma_write(s.buffer, &bytes);
                    }
                }
                Op::Commit { len, forge } => {
                    if let Some((claimed, claimed_len)) = &slot {
                        let mut s = *claimed;
                        if let Some(f) = forge {
                            s.index = u32::from(f.index);
                            s.buffer_size = usize::from(f.buffer_size);
                        }
                        let len = len.map_or(*claimed_len, frame_len);
                        match nic.rx_commit(&s, len, &mut env) {
                            RxOutcome::Stored { descriptors, .. } => {
                                assert_eq!(descriptors, 1);
                                assert!(len <= s.buffer_size && len <= MAX_FRAME);
                                committed = true;
                            }
                            RxOutcome::DmaFault => {}
                            _ => refused = true,
                        }
                    }
                }
                Op::SetTxBackend { on } => {
                    nic.set_tx_backend(*on);
                    assert_eq!(nic.tx_backend(), *on);
                }
                Op::TxPeek | Op::TxStep | Op::TxComplete { .. } => {
                    let (count, head, _, valid) = tx_ring(&mut nic, &mut env);
                    let descriptors = nic.stats().tx_descriptors.get();
                    match &op {
                        Op::TxPeek => tx_slot = peek(&mut nic, &mut env).or(tx_slot),
                        Op::TxStep => {
                            let stepped = nic.tx_step(&mut env);
                            let consumed = nic.stats().tx_descriptors.get() - descriptors;
                            assert_eq!(consumed, u64::from(stepped));
                        }
                        Op::TxComplete { fresh, forge } => {
                            if *fresh {
                                tx_slot = peek(&mut nic, &mut env).or(tx_slot);
                            }
                            if let Some(peeked) = &tx_slot {
                                let mut s = *peeked;
                                if let Some(f) = forge {
                                    f.apply(&mut s);
                                }
                                // A fresh peek may have counted a bad ring or
                                // a fault: the refusal's baseline is now.
                                let pre = counters(nic.stats());
                                if nic.tx_complete(&s, &mut env) {
                                    assert!(nic.tx_backend() && valid);
                                    assert!(s.eop && !s.nop && !s.dext, "completed {s:?}");
                                    let len = usize::from(s.length);
                                    assert!((1..=MAX_FRAME).contains(&len), "completed {s:?}");
                                    assert_eq!(u64::from(s.index), head);
                                    let (_, now, _, _) = tx_ring(&mut nic, &mut env);
                                    assert_eq!(now, (head + 1) % count, "TDH after {s:?}");
                                    tx_completed = true;
                                } else {
                                    let now = counters(nic.stats());
                                    assert_eq!(now, pre, "a refused completion changed a counter");
                                    tx_refused = true;
                                }
                            }
                        }
                        _ => {}
                    }
                    let (_, now, _, _) = tx_ring(&mut nic, &mut env);
                    assert!(!valid || now < count, "TDH {now} left a ring of {count}");
                }
            }
        }
        let after = counters(nic.stats());
        for (i, (a, b)) in after.iter().zip(&before).enumerate() {
            assert!(a >= b, "counter {i} went down: {b} -> {a} after {op:?}");
        }
        // The frames the network saw are the frames counted, but for those a
        // transmit backend delivered itself.
        let completed = after[TX_BACKEND_COMPLETED] - before[TX_BACKEND_COMPLETED];
        assert_eq!(completed, u64::from(tx_completed));
        assert_eq!(
            after[TX_FRAMES] - before[TX_FRAMES],
            sent - sent_before + completed
        );
        if tx_completed {
            assert_eq!(after[TX_DESCRIPTORS] - before[TX_DESCRIPTORS], 1);
            let bytes = after[TX_BYTES] - before[TX_BYTES];
            assert!(
                (1..=MAX_FRAME as u64).contains(&bytes),
                "counted {bytes} bytes"
            );
        }
        if tx_refused {
            // Nothing else in the operation raises one: a peek never does.
            assert!(irqs.is_empty(), "a refused completion raised an interrupt");
            let unchanged = memory.as_ref().is_none_or(|m| *m == snapshot(&mem));
            assert!(unchanged, "a refused completion wrote memory");
        }
        if refused {
            assert_eq!(after, before, "a refused commit changed a counter");
            assert!(irqs.is_empty(), "a refused commit raised an interrupt");
        }
        // Only a commit that stored counts a placed frame, and as one frame.
        let placed = after[RX_BACKEND_PLACED] - before[RX_BACKEND_PLACED];
        assert_eq!(placed, u64::from(committed));
        if committed {
            assert_eq!(after[RX_FRAMES] - before[RX_FRAMES], 1);
        }
        before = after;
        assert!(irqs.iter().all(|&i| i == IRQ));
        irqs.clear();
    }
});
