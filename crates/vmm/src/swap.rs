//! The swap store: page-sized slots in one buffer, reused through a free
//! list. It never holds more slots than there are guest pages, since a page
//! has at most one.

const PAGE: usize = 4096;

#[derive(Debug, Default)]
pub(crate) struct SwapStore {
    bytes: Vec<u8>,
    free: Vec<u32>,
}

impl SwapStore {
    /// Stores one page, returning its slot.
    pub(crate) fn put(&mut self, page: &[u8; PAGE]) -> u32 {
        if let Some(slot) = self.free.pop()
            && let Some(dst) = self.range_mut(slot)
        {
            dst.copy_from_slice(page);
            return slot;
        }
        let slot = (self.bytes.len() / PAGE) as u32;
        self.bytes.extend_from_slice(page);
        slot
    }

    /// A slot's page.
    pub(crate) fn get(&self, slot: u32) -> Option<&[u8]> {
        let start = slot as usize * PAGE;
        self.bytes.get(start..start + PAGE)
    }

    /// Gives a slot back.
    pub(crate) fn free(&mut self, slot: u32) {
        self.free.push(slot);
    }

    /// Slots in use.
    pub(crate) fn used(&self) -> u64 {
        (self.bytes.len() / PAGE - self.free.len()) as u64
    }

    fn range_mut(&mut self, slot: u32) -> Option<&mut [u8]> {
        let start = slot as usize * PAGE;
        self.bytes.get_mut(start..start + PAGE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_and_keep_their_bytes() {
        let mut s = SwapStore::default();
        let a = s.put(&[1; PAGE]);
        let b = s.put(&[2; PAGE]);
        assert_eq!((a, b, s.used()), (0, 1, 2));
        s.free(a);
        assert_eq!(s.used(), 1);
        let c = s.put(&[3; PAGE]);
        assert_eq!(c, 0, "the freed slot is reused, the store does not grow");
        assert_eq!(s.get(c).unwrap()[PAGE - 1], 3);
        assert_eq!(s.get(b).unwrap()[0], 2);
        assert_eq!(s.bytes.len(), 2 * PAGE);
    }
}
