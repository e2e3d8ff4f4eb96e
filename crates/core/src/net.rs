//! The network side of a NIC.

/// Where a NIC puts the frames it transmits.
///
/// Implemented by the platform's links and switches (which copy the frame
/// into their own queue, or drop it); called by NIC and HCA models. The
/// frame is an Ethernet frame without preamble and without FCS; the sender's
/// buffer may be reused as soon as the call returns, so a sender need not
/// allocate per frame.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait NetworkPort {
    /// Transmits `frame`.
    fn send(&mut self, frame: &[u8]);
}

/// Any `FnMut(&[u8])` is a network port: handy for tests and for platforms
/// that route frames with a closure.
impl<F: FnMut(&[u8]) + ?Sized> NetworkPort for F {
    fn send(&mut self, frame: &[u8]) {
        self(frame);
    }
}
