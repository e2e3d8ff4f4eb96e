//! BTH opcodes and what each one implies about the packet.

use core::fmt;

/// The transport service an opcode belongs to (its top three bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Reliable Connection.
    Rc,
    /// Unreliable Connection.
    Uc,
    /// Unreliable Datagram.
    Ud,
    /// RoCEv2 Congestion Notification Packet.
    Cnp,
}

/// The operation a packet is part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// SEND, with or without immediate data.
    Send,
    /// RDMA WRITE, with or without immediate data.
    RdmaWrite,
    /// RDMA READ request.
    RdmaReadRequest,
    /// RDMA READ response.
    RdmaReadResponse,
    /// ACKNOWLEDGE (ACK, NAK or RNR NAK).
    Acknowledge,
    /// ATOMIC ACKNOWLEDGE.
    AtomicAcknowledge,
}

/// Where a packet sits in its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Position {
    /// First packet of a message of several.
    First,
    /// Neither first nor last.
    Middle,
    /// Last packet of a message of several.
    Last,
    /// The whole message in one packet.
    Only,
}

/// A BTH opcode. Any byte is representable; [`Opcode::is_valid`] says
/// whether this codec knows it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Opcode(pub u8);

/// Offset of the UC opcodes above their RC counterparts.
const UC_BASE: u8 = 0x20;

#[allow(missing_docs)] // The constant names are the documentation.
impl Opcode {
    pub const RC_SEND_FIRST: Opcode = Opcode(0x00);
    pub const RC_SEND_MIDDLE: Opcode = Opcode(0x01);
    pub const RC_SEND_LAST: Opcode = Opcode(0x02);
    pub const RC_SEND_LAST_IMM: Opcode = Opcode(0x03);
    pub const RC_SEND_ONLY: Opcode = Opcode(0x04);
    pub const RC_SEND_ONLY_IMM: Opcode = Opcode(0x05);
    pub const RC_RDMA_WRITE_FIRST: Opcode = Opcode(0x06);
    pub const RC_RDMA_WRITE_MIDDLE: Opcode = Opcode(0x07);
    pub const RC_RDMA_WRITE_LAST: Opcode = Opcode(0x08);
    pub const RC_RDMA_WRITE_LAST_IMM: Opcode = Opcode(0x09);
    pub const RC_RDMA_WRITE_ONLY: Opcode = Opcode(0x0A);
    pub const RC_RDMA_WRITE_ONLY_IMM: Opcode = Opcode(0x0B);
    pub const RC_RDMA_READ_REQUEST: Opcode = Opcode(0x0C);
    pub const RC_RDMA_READ_RESPONSE_FIRST: Opcode = Opcode(0x0D);
    pub const RC_RDMA_READ_RESPONSE_MIDDLE: Opcode = Opcode(0x0E);
    pub const RC_RDMA_READ_RESPONSE_LAST: Opcode = Opcode(0x0F);
    pub const RC_RDMA_READ_RESPONSE_ONLY: Opcode = Opcode(0x10);
    pub const RC_ACKNOWLEDGE: Opcode = Opcode(0x11);
    pub const RC_ATOMIC_ACKNOWLEDGE: Opcode = Opcode(0x12);
    pub const UC_SEND_FIRST: Opcode = Opcode(UC_BASE);
    pub const UC_SEND_MIDDLE: Opcode = Opcode(UC_BASE + 0x01);
    pub const UC_SEND_LAST: Opcode = Opcode(UC_BASE + 0x02);
    pub const UC_SEND_LAST_IMM: Opcode = Opcode(UC_BASE + 0x03);
    pub const UC_SEND_ONLY: Opcode = Opcode(UC_BASE + 0x04);
    pub const UC_SEND_ONLY_IMM: Opcode = Opcode(UC_BASE + 0x05);
    pub const UC_RDMA_WRITE_FIRST: Opcode = Opcode(UC_BASE + 0x06);
    pub const UC_RDMA_WRITE_MIDDLE: Opcode = Opcode(UC_BASE + 0x07);
    pub const UC_RDMA_WRITE_LAST: Opcode = Opcode(UC_BASE + 0x08);
    pub const UC_RDMA_WRITE_LAST_IMM: Opcode = Opcode(UC_BASE + 0x09);
    pub const UC_RDMA_WRITE_ONLY: Opcode = Opcode(UC_BASE + 0x0A);
    pub const UC_RDMA_WRITE_ONLY_IMM: Opcode = Opcode(UC_BASE + 0x0B);
    pub const UD_SEND_ONLY: Opcode = Opcode(0x64);
    pub const UD_SEND_ONLY_IMM: Opcode = Opcode(0x65);
    pub const CNP: Opcode = Opcode(0x81);
}

impl Opcode {
    /// Every opcode this codec knows, in numeric order.
    pub const ALL: [Opcode; 34] = [
        Opcode::RC_SEND_FIRST,
        Opcode::RC_SEND_MIDDLE,
        Opcode::RC_SEND_LAST,
        Opcode::RC_SEND_LAST_IMM,
        Opcode::RC_SEND_ONLY,
        Opcode::RC_SEND_ONLY_IMM,
        Opcode::RC_RDMA_WRITE_FIRST,
        Opcode::RC_RDMA_WRITE_MIDDLE,
        Opcode::RC_RDMA_WRITE_LAST,
        Opcode::RC_RDMA_WRITE_LAST_IMM,
        Opcode::RC_RDMA_WRITE_ONLY,
        Opcode::RC_RDMA_WRITE_ONLY_IMM,
        Opcode::RC_RDMA_READ_REQUEST,
        Opcode::RC_RDMA_READ_RESPONSE_FIRST,
        Opcode::RC_RDMA_READ_RESPONSE_MIDDLE,
        Opcode::RC_RDMA_READ_RESPONSE_LAST,
        Opcode::RC_RDMA_READ_RESPONSE_ONLY,
        Opcode::RC_ACKNOWLEDGE,
        Opcode::RC_ATOMIC_ACKNOWLEDGE,
        Opcode::UC_SEND_FIRST,
        Opcode::UC_SEND_MIDDLE,
        Opcode::UC_SEND_LAST,
        Opcode::UC_SEND_LAST_IMM,
        Opcode::UC_SEND_ONLY,
        Opcode::UC_SEND_ONLY_IMM,
        Opcode::UC_RDMA_WRITE_FIRST,
        Opcode::UC_RDMA_WRITE_MIDDLE,
        Opcode::UC_RDMA_WRITE_LAST,
        Opcode::UC_RDMA_WRITE_LAST_IMM,
        Opcode::UC_RDMA_WRITE_ONLY,
        Opcode::UC_RDMA_WRITE_ONLY_IMM,
        Opcode::UD_SEND_ONLY,
        Opcode::UD_SEND_ONLY_IMM,
        Opcode::CNP,
    ];

    /// The raw byte.
    pub const fn raw(self) -> u8 {
        self.0
    }

    /// The transport service, or `None` for an unknown opcode.
    pub const fn transport(self) -> Option<Transport> {
        self.props().transport
    }

    /// Whether this codec knows the opcode.
    pub const fn is_valid(self) -> bool {
        self.transport().is_some()
    }

    /// The operation the packet belongs to; `None` for CNP and unknown opcodes.
    pub const fn operation(self) -> Option<Operation> {
        self.props().operation
    }

    /// The packet's place in its message; `None` for CNP and unknown opcodes.
    pub const fn position(self) -> Option<Position> {
        self.props().position
    }

    /// Whether an RDMA Extended Transport Header follows the BTH: the
    /// packets that start a WRITE and READ requests.
    pub const fn has_reth(self) -> bool {
        self.props().flags & RETH != 0
    }

    /// Whether an ACK Extended Transport Header follows: acknowledgements
    /// and the READ responses that are not in the middle.
    pub const fn has_aeth(self) -> bool {
        self.props().flags & AETH != 0
    }

    /// Whether a Datagram Extended Transport Header follows (UD only).
    pub const fn has_deth(self) -> bool {
        self.props().flags & DETH != 0
    }

    /// Whether four bytes of immediate data follow the other headers.
    pub const fn has_immdt(self) -> bool {
        self.props().flags & IMMDT != 0
    }

    /// Whether an Atomic ACK Extended Transport Header follows the AETH.
    pub const fn has_atomic_ack_eth(self) -> bool {
        self.props().flags & ATOMIC_ACK_ETH != 0
    }

    /// Whether the packet may carry payload. A CNP's 16 reserved bytes
    /// count as its payload.
    pub const fn has_payload(self) -> bool {
        self.props().flags & PAYLOAD != 0
    }

    /// Bytes of extended headers between the BTH and the payload.
    pub const fn ext_len(self) -> usize {
        self.props().ext_len as usize
    }

    /// This opcode's entry of [`PROPS`]: one load instead of re-deriving
    /// the property from the rules on every call (the packet path asks
    /// for several per packet).
    const fn props(self) -> Props {
        // A u8 is always below 256, so the rest is never empty.
        match PROPS.split_at_checked(self.0 as usize) {
            Some((_, [p, ..])) => *p,
            _ => Props::UNKNOWN,
        }
    }

    /// The hardware name, e.g. `RC_RDMA_WRITE_FIRST`, or `None` if unknown.
    pub fn name(self) -> Option<&'static str> {
        const NAMES: [&str; 34] = [
            "RC_SEND_FIRST",
            "RC_SEND_MIDDLE",
            "RC_SEND_LAST",
            "RC_SEND_LAST_IMM",
            "RC_SEND_ONLY",
            "RC_SEND_ONLY_IMM",
            "RC_RDMA_WRITE_FIRST",
            "RC_RDMA_WRITE_MIDDLE",
            "RC_RDMA_WRITE_LAST",
            "RC_RDMA_WRITE_LAST_IMM",
            "RC_RDMA_WRITE_ONLY",
            "RC_RDMA_WRITE_ONLY_IMM",
            "RC_RDMA_READ_REQUEST",
            "RC_RDMA_READ_RESPONSE_FIRST",
            "RC_RDMA_READ_RESPONSE_MIDDLE",
            "RC_RDMA_READ_RESPONSE_LAST",
            "RC_RDMA_READ_RESPONSE_ONLY",
            "RC_ACKNOWLEDGE",
            "RC_ATOMIC_ACKNOWLEDGE",
            "UC_SEND_FIRST",
            "UC_SEND_MIDDLE",
            "UC_SEND_LAST",
            "UC_SEND_LAST_IMM",
            "UC_SEND_ONLY",
            "UC_SEND_ONLY_IMM",
            "UC_RDMA_WRITE_FIRST",
            "UC_RDMA_WRITE_MIDDLE",
            "UC_RDMA_WRITE_LAST",
            "UC_RDMA_WRITE_LAST_IMM",
            "UC_RDMA_WRITE_ONLY",
            "UC_RDMA_WRITE_ONLY_IMM",
            "UD_SEND_ONLY",
            "UD_SEND_ONLY_IMM",
            "CNP",
        ];
        let i = Opcode::ALL.iter().position(|&o| o == self)?;
        NAMES.get(i).copied()
    }
}

/// Everything an opcode implies, as one entry of [`PROPS`].
#[derive(Clone, Copy)]
struct Props {
    transport: Option<Transport>,
    operation: Option<Operation>,
    position: Option<Position>,
    /// [`RETH`], [`AETH`], [`DETH`], [`IMMDT`], [`ATOMIC_ACK_ETH`], [`PAYLOAD`].
    flags: u8,
    ext_len: u8,
}

const RETH: u8 = 1 << 0;
const AETH: u8 = 1 << 1;
const DETH: u8 = 1 << 2;
const IMMDT: u8 = 1 << 3;
const ATOMIC_ACK_ETH: u8 = 1 << 4;
const PAYLOAD: u8 = 1 << 5;

impl Props {
    const UNKNOWN: Props = Props {
        transport: None,
        operation: None,
        position: None,
        flags: 0,
        ext_len: 0,
    };

    /// The entry of `op`, from the rules.
    const fn of(op: Opcode) -> Props {
        let mut flags = 0;
        if op.rule_has_reth() {
            flags |= RETH;
        }
        if op.rule_has_aeth() {
            flags |= AETH;
        }
        if op.rule_has_deth() {
            flags |= DETH;
        }
        if op.rule_has_immdt() {
            flags |= IMMDT;
        }
        if op.rule_has_atomic_ack_eth() {
            flags |= ATOMIC_ACK_ETH;
        }
        if op.rule_has_payload() {
            flags |= PAYLOAD;
        }
        Props {
            transport: op.rule_transport(),
            operation: op.rule_operation(),
            position: op.rule_position(),
            flags,
            // At most RETH + ImmDt, 20 bytes.
            ext_len: op.rule_ext_len() as u8,
        }
    }
}

/// The properties of every byte, worked out at compile time from the
/// rules below.
const PROPS: [Props; 256] = {
    let mut table = [Props::UNKNOWN; 256];
    let mut i = 0;
    while i < 256 {
        if let Some((_, [slot, ..])) = table.split_at_mut_checked(i) {
            *slot = Props::of(Opcode(i as u8));
        }
        i += 1;
    }
    table
};

/// The rules [`PROPS`] is built from, as the specification states them.
impl Opcode {
    /// The transport service, or `None` for an unknown opcode.
    const fn rule_transport(self) -> Option<Transport> {
        match self.0 {
            0x00..=0x12 => Some(Transport::Rc),
            0x20..=0x2B => Some(Transport::Uc),
            0x64 | 0x65 => Some(Transport::Ud),
            0x81 => Some(Transport::Cnp),
            _ => None,
        }
    }

    /// The operation code with the transport bits removed, for the
    /// connected services and UD; `None` for CNP and unknown opcodes.
    const fn rule_op_code(self) -> Option<u8> {
        match self.rule_transport() {
            Some(Transport::Rc) => Some(self.0),
            Some(Transport::Uc) => Some(self.0 - UC_BASE),
            // UD's SEND ONLY (0x04 below the UD base of 0x60) and its
            // immediate variant.
            Some(Transport::Ud) => Some(self.0 - 0x60),
            Some(Transport::Cnp) | None => None,
        }
    }

    /// The operation the packet belongs to; `None` for CNP and unknown opcodes.
    const fn rule_operation(self) -> Option<Operation> {
        match self.rule_op_code() {
            Some(0x00..=0x05) => Some(Operation::Send),
            Some(0x06..=0x0B) => Some(Operation::RdmaWrite),
            Some(0x0C) => Some(Operation::RdmaReadRequest),
            Some(0x0D..=0x10) => Some(Operation::RdmaReadResponse),
            Some(0x11) => Some(Operation::Acknowledge),
            Some(0x12) => Some(Operation::AtomicAcknowledge),
            _ => None,
        }
    }

    /// The packet's place in its message; `None` for CNP and unknown opcodes.
    const fn rule_position(self) -> Option<Position> {
        match self.rule_op_code() {
            Some(0x00 | 0x06 | 0x0D) => Some(Position::First),
            Some(0x01 | 0x07 | 0x0E) => Some(Position::Middle),
            Some(0x02 | 0x03 | 0x08 | 0x09 | 0x0F) => Some(Position::Last),
            Some(0x04 | 0x05 | 0x0A | 0x0B | 0x0C | 0x10 | 0x11 | 0x12) => Some(Position::Only),
            _ => None,
        }
    }

    /// Whether an RDMA Extended Transport Header follows the BTH: the
    /// packets that start a WRITE and READ requests.
    const fn rule_has_reth(self) -> bool {
        matches!(self.rule_op_code(), Some(0x06 | 0x0A | 0x0B | 0x0C))
    }

    /// Whether an ACK Extended Transport Header follows: acknowledgements
    /// and the READ responses that are not in the middle.
    const fn rule_has_aeth(self) -> bool {
        matches!(self.rule_op_code(), Some(0x0D | 0x0F | 0x10 | 0x11 | 0x12))
    }

    /// Whether a Datagram Extended Transport Header follows (UD only).
    const fn rule_has_deth(self) -> bool {
        matches!(self.rule_transport(), Some(Transport::Ud))
    }

    /// Whether four bytes of immediate data follow the other headers.
    const fn rule_has_immdt(self) -> bool {
        matches!(self.rule_op_code(), Some(0x03 | 0x05 | 0x09 | 0x0B))
    }

    /// Whether an Atomic ACK Extended Transport Header follows the AETH.
    const fn rule_has_atomic_ack_eth(self) -> bool {
        matches!(self.rule_op_code(), Some(0x12))
    }

    /// Whether the packet may carry payload. A CNP's 16 reserved bytes
    /// count as its payload.
    const fn rule_has_payload(self) -> bool {
        match self.rule_operation() {
            Some(Operation::Send | Operation::RdmaWrite | Operation::RdmaReadResponse) => true,
            Some(_) => false,
            None => matches!(self.rule_transport(), Some(Transport::Cnp)),
        }
    }

    /// Bytes of extended headers between the BTH and the payload.
    const fn rule_ext_len(self) -> usize {
        let mut len = 0;
        if self.rule_has_reth() {
            len += super::RETH_LEN;
        }
        if self.rule_has_deth() {
            len += super::DETH_LEN;
        }
        if self.rule_has_aeth() {
            len += super::AETH_LEN;
        }
        if self.rule_has_atomic_ack_eth() {
            len += super::ATOMIC_ACK_ETH_LEN;
        }
        if self.rule_has_immdt() {
            len += super::IMMDT_LEN;
        }
        len
    }
}

impl fmt::Debug for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}"),
            None => write!(f, "Opcode({:#04x})", self.0),
        }
    }
}

impl From<u8> for Opcode {
    fn from(raw: u8) -> Self {
        Opcode(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_the_listed_opcodes_are_valid() {
        let valid: Vec<Opcode> = (0..=255u8).map(Opcode).filter(|o| o.is_valid()).collect();
        assert_eq!(valid, Opcode::ALL.to_vec());
        assert!(!Opcode(0x13).is_valid(), "atomic requests are not modelled");
        assert!(!Opcode(0x2C).is_valid(), "UC has no READ");
        assert!(!Opcode(0x80).is_valid());
        assert_eq!(Opcode(0x13).operation(), None);
        assert_eq!(Opcode(0x13).ext_len(), 0);
        assert!(!Opcode(0x13).has_payload());
        assert_eq!(format!("{:?}", Opcode(0x13)), "Opcode(0x13)");
    }

    #[test]
    fn classification_of_each_kind() {
        let o = Opcode::RC_RDMA_WRITE_FIRST;
        assert_eq!(o.transport(), Some(Transport::Rc));
        assert_eq!(o.operation(), Some(Operation::RdmaWrite));
        assert_eq!(o.position(), Some(Position::First));
        assert!(o.has_reth() && !o.has_aeth() && !o.has_immdt() && o.has_payload());
        assert_eq!(o.ext_len(), 16);

        let o = Opcode::UC_RDMA_WRITE_ONLY_IMM;
        assert_eq!(o.raw(), 0x2B);
        assert_eq!(o.transport(), Some(Transport::Uc));
        assert_eq!(o.position(), Some(Position::Only));
        assert!(o.has_reth() && o.has_immdt());
        assert_eq!(o.ext_len(), 20);

        let o = Opcode::RC_RDMA_READ_RESPONSE_MIDDLE;
        assert_eq!(o.operation(), Some(Operation::RdmaReadResponse));
        assert_eq!(o.position(), Some(Position::Middle));
        assert!(!o.has_aeth());
        assert!(Opcode::RC_RDMA_READ_RESPONSE_LAST.has_aeth());

        let o = Opcode::RC_RDMA_READ_REQUEST;
        assert!(o.has_reth() && !o.has_payload());
        assert_eq!(o.position(), Some(Position::Only));

        let o = Opcode::RC_ACKNOWLEDGE;
        assert_eq!(o.operation(), Some(Operation::Acknowledge));
        assert_eq!(o.ext_len(), 4);
        assert!(!o.has_payload());

        let o = Opcode::RC_ATOMIC_ACKNOWLEDGE;
        assert_eq!(o.operation(), Some(Operation::AtomicAcknowledge));
        assert_eq!(o.ext_len(), 12);

        let o = Opcode::UD_SEND_ONLY_IMM;
        assert_eq!(o.transport(), Some(Transport::Ud));
        assert_eq!(o.operation(), Some(Operation::Send));
        assert_eq!(o.position(), Some(Position::Only));
        assert!(o.has_deth() && o.has_immdt() && !o.has_reth());
        assert_eq!(o.ext_len(), 12);
        assert_eq!(Opcode::UD_SEND_ONLY.ext_len(), 8);

        let o = Opcode::CNP;
        assert_eq!(o.transport(), Some(Transport::Cnp));
        assert_eq!((o.operation(), o.position()), (None, None));
        assert!(o.has_payload());
        assert_eq!(o.ext_len(), 0);
        assert_eq!(format!("{o:?}"), "CNP");
    }

    #[test]
    fn the_table_answers_as_the_rules_do() {
        for raw in 0..=255u8 {
            let o = Opcode(raw);
            assert_eq!(o.transport(), o.rule_transport());
            assert_eq!(o.operation(), o.rule_operation());
            assert_eq!(o.position(), o.rule_position());
            assert_eq!(o.has_reth(), o.rule_has_reth());
            assert_eq!(o.has_aeth(), o.rule_has_aeth());
            assert_eq!(o.has_deth(), o.rule_has_deth());
            assert_eq!(o.has_immdt(), o.rule_has_immdt());
            assert_eq!(o.has_atomic_ack_eth(), o.rule_has_atomic_ack_eth());
            assert_eq!(o.has_payload(), o.rule_has_payload());
            assert_eq!(o.ext_len(), o.rule_ext_len());
        }
    }

    #[test]
    fn uc_mirrors_rc_for_send_and_write() {
        for raw in 0x00..=0x0Bu8 {
            let rc = Opcode(raw);
            let uc = Opcode(raw + 0x20);
            assert_eq!(rc.operation(), uc.operation());
            assert_eq!(rc.position(), uc.position());
            assert_eq!(rc.ext_len(), uc.ext_len());
            assert_eq!(
                uc.name().map(|n| n.replace("UC_", "RC_")),
                rc.name().map(String::from)
            );
        }
    }
}
