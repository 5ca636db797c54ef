//! The versioned header at the start of every user-engine map file, and the file's top-level
//! layout. Owns the header's byte layout and its validation; it does not know any map type's
//! own layout (each type module owns the bytes of its area).
//!
//! # File layout (layout version 2)
//!
//! All integers are little-endian (the only byte order this engine runs on: x86-64 and aarch64
//! little-endian hosts), all offsets are from the start of the file.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic, `b"BPFMAPS\0"` |
//! | 8 | 4 | layout version ([`LAYOUT_VERSION`]) |
//! | 12 | 4 | map type (`enum bpf_map_type` number) |
//! | 16 | 4 | key size |
//! | 20 | 4 | value size (one CPU's slot for per-CPU maps) |
//! | 24 | 4 | max_entries as reported (after the kernel's rounding) |
//! | 28 | 4 | map flags |
//! | 32 | 4 | possible CPUs the per-CPU layout uses |
//! | 36 | 4 | map id (atomic; 0 until the registry assigned one) |
//! | 40 | 4 | frozen (atomic; 0 or 1) |
//! | 44 | 4 | hash seed (0 with `BPF_F_ZERO_SEED`) |
//! | 48 | 8 | file size |
//! | 56 | 8 | offset of the type's area ([`AREA_OFFSET`]) |
//! | 64 | 16 | name, NUL-padded, at most 15 bytes |
//! | 80 | 4 | pid of the creating process (informational) |
//! | 84 | 940 | reserved, zero |
//! | 1024 | 1024 | type state: the type module's own header words ([`TYPE_STATE_OFFSET`]) |
//! | 2048 | 2048 | 32 lock slots of 64 bytes ([`HEADER_LOCKS_OFFSET`]), for the type module |
//! | 4096 | … | the type's area, laid out by the type module |
//!
//! Version 2 changed every lock slot from a glibc robust mutex to [`crate::lock`]'s owner-stamped
//! lock; a version 1 file is refused rather than misread.
//!
//! The fixed fields (everything except id and frozen) are written once by the creator before the
//! file can be reached by anyone else, and never change. The creator initialises the type area
//! and its locks before publishing too, so an opener that validates the header can trust the
//! layout it derives from these fields. Opening re-derives the type's layout from the fixed fields
//! and checks it against the file size; nothing in the area is used as a pointer.

use std::sync::atomic::Ordering;

use bpfmaps_abi::map_flags::{BPF_F_RDONLY, BPF_F_WRONLY};
use bpfmaps_abi::{MapDef, MapInfo, MapType};

use crate::region::Region;

/// The file's magic number.
pub const MAGIC: [u8; 8] = *b"BPFMAPS\0";
/// The layout version this code reads and writes.
pub const LAYOUT_VERSION: u32 = 2;
/// Size of the header page.
pub const HEADER_SIZE: usize = 4096;
/// Where a type module's own header words start (1024 bytes, zeroed at creation).
pub const TYPE_STATE_OFFSET: usize = 1024;
/// Size of the type state area.
pub const TYPE_STATE_SIZE: usize = 1024;
/// Where the 32 header lock slots start (each [`crate::lock::LOCK_SLOT_SIZE`] bytes). They are
/// *not* initialised by the header code: a type module initialises the ones it uses.
pub const HEADER_LOCKS_OFFSET: usize = 2048;
/// Number of header lock slots.
pub const HEADER_LOCK_SLOTS: usize = 32;
/// Where a type's area starts.
pub const AREA_OFFSET: usize = HEADER_SIZE;

const OFF_VERSION: usize = 8;
const OFF_TYPE: usize = 12;
const OFF_KEY_SIZE: usize = 16;
const OFF_VALUE_SIZE: usize = 20;
const OFF_MAX_ENTRIES: usize = 24;
const OFF_FLAGS: usize = 28;
const OFF_CPUS: usize = 32;
/// Offset of the atomic map id word.
pub const OFF_ID: usize = 36;
/// Offset of the atomic frozen word.
pub const OFF_FROZEN: usize = 40;
const OFF_SEED: usize = 44;
const OFF_FILE_SIZE: usize = 48;
const OFF_AREA: usize = 56;
const OFF_NAME: usize = 64;
const OFF_PID: usize = 80;

/// The byte offset of header lock slot `index` (< [`HEADER_LOCK_SLOTS`]).
pub fn header_lock_offset(index: usize) -> usize {
    HEADER_LOCKS_OFFSET + index * crate::lock::LOCK_SLOT_SIZE
}

/// Why a file is not a valid map file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The file is smaller than a header.
    #[error("file too small for a map header: {0} bytes")]
    TooSmall(usize),
    /// The magic number is wrong: not a bpfmaps map file.
    #[error("not a bpfmaps map file (bad magic)")]
    BadMagic,
    /// A layout version this code does not read.
    #[error("unsupported map file layout version {0} (this build reads {LAYOUT_VERSION})")]
    Version(u32),
    /// The map type number is unknown.
    #[error("unknown map type number {0}")]
    MapType(u32),
    /// The recorded file size or area offset disagrees with the file.
    #[error(
        "header says the file is {recorded} bytes with the area at {area}, but it is {actual}"
    )]
    Size {
        /// The size the header records.
        recorded: u64,
        /// The area offset the header records.
        area: u64,
        /// The real size.
        actual: usize,
    },
    /// The name is not UTF-8 or not NUL-terminated within 16 bytes.
    #[error("malformed map name in header")]
    Name,
}

/// The fixed part of a map file's header, as a plain copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapHeader {
    /// The map type.
    pub map_type: MapType,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes (per CPU for per-CPU maps).
    pub value_size: u32,
    /// max_entries as reported.
    pub max_entries: u32,
    /// Creation flags.
    pub map_flags: u32,
    /// Possible CPUs of the per-CPU layout.
    pub possible_cpus: u32,
    /// The hash seed.
    pub hash_seed: u32,
    /// The file's size in bytes.
    pub file_size: u64,
    /// The map's name.
    pub name: String,
    /// The pid that created the map.
    pub creator_pid: u32,
}

impl MapHeader {
    /// The header for a new map of definition `def` whose file will be `file_size` bytes.
    pub fn new(
        def: &MapDef,
        max_entries: u32,
        possible_cpus: u32,
        hash_seed: u32,
        file_size: u64,
    ) -> Self {
        MapHeader {
            map_type: def.map_type,
            key_size: def.key_size,
            value_size: def.value_size,
            max_entries,
            map_flags: def.map_flags,
            possible_cpus,
            hash_seed,
            file_size,
            name: def.name.clone(),
            creator_pid: std::process::id(),
        }
    }

    /// The definition this header records (max_entries as the map reports it).
    pub fn def(&self) -> MapDef {
        MapDef {
            map_type: self.map_type,
            key_size: self.key_size,
            value_size: self.value_size,
            max_entries: self.max_entries,
            map_flags: self.map_flags,
            name: self.name.clone(),
        }
    }

    /// Writes the header into a fresh (zeroed) region. Id and frozen stay 0.
    pub fn write(&self, region: &Region) {
        region.write(0, &MAGIC);
        let words = [
            (OFF_VERSION, LAYOUT_VERSION),
            (OFF_TYPE, self.map_type.as_u32()),
            (OFF_KEY_SIZE, self.key_size),
            (OFF_VALUE_SIZE, self.value_size),
            (OFF_MAX_ENTRIES, self.max_entries),
            (OFF_FLAGS, self.map_flags),
            (OFF_CPUS, self.possible_cpus),
            (OFF_SEED, self.hash_seed),
            (OFF_PID, self.creator_pid),
        ];
        for (off, value) in words {
            region.write(off, &value.to_le_bytes());
        }
        region.write(OFF_FILE_SIZE, &self.file_size.to_le_bytes());
        region.write(OFF_AREA, &(AREA_OFFSET as u64).to_le_bytes());
        let mut name = [0u8; 16];
        let bytes = self.name.as_bytes();
        let n = bytes.len().min(15);
        name[..n].copy_from_slice(&bytes[..n]);
        region.write(OFF_NAME, &name);
    }

    /// Reads and validates the header of a mapped file.
    pub fn read(region: &Region) -> Result<MapHeader, HeaderError> {
        if region.len() < HEADER_SIZE {
            return Err(HeaderError::TooSmall(region.len()));
        }
        let mut magic = [0u8; 8];
        region.read(0, &mut magic);
        if magic != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let word = |off: usize| {
            let mut b = [0u8; 4];
            region.read(off, &mut b);
            u32::from_le_bytes(b)
        };
        let dword = |off: usize| {
            let mut b = [0u8; 8];
            region.read(off, &mut b);
            u64::from_le_bytes(b)
        };
        let version = word(OFF_VERSION);
        if version != LAYOUT_VERSION {
            return Err(HeaderError::Version(version));
        }
        let type_number = word(OFF_TYPE);
        let map_type = MapType::from_u32(type_number).ok_or(HeaderError::MapType(type_number))?;
        let file_size = dword(OFF_FILE_SIZE);
        let area = dword(OFF_AREA);
        if file_size != region.len() as u64 || area != AREA_OFFSET as u64 {
            return Err(HeaderError::Size {
                recorded: file_size,
                area,
                actual: region.len(),
            });
        }
        let mut name = [0u8; 16];
        region.read(OFF_NAME, &mut name);
        let len = name.iter().position(|&b| b == 0).ok_or(HeaderError::Name)?;
        let name = std::str::from_utf8(&name[..len])
            .map_err(|_| HeaderError::Name)?
            .to_owned();
        Ok(MapHeader {
            map_type,
            key_size: word(OFF_KEY_SIZE),
            value_size: word(OFF_VALUE_SIZE),
            max_entries: word(OFF_MAX_ENTRIES),
            map_flags: word(OFF_FLAGS),
            possible_cpus: word(OFF_CPUS),
            hash_seed: word(OFF_SEED),
            file_size,
            name,
            creator_pid: word(OFF_PID),
        })
    }

    /// The map's id as the registry assigned it (0 before registration).
    pub fn id(region: &Region) -> u32 {
        region.atomic_u32(OFF_ID).load(Ordering::Acquire)
    }

    /// Records the map's id.
    pub fn set_id(region: &Region, id: u32) {
        region.atomic_u32(OFF_ID).store(id, Ordering::Release);
    }

    /// True once the map was frozen.
    pub fn frozen(region: &Region) -> bool {
        region.atomic_u32(OFF_FROZEN).load(Ordering::Acquire) != 0
    }

    /// Freezes the map; returns false when it already was frozen.
    pub fn freeze(region: &Region) -> bool {
        region.atomic_u32(OFF_FROZEN).swap(1, Ordering::AcqRel) == 0
    }

    /// The [`MapInfo`] of this map, with the live id and frozen state of `region`.
    pub fn info(&self, region: &Region) -> MapInfo {
        MapInfo {
            map_type: self.map_type,
            id: Self::id(region),
            key_size: self.key_size,
            value_size: self.value_size,
            max_entries: self.max_entries,
            // RDONLY and WRONLY are access flags of the creating handle, not properties of the
            // map: the kernel drops them from the flags it reports
            // (bpf_map_flags_retain_permanent), and so does the user engine.
            map_flags: self.map_flags & !(BPF_F_RDONLY | BPF_F_WRONLY),
            name: self.name.clone(),
            possible_cpus: self.possible_cpus,
            btf_id: 0,
            frozen: Self::frozen(region),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::create_memfd;

    #[test]
    fn header_round_trips_and_rejects_foreign_files() {
        let region = Region::map(create_memfd(8192).unwrap()).unwrap();
        assert_eq!(MapHeader::read(&region), Err(HeaderError::BadMagic));
        let def = MapDef {
            map_type: MapType::Hash,
            key_size: 4,
            value_size: 8,
            max_entries: 16,
            map_flags: 64,
            name: "counts".into(),
        };
        let header = MapHeader::new(&def, 16, 2, 0, 8192);
        header.write(&region);
        assert_eq!(MapHeader::read(&region).unwrap(), header);
        region.write(OFF_VERSION, &99u32.to_le_bytes());
        assert_eq!(MapHeader::read(&region), Err(HeaderError::Version(99)));
    }
}
