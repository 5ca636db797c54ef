//! The guest's virtual address space: every byte a program may touch is in a [`Region`] mapped at
//! a synthetic guest address, and every access is translated and bounds-checked here. Owns the
//! address layout, the region table, and the [`HostRegion`] trait through which a host lends
//! memory it does not want to copy (map values in shared memory).
//!
//! It does not know about instructions or helpers: the interpreter and helper hosts call it.
//!
//! Address layout (guest addresses are never host pointers):
//!
//! | guest address                 | region |
//! | ----------------------------- | ------ |
//! | `0x0000_0000_xxxx_xxxx`       | region 0: unmapped (NULL and small integers trap) |
//! | `0x0000_0001_xxxx_xxxx`       | region 1: the stack, one `stack_size` frame per call depth |
//! | `0x0000_0002_xxxx_xxxx`       | region 2: the context buffer |
//! | `0x0000_0003..0x0000_00ff`    | fixed regions the host maps at run start ([`fixed_region_address`]), for addresses resolved at load time such as global data |
//! | `0x0000_0100_xxxx_xxxx` and up | regions mapped during the run (map values, ring buffer records, helper buffers) |
//! | `0xffff_ffff_xxxx_xxxx`       | never mapped: the values `lddw` function references load ([`CALLBACK_BASE`]` + slot`), which helpers taking callbacks pass back |
//!
//! The upper 32 bits of an address select the region, the lower 32 bits are the offset, so a
//! region holds at most 4 GiB and translation is one table index plus one bounds check.
//!
//! Architecture invariant: the guest can only reach bytes of a region it was given, and only
//! through the checks in this module; no guest value is ever turned into a host pointer.

use std::fmt;

/// Number of bits of the in-region offset in a guest address.
pub const REGION_SHIFT: u32 = 32;
/// Region index of the stack.
pub const STACK_REGION: u32 = 1;
/// Region index of the context.
pub const CONTEXT_REGION: u32 = 2;
/// First region index the host may use for fixed regions.
pub const FIRST_FIXED_REGION: u32 = 3;
/// One past the last fixed region index.
pub const FIRST_DYNAMIC_REGION: u32 = 0x100;
/// Guest address of the stack region's first byte.
pub const STACK_BASE: u64 = (STACK_REGION as u64) << REGION_SHIFT;
/// Guest address of the context's first byte.
pub const CONTEXT_BASE: u64 = (CONTEXT_REGION as u64) << REGION_SHIFT;
/// Largest region length.
pub const MAX_REGION_LEN: u64 = 1 << REGION_SHIFT;
/// The value an `lddw` function reference (`BPF_PSEUDO_FUNC`) loads is `CALLBACK_BASE` plus the
/// function's slot index: an address in a region that is never mapped, so a program cannot
/// dereference it, and that [`crate::Callbacks::invoke`] recognises.
pub const CALLBACK_BASE: u64 = 0xffff_ffff_0000_0000;

/// The guest address of byte 0 of fixed region `slot` (`0..FIRST_DYNAMIC_REGION -
/// FIRST_FIXED_REGION`), or `None` when the slot is out of range. A loader resolving
/// `lddw` map-value pseudo instructions returns such addresses, and the host maps the region at
/// run start through [`Memory::map_fixed`].
pub fn fixed_region_address(slot: u32) -> Option<u64> {
    let index = FIRST_FIXED_REGION.checked_add(slot)?;
    (index < FIRST_DYNAMIC_REGION).then_some(u64::from(index) << REGION_SHIFT)
}

/// Whether a region may be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Loads only; stores and atomics trap.
    ReadOnly,
    /// Loads, stores and atomics.
    ReadWrite,
}

/// Memory a host lends to the guest without copying it, for instance a map value in shared
/// memory. Offsets passed to these methods are already checked: `offset + len <= self.len()`.
///
/// Implementations over memory other threads or processes change must use atomic or volatile
/// accesses, never Rust references to the shared bytes.
pub trait HostRegion {
    /// Length in bytes; must not change while the region is mapped.
    fn len(&self) -> u64;
    /// Whether the region has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies `buf.len()` bytes at `offset` into `buf`.
    fn read(&self, offset: u64, buf: &mut [u8]);
    /// Copies `data` to `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
    /// Atomically replaces the `size`-byte (4 or 8) little-endian value at `offset` by
    /// `update(old)` and returns the old value. The default is a plain read-modify-write, correct
    /// only for memory no one else writes concurrently.
    fn atomic_update(&mut self, offset: u64, size: u8, update: &mut dyn FnMut(u64) -> u64) -> u64 {
        let mut bytes = [0u8; 8];
        let width = usize::from(size).min(8);
        self.read(offset, &mut bytes[..width]);
        let old = u64::from_le_bytes(bytes);
        let new = update(old).to_le_bytes();
        self.write(offset, &new[..width]);
        old
    }
}

/// A raw view of a plain-memory region ([`Memory::window`]): `len` accessible bytes from `ptr`.
/// This crate never dereferences it; an engine that does must check every access against `len`
/// and `access` and stop using the pointer once the `Memory` is used again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// The host address of the region's byte 0.
    pub ptr: *mut u8,
    /// Accessible length in bytes (for the stack: the frames in use).
    pub len: u64,
    /// Whether stores are allowed.
    pub access: Access,
}

/// The bytes behind a region.
enum Backing<'a> {
    /// Borrowed mutable bytes (the stack, a writable context).
    Borrowed(&'a mut [u8]),
    /// Borrowed read-only bytes.
    BorrowedReadOnly(&'a [u8]),
    /// Bytes the region owns (helper buffers, copies).
    Owned(Vec<u8>),
    /// Memory a host lends through [`HostRegion`].
    Host(Box<dyn HostRegion>),
}

/// One mapped region: its accessible length, its access mode and its bytes.
pub struct Region<'a> {
    len: u64,
    access: Access,
    backing: Backing<'a>,
}

impl<'a> Region<'a> {
    /// A region over borrowed bytes.
    pub fn borrowed(bytes: &'a mut [u8], access: Access) -> Self {
        Region {
            len: bytes.len() as u64,
            access,
            backing: Backing::Borrowed(bytes),
        }
    }

    /// A read-only region over borrowed bytes.
    pub fn borrowed_read_only(bytes: &'a [u8]) -> Self {
        Region {
            len: bytes.len() as u64,
            access: Access::ReadOnly,
            backing: Backing::BorrowedReadOnly(bytes),
        }
    }

    /// A region owning its bytes.
    pub fn owned(bytes: Vec<u8>, access: Access) -> Self {
        Region {
            len: bytes.len() as u64,
            access,
            backing: Backing::Owned(bytes),
        }
    }

    /// A region over host-lent memory.
    pub fn host(memory: Box<dyn HostRegion>, access: Access) -> Self {
        Region {
            len: memory.len(),
            access,
            backing: Backing::Host(memory),
        }
    }

    /// The region's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the region has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The region's bytes when it owns them (for reading back a helper buffer).
    pub fn owned_bytes(&self) -> Option<&[u8]> {
        match &self.backing {
            Backing::Owned(bytes) => Some(bytes),
            _ => None,
        }
    }
}

/// Why an access was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// No region is mapped at the address.
    Unmapped,
    /// The access runs past the end of its region.
    OutOfBounds,
    /// A store or atomic on a read-only region.
    ReadOnly,
    /// A region could not be mapped: no free index, or longer than 4 GiB.
    NoSpace,
}

/// A refused memory access: where, how wide, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} of {len} bytes at {addr:#x}: {kind}", if *.write { "write" } else { "read" })]
pub struct MemFault {
    /// The guest address of the first byte.
    pub addr: u64,
    /// The access length.
    pub len: u64,
    /// Whether it was a store (or atomic).
    pub write: bool,
    /// The reason.
    pub kind: FaultKind,
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaultKind::Unmapped => "no region mapped there",
            FaultKind::OutOfBounds => "past the end of its region",
            FaultKind::ReadOnly => "region is read-only",
            FaultKind::NoSpace => "no room to map a region",
        })
    }
}

/// The guest's address space for one run: the region table.
pub struct Memory<'a> {
    /// Indexed by region number; grows on demand, indices are never reused within a run, so a
    /// stale address of an unmapped region faults instead of reaching a newer region.
    regions: Vec<Option<Region<'a>>>,
}

#[inline(always)]
fn split(addr: u64) -> (usize, u64) {
    ((addr >> REGION_SHIFT) as usize, addr & (MAX_REGION_LEN - 1))
}

impl<'a> Memory<'a> {
    /// An address space with the stack and context mapped and nothing else.
    pub fn new(stack: &'a mut [u8], context: Region<'a>) -> Self {
        let regions = vec![
            None,
            Some(Region::borrowed(stack, Access::ReadWrite)),
            Some(context),
        ];
        Memory { regions }
    }

    /// Sets how many bytes of the stack region are accessible (the frames in use), at most the
    /// stack's capacity. For execution engines that keep their own call frames (the JIT).
    pub fn set_stack_len(&mut self, len: u64) {
        if let Some(Some(region)) = self.regions.get_mut(STACK_REGION as usize) {
            let capacity = match &region.backing {
                Backing::Borrowed(bytes) => bytes.len() as u64,
                _ => 0,
            };
            region.len = len.min(capacity);
        }
    }

    /// Zeroes `len` stack bytes from offset `start` (a new frame), clipped to the stack.
    pub fn zero_stack(&mut self, start: u64, len: u64) {
        if let Some(Some(Region {
            backing: Backing::Borrowed(bytes),
            ..
        })) = self.regions.get_mut(STACK_REGION as usize)
        {
            let start = usize::try_from(start)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let end = start.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
            let end = end.min(bytes.len());
            bytes[start..end].fill(0);
        }
    }

    /// Maps a region at a fresh guest address and returns that address.
    pub fn map(&mut self, region: Region<'a>) -> Result<u64, MemFault> {
        let no_space = MemFault {
            addr: 0,
            len: region.len,
            write: false,
            kind: FaultKind::NoSpace,
        };
        if region.len > MAX_REGION_LEN {
            return Err(no_space);
        }
        if self.regions.len() < FIRST_DYNAMIC_REGION as usize {
            self.regions
                .resize_with(FIRST_DYNAMIC_REGION as usize, || None);
        }
        let index = self.regions.len() as u64;
        if index >= (1u64 << (64 - REGION_SHIFT)) {
            return Err(no_space);
        }
        self.regions.push(Some(region));
        Ok(index << REGION_SHIFT)
    }

    /// Replaces the region [`Memory::map`] mapped at `addr` with `region`, keeping the address:
    /// for a helper that lends a series of short-lived buffers (one key per callback of
    /// `bpf_for_each_map_elem`) without growing the region table by one entry per buffer.
    /// `Unmapped` when no dynamic region is mapped at `addr`.
    pub fn replace(&mut self, addr: u64, region: Region<'a>) -> Result<(), MemFault> {
        let (index, _) = split(addr);
        let fault = |kind| MemFault {
            addr,
            len: region.len,
            write: false,
            kind,
        };
        if region.len > MAX_REGION_LEN {
            return Err(fault(FaultKind::NoSpace));
        }
        match self.regions.get_mut(index) {
            Some(slot @ Some(_)) if index >= FIRST_DYNAMIC_REGION as usize => {
                *slot = Some(region);
                Ok(())
            }
            _ => Err(fault(FaultKind::Unmapped)),
        }
    }

    /// Maps a region at fixed slot `slot` (see [`fixed_region_address`]), replacing what was
    /// there, and returns its address.
    pub fn map_fixed(&mut self, slot: u32, region: Region<'a>) -> Result<u64, MemFault> {
        let addr = fixed_region_address(slot).ok_or(MemFault {
            addr: 0,
            len: region.len,
            write: false,
            kind: FaultKind::NoSpace,
        })?;
        if region.len > MAX_REGION_LEN {
            return Err(MemFault {
                addr,
                len: region.len,
                write: false,
                kind: FaultKind::NoSpace,
            });
        }
        let (index, _) = split(addr);
        if self.regions.len() <= index {
            self.regions.resize_with(index + 1, || None);
        }
        self.regions[index] = Some(region);
        Ok(addr)
    }

    /// Unmaps the region containing `addr` (a submitted ring buffer record, say) and returns it.
    /// The stack and context cannot be unmapped.
    pub fn unmap(&mut self, addr: u64) -> Option<Region<'a>> {
        let (index, _) = split(addr);
        if index < FIRST_FIXED_REGION as usize {
            return None;
        }
        self.regions.get_mut(index)?.take()
    }

    /// The [`Window`] onto region number `index` when the region's bytes are plain memory
    /// (borrowed or owned, not a [`HostRegion`]), for an execution engine that checks accesses
    /// itself against the window's bounds. The pointer is valid until this `Memory` is next used
    /// or dropped; `&mut self` because writes through it are allowed when
    /// [`Window::access`] is [`Access::ReadWrite`].
    pub fn window(&mut self, index: u32) -> Option<Window> {
        let region = self.regions.get_mut(index as usize)?.as_mut()?;
        let (ptr, capacity) = match &mut region.backing {
            Backing::Borrowed(bytes) => (bytes.as_mut_ptr(), bytes.len()),
            // Never written through: the window says read-only.
            Backing::BorrowedReadOnly(bytes) => (bytes.as_ptr().cast_mut(), bytes.len()),
            Backing::Owned(bytes) => (bytes.as_mut_ptr(), bytes.len()),
            Backing::Host(_) => return None,
        };
        let access = match region.backing {
            Backing::BorrowedReadOnly(_) => Access::ReadOnly,
            _ => region.access,
        };
        Some(Window {
            ptr,
            len: region.len.min(capacity as u64),
            access,
        })
    }

    /// The region containing `addr`, if mapped.
    pub fn region(&self, addr: u64) -> Option<&Region<'a>> {
        let (index, _) = split(addr);
        self.regions.get(index)?.as_ref()
    }

    #[inline(always)]
    fn locate(&self, addr: u64, len: u64, write: bool) -> Result<(&Region<'a>, u64), MemFault> {
        let (index, offset) = split(addr);
        let fault = |kind| MemFault {
            addr,
            len,
            write,
            kind,
        };
        let region = match self.regions.get(index) {
            Some(Some(region)) => region,
            _ => return Err(fault(FaultKind::Unmapped)),
        };
        if offset.checked_add(len).is_none_or(|end| end > region.len) {
            return Err(fault(FaultKind::OutOfBounds));
        }
        if write && region.access == Access::ReadOnly {
            return Err(fault(FaultKind::ReadOnly));
        }
        Ok((region, offset))
    }

    #[inline(always)]
    fn locate_mut(&mut self, addr: u64, len: u64) -> Result<(&mut Backing<'a>, usize), MemFault> {
        let (index, offset) = split(addr);
        let fault = |kind| MemFault {
            addr,
            len,
            write: true,
            kind,
        };
        let region = match self.regions.get_mut(index) {
            Some(Some(region)) => region,
            _ => return Err(fault(FaultKind::Unmapped)),
        };
        if offset.checked_add(len).is_none_or(|end| end > region.len) {
            return Err(fault(FaultKind::OutOfBounds));
        }
        if region.access == Access::ReadOnly {
            return Err(fault(FaultKind::ReadOnly));
        }
        // The offset is below the region length, which is at most 4 GiB and fits usize on the
        // 64-bit hosts bpfmaps supports.
        Ok((&mut region.backing, offset as usize))
    }

    /// Loads an `N`-byte little-endian value (N = 1, 2, 4, 8), zero-extended.
    #[inline(always)]
    pub fn load<const N: usize>(&self, addr: u64) -> Result<u64, MemFault> {
        let (region, offset) = self.locate(addr, N as u64, false)?;
        let mut bytes = [0u8; 8];
        let start = offset as usize;
        match &region.backing {
            Backing::Borrowed(data) => bytes[..N].copy_from_slice(&data[start..start + N]),
            Backing::BorrowedReadOnly(data) => bytes[..N].copy_from_slice(&data[start..start + N]),
            Backing::Owned(data) => bytes[..N].copy_from_slice(&data[start..start + N]),
            Backing::Host(host) => host.read(offset, &mut bytes[..N]),
        }
        Ok(u64::from_le_bytes(bytes))
    }

    /// Stores the low `N` bytes of `value` little-endian (N = 1, 2, 4, 8).
    #[inline(always)]
    pub fn store<const N: usize>(&mut self, addr: u64, value: u64) -> Result<(), MemFault> {
        let (backing, start) = self.locate_mut(addr, N as u64)?;
        let bytes = value.to_le_bytes();
        match backing {
            Backing::Borrowed(data) => data[start..start + N].copy_from_slice(&bytes[..N]),
            Backing::Owned(data) => data[start..start + N].copy_from_slice(&bytes[..N]),
            Backing::Host(host) => host.write(start as u64, &bytes[..N]),
            // locate_mut refused read-only regions already.
            Backing::BorrowedReadOnly(_) => {
                return Err(MemFault {
                    addr,
                    len: N as u64,
                    write: true,
                    kind: FaultKind::ReadOnly,
                })
            }
        }
        Ok(())
    }

    /// Replaces the `size`-byte (4 or 8) value at `addr` by `update(old)`, returning `old`.
    pub fn atomic_update(
        &mut self,
        addr: u64,
        size: u8,
        update: &mut dyn FnMut(u64) -> u64,
    ) -> Result<u64, MemFault> {
        let width = usize::from(size).min(8);
        let (backing, start) = self.locate_mut(addr, width as u64)?;
        let plain = |data: &mut [u8], update: &mut dyn FnMut(u64) -> u64| {
            let mut bytes = [0u8; 8];
            bytes[..width].copy_from_slice(&data[start..start + width]);
            let old = u64::from_le_bytes(bytes);
            let new = update(old).to_le_bytes();
            data[start..start + width].copy_from_slice(&new[..width]);
            old
        };
        match backing {
            // Borrowed and owned bytes are exclusively ours for the run: a read-modify-write
            // is atomic with respect to every other observer.
            Backing::Borrowed(data) => Ok(plain(data, update)),
            Backing::Owned(data) => Ok(plain(data, update)),
            Backing::Host(host) => Ok(host.atomic_update(start as u64, size, update)),
            Backing::BorrowedReadOnly(_) => Err(MemFault {
                addr,
                len: width as u64,
                write: true,
                kind: FaultKind::ReadOnly,
            }),
        }
    }

    /// Copies `buf.len()` guest bytes at `addr` into `buf` (for helpers).
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let (region, offset) = self.locate(addr, buf.len() as u64, false)?;
        let start = offset as usize;
        let end = start + buf.len();
        match &region.backing {
            Backing::Borrowed(data) => buf.copy_from_slice(&data[start..end]),
            Backing::BorrowedReadOnly(data) => buf.copy_from_slice(&data[start..end]),
            Backing::Owned(data) => buf.copy_from_slice(&data[start..end]),
            Backing::Host(host) => host.read(offset, buf),
        }
        Ok(())
    }

    /// Reads `len` guest bytes at `addr` into a new vector (for helpers).
    pub fn read_vec(&self, addr: u64, len: u64) -> Result<Vec<u8>, MemFault> {
        let fault = MemFault {
            addr,
            len,
            write: false,
            kind: FaultKind::OutOfBounds,
        };
        // Check the bounds before allocating, so a guest length cannot make us allocate.
        self.locate(addr, len, false)?;
        let mut buf = vec![0u8; usize::try_from(len).map_err(|_| fault)?];
        self.read(addr, &mut buf)?;
        Ok(buf)
    }

    /// Checks that `len` guest bytes at `addr` are mapped and writable, without touching them:
    /// for helpers that must know a destination is valid before they build what they write, so
    /// a guest-chosen length never sizes a host allocation larger than a region that exists.
    pub fn check_writable(&mut self, addr: u64, len: u64) -> Result<(), MemFault> {
        self.locate_mut(addr, len).map(|_| ())
    }

    /// Copies `data` into guest memory at `addr` (for helpers).
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemFault> {
        let (backing, start) = self.locate_mut(addr, data.len() as u64)?;
        let end = start + data.len();
        match backing {
            Backing::Borrowed(bytes) => bytes[start..end].copy_from_slice(data),
            Backing::Owned(bytes) => bytes[start..end].copy_from_slice(data),
            Backing::Host(host) => host.write(start as u64, data),
            Backing::BorrowedReadOnly(_) => {
                return Err(MemFault {
                    addr,
                    len: data.len() as u64,
                    write: true,
                    kind: FaultKind::ReadOnly,
                })
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Shared(Vec<u8>);

    impl HostRegion for Shared {
        fn len(&self) -> u64 {
            self.0.len() as u64
        }
        fn read(&self, offset: u64, buf: &mut [u8]) {
            let start = offset as usize;
            buf.copy_from_slice(&self.0[start..start + buf.len()]);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            let start = offset as usize;
            self.0[start..start + data.len()].copy_from_slice(data);
        }
    }

    #[test]
    fn accesses_are_translated_and_bounds_checked() {
        let mut stack = vec![0u8; 16];
        let ctx = [1u8, 2, 3, 4];
        let mut mem = Memory::new(&mut stack, Region::borrowed_read_only(&ctx));
        assert_eq!(mem.load::<4>(CONTEXT_BASE), Ok(0x0403_0201));
        assert_eq!(
            mem.load::<2>(CONTEXT_BASE + 3).unwrap_err().kind,
            FaultKind::OutOfBounds
        );
        assert_eq!(
            mem.store::<1>(CONTEXT_BASE, 9).unwrap_err().kind,
            FaultKind::ReadOnly
        );
        assert_eq!(mem.load::<1>(0).unwrap_err().kind, FaultKind::Unmapped);
        assert_eq!(
            mem.load::<8>(u64::MAX).unwrap_err().kind,
            FaultKind::Unmapped
        );
        mem.store::<8>(STACK_BASE + 8, 0x1122).unwrap();
        assert_eq!(mem.load::<8>(STACK_BASE + 8), Ok(0x1122));
        assert_eq!(
            mem.load::<8>(STACK_BASE + 9).unwrap_err().kind,
            FaultKind::OutOfBounds
        );
        // check_writable: the whole span, writable, or the fault a write would get.
        assert_eq!(mem.check_writable(STACK_BASE, 16), Ok(()));
        assert_eq!(
            mem.check_writable(STACK_BASE + 8, 0xffff_ffff)
                .unwrap_err()
                .kind,
            FaultKind::OutOfBounds
        );
        assert_eq!(
            mem.check_writable(CONTEXT_BASE, 1).unwrap_err().kind,
            FaultKind::ReadOnly
        );
    }

    #[test]
    fn host_regions_map_unmap_and_update_atomically() {
        let mut stack = vec![0u8; 8];
        let mut mem = Memory::new(&mut stack, Region::owned(Vec::new(), Access::ReadWrite));
        let addr = mem
            .map(Region::host(
                Box::new(Shared(vec![0; 8])),
                Access::ReadWrite,
            ))
            .unwrap();
        assert_eq!(addr, u64::from(FIRST_DYNAMIC_REGION) << REGION_SHIFT);
        mem.store::<4>(addr + 4, 5).unwrap();
        assert_eq!(mem.atomic_update(addr + 4, 4, &mut |old| old + 1), Ok(5));
        assert_eq!(mem.load::<4>(addr + 4), Ok(6));
        // replace keeps the address and swaps the bytes behind it.
        mem.replace(addr, Region::owned(vec![7; 4], Access::ReadOnly))
            .unwrap();
        assert_eq!(mem.load::<4>(addr), Ok(0x0707_0707));
        assert_eq!(
            mem.replace(STACK_BASE, Region::owned(vec![0; 4], Access::ReadOnly))
                .unwrap_err()
                .kind,
            FaultKind::Unmapped
        );
        assert!(mem.unmap(addr).is_some());
        assert_eq!(
            mem.replace(addr, Region::owned(vec![0; 4], Access::ReadOnly))
                .unwrap_err()
                .kind,
            FaultKind::Unmapped
        );
        assert_eq!(mem.load::<4>(addr).unwrap_err().kind, FaultKind::Unmapped);
        let fixed = mem
            .map_fixed(0, Region::owned(vec![7], Access::ReadOnly))
            .unwrap();
        assert_eq!(Some(fixed), fixed_region_address(0));
        assert_eq!(mem.load::<1>(fixed), Ok(7));
        assert_eq!(fixed_region_address(FIRST_DYNAMIC_REGION), None);
    }
}
