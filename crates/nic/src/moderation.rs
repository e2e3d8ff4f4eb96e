//! Interrupt moderation (8254x manual, "interrupt delays" and ITR):
//!
//! - RDTR (packet timer) delays RXT0 until no frame has arrived for
//!   RDTR x 1.024 us; RADV caps the delay since the first frame. RDTR = 0
//!   signals at once; writing RDTR with FPD (bit 31) flushes the delay.
//! - TIDV and TADV do the same for TXDW of descriptors with IDE set.
//! - ITR: interrupts no closer than ITR x 256 ns; a cause that becomes
//!   pending sooner is signalled when the interval has passed.
//!
//! The timers are the platform's ([`iovirt_core::Timers`]); the NIC
//! arms them and the platform calls [`Nic::on_timer`].

use iovirt_core::{DmaPort, InterruptSink, NetworkPort, SimDuration, SimTime, TimerToken, Timers};

use crate::nic::{Nic, NicEnv};
use crate::regs::Cause;

/// RX packet timer (RDTR).
pub const RX_PACKET_TIMER: TimerToken = TimerToken(0);
/// RX absolute timer (RADV).
pub const RX_ABSOLUTE_TIMER: TimerToken = TimerToken(1);
/// TX packet timer (TIDV).
pub const TX_PACKET_TIMER: TimerToken = TimerToken(2);
/// TX absolute timer (TADV).
pub const TX_ABSOLUTE_TIMER: TimerToken = TimerToken(3);
/// The ITR throttle's end.
pub const ITR_TIMER: TimerToken = TimerToken(4);

/// The delay registers count in 1.024 us.
const DELAY_UNIT_NS: u64 = 1024;
/// ITR counts in 256 ns.
const ITR_UNIT_NS: u64 = 256;

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Moderation {
    pub(crate) last_interrupt: Option<SimTime>,
    /// An interrupt waits for the ITR interval.
    pub(crate) throttled: bool,
    /// RXT0 waits for RDTR/RADV.
    rx_pending: bool,
    /// TXDW waits for TIDV/TADV.
    tx_pending: bool,
}

impl Moderation {
    /// How long an interrupt must wait under `itr`, or `None` to send now.
    pub(crate) fn throttle_wait(&self, itr: u32, now: SimTime) -> Option<SimDuration> {
        let interval = SimDuration::from_nanos(u64::from(itr & 0xffff) * ITR_UNIT_NS);
        let last = self.last_interrupt?;
        let ready = last + interval;
        (itr & 0xffff != 0 && now < ready).then(|| ready - now)
    }
}

impl Nic {
    /// Signals a frame stored: RXT0 now, or after the receive delay.
    pub(crate) fn rx_done<D, I, N, T>(&mut self, env: &mut NicEnv<'_, D, I, N, T>)
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        let [rdtr, radv, _, _] = self.delays;
        if rdtr == 0 {
            self.set_causes(Cause::RXT0, env);
            return;
        }
        self.stats.interrupts_delayed.inc();
        env.timers.schedule(
            SimDuration::from_nanos(u64::from(rdtr) * DELAY_UNIT_NS),
            RX_PACKET_TIMER,
        );
        if radv != 0 && !self.moderation.rx_pending {
            env.timers.schedule(
                SimDuration::from_nanos(u64::from(radv) * DELAY_UNIT_NS),
                RX_ABSOLUTE_TIMER,
            );
        }
        self.moderation.rx_pending = true;
    }

    /// Signals descriptors written back: TXDW now, or after the transmit
    /// delay when a descriptor asked for it (IDE).
    pub(crate) fn tx_done<D, I, N, T>(&mut self, delayed: bool, env: &mut NicEnv<'_, D, I, N, T>)
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        let [_, _, tidv, tadv] = self.delays;
        if !delayed || tidv == 0 {
            self.set_causes(Cause::TXDW, env);
            return;
        }
        self.stats.interrupts_delayed.inc();
        env.timers.schedule(
            SimDuration::from_nanos(u64::from(tidv) * DELAY_UNIT_NS),
            TX_PACKET_TIMER,
        );
        if tadv != 0 && !self.moderation.tx_pending {
            env.timers.schedule(
                SimDuration::from_nanos(u64::from(tadv) * DELAY_UNIT_NS),
                TX_ABSOLUTE_TIMER,
            );
        }
        self.moderation.tx_pending = true;
    }

    /// The receive delay ended (a timer, or FPD): RXT0 now.
    pub(crate) fn rx_delay_expired<D, I, N, T>(&mut self, env: &mut NicEnv<'_, D, I, N, T>)
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        env.timers.cancel(RX_PACKET_TIMER);
        env.timers.cancel(RX_ABSOLUTE_TIMER);
        if core::mem::take(&mut self.moderation.rx_pending) {
            self.set_causes(Cause::RXT0, env);
        }
    }

    /// A timer the NIC armed has expired: the platform calls this.
    pub fn on_timer<D, I, N, T>(&mut self, token: TimerToken, env: &mut NicEnv<'_, D, I, N, T>)
    where
        D: DmaPort + ?Sized,
        I: InterruptSink + ?Sized,
        N: NetworkPort + ?Sized,
        T: Timers + ?Sized,
    {
        match token {
            RX_PACKET_TIMER | RX_ABSOLUTE_TIMER => self.rx_delay_expired(env),
            TX_PACKET_TIMER | TX_ABSOLUTE_TIMER => {
                env.timers.cancel(TX_PACKET_TIMER);
                env.timers.cancel(TX_ABSOLUTE_TIMER);
                if core::mem::take(&mut self.moderation.tx_pending) {
                    self.set_causes(Cause::TXDW, env);
                }
            }
            ITR_TIMER => {
                self.moderation.throttled = false;
                if self.icr & self.ims != 0 {
                    self.assert_interrupt(env);
                }
            }
            // A token the NIC never armed: nothing to do.
            _ => {}
        }
    }
}
