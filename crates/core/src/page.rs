//! Page sizes, access kinds and effective permissions.

use core::fmt;

use serde::{Deserialize, Serialize};

/// The 4 KiB frame, the unit of memory allocation and of the smallest page.
pub const FRAME_SIZE: u64 = 4096;

/// The page sizes of x86-64 paging (and of the IOMMU second stage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PageSize {
    /// 4 KiB, mapped by a PTE.
    Size4K,
    /// 2 MiB, mapped by a PDE with PS set.
    Size2M,
    /// 1 GiB, mapped by a PDPTE with PS set.
    Size1G,
}

impl PageSize {
    /// Every size, smallest first.
    pub const ALL: [PageSize; 3] = [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G];

    /// log2 of the size in bytes.
    #[inline]
    pub const fn shift(self) -> u32 {
        match self {
            PageSize::Size4K => 12,
            PageSize::Size2M => 21,
            PageSize::Size1G => 30,
        }
    }

    /// The size in bytes.
    #[inline]
    pub const fn bytes(self) -> u64 {
        1 << self.shift()
    }

    /// `bytes() - 1`: the offset bits inside a page.
    #[inline]
    pub const fn mask(self) -> u64 {
        self.bytes() - 1
    }

    /// How many 4 KiB frames the page spans.
    #[inline]
    pub const fn frames(self) -> u64 {
        self.bytes() / FRAME_SIZE
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PageSize::Size4K => "4 KiB",
            PageSize::Size2M => "2 MiB",
            PageSize::Size1G => "1 GiB",
        })
    }
}

/// What an access does with the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccessKind {
    /// A data read (a DMA read, a load).
    Read,
    /// A data write (a DMA write, a store).
    Write,
    /// An instruction fetch.
    Execute,
}

impl fmt::Display for AccessKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccessKind::Read => "read",
            AccessKind::Write => "write",
            AccessKind::Execute => "execute",
        })
    }
}

/// The privilege an access is made with (x86 CPL 3 vs 0-2; for a device, a
/// PASID request with or without the privileged-mode bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Privilege {
    /// User mode (CPL 3): needs U/S set at every level.
    User,
    /// Supervisor mode.
    Supervisor,
}

/// One access: its kind and its privilege.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Access {
    /// Read, write or execute.
    pub kind: AccessKind,
    /// User or supervisor.
    pub privilege: Privilege,
}

impl Access {
    /// A supervisor read (what a plain device DMA read is).
    pub const READ: Access = Access {
        kind: AccessKind::Read,
        privilege: Privilege::Supervisor,
    };
    /// A supervisor write (what a plain device DMA write is).
    pub const WRITE: Access = Access {
        kind: AccessKind::Write,
        privilege: Privilege::Supervisor,
    };
    /// A supervisor instruction fetch.
    pub const EXECUTE: Access = Access {
        kind: AccessKind::Execute,
        privilege: Privilege::Supervisor,
    };

    /// The same kind of access made from user mode.
    pub const fn user(self) -> Access {
        Access {
            kind: self.kind,
            privilege: Privilege::User,
        }
    }

    /// Whether the access writes.
    pub const fn is_write(self) -> bool {
        matches!(self.kind, AccessKind::Write)
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.privilege {
            Privilege::User => "user",
            Privilege::Supervisor => "supervisor",
        };
        write!(f, "{mode} {}", self.kind)
    }
}

bitflags::bitflags! {
    /// Effective permissions of a translation, after combining every level.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub struct Perms: u8 {
        /// Data reads allowed.
        const READ = 1 << 0;
        /// Data writes allowed.
        const WRITE = 1 << 1;
        /// Instruction fetches allowed.
        const EXECUTE = 1 << 2;
        /// User-mode accesses allowed.
        const USER = 1 << 3;
    }
}

impl Perms {
    /// Whether these permissions allow `access` (with supervisor writes always
    /// checked against [`Perms::WRITE`], as with CR0.WP = 1).
    pub const fn allows(self, access: Access) -> bool {
        let kind_ok = match access.kind {
            AccessKind::Read => self.contains(Perms::READ),
            AccessKind::Write => self.contains(Perms::WRITE),
            AccessKind::Execute => self.contains(Perms::EXECUTE),
        };
        let mode_ok = match access.privilege {
            Privilege::User => self.contains(Perms::USER),
            Privilege::Supervisor => true,
        };
        kind_ok && mode_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(PageSize::Size4K.bytes(), 4096);
        assert_eq!(PageSize::Size2M.bytes(), 2 << 20);
        assert_eq!(PageSize::Size1G.bytes(), 1 << 30);
        assert_eq!(PageSize::Size2M.frames(), 512);
        assert_eq!(PageSize::Size1G.mask(), 0x3fff_ffff);
        assert_eq!(PageSize::Size2M.to_string(), "2 MiB");
    }

    #[test]
    fn perms_allow() {
        let ro_user = Perms::READ | Perms::USER;
        assert!(ro_user.allows(Access::READ.user()));
        assert!(!ro_user.allows(Access::WRITE));
        assert!(!ro_user.allows(Access::EXECUTE));
        let rw_kernel = Perms::READ | Perms::WRITE;
        assert!(rw_kernel.allows(Access::WRITE));
        assert!(!rw_kernel.allows(Access::WRITE.user()));
        assert_eq!(Access::WRITE.user().to_string(), "user write");
    }
}
