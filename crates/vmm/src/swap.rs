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
    /// Stores one page that `fill` writes straight into a free slot (no
    /// staging copy), returning the slot. If `fill` fails, the slot stays
    /// free.
    pub(crate) fn put_with<E>(
        &mut self,
        fill: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<u32, E> {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = (self.bytes.len() / PAGE) as u32;
                self.bytes.resize(self.bytes.len() + PAGE, 0);
                slot
            }
        };
        let start = slot as usize * PAGE;
        let filled = match self.bytes.get_mut(start..start + PAGE) {
            Some(dst) => fill(dst),
            None => Ok(()), // not reached: every slot below `bytes.len()` exists
        };
        if filled.is_err() {
            self.free.push(slot);
        }
        filled.map(|()| slot)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_and_keep_their_bytes() {
        let mut s = SwapStore::default();
        let put = |s: &mut SwapStore, byte: u8| {
            s.put_with(|dst| {
                dst.fill(byte);
                Ok::<(), ()>(())
            })
            .unwrap()
        };
        let a = put(&mut s, 1);
        let b = put(&mut s, 2);
        assert_eq!((a, b, s.used()), (0, 1, 2));
        s.free(a);
        assert_eq!(s.used(), 1);
        assert_eq!(s.put_with(|_| Err("refused")), Err("refused"));
        assert_eq!(s.used(), 1, "a failed fill keeps no slot");
        let c = put(&mut s, 3);
        assert_eq!(c, 0, "the freed slot is reused, the store does not grow");
        assert_eq!(s.get(c).unwrap()[PAGE - 1], 3);
        assert_eq!(s.get(b).unwrap()[0], 2);
        assert_eq!(s.bytes.len(), 2 * PAGE);
    }
}
