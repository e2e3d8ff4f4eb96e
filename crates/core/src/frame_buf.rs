//! Reusable frame storage: a buffer to assemble one frame from pieces,
//! and a queue of whole frames.

/// A byte buffer that a frame is assembled into, piece by piece, and that is
/// reused for the next frame without being zeroed again.
///
/// A `Vec<u8>` cleared and grown with `resize` zero-fills every piece before
/// the DMA that overwrites it: a second pass over every byte of every
/// frame. `FrameBuf` keeps its storage at the largest size it has reached
/// and zero-fills only storage it has never had, so a warm buffer appends a
/// piece for the price of the bytes written into it.
///
/// The bytes [`FrameBuf::append`] hands out may hold an earlier frame's
/// contents until the caller overwrites them: a caller that fails to fill a
/// piece must discard the frame (or [`FrameBuf::clear`] it), as the NIC's TX
/// engine does when a gather DMA faults. [`FrameBuf::pad_to`] writes zeros.
///
/// ```
/// use iovirt_core::FrameBuf;
///
/// let mut f = FrameBuf::with_capacity(64);
/// f.append(3).unwrap().copy_from_slice(b"abc");
/// f.append(2).unwrap().copy_from_slice(b"de");
/// assert_eq!(f.as_slice(), b"abcde");
/// f.clear();
/// f.append(1).unwrap().copy_from_slice(b"x");
/// f.pad_to(4);
/// assert_eq!(f.as_slice(), b"x\0\0\0");
/// ```
#[derive(Debug, Clone, Default)]
pub struct FrameBuf {
    storage: Vec<u8>,
    len: usize,
}

impl FrameBuf {
    /// An empty buffer with `capacity` bytes of storage allocated and zeroed.
    pub fn with_capacity(capacity: usize) -> FrameBuf {
        FrameBuf {
            storage: vec![0; capacity],
            len: 0,
        }
    }

    /// The frame assembled so far.
    pub fn as_slice(&self) -> &[u8] {
        self.storage.get(..self.len).unwrap_or(&[])
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been appended since the last clear.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Starts the next frame; the storage is kept.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Extends the frame by `n` bytes and returns them for the caller to
    /// fill. `None` if the length would overflow `usize`.
    pub fn append(&mut self, n: usize) -> Option<&mut [u8]> {
        let start = self.len;
        let end = start.checked_add(n)?;
        if end > self.storage.len() {
            self.storage.resize(end, 0);
        }
        self.len = end;
        self.storage.get_mut(start..end)
    }

    /// Pads the frame with zeros up to `n` bytes; a longer frame is kept.
    pub fn pad_to(&mut self, n: usize) {
        if let Some(extra) = n.checked_sub(self.len)
            && let Some(pad) = self.append(extra)
        {
            pad.fill(0);
        }
    }
}

/// Frames in order, stored end to end in one reusable buffer: a wire's
/// frames in flight, or the frames a device sent during one call. Once its
/// buffers have grown to the traffic, pushing a frame allocates nothing.
///
/// ```
/// use iovirt_core::FrameQueue;
///
/// let mut q = FrameQueue::default();
/// q.push(b"first");
/// q.push(b"second");
/// assert_eq!(q.frames().collect::<Vec<_>>(), [&b"first"[..], &b"second"[..]]);
/// q.clear();
/// assert!(q.is_empty());
/// ```
#[derive(Debug, Clone, Default)]
pub struct FrameQueue {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl FrameQueue {
    /// Appends a frame.
    pub fn push(&mut self, frame: &[u8]) {
        self.bytes.extend_from_slice(frame);
        self.ends.push(self.bytes.len());
    }

    /// The frames, oldest first.
    pub fn frames(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let starts = core::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .filter_map(|(a, b)| self.bytes.get(a..b))
    }

    /// Frames queued.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether no frame is queued.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Empties the queue; the storage is kept.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

/// A device's transmitted frames queue up for the platform to route.
impl crate::NetworkPort for FrameQueue {
    fn send(&mut self, frame: &[u8]) {
        self.push(frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_is_zero_even_over_an_earlier_frame() {
        let mut f = FrameBuf::default();
        f.append(8).unwrap().fill(0xee);
        f.clear();
        f.append(2).unwrap().fill(1);
        f.pad_to(6);
        assert_eq!(f.as_slice(), &[1, 1, 0, 0, 0, 0]);
        f.pad_to(3);
        assert_eq!(f.len(), 6);
        assert_eq!(f.append(usize::MAX), None);
        assert_eq!(f.len(), 6);
    }

    #[test]
    fn a_queue_keeps_empty_frames_and_order() {
        let mut q = FrameQueue::default();
        q.push(b"ab");
        q.push(b"");
        q.push(b"c");
        let frames: Vec<&[u8]> = q.frames().collect();
        assert_eq!(frames, [&b"ab"[..], &b""[..], &b"c"[..]]);
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn a_warm_buffer_keeps_its_storage() {
        let mut f = FrameBuf::with_capacity(16);
        f.append(16).unwrap().fill(7);
        f.clear();
        assert!(f.is_empty());
        // The old bytes are still there: appending does not zero them.
        assert_eq!(f.append(4).unwrap(), &[7, 7, 7, 7]);
        f.append(20).unwrap();
        assert_eq!(f.len(), 24);
        assert_eq!(&f.as_slice()[16..], &[0; 8]);
    }
}
