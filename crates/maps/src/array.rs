//! ARRAY and PERCPU_ARRAY maps in shared memory, with the kernel's rules (kernel doc section 3):
//! every index exists and starts zeroed, delete is `EINVAL`, `BPF_NOEXIST` is `EEXIST`, an
//! out-of-range update is `E2BIG` and an out-of-range lookup `ENOENT`, lookup-and-delete and
//! delete batches are `ENOTSUPP`.
//!
//! Owns the array area layout. No locks: as in the kernel, an array update is a plain copy, so a
//! concurrent reader can see a torn value, and an update killed midway leaves a partly written
//! value (it never returned success, so nothing acknowledged is lost).
//!
//! # Area layout
//!
//! `max_entries` elements from the area start, element `i` at `area + i × elem_stride`:
//! ARRAY `elem_stride = round_up(value_size, 8)`; PERCPU_ARRAY `elem_stride =
//! round_up(value_size, 8) × possible_cpus`, the CPUs' slots in CPU order (the user-space layout,
//! padding bytes stored as given).
//!
//! Program-side values live at fixed offsets for the map's lifetime (the kernel's direct value
//! addresses).

use std::any::Any;
use std::sync::Arc;

use bpfmaps_abi::cpus::percpu_stride;
use bpfmaps_abi::map_flags::*;
use bpfmaps_abi::update_flags::{BPF_EXIST, BPF_F_LOCK, BPF_NOEXIST};
use bpfmaps_abi::{BatchBuffers, Errno, MapDef, MapResult, MapType};

use crate::backend::{
    generic_lookup_batch, generic_update_batch, Backend, MapFile, Plan, ValueRef,
};
use crate::header::AREA_OFFSET;
use crate::UserMapError;

const PCPU_MIN_UNIT_SIZE: usize = 32768;

const ARRAY_CREATE_FLAG_MASK: u32 = BPF_F_NUMA_NODE
    | BPF_F_MMAPABLE
    | BPF_F_RDONLY
    | BPF_F_WRONLY
    | BPF_F_RDONLY_PROG
    | BPF_F_WRONLY_PROG
    | BPF_F_PRESERVE_ELEMS
    | BPF_F_INNER_MAP;

fn elem_stride(map_type: MapType, value_size: u32, cpus: u32) -> Option<u64> {
    let slot = u64::from(value_size).div_ceil(8) * 8;
    if map_type == MapType::PercpuArray {
        slot.checked_mul(u64::from(cpus))
    } else {
        Some(slot)
    }
}

/// Validates an ARRAY / PERCPU_ARRAY definition with `array_map_alloc_check`'s rules and sizes
/// its area.
pub fn plan(def: &MapDef, cpus: u32) -> Result<Plan, Errno> {
    let flags = def.map_flags;
    let percpu = def.map_type == MapType::PercpuArray;
    if def.max_entries == 0
        || def.key_size != 4
        || def.value_size == 0
        || flags & !ARRAY_CREATE_FLAG_MASK != 0
        || flags & (BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG)
            == (BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG)
        || (percpu && flags & BPF_F_NUMA_NODE != 0)
    {
        return Err(Errno::EINVAL);
    }
    if def.map_type != MapType::Array && flags & (BPF_F_MMAPABLE | BPF_F_INNER_MAP) != 0 {
        return Err(Errno::EINVAL);
    }
    if flags & BPF_F_PRESERVE_ELEMS != 0 {
        return Err(Errno::EINVAL);
    }
    if def.value_size > i32::MAX as u32 {
        return Err(Errno::E2BIG);
    }
    if percpu && percpu_stride(def.value_size as usize) > PCPU_MIN_UNIT_SIZE {
        return Err(Errno::E2BIG);
    }
    let stride = elem_stride(def.map_type, def.value_size, cpus).ok_or(Errno::ENOMEM)?;
    let area_size = stride
        .checked_mul(u64::from(def.max_entries))
        .ok_or(Errno::ENOMEM)?;
    Ok(Plan {
        max_entries: def.max_entries,
        area_size,
        hash_seed: 0,
    })
}

/// Arrays need no initialisation: a zeroed file is an array of zeroed values.
pub fn init(file: &MapFile) -> Result<(), UserMapError> {
    ArrayMap::layout(file).map(|_| ())
}

/// Opens the array backend of a validated map file.
pub fn open(file: Arc<MapFile>) -> Result<Box<dyn Backend>, UserMapError> {
    let (stride, percpu) = ArrayMap::layout(&file)?;
    let h = &file.header;
    Ok(Box::new(ArrayMap {
        max_entries: h.max_entries,
        value_size: h.value_size as usize,
        slot_stride: percpu_stride(h.value_size as usize),
        cpus: h.possible_cpus as usize,
        stride,
        percpu,
        file,
    }))
}

/// An ARRAY or PERCPU_ARRAY map over its shared file.
#[derive(Debug)]
pub struct ArrayMap {
    file: Arc<MapFile>,
    max_entries: u32,
    value_size: usize,
    slot_stride: usize,
    cpus: usize,
    stride: usize,
    percpu: bool,
}

impl ArrayMap {
    fn layout(file: &MapFile) -> Result<(usize, bool), UserMapError> {
        let h = &file.header;
        let corrupt = |reason: &str| UserMapError::Corrupt {
            path: format!("map `{}`", h.name),
            reason: reason.into(),
        };
        if h.key_size != 4 || h.value_size == 0 || h.max_entries == 0 || h.possible_cpus == 0 {
            return Err(corrupt("bad array sizes in header"));
        }
        let stride = elem_stride(h.map_type, h.value_size, h.possible_cpus)
            .ok_or_else(|| corrupt("stride overflows"))?;
        let end = stride
            .checked_mul(u64::from(h.max_entries))
            .and_then(|s| s.checked_add(AREA_OFFSET as u64))
            .ok_or_else(|| corrupt("array size overflows"))?;
        if end != h.file_size {
            return Err(corrupt("array size does not match the file"));
        }
        let stride = usize::try_from(stride).map_err(|_| corrupt("stride too large"))?;
        Ok((stride, h.map_type == MapType::PercpuArray))
    }

    fn index(key: &[u8]) -> u32 {
        u32::from_le_bytes([key[0], key[1], key[2], key[3]])
    }

    fn elem_off(&self, index: u32) -> usize {
        AREA_OFFSET + index as usize * self.stride
    }

    fn user_value_len(&self) -> usize {
        if self.percpu {
            self.stride
        } else {
            self.value_size
        }
    }

    /// The update rules of `array_map_update_elem` (`syscall: false`, also used by PERCPU_ARRAY
    /// helpers) and of `bpf_percpu_array_update` (`syscall: true` on a per-CPU array, which
    /// refuses `BPF_F_LOCK` with the other bad flags, before the index check).
    fn check_update(&self, index: u32, flags: u64, syscall: bool) -> Result<(), Errno> {
        let bad = if self.percpu && syscall {
            flags > BPF_EXIST
        } else {
            (flags & !BPF_F_LOCK) > BPF_EXIST
        };
        if bad {
            return Err(Errno::EINVAL);
        }
        if index >= self.max_entries {
            return Err(Errno::E2BIG);
        }
        if flags & BPF_NOEXIST != 0 {
            return Err(Errno::EEXIST);
        }
        if flags & BPF_F_LOCK != 0 {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    fn slot_off(&self, index: u32, cpu: u32) -> usize {
        self.elem_off(index)
            + if self.percpu {
                cpu as usize * self.slot_stride
            } else {
                0
            }
    }
}

impl Backend for ArrayMap {
    fn lookup(&self, key: &[u8], value: &mut [u8]) -> MapResult<()> {
        let index = Self::index(key);
        if index >= self.max_entries {
            return Err(Errno::ENOENT.into());
        }
        self.file
            .region
            .read(self.elem_off(index), &mut value[..self.user_value_len()]);
        Ok(())
    }

    fn update(&self, key: &[u8], value: &[u8], flags: u64) -> MapResult<()> {
        let index = Self::index(key);
        self.check_update(index, flags, true)?;
        self.file
            .region
            .write(self.elem_off(index), &value[..self.user_value_len()]);
        Ok(())
    }

    fn delete(&self, _key: &[u8]) -> MapResult<()> {
        Err(Errno::EINVAL.into())
    }

    fn get_next_key(&self, key: Option<&[u8]>, next_key: &mut [u8]) -> MapResult<()> {
        let next = match key.map(Self::index) {
            None => 0,
            Some(i) if i >= self.max_entries => 0,
            Some(i) if i == self.max_entries - 1 => return Err(Errno::ENOENT.into()),
            Some(i) => i + 1,
        };
        next_key[..4].copy_from_slice(&next.to_le_bytes());
        Ok(())
    }

    fn lookup_batch(
        &self,
        in_batch: Option<&[u8]>,
        out_batch: &mut [u8],
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        _flags: u64,
    ) -> MapResult<()> {
        generic_lookup_batch(
            self,
            4,
            self.user_value_len(),
            in_batch,
            out_batch,
            buffers,
            elem_flags,
        )
    }

    fn update_batch(&self, buffers: &mut BatchBuffers<'_>, elem_flags: u64) -> MapResult<()> {
        generic_update_batch(self, 4, self.user_value_len(), buffers, elem_flags)
    }

    fn helper_lookup(&self, key: &[u8], cpu: u32) -> Option<ValueRef> {
        if key.len() != 4 || (self.percpu && cpu as usize >= self.cpus) {
            return None;
        }
        let index = Self::index(key);
        if index >= self.max_entries {
            return None;
        }
        Some(ValueRef {
            offset: self.slot_off(index, cpu),
            len: self.value_size,
        })
    }

    fn helper_update(&self, key: &[u8], value: &[u8], flags: u64, cpu: u32) -> Result<(), Errno> {
        if key.len() != 4
            || value.len() < self.value_size
            || (self.percpu && cpu as usize >= self.cpus)
        {
            return Err(Errno::EINVAL);
        }
        let index = Self::index(key);
        self.check_update(index, flags, false)?;
        self.file
            .region
            .write(self.slot_off(index, cpu), &value[..self.value_size]);
        Ok(())
    }

    fn helper_delete(&self, _key: &[u8]) -> Result<(), Errno> {
        Err(Errno::EINVAL)
    }

    fn for_each(
        &self,
        cpu: u32,
        callback: &mut dyn FnMut(&[u8], ValueRef) -> bool,
    ) -> Result<u32, Errno> {
        if self.percpu && cpu as usize >= self.cpus {
            return Err(Errno::EINVAL);
        }
        let mut calls = 0;
        for index in 0..self.max_entries {
            calls += 1;
            let value = ValueRef {
                offset: self.slot_off(index, cpu),
                len: self.value_size,
            };
            if !callback(&index.to_le_bytes(), value) {
                break;
            }
        }
        Ok(calls)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(
        map_type: MapType,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    ) -> MapDef {
        MapDef::new(map_type, key_size, value_size, max_entries, map_flags, "a")
    }

    #[test]
    fn creation_rules_match_the_kernel() {
        let cases = [
            (def(MapType::Array, 8, 4, 4, 0), Err(Errno::EINVAL)),
            (def(MapType::Array, 4, 0, 4, 0), Err(Errno::EINVAL)),
            (def(MapType::Array, 4, 4, 0, 0), Err(Errno::EINVAL)),
            (
                def(MapType::Array, 4, 4, 4, BPF_F_NO_PREALLOC),
                Err(Errno::EINVAL),
            ),
            (
                def(MapType::Array, 4, 4, 4, BPF_F_ZERO_SEED),
                Err(Errno::EINVAL),
            ),
            (
                def(MapType::PercpuArray, 4, 4, 4, BPF_F_MMAPABLE),
                Err(Errno::EINVAL),
            ),
            (
                def(MapType::PercpuArray, 4, 4, 4, BPF_F_NUMA_NODE),
                Err(Errno::EINVAL),
            ),
            (
                def(MapType::Array, 4, 4, 4, BPF_F_PRESERVE_ELEMS),
                Err(Errno::EINVAL),
            ),
            (def(MapType::PercpuArray, 4, 32769, 4, 0), Err(Errno::E2BIG)),
            (def(MapType::Array, 4, 4, 4, BPF_F_MMAPABLE), Ok(4)),
            (def(MapType::PercpuArray, 4, 32768, 4, 0), Ok(4)),
        ];
        for (d, expected) in cases {
            assert_eq!(plan(&d, 2).map(|p| p.max_entries), expected, "{d:?}");
        }
    }
}
